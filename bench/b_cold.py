"""B-COLD: cold move through vmportal of a guest with a 2 GiB sparse raw disk (~25 % written), converted
to qcow2 on the way, on the real lab (h1 → h2), by both copy paths of the cold engine:

- fast path (`VMPORTAL_COLD_COPY=mirror`): a paused carrier domain holding the VM's disk started on h1
  and the disk mirrored by QEMU over NBD into a qcow2 volume created on h2 (conversion in the copy, no
  read-back);
- fallback (`stream`): conversion on the source, then the chunked, checksummed copy through libvirt
  storage streams and the read-back of the destination.

Measured: the run's copy phase, in interleaved rounds (fast path, fallback, reference (a), reference
(b)), against the two references of PERFORMANCE.md:

- (a) `qemu-img convert -O qcow2` of the same file alone on h1 (`lab/labctl exec h1 -- qemu-img convert
  …`), the target's baseline;
- (b) the peer data path: `qemu-nbd` serving a freshly created qcow2 in h2's namespaces and
  `qemu-img convert -n --target-is-zero` on h1 writing into it over the lab link (`nbd://10.77.0.2…`);
  only the convert is timed (the server is started before, as the mirror's volumes are created before
  the copy). It needs a process on each host, which vmportal does without; it is a reference here only.

The bytes each copy put on the wire are read from h1's link counters (eth0 tx_bytes), and for the fast
path the copy phase is broken into its steps (the engine's own timeline plus the hosts' QEMU logs).
Then the whole cold move's downtime of the same VM *running* (shutdown request → running
on h2; the lab's SeaBIOS guest never powers off by itself, so it is forced off after a 1 s grace), beside
the floor: shutdown + the allocated data at the lab's measured link speed + start on the destination.

Between repetitions the VM is put back on h1 with its original raw disk (the cold move keeps the source
disk, so only the definition is restored); the destination copy is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bench.common import setup_django, summary, timing_result
from bench.livebench import link_bandwidth

PAIRS = 5
DOWNTIME_RUNS = 3
DISK_MIB = 2048
WRITTEN_MIB = 512  # 25 %
TARGET_RATIO = 1.5  # PERFORMANCE.md: copy phase <= 1.5x a local qemu-img convert
BASELINE_FILE = "/srv/vmportal-lab/local/bench-cold-baseline.qcow2"
NBD_FILE = "/srv/vmportal-lab/local/bench-cold-nbd.qcow2"  # reference (b), on h2
NBD_PID = "bench-cold-nbd.pid"  # in h2's local pool directory
NBD_PORT = 10899


def _labctl(*args: str) -> None:
    from tests.base import LABCTL

    subprocess.run([str(LABCTL), *args], check=True, capture_output=True, text=True)


def run() -> list[dict[str, Any]]:
    setup_django()
    from django.contrib.auth import get_user_model

    from inventory.models import Team
    from tests.base import lab_up
    from tests.labguests import DiskSpec, LabGuests, NicSpec

    lab = lab_up()
    guests = LabGuests(lab)
    users = get_user_model().objects
    owner = users.get_or_create(username="bench-cold-owner")[0]
    team = Team.objects.get_or_create(slug="payments", defaults={"name": "Payments"})[0]
    try:
        guest = guests.define(
            "h1",
            name="bench-cold",
            memory_mib=64,
            disks=[DiskSpec(pool="local", format="raw", capacity_mib=DISK_MIB, write_mib=WRITTEN_MIB)],
            nics=[NicSpec(network="app-net")],
            start=False,
        )
        guests.volumes.append(("local", "bench-cold-vda.qcow2"))
        return _measure(lab, guests, guest, owner, team)
    finally:
        guests.cleanup()
        _stop_nbd(lab)
        subprocess.run(["lab/labctl", "exec", "h1", "--", "rm", "-f", BASELINE_FILE], check=False, capture_output=True)
        # the plans, runs and user stay in the bench database, which the runner drops


def _measure(lab: dict[str, Any], guests: Any, guest: Any, owner: Any, team: Any) -> list[dict[str, Any]]:
    import libvirt
    from django.conf import settings

    from inventory.hypervisor.measure import qemu_start_time
    from inventory.models import Host, VirtualMachine
    from inventory.services.hosts import register_host
    from inventory.services.sync import sync_host
    from migrations_app.engine import cold
    from migrations_app.models import MigrationPlan, MigrationRun, PlanItem, RetainedDisk
    from tests.base import LABCTL

    hosts = {}
    for entry in lab["hosts"]:
        if entry["name"] in ("h1", "h2"):
            existing = Host.objects.filter(name=entry["name"]).first()
            hosts[entry["name"]] = existing or register_host(
                None, name=entry["name"], uri=entry["uri"], migration_uri=entry["migration_uri"], sync=False
            )
    original_xml = guests.conn("h1").lookupByUUIDString(guest.uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    source_path = guest.disks[0]["path"]
    runs: dict[str, list[MigrationRun]] = {"mirror": [], "stream": []}

    def put_back() -> None:
        """The VM back on h1 with its raw disk, nothing on h2."""
        for name in ("h2", "h1"):
            try:
                dom = guests.conn(name).lookupByUUIDString(guest.uuid)
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        pool = guests.conn("h2").storagePoolLookupByName("local")
        pool.refresh(0)
        try:
            pool.storageVolLookupByName("bench-cold-vda.qcow2").delete(0)
        except libvirt.libvirtError:
            pass
        guests.conn("h1").defineXML(original_xml)
        for host in hosts.values():
            sync_host(host.pk)

    def cold_move(path: str, running: bool = False) -> MigrationRun:
        put_back()  # untimed
        if running:
            guests.conn("h1").lookupByUUIDString(guest.uuid).create()
            sync_host(hosts["h1"].pk)
        settings.COLD_COPY = path
        vm = VirtualMachine.objects.get(uuid=guest.uuid)
        plan = MigrationPlan.objects.create(
            name="bench cold",
            requester=owner,
            team=team,
            mode="cold",
            status="approved",
            fresh_backup=False,
            shutdown_timeout_s=1,
            allow_force_off=True,
        )
        item = PlanItem.objects.create(
            plan=plan,
            vm=vm,
            source=hosts["h1"],
            destination=hosts["h2"],
            mode="cold",
            network_map={guest.macs[0]: "app-lan"},
            storage_map={"vda": {"pool": "local", "format": "qcow2"}},
        )
        from migrations_app.services.runs import start_item

        run = start_item(None, item)
        cold.execute(run.pk)
        run.refresh_from_db()
        if run.status != "succeeded":
            raise RuntimeError(f"cold move failed: {run.error} {run.outcome}")
        if run.scratch["cold"].get("copy_path") != path:
            raise RuntimeError(f"cold move took the {run.scratch['cold'].get('copy_path')} path, not {path}")
        runs[path].append(run)
        return run

    wire: dict[str, list[int]] = {"mirror": [], "stream": [], "peer": []}

    def copy_phase(path: str) -> Callable[[], float]:
        def measure() -> float:
            sent = _tx_bytes(lab, "h1")
            seconds = float(cold_move(path).scratch["cold"]["copy_phase_s"])
            wire[path].append(_tx_bytes(lab, "h1") - sent)
            return seconds

        return measure

    def peer() -> float:
        """Reference (b): qemu-img convert on h1 into qemu-nbd serving a new qcow2 on h2."""
        address = _host(lab, "h2")["address"]
        _stop_nbd(lab)
        _labctl("exec", "h2", "--", "qemu-img", "create", "-q", "-f", "qcow2", NBD_FILE, f"{DISK_MIB}M")
        pid_file = f"{_host(lab, 'h2')['pools_by_name']['local']['path']}/{NBD_PID}"
        # --fork returns once the server listens; it exits by itself when the one client disconnects. Its
        # output goes nowhere: the forked server keeps the caller's stderr, and a pipe would never close.
        subprocess.run(
            [
                str(LABCTL), "exec", "h2", "--", "qemu-nbd", "--fork", f"--pid-file={pid_file}", "-f", "qcow2",
                "-b", address, "-p", str(NBD_PORT), "-x", "disk", NBD_FILE,
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        sent = _tx_bytes(lab, "h1")
        started = time.perf_counter()
        _labctl(
            "exec", "h1", "--", "qemu-img", "convert", "-n", "--target-is-zero", "-f", "raw", "-O", "raw",
            source_path, f"nbd://{address}:{NBD_PORT}/disk",
        )  # fmt: skip
        seconds = time.perf_counter() - started
        wire["peer"].append(_tx_bytes(lab, "h1") - sent)
        _check_peer_copy(lab, source_path)
        return seconds

    def baseline() -> float:
        _labctl("exec", "h1", "--", "rm", "-f", BASELINE_FILE)
        started = time.perf_counter()
        _labctl("exec", "h1", "--", "qemu-img", "convert", "-O", "qcow2", source_path, BASELINE_FILE)
        return time.perf_counter() - started

    paths = ("mirror", "stream")
    times: dict[str, list[float]] = {p: [] for p in paths}
    base: list[float] = []
    peers: list[float] = []
    downtime: dict[str, list[MigrationRun]] = {p: [] for p in paths}
    try:
        for p in paths:  # warm-up, not reported
            cold_move(p)
        baseline()
        peer()
        for p in paths:
            runs[p].clear()
        for key in wire:
            wire[key].clear()
        for _ in range(PAIRS):
            for p in paths:
                times[p].append(copy_phase(p)())
            base.append(baseline())
            peers.append(peer())
        for _ in range(DOWNTIME_RUNS):
            for p in paths:
                downtime[p].append(cold_move(p, running=True))
        floor = [_stream_floor(hosts["h1"].uri, hosts["h2"].uri, source_path) for _ in range(3)]
        # what libvirt takes to start a paused QEMU with no device at all, on each host: the block mirror
        # starts two (its carrier on h1, the incoming copy on h2) and stops two
        probes = [qemu_start_time(hosts[h].uri).seconds or 0.0 for _ in range(3) for h in ("h1", "h2")]
        link_mib_s = link_bandwidth(lab)
    finally:
        settings.COLD_COPY = "auto"
        put_back()
        for p in paths:
            for run in runs[p]:
                RetainedDisk.objects.filter(run=run).delete()
    allocated = _allocated(guests, source_path)
    results = []
    for p, label in (("mirror", "fast path: QEMU block mirror"), ("stream", "fallback: libvirt streams")):
        measured = runs[p][:PAIRS]
        transfers = [r.scratch["transfers"][0] for r in measured]
        inputs = {
            "disk": f"{DISK_MIB} MiB raw, {WRITTEN_MIB} MiB written",
            "target_format": "qcow2",
            "route": f"h1 -> h2 ({label})",
            "pairs": PAIRS,
        }
        if p == "stream":
            inputs["chunk_bytes"] = transfers[0]["chunk_size"]
        result = timing_result(
            f"cold_copy_phase_{p}",
            inputs,
            times[p],
            1e9,
            base,
            "qemu-img convert -O qcow2 of the same file alone",
        )
        ratio = statistics.median(times[p]) / statistics.median(base)
        ratio_peer = statistics.median(times[p]) / statistics.median(peers)
        result["reference_b"] = {
            "name": "qemu-img convert on h1 into qemu-nbd serving a new qcow2 on h2 (peer data path)",
            **summary(peers),
            "wire_bytes_median": int(statistics.median(wire["peer"])),
        }
        result["ratio_b"] = round(ratio_peer, 2)
        result["target"] = f"median ratio <= {TARGET_RATIO} against (a), and <= 1 against (b)"
        result["pass"] = ratio <= TARGET_RATIO and ratio_peer <= 1.0
        if p == "mirror":
            result["wire_bytes_median"] = int(statistics.median(wire[p]))
        else:
            # the streams run daemon -> portal -> daemon over UNIX sockets, not over the hosts' link
            result["wire_bytes_median"] = "n/a (through the portal process, not the lab link)"
        breakdown: dict[str, Any] = {
            "whole_run": round(
                statistics.median(
                    (r.finished_at - r.started_at).total_seconds() for r in measured if r.started_at and r.finished_at
                ),
                3,
            ),
        }
        if p == "stream":
            breakdown["convert_on_source"] = round(
                statistics.median(r.scratch["cold"]["convert_s"] for r in measured), 3
            )
            breakdown["copy_and_verify"] = round(statistics.median(t["seconds"] for t in transfers), 3)
            breakdown["of_which_verify"] = round(statistics.median(t["verify_seconds"] for t in transfers), 3)
            result["verification"] = "sha256 per 64 KiB block while streaming + full read-back of the destination"
        else:
            steps = [_mirror_steps(lab, r) for r in measured]
            for key in steps[0]:
                breakdown[key] = round(statistics.median(s[key] for s in steps), 3)
            result["libvirt_qemu_start_probe_median_s"] = round(statistics.median(probes), 3)
            result["verification"] = (
                "QEMU block-mirror completion (every block acknowledged by the destination's NBD server, "
                "the job failing the migration otherwise) + virtual size and format of the destination volume; "
                "no second read"
            )
        result["breakdown_median_s"] = breakdown
        result["bytes"] = {
            "data_sent": transfers[0]["bytes_sent"],
            "destination_allocated": transfers[0]["data_bytes"] if p == "mirror" else transfers[0]["size"],
            "disk_virtual_size": DISK_MIB * 1024 * 1024,
            "source_allocated": allocated,
        }
        if p == "stream":
            result["libvirt_stream_floor_median_s"] = {
                "what": "convert on h1 + one sparse download->upload stream h1->h2, no chunks, checksums or read-back",
                "seconds": round(statistics.median(floor), 3),
                "ratio_to_baseline": round(statistics.median(floor) / statistics.median(base), 2),
            }
        results.append(result)

        down = downtime[p]
        shutdown = statistics.median(r.scratch["cold"]["shutdown_s"] for r in down)
        start = statistics.median(r.scratch["cold"]["start_s"] for r in down)
        copy_floor = allocated / (link_mib_s * 1024 * 1024)
        results.append(
            {
                "name": f"cold_downtime_{p}",
                "inputs": {"runs": DOWNTIME_RUNS, "guest": "running, forced off after a 1 s grace", **inputs},
                "unit": "s",
                **summary([r.scratch["cold"]["downtime_s"] for r in down]),
                "samples": len(down),
                "floor_s": round(shutdown + copy_floor + start, 3),
                "floor_parts_s": {
                    "shutdown": round(shutdown, 3),
                    "allocated_data_at_link_speed": round(copy_floor, 3),
                    "start_on_destination": round(start, 3),
                },
                "link_mib_s": link_mib_s,
                "target": "shown beside the floor",
                "pass": True,
            }
        )
    return results


def _host(lab: dict[str, Any], name: str) -> dict[str, Any]:
    entry = dict(next(h for h in lab["hosts"] if h["name"] == name))
    entry["pools_by_name"] = {p["name"]: p for p in entry["pools"]}
    return entry


def _tx_bytes(lab: dict[str, Any], name: str) -> int:
    """Bytes sent so far on the host's link to the other lab hosts (its eth0)."""
    out = subprocess.run(
        ["ip", "-n", _host(lab, name)["netns"], "-s", "-j", "link", "show", "dev", "eth0"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["bytes"])


def _stop_nbd(lab: dict[str, Any]) -> None:
    """The reference (b) server, if one was left running (a failed convert), and its files."""
    pool = _host(lab, "h2")["pools_by_name"]["local"]["backing_dir"]
    pid_file = os.path.join(pool, NBD_PID)
    try:
        with open(pid_file) as fh:
            pid = int(fh.read().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    if pid and _is_qemu_nbd(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
    for path in (pid_file, os.path.join(pool, os.path.basename(NBD_FILE))):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _is_qemu_nbd(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip() == "qemu-nbd"
    except OSError:
        return False


def _check_peer_copy(lab: dict[str, Any], source_path: str) -> None:
    """Reference (b) produced the same content (untimed)."""
    pool = _host(lab, "h2")["pools_by_name"]["local"]["backing_dir"]
    source = os.path.join(_host(lab, "h1")["pools_by_name"]["local"]["backing_dir"], os.path.basename(source_path))
    pid_file = os.path.join(pool, NBD_PID)
    for _ in range(250):  # the server closes the image and exits after the client left
        try:
            with open(pid_file) as fh:
                if not _is_qemu_nbd(int(fh.read().strip())):
                    break
        except (OSError, ValueError):
            break
        time.sleep(0.02)
    else:
        raise RuntimeError("qemu-nbd did not exit after its client left")  # _stop_nbd ends it
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pid_file)
    subprocess.run(
        [
            "qemu-img",
            "compare",
            "-q",
            "-f",
            "raw",
            "-F",
            "qcow2",
            source,
            os.path.join(pool, os.path.basename(NBD_FILE)),
        ],
        check=True,
    )


def _log_stamps(log_dir: str, name: str, since: float) -> dict[str, float]:
    """Wall-clock times of libvirt's lines in a domain's QEMU log from `since` on: the first
    "starting up", "initiating migration" and "shutting down" after it."""
    found: dict[str, float] = {}
    try:
        with open(os.path.join(log_dir, f"{name}.log"), errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return found
    for line in lines:
        if len(line) < 30 or line[28:30] != ": ":
            continue
        try:
            at = datetime.strptime(line[:28], "%Y-%m-%d %H:%M:%S.%f%z").timestamp()
        except ValueError:
            continue
        if at < since - 0.002:
            continue
        for key in ("starting up", "initiating migration", "shutting down"):
            if line[30:].startswith(key):
                found.setdefault(key, at)
    return found


def _mirror_steps(lab: dict[str, Any], run: Any) -> dict[str, float]:
    """Where one block-mirror copy phase went, in seconds, in order."""
    cold_state = run.scratch["cold"]
    mirror = cold_state["mirror"]
    line = mirror["timeline"]
    wall = mirror["started_wall"]
    name = mirror.get("carrier") or run.vm.name
    src = _log_stamps(_host(lab, "h1")["console_log_dir"], name, wall)
    dst = _log_stamps(_host(lab, "h2")["console_log_dir"], name, wall)
    called = wall + line["migrate_called"]
    dest_up = dst.get("starting up", called)
    ready = src.get("initiating migration", dest_up)
    stopped = src.get("shutting down", ready)
    progress = wall + line.get("disk_progress", ready - wall)
    steps = {
        "volumes_created": mirror.get("volumes_s", 0.0),
        "carrier_started_paused_on_source": line["started_paused"] - line["connected"],
        "migration_begin_to_destination_qemu_launch": dest_up - called,
        "destination_qemu_launch_to_first_disk_progress": progress - dest_up,
        "first_disk_progress_to_mirror_ready": ready - progress,
        "memory_and_switchover": stopped - ready,
        "source_qemu_stop_until_migrate_returns": wall + line["migrated"] - stopped,
        "destination_copy_destroyed": mirror["destroy_s"],
        "volume_checks": mirror.get("check_s", 0.0),
    }
    steps["engine_bookkeeping_rest"] = float(cold_state["copy_phase_s"]) - sum(steps.values())
    return {k: round(v, 3) for k, v in steps.items()}


def _allocated(guests: Any, path: str) -> int:
    """Bytes allocated by the source disk file (what any copy must move at least)."""
    vol = guests.conn("h1").storageVolLookupByPath(path)
    return int(vol.info()[2])


def _stream_floor(source_uri: str, destination_uri: str, source_path: str) -> float:
    """The least any copy through libvirt can cost here: libvirt's conversion, then the file through one
    sparse download stream piped into one upload stream (what the portal does, minus its safety)."""
    import libvirt

    from inventory.hypervisor.storage import VolumeHost

    name = "bench-cold-floor.qcow2"
    src, dst = VolumeHost(source_uri), VolumeHost(destination_uri)
    c1, c2 = libvirt.open(source_uri), libvirt.open(destination_uri)
    converted = target = None
    try:
        started = time.perf_counter()
        converted = src.convert(source_path, "local", name, "qcow2")
        target = dst.create_target("local", name)
        down, up = c1.newStream(0), c2.newStream(0)
        c1.storageVolLookupByPath(converted.path).download(
            down, 0, converted.physical, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM
        )
        c2.storageVolLookupByPath(target.path).upload(
            up, 0, converted.physical, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM
        )
        while True:
            data = down.recvFlags(1024 * 1024, libvirt.VIR_STREAM_RECV_STOP_AT_HOLE)
            if isinstance(data, int):
                if data == -3:
                    up.sendHole(down.recvHole(0), 0)
                continue
            if not data:
                break
            up.send(data)
        down.finish()
        up.finish()
        return time.perf_counter() - started
    finally:
        if converted is not None:
            src.delete(converted.path)
        if target is not None:
            dst.delete(target.path)
        src.close()
        dst.close()
        c1.close()
        c2.close()
