"""From libvirt job stats to what people see (phase, percent, throughput, ETA), and the convergence policy.

Plain logic with no database or libvirt access, so it can be reasoned about on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inventory.hypervisor.migrate import JobStats

# ---- progress ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One progress reading as stored and published."""

    elapsed_s: float
    phase: str
    percent: float
    bytes_processed: int
    bytes_remaining: int
    bytes_total: int
    throughput_bps: float | None
    dirty_rate_bps: float | None
    iteration: int | None
    eta_s: float | None
    downtime_limit_ms: float | None = None
    note: str = ""


class ProgressTracker:
    """Turns successive job stats into samples. The percent never goes backwards: pre-copy iterations make
    "remaining" jump up again whenever the guest dirties memory, which would otherwise look like a regress.
    """

    def __init__(self) -> None:
        self.percent = 0.0
        self.postcopy = False
        self._last: tuple[float, int] | None = None  # (elapsed s, processed bytes)

    def sample(self, stats: JobStats, downtime_limit_ms: float | None = None, note: str = "") -> Sample:
        elapsed = stats.elapsed_ms / 1000
        processed = stats.data_processed or (stats.memory_processed + stats.disk_processed)
        remaining = stats.data_remaining or (stats.memory_remaining + stats.disk_remaining)
        total = stats.data_total or (stats.memory_total + stats.disk_total)
        phase = self.phase(stats)
        if processed + remaining > 0:
            # 99 at most until libvirt says the job completed
            self.percent = max(self.percent, min(99.0, 100.0 * processed / (processed + remaining)))
        throughput: float | None = float(stats.memory_bps + stats.disk_bps) or None
        if throughput is None and self._last is not None and elapsed > self._last[0]:
            throughput = max(0.0, (processed - self._last[1]) / (elapsed - self._last[0])) or None
        self._last = (elapsed, processed)
        eta = remaining / throughput if throughput and remaining else None
        return Sample(
            elapsed_s=round(elapsed, 3),
            phase=phase,
            percent=round(self.percent, 2),
            bytes_processed=processed,
            bytes_remaining=remaining,
            bytes_total=total,
            throughput_bps=throughput,
            dirty_rate_bps=float(stats.dirty_rate_bps) if stats.dirty_rate_bps else None,
            iteration=stats.iteration or None,
            eta_s=round(eta, 1) if eta is not None else None,
            downtime_limit_ms=downtime_limit_ms,
            note=note,
        )

    def phase(self, stats: JobStats) -> str:
        if self.postcopy:
            return "postcopy"
        if stats.memory_processed == 0 and stats.disk_processed == 0:
            return "setup"
        if stats.disk_remaining > 0 and stats.memory_processed == 0:
            return "disk"
        return "memory"

    def done(self) -> float:
        self.percent = 100.0
        return self.percent


# ---- convergence -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """What the monitor should do now: raise the downtime limit, switch to post-copy, or abort."""

    kind: str  # "downtime", "postcopy", "abort"
    downtime_ms: int | None = None
    note: str = ""


def downtime_steps(max_ms: int) -> list[int]:
    """Allowed-downtime steps, lowest first, ending at the plan's maximum.

    Starting at a quarter of the maximum keeps the pause short for guests that converge easily; the limit
    is raised only for a guest that stops converging.
    """
    max_ms = max(10, int(max_ms))
    steps = []
    step = max(10, max_ms // 4)
    while step < max_ms:
        steps.append(step)
        step *= 2
    steps.append(max_ms)
    return steps


@dataclass
class ConvergencePolicy:
    """Watches "remaining at the start of each pre-copy iteration". When it has not fallen by at least
    `min_gain` for `patience` iterations, the next downtime step is applied; after the last step, the
    plan's choice: post-copy (if allowed) or abort.
    """

    max_downtime_ms: int
    on_no_convergence: str = "abort"  # "abort" or "postcopy"
    postcopy_allowed: bool = False
    patience: int = 2
    min_gain: float = 0.1
    steps: list[int] = field(default_factory=list)
    step_index: int = 0
    finished: bool = False
    _iteration: int = 0
    _best: int | None = None
    _stalled: int = 0

    def __post_init__(self) -> None:
        if not self.steps:
            self.steps = downtime_steps(self.max_downtime_ms)

    @property
    def current_limit_ms(self) -> int:
        return self.steps[self.step_index]

    def observe(self, stats: JobStats) -> Action | None:
        """Feed every reading; returns an action at most once per iteration boundary."""
        if self.finished or stats.iteration <= 1 or stats.iteration == self._iteration:
            return None
        self._iteration = stats.iteration
        remaining = stats.memory_remaining
        if self._best is None or remaining < self._best * (1 - self.min_gain):
            self._best = remaining
            self._stalled = 0
            return None
        self._stalled += 1
        if self._stalled < self.patience:
            return None
        self._stalled = 0
        self._best = remaining  # judge the next step on its own iterations
        if self.step_index + 1 < len(self.steps):
            self.step_index += 1
            return Action(
                "downtime",
                downtime_ms=self.current_limit_ms,
                note=f"not converging: downtime limit raised to {self.current_limit_ms} ms",
            )
        self.finished = True
        if self.on_no_convergence == "postcopy" and self.postcopy_allowed:
            return Action("postcopy", note="not converging at the maximum downtime: switching to post-copy")
        return Action("abort", note="not converging at the maximum downtime: aborting as the plan says")
