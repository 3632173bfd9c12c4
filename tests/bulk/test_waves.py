"""The wave planner, property-based: for random inventories and plans, no wave exceeds a host's limits or
room (counting earlier waves' arrivals and departures), application groups stay in one wave, waves
follow each other on the timeline and a wave ending after the change window is reported. Whatever the
planner could not place within the rules is reported, never silently kept."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from migrations_app.waves import HostRoom, Move, WavePlan, plan_waves

GIB = 1024**3


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Move], dict[int, HostRoom], float | None]:
    n_hosts = draw(st.integers(2, 6))
    hosts = {
        h: HostRoom(
            max_outgoing=draw(st.integers(1, 3)),
            max_incoming=draw(st.integers(1, 3)),
            memory=draw(st.integers(0, 16)) * GIB,
            vcpus=float(draw(st.integers(0, 32))),
        )
        for h in range(n_hosts)
    }
    moves = []
    for key in range(draw(st.integers(0, 40))):
        source = draw(st.integers(0, n_hosts - 1))
        destination = (source + draw(st.integers(1, n_hosts - 1))) % n_hosts
        moves.append(
            Move(
                key=key,
                source=source,
                destination=destination,
                memory=draw(st.integers(1, 4)) * GIB,
                vcpus=draw(st.integers(1, 4)),
                duration_s=float(draw(st.integers(1, 600))),
                group=draw(st.sampled_from(["", "", "", "a", "b", "c"])),
            )
        )
    window = draw(st.one_of(st.none(), st.floats(min_value=0, max_value=5000)))
    return moves, hosts, window


def _check(moves: list[Move], hosts: dict[int, HostRoom], window: float | None, result: WavePlan) -> None:
    by_key = {m.key: m for m in moves}
    assert sorted(result.wave_of) == sorted(by_key)  # every move has exactly one wave
    assert [w.number for w in result.waves] == list(range(1, len(result.waves) + 1))
    # groups together
    groups: dict[str, set[int]] = defaultdict(set)
    for m in moves:
        if m.group:
            groups[m.group].add(result.wave_of[m.key])
    assert all(len(w) == 1 for w in groups.values()), groups
    # limits and room, wave by wave; a breach is allowed only for moves reported as problems
    mem = {h: float(r.memory) for h, r in hosts.items()}
    cpu = {h: r.vcpus for h, r in hosts.items()}
    for wave in result.waves:
        members = [by_key[k] for k in wave.keys]
        clean = [m for m in members if m.key not in result.problems or "change window" in result.problems[m.key]]
        out: dict[int, int] = defaultdict(int)
        inc: dict[int, int] = defaultdict(int)
        for m in members:
            out[m.source] += 1
            inc[m.destination] += 1
            mem[m.destination] -= m.memory
            cpu[m.destination] -= m.vcpus
        for m in clean:
            assert out[m.source] <= hosts[m.source].max_outgoing, (wave.number, m)
            assert inc[m.destination] <= hosts[m.destination].max_incoming, (wave.number, m)
            assert mem[m.destination] >= -1e-6 and cpu[m.destination] >= -1e-6, (wave.number, m)
        for m in members:  # departures free their room from the next wave on
            mem[m.source] += m.memory
            cpu[m.source] += m.vcpus
    # timeline and window
    for a, b in zip(result.waves, result.waves[1:], strict=False):
        assert a.end_s <= b.start_s + 1e-9
    for wave in result.waves:
        fits = window is None or wave.end_s <= window
        assert wave.in_window == fits
        if not fits:
            assert all(k in result.problems for k in wave.keys)
    assert result.total_s == (result.waves[-1].end_s if result.waves else 0.0)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_waves_respect_limits_room_groups_and_windows(
    scenario: tuple[list[Move], dict[int, HostRoom], float | None],
) -> None:
    moves, hosts, window = scenario
    result = plan_waves(moves, hosts, window)
    _check(moves, hosts, window, result)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_with_room_enough_nothing_is_reported_but_the_window(
    scenario: tuple[list[Move], dict[int, HostRoom], float | None],
) -> None:
    """When every host has room for everything and the limits fit every group, the planner places
    everything within the rules: the only problems it may report are waves past the window."""
    moves, hosts, window = scenario
    roomy = {h: HostRoom(3, 3, 1000 * GIB, 1000.0) for h in hosts}
    groups: dict[str, list[Move]] = defaultdict(list)
    for m in moves:
        groups[m.group].append(m)
    small = [m for m in moves if not m.group or len(groups[m.group]) <= 3]
    result = plan_waves(small, roomy, window)
    _check(small, roomy, window, result)
    assert all("change window" in why for why in result.problems.values())


def test_a_group_larger_than_a_limit_gets_a_wave_of_its_own_and_is_reported() -> None:
    hosts = {1: HostRoom(2, 5, 100 * GIB, 100), 2: HostRoom(2, 5, 100 * GIB, 100)}
    moves = [Move(k, 1, 2, GIB, 1, 60, group="db") for k in range(3)] + [Move(9, 1, 2, GIB, 1, 60)]
    result = plan_waves(moves, hosts)
    assert {result.wave_of[k] for k in range(3)} == {1}
    assert set(result.problems) == {0, 1, 2} and "application group db" in result.problems[0]
    assert result.wave_of[9] == 2


def test_room_freed_by_an_earlier_wave_is_counted() -> None:
    """Host 2 is full until its own VM has left in wave 1; the VM coming from host 1 lands in wave 2."""
    hosts = {1: HostRoom(1, 1, 0, 0), 2: HostRoom(1, 1, 0, 0), 3: HostRoom(1, 1, 4 * GIB, 4)}
    leaving = Move(1, 2, 3, 4 * GIB, 4, 100)
    arriving = Move(2, 1, 2, 4 * GIB, 4, 50)
    result = plan_waves([leaving, arriving], hosts)
    assert result.wave_of == {1: 1, 2: 2} and not result.problems
    assert result.waves[1].start_s == 100 and result.total_s == 150
