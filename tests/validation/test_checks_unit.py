"""Narrow unit tests of the VAL-* decisions on hand-made facts (the lab tests prove them on real guests):
what fails, what only warns because it cannot decide."""

from __future__ import annotations

import threading
from typing import Any

from inventory.hypervisor.guest import AgentFacts, ConsoleCapture, DomainView
from inventory.hypervisor.types import DomainInfo, NicInfo
from migrations_app.validation import REGISTRY, ValidationContext, Waits
from migrations_app.validation.registry import run_check

MAC = "52:54:00:aa:bb:cc"
PANIC = "[   12.000001] Kernel panic - not syncing: sysrq triggered crash"


def view(state: str = "running", reason: str = "", **extra: Any) -> DomainView:
    info = DomainInfo(
        uuid="u",
        name="vm",
        virt_type="qemu",
        state=state,
        vcpus=1,
        memory=256 << 20,
        machine_type="pc-i440fx-7.2",
        has_guest_agent=True,
        nics=[NicInfo(mac=MAC, type="network", model="virtio", network="app-lan", filter="f")],
    )
    return DomainView(
        host_uri="test:///",
        reachable=True,
        exists=True,
        state=state,
        reason=reason,
        persistent=True,
        domain=info,
        nwfilters=frozenset({"f"}),
        networks={"app-lan": True},
        **extra,
    )


def context(mode: str = "live", **overrides: Any) -> ValidationContext:
    baseline = {
        "domain": {
            "state": "running",
            "vcpus": 1,
            "memory": 256 << 20,
            "cpu_model": "",
            "machine_type": "pc-i440fx-7.2",
            "has_agent": True,
            "disks": [],
            "nics": [{"mac": MAC, "network": "app-net", "filter": "f"}],
            "seclabels": [],
        },
        "agent": {
            "answered": True,
            "filesystems": [["/data", "ext4"]],
            "addresses": {MAC: ["10.0.0.5"]},
            "boot_id": "b1",
        },
    }
    ctx = ValidationContext(
        uuid="u",
        mode=mode,
        source_uri="test:///",
        destination_uri="test:///",
        source_name="h1",
        destination_name="h2",
        baseline=baseline,
        network_map={MAC: "app-lan"},
        storage_map={},
        pool_paths={},
        transfers=[],
        downtime_ms=overrides.pop("downtime_ms", 20.0),
        max_downtime_ms=300,
        postcopy=overrides.pop("postcopy", False),
        seconds_since_move=5.0,
        probes=[],
        waits=Waits(),
    )
    # the facts the checks read, as libvirt would have returned them
    ctx.__dict__["dest"] = overrides.pop("dest", view())
    ctx.__dict__["source"] = DomainView(host_uri="test:///", reachable=True)
    ctx.__dict__["agent_after"] = overrides.pop(
        "agent",
        AgentFacts(
            answered=True, filesystems=(("/data", "ext4"),), addresses={MAC: ["10.0.0.5"]}, boot_id="b1", uptime_s=50.0
        ),
    )
    ctx.__dict__["kernel_log"] = overrides.pop("kernel_log", ("", ""))
    ctx._console = overrides.pop("console", ConsoleCapture("login: ", 3.0))
    done = threading.Thread(target=lambda: None)  # the console window has closed
    done.start()
    done.join()
    ctx._console_thread = done
    ctx.dest_now = lambda: ctx.dest  # type: ignore[method-assign]
    assert not overrides, overrides
    return ctx


def outcome(check_id: str, ctx: ValidationContext) -> tuple[str, str, Any]:
    finding = run_check(REGISTRY[check_id], ctx)
    return finding.outcome, finding.message, finding.found


def test_a_clean_guest_passes_every_check_that_reads_it() -> None:
    ctx = context()
    for check_id in REGISTRY:
        assert outcome(check_id, ctx)[0] in ("pass", "info"), (check_id, outcome(check_id, ctx))


def test_panic_lines_on_the_console_or_in_the_kernel_log_fail_with_the_lines_as_evidence() -> None:
    state, message, found = outcome("VAL-CONSOLE", context(console=ConsoleCapture(f"ok\r\n{PANIC}\r\n", 4.0)))
    assert state == "fail" and "Kernel panic" in message and found["lines"] == [PANIC]
    # an oops since the switch-over, read through the agent (earlier lines do not count)
    log = "[    1.0] Oops: old line before the move\n[   46.5] BUG: unable to handle page fault\n"
    state, _message, found = outcome("VAL-CONSOLE", context(kernel_log=(log, "")))
    assert state == "fail" and found["lines"] == ["[   46.5] BUG: unable to handle page fault"]
    # crashed without a line read: still a failure
    assert outcome("VAL-CONSOLE", context(dest=view("crashed", "panicked")))[0] == "fail"


def test_what_cannot_be_decided_warns_instead_of_failing() -> None:
    silent = AgentFacts(answered=False, error="Guest agent is not responding")
    assert outcome("VAL-CONTINUITY", context(agent=silent))[0] == "warn"
    assert outcome("VAL-DOWNTIME", context(downtime_ms=None))[0] == "warn"
    assert outcome("VAL-DOWNTIME", context(downtime_ms=None, postcopy=True))[0] == "warn"
    assert outcome("VAL-AGENT", context(agent=silent))[0] == "fail"  # an agent that answered before must answer


def test_a_rebooted_guest_fails_continuity_and_downtime_over_the_limit_fails() -> None:
    rebooted = AgentFacts(answered=True, filesystems=(("/data", "ext4"),), addresses={MAC: ["10.0.0.5"]}, boot_id="b2")
    assert outcome("VAL-CONTINUITY", context(agent=rebooted))[0] == "fail"
    state, message, found = outcome("VAL-DOWNTIME", context(downtime_ms=301.0))
    assert state == "fail" and "limit of 300 ms" in message and found == {"downtime_ms": 301.0}
    assert outcome("VAL-CONTINUITY", context("cold"))[0] == "info"


def test_the_checks_deliberate_waits_are_counted_apart_from_their_work() -> None:
    import socket

    from migrations_app.validation import ProbeSpec
    from migrations_app.validation.phase import waits_ms

    with socket.socket() as sock:  # a port nothing listens on: the probe is retried until its wait ends
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = context()
    ctx.probes = [ProbeSpec(kind="tcp", address="127.0.0.1", port=port)]
    ctx.waits = Waits(probe_s=0.6)
    assert outcome("VAL-PROBES", ctx)[0] == "fail"
    assert set(ctx.waited) == {"probes"} and ctx.waited["probes"] > 0
    ctx.note_wait("console", 1.25)
    ctx.note_wait("console", 0.25)
    assert waits_ms({"console": 1.5, "agent": 0.0125}) == {
        "agent": 12.5,
        "console": 1500.0,
        "probes": 0.0,
        "total": 1512.5,
    }
    assert waits_ms(ctx.waited)["console"] == 1500.0
