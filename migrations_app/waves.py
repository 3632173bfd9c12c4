"""The wave planner: splits a plan's moves into waves that run one after another.

A pure function of plain values (no database, no libvirt), so it is tested on random inventories:

- per-host concurrency: in one wave a host sends at most `max_outgoing` and receives at most
  `max_incoming` VMs (the scheduler starts wave k+1 only when wave k has ended);
- destination capacity, counting earlier waves: a VM lands on a host only if, at that wave and every
  later one, the host's room (memory and vCPUs) minus what arrived plus what left in *earlier* waves
  still holds it (a VM leaving in the same wave still occupies its source until the wave ends);
- application groups move together: the VMs of one group are always in one wave;
- the change window: waves follow each other on the predicted timeline (each wave lasts as long as
  its moves take with the per-host limits, `prediction.schedule`); a move whose wave would end after
  the window is reported as outside it, never silently kept;
- what cannot be placed without breaking a limit (a group larger than a host's limit, no room left)
  is placed in a wave of its own at the end and reported with the reason.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from migrations_app.prediction import Job, schedule


@dataclass(frozen=True)
class Move:
    key: int  # the plan item's id
    source: int
    destination: int
    memory: int  # bytes
    vcpus: int
    duration_s: float
    group: str = ""


@dataclass(frozen=True)
class HostRoom:
    max_outgoing: int
    max_incoming: int
    memory: int  # bytes a host can take in before the plan (free − reserve − other plans' moves)
    vcpus: float


@dataclass
class Wave:
    number: int
    keys: list[int] = field(default_factory=list)
    start_s: float = 0.0
    end_s: float = 0.0
    in_window: bool = True


@dataclass
class WavePlan:
    waves: list[Wave]
    wave_of: dict[int, int]  # item key → wave number (1-based)
    problems: dict[int, str]  # item key → why its placement breaks a rule
    total_s: float

    def summary(self) -> str:
        text = f"{len(self.waves)} wave{'s' if len(self.waves) != 1 else ''}, about {self.total_s:.0f} s in total"
        outside = sum(len(w.keys) for w in self.waves if not w.in_window)
        if outside:
            text += f"; {outside} move(s) fall outside the change window"
        if self.problems:
            text += f"; {len(self.problems)} move(s) could not be placed within the limits"
        return text + "."


def _units(moves: list[Move]) -> list[list[Move]]:
    """Groups (one unit each) and ungrouped moves, biggest and longest first."""
    grouped: dict[str, list[Move]] = defaultdict(list)
    units: list[list[Move]] = []
    for m in moves:
        if m.group:
            grouped[m.group].append(m)
        else:
            units.append([m])
    units += list(grouped.values())
    units.sort(key=lambda u: (-len(u), -sum(m.duration_s for m in u), min(m.key for m in u)))
    return units


class _Ledger:
    """Per wave and host: how many VMs leave and arrive, and the room left (memory, vCPUs) during each
    wave: the host's room, minus arrivals up to and in that wave, plus departures of earlier waves."""

    def __init__(self, hosts: dict[int, HostRoom]) -> None:
        self.hosts = hosts
        self.out: list[dict[int, int]] = []
        self.inc: list[dict[int, int]] = []
        self.departed_mem: list[dict[int, int]] = []
        self.departed_cpu: list[dict[int, float]] = []
        self.mem: dict[int, list[float]] = {h: [] for h in hosts}
        self.cpu: dict[int, list[float]] = {h: [] for h in hosts}
        # per host, the earliest wave whose outgoing (incoming) moves are below the host's limit; counts
        # only grow, so every wave before it stays full and no unit leaving (entering) the host fits there
        self.open_out: dict[int, int] = defaultdict(int)
        self.open_inc: dict[int, int] = defaultdict(int)

    def first_candidate(self, unit: list[Move]) -> int:
        """The earliest wave `unit` might fit into: every earlier one is full for one of its hosts."""
        start = 0
        for m in unit:
            start = max(start, self._open(self.open_out, self.out, m.source, self.hosts[m.source].max_outgoing))
            start = max(
                start, self._open(self.open_inc, self.inc, m.destination, self.hosts[m.destination].max_incoming)
            )
        return start

    def _open(self, pointer: dict[int, int], counts: list[dict[int, int]], host: int, limit: int) -> int:
        wave = pointer[host]
        limit = max(limit, 1)
        while wave < len(counts) and counts[wave].get(host, 0) >= limit:
            wave += 1
        pointer[host] = wave
        return wave

    def add_wave(self) -> None:
        last = len(self.out) - 1
        for host, room in self.hosts.items():
            if last < 0:
                self.mem[host].append(room.memory)
                self.cpu[host].append(room.vcpus)
            else:
                self.mem[host].append(self.mem[host][last] + self.departed_mem[last].get(host, 0))
                self.cpu[host].append(self.cpu[host][last] + self.departed_cpu[last].get(host, 0))
        for table in (self.out, self.inc, self.departed_mem, self.departed_cpu):
            table.append(defaultdict(int))

    def fits(self, unit: list[Move], wave: int) -> str | None:
        """None if the unit fits into `wave`, else why not."""
        out: dict[int, int] = defaultdict(int)
        inc: dict[int, int] = defaultdict(int)
        mem: dict[int, int] = defaultdict(int)
        cpu: dict[int, float] = defaultdict(float)
        for m in unit:
            out[m.source] += 1
            inc[m.destination] += 1
            mem[m.destination] += m.memory
            cpu[m.destination] += m.vcpus
        for host, n in out.items():
            if self.out[wave].get(host, 0) + n > max(self.hosts[host].max_outgoing, 1):
                return "the source's limit of concurrent outgoing moves"
        for host, n in inc.items():
            if self.inc[wave].get(host, 0) + n > max(self.hosts[host].max_incoming, 1):
                return "the destination's limit of concurrent incoming moves"
        for host, need in mem.items():
            if min(self.mem[host][wave:]) < need:
                return "the destination's free memory"
            if min(self.cpu[host][wave:]) < cpu[host]:
                return "the destination's vCPU capacity"
        return None

    def place(self, unit: list[Move], wave: int) -> None:
        for m in unit:
            self.out[wave][m.source] += 1
            self.inc[wave][m.destination] += 1
            self.departed_mem[wave][m.source] += m.memory
            self.departed_cpu[wave][m.source] += m.vcpus
            arrivals, cpus = self.mem[m.destination], self.cpu[m.destination]
            for w in range(wave, len(arrivals)):
                arrivals[w] -= m.memory
                cpus[w] -= m.vcpus
            departures, dcpus = self.mem[m.source], self.cpu[m.source]
            for w in range(wave + 1, len(departures)):
                departures[w] += m.memory
                dcpus[w] += m.vcpus


def plan_waves(moves: list[Move], hosts: dict[int, HostRoom], window_s: float | None = None) -> WavePlan:
    """Assign every move to a wave (see the module's description)."""
    ledger = _Ledger(hosts)
    members: list[list[Move]] = []
    problems: dict[int, str] = {}
    # a unit goes into the earliest wave it fits; a new wave is opened when none does
    for unit in _units(moves):
        placed = False
        for wave in range(ledger.first_candidate(unit), len(members)):
            if ledger.fits(unit, wave) is None:
                ledger.place(unit, wave)
                members[wave].extend(unit)
                placed = True
                break
        if placed:
            continue
        ledger.add_wave()
        members.append([])
        wave = len(members) - 1
        why = ledger.fits(unit, wave)
        if why is not None:
            for m in unit:
                label = f"application group {m.group}" if m.group else "this move"
                problems[m.key] = f"Even alone in a wave, {label} exceeds {why}."
        ledger.place(unit, wave)
        members[wave].extend(unit)
    # the predicted timeline: waves one after another
    waves: list[Wave] = []
    now = 0.0
    for number, wave_moves in enumerate(members, start=1):
        jobs = [Job(m.duration_s, m.source, m.destination) for m in wave_moves]
        outgoing: dict[object, int] = {h: r.max_outgoing for h, r in hosts.items()}
        incoming: dict[object, int] = {h: r.max_incoming for h, r in hosts.items()}
        length = schedule(jobs, outgoing, incoming) if jobs else 0.0
        end = now + length
        waves.append(
            Wave(
                number=number,
                keys=sorted(m.key for m in wave_moves),
                start_s=now,
                end_s=end,
                in_window=window_s is None or end <= window_s,
            )
        )
        now = end
    wave_of = {key: w.number for w in waves for key in w.keys}
    for w in waves:
        if not w.in_window:
            for key in w.keys:
                problems.setdefault(key, f"Wave {w.number} is predicted to end after the change window.")
    return WavePlan(waves=waves, wave_of=wave_of, problems=problems, total_s=now)
