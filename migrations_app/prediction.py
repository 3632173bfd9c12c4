"""Predicting how long a move takes, how long the VM is unavailable, and which mode to use.

The model, in short
-------------------
Live (pre-copy). The first pass sends the memory the guest has ever written (QEMU's resident set,
an upper bound; untouched pages cost almost nothing). Each later pass resends what the guest dirtied
during the previous one (measured dirty rate × the pass's length). QEMU stops the guest and sends the
rest once that rest fits into the plan's maximum downtime at the effective bandwidth, which is the
lower of the link bandwidth and the plan's bandwidth cap. If the dirty rate keeps the rest from
shrinking, the move needs auto-converge (QEMU throttles the vCPUs from 20 % in steps of 10 % up to
99 %, its defaults); if even that does not get there, it will not converge: use cold or post-copy.
Local disks (pools that are not shared) are mirrored first: their allocated bytes at the bandwidth
or the destination's write throughput, whichever is lower, after a fixed mirror setup (~0.4 s on the lab).
A setup cost comes first: starting the destination QEMU plus the handshakes. It is the median of past
moves between the same hosts when there are some, else the time the destination takes right now to
start a paused probe QEMU plus a fixed ~0.2 s of handshakes, else a constant 0.5 s (the lab: idle
guests move in ~0.55–0.6 s, of which ~0.3 s is that QEMU start and ~0.04 s the memory itself).

Cold. Shut down (a typical figure; the plan's shutdown timeout is the upper bound), copy the
allocated bytes of every disk that leaves its pool at the lower of the destination's measured write
throughput and the link bandwidth, define and start on the destination. The VM is unavailable for
all of it, plus its own boot until its services answer (an assumption, shown as an input).

Every figure used is stored in `Prediction.inputs` with where it came from (measured, history,
admin-set, nominal, assumed), so the plan page can show the inputs beside the numbers.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from migrations_app import rules
from migrations_app.choices import Mode, RunStatus, Verdict

if TYPE_CHECKING:
    from inventory.models import Host
    from migrations_app.models import MigrationPlan, PlanItem, Prediction

MIB = 1024 * 1024

#: Starting the destination QEMU and the migration handshakes. Measured on the lab: idle 64–512 MiB
#: guests move in ~0.55–0.6 s wall, most of it before the first memory page is sent.
SETUP_S = 0.5
#: Handshakes around the destination QEMU's start (source prepare/perform/finish/confirm steps). Lab:
#: idle moves 0.55–0.6 s = ~0.3 s probe QEMU start + ~0.04 s memory + ~0.2 s of this.
HANDSHAKE_S = 0.2
#: Extra setup of a move that mirrors local disks: the destination's NBD server, the volumes pre-created
#: through its pool, the mirror jobs. Lab: a raw disk of 256 MiB (64 MiB written) added ~0.5 s to an idle
#: move, of which ~0.1 s was the copy itself.
DISK_MIRROR_SETUP_S = 0.4
#: Device state and the final handshake while the guest is paused (lab: 10–20 ms for idle guests).
SWITCHOVER_MS = 15.0
#: After this many passes without converging, pre-copy counts as not converging on its own.
MAX_ITERATIONS = 30
#: QEMU's auto-converge defaults: cpu-throttle-initial, cpu-throttle-increment, max-cpu-throttle.
THROTTLE_INITIAL, THROTTLE_INCREMENT, THROTTLE_MAX = 0.20, 0.10, 0.99
#: Cold moves: a guest with working ACPI shuts down in seconds; the plan's timeout bounds it.
SHUTDOWN_TYPICAL_S = 10.0
#: define + start of the destination QEMU (lab: ~0.3 s).
START_S = 0.5
#: The guest's own boot until its services answer: not measurable beforehand, so an assumption.
BOOT_ASSUMED_S = 30.0
#: Link bandwidth when nothing better is known: 1 Gbit/s.
DEFAULT_LINK_BPS = 125_000_000.0
#: Past moves looked at for the link bandwidth and the setup cost.
HISTORY_RUNS = 10


# ---- pure model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Precopy:
    converged: bool
    iterations: int
    transfer_s: float  # from the first memory page to the guest running on the destination
    bytes_sent: int
    final_bytes: int  # sent while the guest is paused
    downtime_ms: float | None
    max_throttle: float = 0.0  # fraction of vCPU time taken away by auto-converge


def precopy(
    memory_bytes: int,
    dirty_bps: float,
    bandwidth_bps: float,
    max_downtime_ms: float,
    *,
    auto_converge: bool = False,
    max_iterations: int = MAX_ITERATIONS,
) -> Precopy:
    """Simulate pre-copy passes. Each pass sends what the previous one left dirty, capped at the memory;
    the guest pauses for the last one once it fits into `max_downtime_ms` at `bandwidth_bps`."""
    if bandwidth_bps <= 0:
        raise ValueError("bandwidth must be positive")
    limit = bandwidth_bps * max_downtime_ms / 1000
    remaining = float(memory_bytes)
    elapsed = sent = 0.0
    throttle = 0.0
    high = 0
    for iteration in range(1, max_iterations + 1):
        # The first pass always runs with the guest running; QEMU only stops it once it knows the bandwidth.
        if iteration > 1 and remaining <= limit:
            pause_s = remaining / bandwidth_bps
            return Precopy(
                converged=True,
                iterations=iteration,
                transfer_s=elapsed + pause_s,
                bytes_sent=int(sent + remaining),
                final_bytes=int(remaining),
                downtime_ms=pause_s * 1000 + SWITCHOVER_MS,
                max_throttle=throttle,
            )
        seconds = remaining / bandwidth_bps
        elapsed += seconds
        sent += remaining
        dirtied = min(dirty_bps * (1 - throttle) * seconds, float(memory_bytes))
        if auto_converge:
            # QEMU throttles once a pass dirties more than half of what it sent, twice in a row.
            high = high + 1 if dirtied > remaining / 2 else 0
            if high >= 2:
                throttle = THROTTLE_INITIAL if throttle == 0 else min(throttle + THROTTLE_INCREMENT, THROTTLE_MAX)
                dirtied = min(dirty_bps * (1 - throttle) * seconds, float(memory_bytes))
        elif dirtied >= remaining:
            break  # no progress: every pass leaves as much as the last
        remaining = dirtied
    return Precopy(
        converged=False,
        iterations=iteration,
        transfer_s=elapsed,
        bytes_sent=int(sent),
        final_bytes=int(remaining),
        downtime_ms=None,
        max_throttle=throttle,
    )


@dataclass(frozen=True)
class LiveInputs:
    memory_bytes: int  # the guest's memory size
    memory_in_use_bytes: int  # what the first pass sends
    dirty_bps: float | None  # None: not measured
    link_bps: float
    bandwidth_cap_bps: float | None = None
    max_downtime_ms: float = 300.0
    auto_converge: bool = True
    postcopy_allowed: bool = False
    disk_bytes: int = 0  # allocated bytes of local disks mirrored during the move
    disk_write_bps: float | None = None  # destination's write throughput into the disks' pool
    setup_s: float = SETUP_S
    running: bool = True


@dataclass(frozen=True)
class Estimate:
    mode: str
    verdict: str
    duration_s: float | None
    downtime_ms: float | None
    bytes_to_copy: int  # disk bytes
    load: dict[str, Any]
    explanation: str
    possible: bool = True
    detail: dict[str, Any] = field(default_factory=dict)


def effective_bandwidth(link_bps: float, cap_bps: float | None) -> float:
    return min(link_bps, cap_bps) if cap_bps else link_bps


def live_estimate(i: LiveInputs) -> Estimate:
    """Pre-copy prediction with a convergence verdict, or post-copy when pre-copy cannot finish."""
    if not i.running:
        return Estimate(
            Mode.LIVE,
            Verdict.NOT_APPLICABLE,
            None,
            None,
            i.disk_bytes,
            {},
            "A live move needs a running VM; this one is not running.",
            possible=False,
        )
    bw = effective_bandwidth(i.link_bps, i.bandwidth_cap_bps)
    dirty = i.dirty_bps or 0.0
    # The mirror is bounded by the network and by how fast the destination writes.
    disk_rate = min(bw, i.disk_write_bps) if i.disk_write_bps else bw
    disk_s = i.disk_bytes / disk_rate + (DISK_MIRROR_SETUP_S if i.disk_bytes else 0.0)
    plain = precopy(i.memory_in_use_bytes, dirty, bw, i.max_downtime_ms)
    throttled = (
        plain if plain.converged else precopy(i.memory_in_use_bytes, dirty, bw, i.max_downtime_ms, auto_converge=True)
    )
    rate = f"{dirty / MIB:.0f} MiB/s" if i.dirty_bps is not None else "unknown"
    base = (
        f"{i.memory_in_use_bytes / MIB:.0f} MiB of memory in use, dirtied at {rate}, sent at {bw / MIB:.0f} MiB/s"
        + (f" after mirroring {i.disk_bytes / MIB:.0f} MiB of local disk" if i.disk_bytes else "")
        + f"; {i.setup_s:.1f} s setup."
    )
    result = plain
    postcopy_used = False
    if i.dirty_bps is None:
        verdict = Verdict.UNKNOWN
        text = "The dirty rate could not be measured, so this assumes an idle guest (best case). "
    elif plain.converged:
        verdict = Verdict.CONVERGES
        text = f"Converges after {plain.iterations} passes. "
    elif throttled.converged:
        verdict = Verdict.NEEDS_AUTO_CONVERGE
        result = throttled
        text = (
            f"The guest dirties memory about as fast as it can be sent: it converges only with auto-converge "
            f"throttling its vCPUs by up to {throttled.max_throttle:.0%}"
            + ("" if i.auto_converge else ", which this plan does not enable")
            + ". "
        )
    else:
        verdict = Verdict.WILL_NOT_CONVERGE
        text = (
            f"Will not converge at {bw / MIB:.0f} MiB/s: the guest dirties {dirty / MIB:.0f} MiB/s, even auto-converge "
            "cannot bring the rest under the downtime limit. "
        )
        result = throttled
        postcopy_used = i.postcopy_allowed
    if postcopy_used:
        # One full pass, then switch: the guest runs on the destination and pulls what it dirtied meanwhile.
        one_pass = i.memory_in_use_bytes / bw
        pulled = min(dirty * one_pass, float(i.memory_bytes))
        transfer_s = one_pass + pulled / bw
        network = int(i.memory_in_use_bytes + pulled)
        downtime: float | None = SWITCHOVER_MS
        text += "With post-copy (allowed by the plan) it finishes: the guest switches after one pass. "
        duration: float | None = i.setup_s + disk_s + transfer_s
    elif result.converged:
        network = result.bytes_sent
        downtime = result.downtime_ms
        duration = i.setup_s + disk_s + result.transfer_s
    else:
        network = result.bytes_sent
        downtime = None
        duration = None
        text += "Suggest a cold move, or allow post-copy. "
    load = {
        "network_bytes": network + i.disk_bytes,
        "network_bps": (network + i.disk_bytes) / max(duration - i.setup_s, 1e-3) if duration else bw,
        "source_read_bytes": i.disk_bytes,
        "destination_write_bytes": i.disk_bytes,
        "destination_memory_bytes": i.memory_bytes,
        "duration_s": duration,
        "guest_throttle_pct": round(result.max_throttle * 100),
        "guest_downtime_ms": downtime,
    }
    detail = {
        "iterations": result.iterations,
        "final_bytes": result.final_bytes,
        "effective_bandwidth_bps": bw,
        "disk_copy_s": disk_s,
        "postcopy": postcopy_used,
    }
    return Estimate(Mode.LIVE, verdict, duration, downtime, i.disk_bytes, load, (text + base).strip(), detail=detail)


@dataclass(frozen=True)
class ColdInputs:
    copy_bytes: int  # allocated bytes of disks that leave their pool
    write_bps: float | None  # destination's measured write throughput; None: not measured
    link_bps: float
    bandwidth_cap_bps: float | None = None
    shutdown_s: float = SHUTDOWN_TYPICAL_S
    shutdown_timeout_s: float = 120.0
    start_s: float = START_S
    boot_s: float = BOOT_ASSUMED_S
    running: bool = True


def cold_estimate(i: ColdInputs) -> Estimate:
    """Shutdown + copy of the allocated bytes + start; the VM is unavailable for all of it."""
    link = effective_bandwidth(i.link_bps, i.bandwidth_cap_bps)
    rate = min(link, i.write_bps) if i.write_bps else link
    copy_s = i.copy_bytes / rate
    shutdown = min(i.shutdown_s, i.shutdown_timeout_s) if i.running else 0.0
    boot = i.boot_s if i.running else 0.0
    duration = shutdown + copy_s + i.start_s
    upper = (i.shutdown_timeout_s if i.running else 0.0) + copy_s + i.start_s
    verdict = Verdict.NOT_APPLICABLE  # nothing has to converge in a cold move
    if i.running:
        text = (
            f"Shut down (~{shutdown:.0f} s, at most {i.shutdown_timeout_s:.0f} s), copy {i.copy_bytes / MIB:.0f} MiB "
            f"at {rate / MIB:.0f} MiB/s ({copy_s:.1f} s), start ({i.start_s:.1f} s); the VM is unavailable "
            f"throughout, plus its own boot (~{boot:.0f} s assumed)."
        )
        downtime_ms: float | None = (duration + boot) * 1000
    else:
        text = (
            f"The VM is not running: copy {i.copy_bytes / MIB:.0f} MiB at {rate / MIB:.0f} MiB/s ({copy_s:.1f} s) "
            "and define it on the destination; no downtime is added."
        )
        downtime_ms = 0.0
    if not i.write_bps and i.copy_bytes:
        text += " The destination's write throughput was not measured; the link bandwidth was used."
    load = {
        "network_bytes": i.copy_bytes,
        "network_bps": rate if i.copy_bytes else 0,
        "source_read_bytes": i.copy_bytes,
        "destination_write_bytes": i.copy_bytes,
        "duration_s": copy_s,
        "guest_downtime_ms": downtime_ms,
    }
    detail = {"copy_s": copy_s, "copy_rate_bps": rate, "duration_upper_s": upper, "shutdown_s": shutdown}
    return Estimate(Mode.COLD, verdict, duration, downtime_ms, i.copy_bytes, load, text, detail=detail)


def recommend(live: Estimate, cold: Estimate, *, auto_converge: bool = True) -> tuple[str, str]:
    """Which mode to use, and why, in words."""
    if not live.possible:
        return Mode.COLD, "Cold: the VM is not running, so there is nothing to move live."
    if live.duration_s is None:
        return Mode.COLD, "Cold: a live move would not converge at this bandwidth and post-copy is not allowed."
    if live.verdict == Verdict.NEEDS_AUTO_CONVERGE and not auto_converge:
        return Mode.COLD, "Cold, unless auto-converge is enabled: without it the live move would not converge."
    cold_down = f"{cold.downtime_ms / 1000:.0f} s" if cold.downtime_ms is not None else "unknown"
    live_down = f"{live.downtime_ms:.0f} ms" if live.downtime_ms is not None else "unknown"
    reason = f"Live: about {live_down} of downtime instead of {cold_down} for a cold move"
    if live.verdict == Verdict.NEEDS_AUTO_CONVERGE:
        reason += f", at the cost of throttling the guest by up to {live.load.get('guest_throttle_pct', 0)} %"
    if live.verdict == Verdict.UNKNOWN:
        reason += " (the dirty rate is unknown: the live figures are a best case)"
    return Mode.LIVE, reason + "."


# ---- plan totals --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    duration_s: float
    source: object
    destination: object
    wave: int = 1


def schedule(jobs: Iterable[Job], max_outgoing: Mapping[object, int], max_incoming: Mapping[object, int]) -> float:
    """Total time when waves run one after another and, within a wave, moves start as soon as their
    source has a free outgoing slot and their destination a free incoming slot (longest first)."""
    by_wave: dict[int, list[Job]] = {}
    for job in jobs:
        by_wave.setdefault(job.wave, []).append(job)
    now = 0.0
    for wave in sorted(by_wave):
        pending = sorted(by_wave[wave], key=lambda j: -j.duration_s)
        running: list[tuple[float, Job]] = []
        out: dict[object, int] = {}
        inc: dict[object, int] = {}
        while pending or running:
            for job in list(pending):
                if out.get(job.source, 0) < max(max_outgoing.get(job.source, 1), 1) and inc.get(
                    job.destination, 0
                ) < max(max_incoming.get(job.destination, 1), 1):
                    pending.remove(job)
                    running.append((now + job.duration_s, job))
                    out[job.source] = out.get(job.source, 0) + 1
                    inc[job.destination] = inc.get(job.destination, 0) + 1
            running.sort(key=lambda r: r[0])
            end, done = running.pop(0)
            now = max(now, end)
            out[done.source] -= 1
            inc[done.destination] -= 1
    return now


@dataclass(frozen=True)
class PlanTotals:
    seconds: float | None  # None when no item has a duration
    downtime_ms: float | None  # the longest downtime of any item
    fits_window: bool | None  # None: no change window set
    window_s: float | None
    unknown_items: int  # items whose chosen mode has no predicted duration (left out of the total)
    explanation: str


def plan_totals(plan: MigrationPlan, predictions: Iterable[Prediction], now: datetime | None = None) -> PlanTotals:
    """The plan's predicted total and whether it fits its change window.

    Per item the prediction of its resolved mode counts (`item.mode`), else the recommended one.
    Items are scheduled with `schedule`: waves in order, each host's `max_outgoing`/`max_incoming`
    respected, the longest moves first. Queueing between the portal's workers is not modelled.
    """
    per_item: dict[int, list[Prediction]] = {}
    items: dict[int, PlanItem] = {}
    for p in predictions:
        per_item.setdefault(p.item_id, []).append(p)
        items[p.item_id] = p.item
    jobs, unknown = [], 0
    outgoing: dict[object, int] = {}
    incoming: dict[object, int] = {}
    downtimes = []
    for item_id, preds in per_item.items():
        item = items[item_id]
        chosen = next((p for p in preds if p.mode == item.mode), None) or next(
            (p for p in preds if p.recommended), None
        )
        if chosen is None or chosen.duration_s is None:
            unknown += 1
            continue
        if chosen.downtime_ms is not None:
            downtimes.append(chosen.downtime_ms)
        src, dst = item.source, item.destination
        outgoing[src.pk] = src.max_outgoing
        if dst is not None:
            incoming[dst.pk] = dst.max_incoming
        jobs.append(Job(chosen.duration_s, src.pk, dst.pk if dst else None, item.wave))
    total = schedule(jobs, outgoing, incoming) if jobs else None
    from django.utils import timezone

    at = now or timezone.now()
    window_s = rules.window_left_s(plan.window_start, plan.window_end, at)
    fits = rules.fits_window(total, plan.window_start, plan.window_end, at)
    if fits is None and window_s is not None:
        fits = False  # a window, but no predicted total to put in it
    elif fits and unknown:
        fits = False  # items without a prediction may not fit
    text = f"About {total:.0f} s in total" if total is not None else "No predicted total"
    if unknown:
        text += f"; {unknown} item(s) without a predicted duration are not counted"
    if fits is True:
        text += f"; fits the {window_s:.0f} s change window."
    elif fits is False:
        text += f"; does not fit the {window_s:.0f} s change window."
    else:
        text += "; no change window is set." if window_s is None else "."
    return PlanTotals(total, max(downtimes) if downtimes else None, fits, window_s, unknown, text)


# ---- gathering the inputs for one item ----------------------------------------------------------


@dataclass
class PredictionFacts:
    """Figures a caller already has (e.g. the audit runner); any left None are measured or looked up."""

    dirty_rate_bps: float | None = None
    memory_in_use_bytes: int | None = None
    link_bps: float | None = None
    destination_write_bps: float | None = None
    setup_s: float | None = None
    #: True when the source-side figures were already measured: None then means "could not", with the reason.
    source_measured: bool = False
    dirty_rate_reason: str = ""
    memory_in_use_reason: str = ""


#: The longest the source-side measurements of one audit may take, whatever the number of hosts and VMs.
MEASURE_BUDGET_S = 8.0


def _measure_host(uri: str, uuids: list[str], seconds: int, timeout: float) -> dict[str, PredictionFacts]:
    """Dirty rates (all guests of the host in one period) and memory in use of running guests of one host."""
    from inventory.hypervisor import measure

    rates = measure.dirty_rates(uri, uuids, seconds, timeout=timeout)
    uses = measure.memories_in_use(uri, uuids)
    out = {}
    for uuid in uuids:
        rate, use = rates.get(uuid), uses[uuid]
        out[uuid] = PredictionFacts(
            dirty_rate_bps=rate.bytes_per_s if rate else None,
            memory_in_use_bytes=use.bytes_in_use,
            source_measured=True,
            dirty_rate_reason=rate.reason if rate else "not measured",
            memory_in_use_reason=use.reason,
        )
    return out


def start_measuring(
    items: Iterable[PlanItem], seconds: int = 1, *, budget_s: float = MEASURE_BUDGET_S
) -> Callable[[], dict[int, PredictionFacts]]:
    """Start measuring the source-side figures of many items in the background; the function returned
    waits for them (never past `budget_s` from now) and gives item pk → facts for `predict_item`.

    Each running guest is measured once. All running VMs of one source host share one dirty-rate
    period, and the hosts are measured at the same time (one thread and connection per host), so the
    whole takes about `seconds` plus the slowest host's round trips, never more than `budget_s`: a host
    that has not answered by then leaves its VMs "not measured", with that reason. The caller may do
    other work (the checks) meanwhile; nothing here touches the database.
    """
    from concurrent.futures import ThreadPoolExecutor, wait

    from inventory.choices import PowerState

    started = time.monotonic()
    by_host: dict[str, list[PlanItem]] = {}
    facts: dict[int, PredictionFacts] = {}
    for item in items:
        facts[item.pk] = PredictionFacts()
        if item.vm.state == PowerState.RUNNING:
            by_host.setdefault(item.source.uri, []).append(item)
    if not by_host:
        return lambda: facts
    timeout = max(budget_s - seconds, 1.0)
    pool = ThreadPoolExecutor(max_workers=min(len(by_host), 16), thread_name_prefix="measure")
    futures = {
        uri: pool.submit(_measure_host, uri, sorted({str(i.vm.uuid) for i in host_items}), seconds, timeout)
        for uri, host_items in by_host.items()
    }

    def collect() -> dict[int, PredictionFacts]:
        wait(futures.values(), timeout=max(budget_s - (time.monotonic() - started), 0.0))
        pool.shutdown(wait=False, cancel_futures=True)  # a host still busy does not hold the audit up
        for uri, future in futures.items():
            measured: dict[str, PredictionFacts] = {}
            reason = f"the host did not answer within {budget_s:.0f} s"
            if future.done() and not future.cancelled():
                try:
                    measured = future.result()
                except Exception as exc:  # a measurement is advice; its failure only leaves the figure unknown
                    reason = f"measuring failed: {exc}"
            for item in by_host[uri]:
                facts[item.pk] = measured.get(str(item.vm.uuid)) or PredictionFacts(
                    source_measured=True, dirty_rate_reason=reason, memory_in_use_reason=reason
                )
        return facts

    return collect


def measure_facts(
    items: Iterable[PlanItem], seconds: int = 1, *, budget_s: float = MEASURE_BUDGET_S
) -> dict[int, PredictionFacts]:
    """Measure the source-side figures of many items at once (`start_measuring`, waited for)."""
    return start_measuring(items, seconds, budget_s=budget_s)()


def _cache(plan: MigrationPlan) -> dict[Any, Any]:
    """Per-plan-instance cache, so one audit measures each host pair and pool once, not per VM."""
    cache: dict[Any, Any] = plan.__dict__.setdefault("_prediction_cache", {})
    return cache


def history(source: Host, destination: Host) -> tuple[float | None, float | None, int]:
    """Median throughput (bytes/s) and setup (s) of the last successful live moves between the hosts.

    Either direction counts: it is the same link. A run's throughput is libvirt's completed-job
    `memory_bps` when the run kept its completed stats, else the median of its progress samples.
    """
    from django.db.models import Q

    from migrations_app.models import MigrationRun, ProgressSample

    pair = Q(source=source, destination=destination) | Q(source=destination, destination=source)
    runs = list(
        MigrationRun.objects.filter(pair, mode=Mode.LIVE, status=RunStatus.SUCCEEDED).order_by("-finished_at", "-pk")[
            :HISTORY_RUNS
        ]
    )
    if not runs:
        return None, None, 0
    samples: dict[int, list[float]] = {}
    for run_id, rate in ProgressSample.objects.filter(run__in=runs, throughput_bps__gt=0).values_list(
        "run_id", "throughput_bps"
    ):
        if rate:
            samples.setdefault(run_id, []).append(float(rate))
    rates = []
    for run in runs:
        completed = (run.completed_stats or {}).get("memory_bps")
        if isinstance(completed, int | float) and completed > 0:
            rates.append(float(completed))
        elif samples.get(run.pk):
            rates.append(statistics.median(samples[run.pk]))
    setups = [r.setup_ms / 1000 for r in runs if r.setup_ms]
    return (
        statistics.median(rates) if rates else None,
        statistics.median(setups) if setups else None,
        len(runs),
    )


def _link(plan: MigrationPlan, source: Host, destination: Host) -> tuple[float, str, float | None, str]:
    """(link bytes/s, where from, setup s or None, where from) for a host pair."""
    from inventory.hypervisor import measure

    key = ("link", source.pk, destination.pk)
    cache = _cache(plan)
    if key in cache:
        return cache[key]  # type: ignore[no-any-return]
    rate, setup, runs = history(source, destination)
    setup_src = f"median of {runs} past moves" if setup else ""
    if rate:
        result = (rate, f"median of {runs} past move{'s' if runs != 1 else ''} between these hosts", setup, setup_src)
    elif source.link_mib_s or destination.link_mib_s:
        figures = [h.link_mib_s for h in (source, destination) if h.link_mib_s]
        result = (min(figures) * MIB, "set by an admin on the hosts", setup, setup_src)
    else:
        speeds = [measure.link_speed(h.uri) for h in (source, destination)]
        known = [s for s in speeds if s.bytes_per_s]
        if len(known) == 2:
            nominal = min(s.bytes_per_s for s in known if s.bytes_per_s)
            result = (nominal, "nominal interface speed read from both hosts (an upper bound)", setup, setup_src)
        else:
            reason = "; ".join(s.reason for s in speeds if s.reason)
            result = (DEFAULT_LINK_BPS, f"assumed 1 Gbit/s ({reason})", setup, setup_src)
    cache[key] = result
    return result


def _setup(plan: MigrationPlan, destination: Host, virt_type: str, arch: str, machine: str) -> tuple[float, str]:
    """Setup of a live move without history: the destination's QEMU start time now, plus handshakes."""
    from inventory.hypervisor import measure

    key = ("setup", destination.pk, virt_type, arch, machine)
    cache = _cache(plan)
    if key not in cache:
        probe = measure.qemu_start_time(destination.uri, virt_type=virt_type, arch=arch, machine=machine)
        if probe.seconds is not None:
            cache[key] = (
                probe.seconds + HANDSHAKE_S,
                f"measured: the destination started a probe QEMU in {probe.seconds:.2f} s, "
                f"plus {HANDSHAKE_S:.1f} s of handshakes",
            )
        else:
            cache[key] = (SETUP_S, f"lab figure {SETUP_S:.1f} s (probe QEMU not started: {probe.reason})")
    return cache[key]  # type: ignore[no-any-return]


def _write_rate(plan: MigrationPlan, destination: Host, pool: str) -> tuple[float | None, str]:
    from inventory.hypervisor import measure

    key = ("write", destination.pk, pool)
    cache = _cache(plan)
    if key not in cache:
        probe = measure.pool_write_throughput(destination.uri, pool)
        if probe.bytes_per_s:
            cache[key] = (probe.bytes_per_s, f"measured: {probe.bytes_written // MIB} MiB written into '{pool}'")
        else:
            cache[key] = (None, f"not measured: {probe.reason}")
    return cache[key]  # type: ignore[no-any-return]


def _shared_pools(plan: MigrationPlan, host: Host) -> set[str]:
    """Names of the host's pools that are shared (one query per destination and audit, not per VM)."""
    from inventory.models import StoragePool

    key = ("shared pools", host.pk)
    cache = _cache(plan)
    if key not in cache:
        cache[key] = {p.name for p in StoragePool.objects.filter(host=host, present=True) if p.shared}
    return cache[key]  # type: ignore[no-any-return]


def disks_to_copy(item: PlanItem, plan: MigrationPlan | None = None) -> list[dict[str, Any]]:
    """Every disk of the VM with its pools and whether a move copies it (`rules.disk_copied`).

    A disk stays put only when its pool is shared, the storage map keeps it in that pool and that pool
    is shared on the destination too; its bytes to copy are its allocation (sparse images copy only
    what was written), else its capacity.
    """
    storage_map = item.storage_map or {}
    destination = item.destination or item.source
    shared_there = _shared_pools(plan or item.plan, destination)
    rows = []
    for disk in item.vm.disks.all():
        if disk.device not in ("disk", "lun") or not disk.source:
            continue
        pool = disk.pool
        mapped = rules.destination_pool(storage_map, disk.target, pool.name if pool else "")
        shared = bool(pool and pool.shared)
        copied = rules.disk_copied(pool.name if pool else "", shared, mapped, mapped in shared_there)
        size = disk.allocation if disk.allocation is not None else (disk.capacity or 0)
        rows.append(
            {
                "target": disk.target,
                "source_pool": pool.name if pool else "",
                "destination_pool": mapped,
                "shared": shared,
                "copied": copied,
                "capacity": disk.capacity,
                "allocation": disk.allocation,
                "bytes_to_copy": size if copied else 0,
            }
        )
    return rows


def predict_item(item: PlanItem, plan: MigrationPlan, facts: PredictionFacts | None = None) -> list[Prediction]:
    """Live and cold predictions for one item, unsaved, exactly one of them recommended.

    `facts` holds the figures the caller already has; those it lacks (None, and for the source side
    only when `source_measured` is false) are measured on the hosts or looked up here. The audit
    passes what `measure_facts` measured for all its items at once, so no guest is measured twice.
    Callers should prefetch `vm__disks__pool`, `source` and `destination`. The caller sets `audit`
    and saves.
    """
    from inventory.choices import PowerState
    from inventory.hypervisor import measure
    from migrations_app.models import Prediction

    vm, source = item.vm, item.source
    destination = item.destination or source
    running = vm.state == PowerState.RUNNING
    inputs: dict[str, Any] = {"memory_bytes": vm.memory, "vm_state": vm.state}
    facts = facts or PredictionFacts()

    # memory and its dirty rate (source)
    measured = facts.source_measured
    in_use = facts.memory_in_use_bytes
    if in_use is not None:
        inputs["memory_in_use_source"] = "measured: QEMU resident memory (upper bound)" if measured else "given"
    elif running and measured:
        inputs["memory_in_use_source"] = f"not measured: {facts.memory_in_use_reason}"
    elif running:
        use = measure.memory_in_use(source.uri, str(vm.uuid))
        in_use = use.bytes_in_use
        inputs["memory_in_use_source"] = (
            "measured: QEMU resident memory (upper bound)" if in_use is not None else f"not measured: {use.reason}"
        )
        if use.guest_used is not None:
            inputs["guest_reported_used_bytes"] = use.guest_used
    if in_use is None:
        in_use = vm.memory
        inputs.setdefault("memory_in_use_source", "assumed: all of the guest's memory")
    inputs["memory_in_use_bytes"] = int(in_use)
    dirty = facts.dirty_rate_bps
    if dirty is not None:
        inputs["dirty_rate_source"] = "measured: libvirt dirty-rate calculation" if measured else "given"
    elif running and measured:
        inputs["dirty_rate_source"] = f"not measured: {facts.dirty_rate_reason}"
    elif running:
        rate = measure.dirty_rate(source.uri, str(vm.uuid))
        dirty = rate.bytes_per_s
        inputs["dirty_rate_source"] = (
            f"measured: libvirt dirty-rate calculation over {rate.period_s:.0f} s"
            if dirty is not None
            else f"not measured: {rate.reason}"
        )
    else:
        inputs["dirty_rate_source"] = "the VM is not running"
    inputs["dirty_rate_bps"] = dirty

    # link and setup (host pair)
    link = facts.link_bps
    given_setup = facts.setup_s
    setup, setup_src = None, ""
    if link is not None:
        link_src = "given"
    else:
        link, link_src, setup, setup_src = _link(plan, source, destination)
    if given_setup is not None:
        setup, setup_src = given_setup, "given"
    elif setup is None and running:
        setup, setup_src = _setup(plan, destination, vm.virt_type, vm.arch, vm.machine_type)
    elif setup is None:
        setup, setup_src = SETUP_S, "not measured: no live move of a VM that is not running"
    cap = plan.bandwidth_mib_s * MIB if plan.bandwidth_mib_s else None
    inputs.update(
        link_bps=link,
        link_source=link_src,
        bandwidth_cap_bps=cap,
        effective_bandwidth_bps=effective_bandwidth(link, cap),
        setup_s=setup,
        setup_source=setup_src or "given",
        max_downtime_ms=plan.max_downtime_ms,
        auto_converge=plan.auto_converge,
        postcopy_allowed=plan.postcopy_allowed,
        on_no_convergence=plan.on_no_convergence,
    )

    # disks and the destination's write throughput
    disks = disks_to_copy(item, plan)
    copy_bytes = sum(d["bytes_to_copy"] for d in disks)
    write = facts.destination_write_bps
    write_src = "given" if write is not None else ""
    if write is None and copy_bytes:
        pool = next(d["destination_pool"] for d in disks if d["copied"])
        write, write_src = _write_rate(plan, destination, pool) if pool else (None, "not measured: no pool")
    inputs.update(
        disks=disks,
        disk_bytes_to_copy=copy_bytes,
        disk_capacity_bytes=sum(d["capacity"] or 0 for d in disks if d["copied"]),
        destination_write_bps=write,
        destination_write_source=write_src or "nothing to copy",
        shutdown_typical_s=SHUTDOWN_TYPICAL_S,
        shutdown_timeout_s=plan.shutdown_timeout_s,
        start_s=START_S,
        boot_assumed_s=BOOT_ASSUMED_S,
    )

    live = live_estimate(
        LiveInputs(
            memory_bytes=vm.memory,
            memory_in_use_bytes=int(in_use),
            dirty_bps=dirty,
            link_bps=link,
            bandwidth_cap_bps=cap,
            max_downtime_ms=plan.max_downtime_ms,
            auto_converge=plan.auto_converge,
            postcopy_allowed=plan.postcopy_allowed,
            disk_bytes=copy_bytes,
            disk_write_bps=write,
            setup_s=setup,
            running=running,
        )
    )
    cold = cold_estimate(
        ColdInputs(
            copy_bytes=copy_bytes,
            write_bps=write,
            link_bps=link,
            bandwidth_cap_bps=cap,
            shutdown_timeout_s=plan.shutdown_timeout_s,
            running=running,
        )
    )
    chosen, reason = recommend(live, cold, auto_converge=plan.auto_converge)
    out = []
    for est in (live, cold):
        rec = est.mode == chosen
        out.append(
            Prediction(
                item=item,
                mode=est.mode,
                duration_s=est.duration_s,
                downtime_ms=est.downtime_ms,
                bytes_to_copy=est.bytes_to_copy,
                verdict=est.verdict,
                recommended=rec,
                inputs={**inputs, **est.detail, "recommendation": reason},
                load=est.load,
                explanation=est.explanation + (f" Recommended. {reason}" if rec else ""),
            )
        )
    return out
