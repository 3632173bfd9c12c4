"""The CHECKS.md post-migration catalogue (VAL-RUNNING … VAL-PROBES), in the order they run.

Checks that read the guest itself (agent, probes, console) come last: by then a cold move's guest
has had the time the earlier checks took to boot.
"""

from __future__ import annotations

import os
import re
import socket
import time
import urllib.error
import urllib.request
from typing import Any

from .context import ProbeSpec, ValidationContext
from .registry import Finding, fail, info, passed, register, warn

#: console and kernel-log lines that mean the guest is in trouble
TROUBLE = re.compile(
    r"Kernel panic|Oops|Call Trace|BUG:|general protection fault|I/O error|EXT4-fs error|soft lockup|"
    r"hung_task|Out of memory|segfault at|end Kernel panic",
    re.IGNORECASE,
)
MAX_LINES = 40


def _gone(ctx: ValidationContext) -> Finding | None:
    if not ctx.dest.reachable:
        return warn(
            f"Cannot decide: {ctx.destination_name} does not answer ({ctx.dest.error}).",
            remediation=f"Make {ctx.destination_name} reachable, then look at the VM by hand.",
        )
    if not ctx.dest.exists or ctx.dest.domain is None:
        return fail(
            f"The VM is not defined on {ctx.destination_name}.",
            expected=ctx.destination_name,
            found="absent",
            remediation="Look for the VM on both hosts before anything else.",
        )
    return None


@register("VAL-RUNNING")
def running(ctx: ValidationContext) -> Finding:
    """The domain runs on the destination (not paused)."""
    if (problem := _gone(ctx)) is not None:
        return problem
    state = ctx.dest.state + (f" ({ctx.dest.reason})" if ctx.dest.reason else "")
    expected = "running" if ctx.before.get("state", "running") == "running" else ctx.before.get("state")
    if ctx.dest.state == expected or (expected != "running" and ctx.dest.state == "shutoff"):
        return passed(f"The VM is {state} on {ctx.destination_name}.", expected, state)
    return fail(
        f"The VM is {state} on {ctx.destination_name}, not {expected}.",
        expected,
        state,
        "Look at the guest's console; resume or restart it, or move it back.",
    )


@register("VAL-SOURCE")
def source_stopped(ctx: ValidationContext) -> Finding:
    """The domain no longer runs on the source (no split brain)."""
    src = ctx.source
    if not src.reachable:
        return warn(
            f"Cannot decide: {ctx.source_name} does not answer ({src.error}).",
            remediation=f"Check by hand that the VM does not run on {ctx.source_name} as well.",
        )
    if not src.exists:
        return passed(f"The VM's definition is gone from {ctx.source_name}.", "absent or shut off", "absent")
    if src.state in ("running", "paused", "crashed"):
        return fail(
            f"The VM still runs on {ctx.source_name} ({src.state}) as well as on {ctx.destination_name}: split brain.",
            "absent or shut off",
            src.state,
            f"Stop one of the two copies at once (the one on {ctx.source_name} unless it is the one in use).",
        )
    note = "kept shut off until validation passes, then removed" if ctx.mode == "cold" else "kept shut off"
    return passed(
        f"The source definition on {ctx.source_name} is {src.state} ({note}).", "absent or shut off", src.state
    )


@register("VAL-PERSIST")
def persistent(ctx: ValidationContext) -> Finding:
    """The destination definition is persistent."""
    if (problem := _gone(ctx)) is not None:
        return problem
    if ctx.dest.persistent:
        return passed(f"The definition on {ctx.destination_name} is persistent.", True, True)
    return fail(
        f"The VM on {ctx.destination_name} is transient: it would vanish when it stops.",
        True,
        False,
        "Define it persistently on the destination (virsh dumpxml | virsh define).",
    )


@register("VAL-SHAPE")
def shape(ctx: ValidationContext) -> Finding:
    """vCPUs, memory, CPU model and machine type as planned."""
    if (problem := _gone(ctx)) is not None:
        return problem
    assert ctx.dest.domain is not None  # noqa: S101
    if not ctx.before:
        return warn("Cannot decide: the VM's definition was not read before the move.")
    now = ctx.dest.domain
    found = {"vcpus": now.vcpus, "memory": now.memory, "cpu_model": now.cpu_model, "machine_type": now.machine_type}
    expected = {k: ctx.before.get(k) for k in found}
    differ = [k for k in found if expected[k] != found[k]]
    if differ:
        return fail(
            f"Different on the destination: {', '.join(differ)}.",
            expected,
            found,
            "Compare the two definitions; correct the destination's and restart the VM in a window.",
        )
    return passed(
        f"{now.vcpus} vCPU, {now.memory // (1024 * 1024)} MiB, machine {now.machine_type}, as before.", expected, found
    )


@register("VAL-DISKS")
def disks(ctx: ValidationContext) -> Finding:
    """Disk count, sizes, formats and pools as mapped; cold copies verified by checksum."""
    if (problem := _gone(ctx)) is not None:
        return problem
    assert ctx.dest.domain is not None  # noqa: S101
    before = {d["target"]: d for d in ctx.before.get("disks", [])}
    now = {d.target: d for d in ctx.dest.domain.disks if d.device in ("disk", "lun") and d.source}
    problems: list[str] = []
    found: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    for target, disk in before.items():
        choice = ctx.storage_map.get(target) or {}
        fmt = disk["format"] if choice.get("format", "keep") in ("", "keep") else choice["format"]
        if ctx.mode == "cold" and fmt not in ("qcow2", "raw"):
            fmt = "qcow2"  # foreign formats are converted by a cold move
        pool = choice.get("pool", "")
        expected[target] = {"size": disk.get("size"), "format": fmt, "pool": pool}
        got = now.get(target)
        if got is None:
            problems.append(f"{target} is missing")
            continue
        size = ctx.dest.disk_sizes.get(target)
        directory = ctx.pool_paths.get(pool, "")
        in_pool = bool(directory) and os.path.dirname(got.source) == directory.rstrip("/")
        found[target] = {"size": size, "format": got.format, "pool": pool if in_pool else got.source}
        if disk.get("size") is not None and size is not None and size != disk["size"]:
            problems.append(f"{target} is {size} bytes, was {disk['size']}")
        if got.format != fmt:
            problems.append(f"{target} is {got.format}, planned {fmt}")
        if pool and directory and not in_pool:
            problems.append(f"{target} is not in pool {pool}")
    extra = sorted(set(now) - set(before))
    if extra:
        problems.append(f"unexpected disk(s) {', '.join(extra)}")
    if ctx.mode == "cold":
        unverified = [t.get("target", "?") for t in ctx.transfers if not t.get("verified")]
        found["checksums"] = {t.get("target", "?"): t.get("digest", "")[:16] for t in ctx.transfers}
        if unverified:
            problems.append(f"copy of {', '.join(unverified)} not verified by checksum")
    if problems:
        return fail(
            "; ".join(problems) + ".",
            expected,
            found,
            "Compare the disks with the plan's storage mapping; move the VM back if data may be missing.",
        )
    if not before:
        return passed("The VM has no disks to compare.", expected, found)
    note = ""
    if ctx.mode == "cold" and ctx.transfers:
        mirrored = any(t.get("method") == "mirror" for t in ctx.transfers)
        note = ", copies completed by QEMU's block mirror" if mirrored else ", copies verified by checksum"
    return passed(f"{len(before)} disk(s) as mapped{note}.", expected, found)


@register("VAL-NICS")
def nics(ctx: ValidationContext) -> Finding:
    """Same MACs, attached to the mapped networks, link up."""
    if (problem := _gone(ctx)) is not None:
        return problem
    assert ctx.dest.domain is not None  # noqa: S101
    before = {n["mac"]: n for n in ctx.before.get("nics", [])}
    now = {n.mac: n for n in ctx.dest.domain.nics}
    expected: dict[str, Any] = {}
    found: dict[str, Any] = {}
    problems: list[str] = []
    for mac, nic in before.items():
        net = ctx.network_map.get(mac) or nic["network"]
        expected[mac] = {"network": net, "link": "up"}
        got = now.get(mac)
        if got is None:
            problems.append(f"NIC {mac} is missing")
            continue
        got_net = got.network or got.bridge
        link = ctx.dest.nic_links.get(mac, "up")
        found[mac] = {"network": got_net, "link": link}
        if got_net != net:
            problems.append(f"NIC {mac} is on {got_net}, mapped to {net}")
        elif got.network and not ctx.dest.networks.get(got_net, False):
            problems.append(f"network {got_net} is not active on {ctx.destination_name}")
        if link != "up":
            problems.append(f"NIC {mac} has its link {link}")
    extra = sorted(set(now) - set(before))
    if extra:
        problems.append(f"unexpected NIC(s) {', '.join(extra)}")
        found["unexpected"] = extra
    if problems:
        return fail(
            "; ".join(problems) + ".",
            expected,
            found,
            "Attach each NIC to its mapped network (virsh domif-setlink / update-device), or move the VM back.",
        )
    return passed(f"{len(before)} NIC(s) with the same MACs on the mapped networks, link up.", expected, found)


@register("VAL-SECURITY")
def security(ctx: ValidationContext) -> Finding:
    """Network filters and security labels present on the destination as on the source."""
    if (problem := _gone(ctx)) is not None:
        return problem
    assert ctx.dest.domain is not None  # noqa: S101
    now = {n.mac: n.filter for n in ctx.dest.domain.nics}
    expected = {
        "filters": {n["mac"]: n.get("filter", "") for n in ctx.before.get("nics", [])},
        "seclabels": ctx.before.get("seclabels", []),
    }
    found = {"filters": {mac: now.get(mac, "") for mac in expected["filters"]}, "seclabels": sorted(ctx.dest.seclabels)}
    problems: list[str] = []
    for mac, wanted in expected["filters"].items():
        if not wanted:
            continue
        if now.get(mac, "") != wanted:
            problems.append(f"NIC {mac} lost its network filter {wanted}")
        elif wanted not in ctx.dest.nwfilters:
            problems.append(f"filter {wanted} is not defined on {ctx.destination_name}")
    if set(expected["seclabels"]) != set(found["seclabels"]):
        problems.append("security labels differ")
    if problems:
        return fail(
            "; ".join(problems) + ".",
            expected,
            found,
            "Define the filter on the destination and put it back on the NIC (or restore the security label).",
        )
    filters = sorted({f for f in expected["filters"].values() if f})
    what = f"filter(s) {', '.join(filters)} in place" if filters else "no network filters to carry"
    return passed(
        f"Security as on the source: {what}; security labels {found['seclabels'] or 'none'}.", expected, found
    )


@register("VAL-DOWNTIME")
def downtime(ctx: ValidationContext) -> Finding:
    """Measured downtime (completed job stats) within the plan's limit."""
    limit = ctx.max_downtime_ms
    expected = {"limit_ms": limit}
    if ctx.mode == "cold":
        measured = ctx.baseline.get("cold_downtime_s")
        return info(
            "A cold move stops the VM: "
            + (f"it was unavailable for {measured:.1f} s" if measured is not None else "unavailable while copied")
            + " (the downtime limit applies to live moves).",
            expected,
            {"unavailable_s": measured},
        )
    if ctx.postcopy and ctx.downtime_ms is None:
        return warn("Cannot decide: libvirt reports no downtime for a move that switched to post-copy.", expected, None)
    if ctx.downtime_ms is None:
        return warn("Cannot decide: libvirt gave no completed job figures for the move.", expected, None)
    found = {"downtime_ms": ctx.downtime_ms}
    if limit is not None and ctx.downtime_ms > limit:
        return fail(
            f"Downtime {ctx.downtime_ms:.0f} ms, above the plan's limit of {limit} ms.",
            expected,
            found,
            "Tell the VM's owners; plan the next moves with a lower dirty rate or a longer window.",
        )
    return passed(
        f"Downtime {ctx.downtime_ms:.0f} ms" + (f", within the plan's limit of {limit} ms." if limit else "."),
        expected,
        found,
    )


@register("VAL-CONTINUITY")
def continuity(ctx: ValidationContext) -> Finding:
    """Live moves: the guest did not reboot."""
    if ctx.mode != "live":
        return info("Not applicable: a cold move restarts the guest.")
    before = ctx.agent_before or {}
    after = ctx.agent_after
    if not ctx.has_agent:
        return warn("Cannot tell: the VM has no guest agent channel to read its boot id.")
    if after is None or not after.answered:
        return warn(f"Cannot tell: the guest agent does not answer ({after.error if after else 'no agent'}).")
    expected = {"boot_id": before.get("boot_id", ""), "uptime_s": before.get("uptime_s")}
    found = {"boot_id": after.boot_id, "uptime_s": after.uptime_s}
    if before.get("boot_id") and after.boot_id:
        if before["boot_id"] == after.boot_id:
            return passed("Same boot id as before the move: the guest did not reboot.", expected, found)
        return fail(
            "The guest's boot id changed: it rebooted during or after the move.",
            expected,
            found,
            "Look at the guest's console and logs for the reason of the reboot.",
        )
    if before.get("uptime_s") is not None and after.uptime_s is not None:
        if after.uptime_s >= before["uptime_s"]:
            return passed("The guest's uptime kept counting: it did not reboot.", expected, found)
        return fail("The guest's uptime went back: it rebooted.", expected, found)
    return warn("Cannot tell: the guest agent gave neither a boot id nor an uptime.", expected, found)


@register("VAL-AGENT")
def agent(ctx: ValidationContext) -> Finding:
    """Guest agent answers; file systems mounted and IP addresses as recorded before the move."""
    if not ctx.expect_running:
        return info("The VM was moved stopped, as it was: no guest agent to ask.")
    if not ctx.has_agent:
        return info("The VM has no guest agent channel; nothing to compare.")
    after = ctx.agent_after
    assert after is not None  # noqa: S101
    before = ctx.agent_before
    if not after.answered:
        return fail(
            f"The guest agent does not answer on {ctx.destination_name} (waited {after.waited_s:.0f} s): {after.error}",
            "answers",
            {"error": after.error},
            "Look at the guest's console: it may not have booted, or the agent is not running.",
        )
    if before is None or not before.get("answered"):
        return warn(
            "The guest agent answers now, but did not before the move: nothing to compare.",
            before,
            after.as_dict(),
        )
    mounts_before = {tuple(f)[0] for f in before.get("filesystems", [])}
    mounts_now = {f[0] for f in after.filesystems}
    problems = [f"{m} is no longer mounted" for m in sorted(mounts_before - mounts_now)]
    for mac, ips in (before.get("addresses") or {}).items():
        wanted = {ip for ip in ips if not ip.startswith("fe80:")}
        have = set(after.addresses.get(mac, []))
        for ip in sorted(wanted - have):
            problems.append(f"{ip} is no longer on NIC {mac}")
    expected = {"filesystems": sorted(mounts_before), "addresses": before.get("addresses")}
    found = {"filesystems": sorted(mounts_now), "addresses": after.addresses}
    if problems:
        return fail(
            "; ".join(problems) + ".",
            expected,
            found,
            "Mount the file systems and restore the addresses (see the guest's logs), or move the VM back.",
        )
    return passed(
        f"The guest agent answers; {len(mounts_before)} file system(s) and the addresses as before the move.",
        expected,
        found,
    )


def _probe_once(probe: ProbeSpec, timeout: float) -> tuple[bool, str]:
    if probe.kind == "http":
        url = f"http://{probe.address}:{probe.port}{probe.path or '/'}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (an owner's http probe)
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, ValueError) as exc:
            return False, f"{url}: {exc}"
        wanted = probe.expect_status or 200
        return status == wanted, f"{url} answered {status} (expected {wanted})"
    try:
        with socket.create_connection((probe.address, probe.port), timeout=timeout):
            return True, f"{probe.address}:{probe.port} accepts connections"
    except OSError as exc:
        return False, f"{probe.address}:{probe.port}: {exc.strerror or exc}"


@register("VAL-PROBES")
def probes(ctx: ValidationContext) -> Finding:
    """Owner-defined probes (TCP port, HTTP status) pass."""
    if not ctx.probes:
        return info("The VM's team defined no probes.")
    if not ctx.expect_running:
        return info("The VM was moved stopped, as it was: its probes run after it is started.")
    results: dict[str, str] = {}
    failed: list[str] = []
    for probe in ctx.probes:
        if not probe.address:
            failed.append(probe.label)
            results[probe.label] = "no address: set one on the probe, or give the VM a guest agent"
            continue
        first = time.monotonic()
        end = first + ctx.waits.probe_s
        while True:
            ok, detail = _probe_once(probe, timeout=2.0)
            if ok or time.monotonic() >= end:
                break
            time.sleep(0.5)
        # a probe is waiting for the guest's service to answer (a guest that has just booted may need
        # a retry, or a TCP retransmission while its network comes up)
        ctx.note_wait("probes", time.monotonic() - first)
        results[probe.label] = detail
        if not ok:
            failed.append(probe.label)
    expected = [p.label for p in ctx.probes]
    if failed:
        return fail(
            f"{len(failed)} of {len(ctx.probes)} probe(s) failed: {'; '.join(results[f] for f in failed)}.",
            expected,
            results,
            "Check the service in the guest and the firewall on the destination's network.",
        )
    return passed(f"{len(ctx.probes)} probe(s) passed.", expected, results)


@register("VAL-CONSOLE")
def console(ctx: ValidationContext) -> Finding:
    """The guest console since the move shows no kernel panic, oops, call trace or driver error lines."""
    if not ctx.expect_running:
        return info("The VM was moved stopped, as it was: no console to read.")
    capture = ctx.console
    lines = [ln.strip() for ln in capture.text.splitlines() if TROUBLE.search(ln)]
    sources = [f"console watched for {capture.seconds:.1f} s"]
    log, why = ctx.kernel_log
    if log is not None:
        since = None
        after = ctx.agent_after
        if (
            ctx.mode == "live"
            and after is not None
            and after.uptime_s is not None
            and ctx.seconds_since_move is not None
        ):
            since = after.uptime_s - ctx.seconds_since_move - 1.0  # kernel log lines since the switch-over
        for ln in log.splitlines():
            if not TROUBLE.search(ln):
                continue
            stamp = re.match(r"\[\s*(\d+\.\d+)\]", ln)
            if since is not None and stamp and float(stamp.group(1)) < since:
                continue
            lines.append(ln.strip())
        sources.append("kernel log through the guest agent" + (" since the move" if since is not None else ""))
    now = ctx.dest_now()
    state = now.state + (f" ({now.reason})" if now.reason else "")
    found: dict[str, Any] = {"lines": lines[:MAX_LINES], "state": state, "read": sources}
    if capture.error and not capture.text:
        found["console_error"] = capture.error
    if lines or now.state == "crashed":
        first = next((ln for ln in lines if "panic" in ln.lower()), lines[0] if lines else "")
        return fail(
            f"The guest reported trouble after the move ({state}): {first or 'it crashed'}",
            "no panic, oops, call trace or driver errors",
            found,
            "Read the console lines; move the VM back (live) or leave the rolled-back source running (cold).",
        )
    if capture.error and not capture.text and log is None:
        return warn(f"Cannot read the guest's console ({capture.error}) nor its kernel log ({why}).", None, found)
    return passed(
        "No panic, oops, call trace or driver error lines since the move (" + "; ".join(sources) + ").", None, found
    )
