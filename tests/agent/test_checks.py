"""Health checks: pure rules on realistic samples, hysteresis, and the monitor driving the real
samplers (the simulated ESC/POS printer over TCP) into the real outbox."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from posassist.agent.checks.monitor import HealthMonitor
from posassist.agent.checks.rules import RULES, evaluate
from posassist.agent.checks.state import CheckState, Verdict, step
from posassist.agent.diagnostics import DiagContext, ProbeLimiter
from posassist.agent.settings import PrinterConfig, Settings
from posassist.protocol import PolicyUpdated
from posassist.protocol.health_policy import CHECKS, default_policy, parse_policy
from tests.fakes.simprinter import PrinterState

if TYPE_CHECKING:
    from tests.fakes.simprinter import SimPrinter

NOW = 1_780_000_000.0
POLICY = default_policy()


def test_every_check_has_a_rule_and_a_sampler() -> None:
    from posassist.agent.checks.samplers import SAMPLERS

    assert set(RULES) == set(CHECKS) == set(SAMPLERS)


def _printer_sample(**status: Any) -> dict[str, Any]:
    row = {"name": "receipt", "target": "tcp://127.0.0.1:9100", "outcome": "ok", "status": status}
    return {"printers": [row]}


@pytest.mark.parametrize(
    ("status", "code", "severity"),
    [
        ({"paper_near_end": True, "online": True}, "printer.paper_near_end", "warning"),
        ({"paper_out": True, "paper_near_end": True}, "printer.paper_out", "critical"),
        ({"cover_open": True}, "printer.cover_open", "critical"),
        ({"online": False}, "printer.offline", "critical"),
    ],
)
def test_printer_states_fail_with_the_findings_words(
    status: dict[str, Any], code: str, severity: str
) -> None:
    verdict = evaluate("printer", [(NOW, _printer_sample(**status))], POLICY.checks["printer"], NOW)
    assert (verdict.status, verdict.codes, verdict.severity) == ("fail", (code,), severity)
    assert " / " in verdict.summary
    assert "receipt" in verdict.summary


def test_printer_skipped_for_an_open_sale_or_a_held_port_is_unknown() -> None:
    check = POLICY.checks["printer"]
    skipped = {"printers": [{"name": "r", "outcome": "skipped", "detail": "sale open: file x"}]}
    held = {"printers": [{"name": "r", "outcome": "held", "held_by": [{"pid": 5, "name": "pos"}]}]}
    assert evaluate("printer", [(NOW, skipped)], check, NOW).status == "unknown"
    assert evaluate("printer", [(NOW, held)], check, NOW).status == "unknown"
    assert evaluate("printer", [(NOW, {"printers": []})], check, NOW).status == "unknown"
    assert evaluate("printer", [(NOW, _printer_sample(online=True))], check, NOW).status == "pass"


def test_disk_fires_below_a_threshold_and_holds_inside_the_margin() -> None:
    check = parse_policy({"checks": {"disk": {"thresholds": {"free_pct": 10, "free_mb": 0}}}})
    disk = check.checks["disk"]
    gb = 1024**3

    def at(free: float) -> Verdict:
        volume = {"path": "/pos/data", "pos": True, "total": 100 * gb, "free": free * gb}
        return evaluate("disk", [(NOW, {"volumes": [volume]})], disk, NOW)

    low = at(8)
    assert (low.status, low.codes) == ("fail", ("pos.data_disk_low",))
    assert at(2).codes == ("disk.full",)
    assert at(12).status == "hold"  # between 10 % and 10 % + 5 % margin
    assert at(16).status == "pass"
    unreadable = {"volumes": [{"path": "/gone", "pos": True, "error": "No such file"}]}
    assert evaluate("disk", [(NOW, unreadable)], disk, NOW).codes == ("pos.data_path_unreadable",)


def test_cpu_must_stay_high_for_the_sustained_time() -> None:
    cpu = parse_policy({"checks": {"cpu": {"thresholds": {"sustained_s": 60}}}}).checks["cpu"]
    busy = [(NOW - 60 + 15 * i, {"percent": 97.0}) for i in range(5)]
    assert evaluate("cpu", busy, cpu, NOW).codes == ("system.cpu_sustained",)
    assert evaluate("cpu", busy[-2:], cpu, NOW).status == "hold"  # busy, not for long yet
    dip = [*busy[:2], (busy[2][0], {"percent": 20.0}), *busy[3:]]
    assert evaluate("cpu", dip, cpu, NOW).status == "hold"
    assert evaluate("cpu", [(NOW, {"percent": 5.0})], cpu, NOW).status == "pass"


def test_a_growing_pos_process_and_low_memory() -> None:
    memory = POLICY.checks["memory"]
    mb = 1024**2
    samples = [
        (NOW - 3600 + 600 * i, {"available": 2048 * mb, "total": 4096 * mb, "pos": [
            {"pid": 42, "started": 1.0, "name": "pos.exe", "rss": (300 + 40 * i) * mb}
        ]})
        for i in range(7)
    ]  # fmt: skip
    verdict = evaluate("memory", samples, memory, NOW)
    assert verdict.codes == ("pos.memory_growing",)
    assert "pos.exe" in verdict.summary
    low = [(NOW, {"available": 100 * mb, "total": 4096 * mb, "pos": []})]
    assert evaluate("memory", low, memory, NOW).codes == ("memory.low",)


def test_pos_restarts_clock_drift_relay_and_certificates() -> None:
    pos = POLICY.checks["pos_process"]

    def running(pid: int) -> dict[str, Any]:
        return {"configured": True, "names": ["pos.exe"], "running": True,
                "processes": [{"pid": pid, "started": float(pid)}], "services": {}}  # fmt: skip

    restarts = [(NOW - 1800 + 300 * i, running(100 + i)) for i in range(4)]
    assert evaluate("pos_process", restarts, pos, NOW).codes == ("pos.restarting",)
    steady = [(NOW - 1800 + 300 * i, running(100)) for i in range(4)]
    assert evaluate("pos_process", steady, pos, NOW).status == "pass"
    gone = dict(running(1), running=False, processes=[], services={"posd": "failed"})
    assert evaluate("pos_process", [(NOW, gone)], pos, NOW).codes == (
        "pos.not_running",
        "pos.service_stopped",
    )
    clock = POLICY.checks["clock"]
    assert evaluate("clock", [(NOW, {"offset_s": 7200.0})], clock, NOW).codes == ("clock.offset",)
    assert evaluate("clock", [(NOW, {"offset_s": 3.0})], clock, NOW).status == "pass"
    assert evaluate("clock", [(NOW, {})], clock, NOW).status == "unknown"
    relay = POLICY.checks["relay"]
    down = {"connected": False, "since": NOW - 700, "host": "relay.example", "port": 443}
    assert evaluate("relay", [(NOW, down)], relay, NOW).codes == ("network.relay_unreachable",)
    assert evaluate("relay", [(NOW, dict(down, since=NOW - 10))], relay, NOW).status == "hold"
    tls = POLICY.checks["tls_cert"]
    certs = {"certificates": [
        {"host": "relay:443", "kind": "relay", "not_after": NOW + 3 * 86400},
        {"host": "pay:443", "kind": "gateway", "not_after": NOW - 86400},
    ]}  # fmt: skip
    assert evaluate("tls_cert", [(NOW, certs)], tls, NOW).codes == (
        "gateway.tls_expired",
        "tls.expiring",
    )


def test_new_log_lines_and_a_locked_database() -> None:
    def logs(*lines: str) -> dict[str, Any]:
        log = {"path": "/pos/pos.log", "ok": True, "recent_errors": list(lines),
               "error_count": len(lines)}  # fmt: skip
        return {"configured": True, "logs": [log], "database": {"up": True, "file": None}}

    pos_log, database = POLICY.checks["pos_log"], POLICY.checks["database"]
    first = (NOW - 60, logs("ERROR printer timeout"))
    same = (NOW, logs("ERROR printer timeout"))
    assert evaluate("pos_log", [first], pos_log, NOW).codes == ("pos.log_errors",)
    assert evaluate("pos_log", [first, same], pos_log, NOW).status == "pass"  # nothing new
    locked = (NOW, logs("ERROR printer timeout", "SQLITE_BUSY: database is locked"))
    assert evaluate("database", [first, locked], database, NOW).codes == ("pos.database_locked",)
    assert evaluate("pos_log", [first, locked], pos_log, NOW).status == "pass"  # the db's line
    down = dict(logs(), database={"up": False, "service": {"mysql": "stopped"}})
    assert evaluate("database", [(NOW, down)], database, NOW).codes == ("pos.database_down",)


def test_print_queue_stuck_by_the_policy_threshold() -> None:
    queue = parse_policy({"checks": {"print_queue": {"thresholds": {"stuck_s": 60}}}})
    check = queue.checks["print_queue"]
    job = {"queue": "receipt", "id": "7", "submitted_at": NOW - 90}
    data = {"printers": [{"name": "receipt", "state": "idle"}], "jobs": [job]}
    assert evaluate("print_queue", [(NOW, data)], check, NOW).codes == ("queue.jobs_stuck",)
    paused = {"printers": [{"name": "receipt", "state": "disabled", "reasons": ["paused"]}]}
    assert evaluate("print_queue", [(NOW, paused)], check, NOW).codes == ("queue.disabled",)


def test_garbage_in_a_sample_is_unknown_not_an_exception() -> None:
    for name in RULES:
        verdict = evaluate(
            name, [(NOW, {"printers": 5, "volumes": "x", "logs": 3})], POLICY.checks[name], NOW
        )
        assert verdict.status in ("unknown", "pass", "hold")


def test_a_printer_flapping_every_5_s_for_ten_minutes_is_one_alert() -> None:
    check = POLICY.checks["printer"]  # fail_after 1, clear_after 3, clear_hold 120
    state = CheckState("printer")
    events = []
    for i in range(120):
        verdict = Verdict("fail", "critical") if i % 2 == 0 else Verdict("pass")
        transition = step(state, verdict, check, NOW + 5 * i, episode=f"e{i}")
        if transition is not None:
            events.append((transition.state, state.next_key()))
    assert events == [("firing", "printer:e0:1")]
    # steady again: resolved once, after 3 passes and 120 s without a failure
    for i in range(120, 160):
        transition = step(state, Verdict("pass"), check, NOW + 5 * i, episode="x")
        if transition is not None:
            events.append((transition.state, state.next_key()))
    assert events == [("firing", "printer:e0:1"), ("resolved", "printer:e0:2")]


def test_fail_after_and_escalation() -> None:
    check = parse_policy({"checks": {"disk": {"fail_after": 3}}}).checks["disk"]
    state = CheckState("disk")
    warn, crit = Verdict("fail", "warning"), Verdict("fail", "critical")
    assert step(state, warn, check, NOW, "e") is None
    assert step(state, warn, check, NOW + 1, "e") is None
    fired = step(state, warn, check, NOW + 2, "e")
    assert fired is not None
    assert fired.state == "firing"
    assert step(state, warn, check, NOW + 3, "e") is None  # a repeat: no new event
    worse = step(state, crit, check, NOW + 4, "f")
    assert worse is not None
    assert (worse.state, worse.severity) == ("firing", "critical")
    assert state.episode == "e"  # the same alert, now critical
    assert step(state, Verdict("unknown"), check, NOW + 5, "e") is None
    assert state.firing
    assert state.fails == 5


# --- the monitor, with the real samplers and outbox ---------------------------------------------


@pytest.fixture
async def monitor(tmp_path: Path, printer: SimPrinter) -> Any:
    host, port = printer.start_tcp()
    settings = Settings(printers=(PrinterConfig("receipt", host=host, port=port),))
    ctx = DiagContext(settings, tmp_path, limiter=ProbeLimiter(0.0))
    clock = Clock()
    health = HealthMonitor(ctx, tmp_path, "ws://127.0.0.1:1", clock=clock)
    await health.open()
    yield health, clock
    await health.close()


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


async def test_the_real_printer_flapping_every_5_s_queues_one_alert(
    monitor: Any, printer: SimPrinter
) -> None:
    health, clock = monitor
    for i in range(24):  # two minutes of a printer going paper-out and back every 5 s
        printer.set_state(PrinterState.PAPER_OUT if i % 2 == 0 else PrinterState.OK)
        await health.run_check("printer")
        clock.now += 5
    queued = await health._in_db(health.outbox.pending)
    assert [(q.event["state"], q.event["severity"]) for q in queued] == [("firing", "critical")]
    assert queued[0].event["details"]["codes"] == ["printer.paper_out"]
    printer.set_state(PrinterState.OK)
    for _ in range(30):
        await health.run_check("printer")
        clock.now += 5
    queued = await health._in_db(health.outbox.pending)
    assert [q.event["state"] for q in queued] == ["firing", "resolved"]
    assert queued[0].alert_key.rsplit(":", 1)[0] == queued[1].alert_key.rsplit(":", 1)[0]


async def test_an_invalid_policy_keeps_the_last_good_one_across_a_restart(
    monitor: Any, tmp_path: Path
) -> None:
    health, _ = monitor
    good = {"version": 4, "checks": {"printer": {"interval": 5, "fail_after": 2}}}
    assert health.apply_policy(PolicyUpdated(version=4, policy=good, hours={"timezone": "UTC"}))
    assert health.policy.version == 4
    bad = {"version": 5, "checks": {"printer": {"interval": -1}}}
    assert not health.apply_policy(PolicyUpdated(version=5, policy=bad, hours={}))
    assert health.policy.version == 4
    assert health.policy.checks["printer"].fail_after == 2
    await health.close()
    again = HealthMonitor(health.ctx, tmp_path, "ws://127.0.0.1:1")
    await again.open()
    assert again.policy.version == 4  # the last good one, from disk
    assert again.hours == {"timezone": "UTC"}
    await again.close()
    health._outbox = None  # closed above; the fixture's close is then a no-op for it


async def test_no_printer_probe_while_a_sale_is_open(tmp_path: Path, printer: SimPrinter) -> None:
    from posassist.agent.profile import load_profile

    host, port = printer.start_tcp()
    printer.set_state(PrinterState.PAPER_OUT)
    settings = Settings(printers=(PrinterConfig("receipt", host=host, port=port),))
    (tmp_path / "pos").mkdir()
    (tmp_path / "pos" / "sale.open").write_text("sale 1017")  # the demo POS's open-sale flag
    ctx = DiagContext(settings, tmp_path, load_profile("demo", tmp_path), limiter=ProbeLimiter(0.0))
    health = HealthMonitor(ctx, tmp_path, "ws://127.0.0.1:1", clock=Clock())
    await health.open()
    try:
        for _ in range(3):
            assert await health.run_check("printer") is None
        assert printer.bytes_received == 0  # not one status request reached the printer
        assert health.states["printer"].fails == 0
        (tmp_path / "pos" / "sale.open").unlink()  # the sale ended: now it is probed, and fires
        fired = await health.run_check("printer")
        assert fired is not None
        assert fired.codes == ("printer.paper_out",)
        assert printer.bytes_received > 0
    finally:
        await health.close()


async def test_an_alert_the_full_disk_could_not_hold_is_queued_at_the_next_sample(
    monitor: Any, printer: SimPrinter
) -> None:
    from posassist.agent.errors import OutboxError

    health, _ = monitor
    box = health.outbox
    # the disk is full: SQLite may grow the file by no page (SQLITE_FULL, as on a full disk)
    (pages,) = box._db.execute("PRAGMA page_count").fetchone()
    box._db.execute(f"PRAGMA max_page_count = {pages}")
    filler = {"severity": "info", "summary": "x" * 400}
    box._db.execute("PRAGMA synchronous = OFF")  # filling is set-up: no fsync per row
    refused: list[str] = []
    for n in range(10_000):  # fill what room the pages have left
        try:
            box.put(f"filler-{n}", filler, now=1.0)
        except OutboxError as exc:
            refused.append(str(exc))
            break
    assert "full" in refused[0]
    box._db.execute("PRAGMA synchronous = FULL")
    printer.set_state(PrinterState.PAPER_OUT)
    with pytest.raises(OutboxError, match="full"):
        await health.run_check("printer")
    assert not health.states["printer"].firing  # not on disk, so not fired
    box._db.execute("PRAGMA max_page_count = 1073741823")  # room again
    fired = await health.run_check("printer")
    assert fired is not None
    assert fired.state == "firing"
    queued = [q.event.get("check_name") for q in box.pending(limit=1000)]
    assert queued.count("printer") == 1


PY38 = Path(__file__).resolve().parents[2] / ".venv38" / "bin" / "python"


@pytest.mark.py38
def test_the_monitor_runs_every_check_on_python38(tmp_path: Path) -> None:
    if not PY38.exists():
        pytest.fail(f"{PY38} is missing: `make venv` builds it (docs/windows7.md)")
    import subprocess

    code = """
import asyncio, sys
from pathlib import Path
from posassist.agent.checks.monitor import HealthMonitor
from posassist.agent.diagnostics import DiagContext
from posassist.agent.settings import Settings
from posassist.protocol import PolicyUpdated
async def main():
    d = Path(sys.argv[1])
    h = HealthMonitor(DiagContext(Settings(), d), d, "ws://127.0.0.1:1")
    await h.open()
    policy = {"checks": {"disk": {"thresholds": {"free_pct": 99}}}}
    h.apply_policy(PolicyUpdated(version=1, policy=policy, hours={}))
    out = [await h.run_check(n) for n in list(h.policy.checks)]
    print([t.state + ":" + ",".join(t.codes) for t in out if t])
    print(len(await h._in_db(h.outbox.pending)))
    await h.close()
asyncio.run(main())
"""
    done = subprocess.run(
        [str(PY38), "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["['firing:disk.low']", "1"]


async def test_a_policy_that_comes_while_a_check_runs_applies_to_it_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import threading

    from posassist.agent.checks import samplers

    ctx = DiagContext(Settings(), tmp_path)
    health = HealthMonitor(ctx, tmp_path, "ws://127.0.0.1:1")
    await health.open()
    loop = asyncio.get_running_loop()
    applied = threading.Event()
    stricter = PolicyUpdated(
        version=2, policy={"checks": {"disk": {"thresholds": {"free_pct": 99}}}}, hours={}
    )
    real_disk = samplers.SAMPLERS["disk"]

    def disk(ctx: DiagContext, link: Any) -> dict[str, Any]:
        if not applied.is_set():  # the relay's policy arrives while this sample is taken

            def arrive() -> None:
                health.apply_policy(stricter)
                applied.set()

            loop.call_soon_threadsafe(arrive)
            applied.wait(5)
        return real_disk(ctx, link)

    monkeypatch.setitem(samplers.SAMPLERS, "disk", disk)  # type: ignore[index]
    stop_event = asyncio.Event()
    running = asyncio.ensure_future(health.run(stop_event))
    try:
        async with asyncio.timeout(10):  # the disk's own interval is 300 s
            while not health.states["disk"].firing:  # noqa: ASYNC110 - state without an event
                await asyncio.sleep(0.05)
    finally:
        stop_event.set()
        await running
        await health.close()
    assert health.policy.checks["disk"].threshold("free_pct") == 99


@pytest.mark.parametrize(
    ("min_interval", "policy_interval", "used"),
    [(30.0, 5.0, 30.0), (5.0, 5.0, 5.0), (30.0, 120.0, 120.0)],
)
async def test_the_printer_is_never_checked_more_often_than_the_till_allows(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    min_interval: float,
    policy_interval: float,
    used: float,
) -> None:
    """A policy may ask for the printer every 5 s; the till's ``printer_min_interval`` is a
    floor the relay cannot lower (a run in between would only reread the last answer)."""
    import asyncio
    import logging

    from posassist.agent.checks import samplers

    calls: list[float] = []
    now = [1000.0]
    health = HealthMonitor(
        DiagContext(Settings(printer_min_interval=min_interval), tmp_path),
        tmp_path,
        "ws://127.0.0.1:1",
        monotonic=lambda: now[0],
    )
    await health.open()
    policy = {"checks": {"printer": {"interval": policy_interval}}}
    with caplog.at_level(logging.INFO, logger="posassist.agent.checks"):
        assert health.apply_policy(PolicyUpdated(version=3, policy=policy, hours={}))
    said = [r.getMessage() for r in caplog.records if "printer_min_interval" in r.getMessage()]
    assert len(said) == (1 if used > policy_interval else 0), said
    assert health.interval("printer") == used
    real = samplers.SAMPLERS["printer"]
    try:

        def sample(ctx: DiagContext, link: Any) -> dict[str, Any]:
            calls.append(now[0])
            return {}

        samplers.SAMPLERS["printer"] = sample  # type: ignore[index]
        stop_event = asyncio.Event()
        running = asyncio.ensure_future(health.run(stop_event))
        async with asyncio.timeout(10):
            while not calls:  # noqa: ASYNC110 - the first round runs at once
                await asyncio.sleep(0.01)
        stop_event.set()
        await running
    finally:
        samplers.SAMPLERS["printer"] = real  # type: ignore[index]
        await health.close()
    assert health._due["printer"] == calls[0] + used


def test_the_probe_limiter_reuses_an_answer_but_not_for_a_probe_due_a_moment_early() -> None:
    from posassist.agent.diagnostics import PROBE_JITTER

    now = [0.0]
    limiter = ProbeLimiter(5.0, clock=lambda: now[0])
    assert limiter.recent("tcp:1") is None
    limiter.record("tcp:1", {"outcome": "ok"})
    now[0] = 2.0
    assert limiter.recent("tcp:1") == (2.0, {"outcome": "ok"})  # asked again too soon: reused
    now[0] = 5.0 - PROBE_JITTER / 2  # the schedule's next run, a little early: probed again
    assert limiter.recent("tcp:1") is None
