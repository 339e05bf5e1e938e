"""collect_report: concurrent collectors, each with its own timeout; printers probed politely."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from posassist.agent.diagnostics import (
    Collector,
    DiagContext,
    ProbeLimiter,
    collect_report,
    default_collectors,
    to_tree,
)
from posassist.agent.errors import CollectorTimeout
from posassist.agent.profile import load_profile
from posassist.agent.settings import PrinterConfig, Settings
from posassist.protocol import Codec
from posassist.protocol import messages as m
from tests.fakes.simprinter import PrinterState

ROOT = Path(__file__).resolve().parents[2]


def _ok(ctx):
    return {"fine": True}


def _broken(ctx):
    raise OSError(5, "Input/output error")


def _hangs(ctx):
    time.sleep(30)


async def test_hung_collector_times_out_and_the_others_are_still_reported() -> None:
    ctx = DiagContext(Settings())
    collectors = [Collector("a", _ok), Collector("hang", _hangs, 0.3), Collector("bad", _broken)]
    started = time.monotonic()
    sections = await collect_report(ctx, collectors, time.monotonic() + 5)
    assert time.monotonic() - started < 2
    assert sections["a"]["ok"]
    assert sections["a"]["data"] == {"fine": True}
    assert sections["hang"] == {
        "ok": False,
        "error": {"type": "CollectorTimeout", "message": "no result within 0.3 s"},
        "elapsed_ms": sections["hang"]["elapsed_ms"],
    }
    assert sections["bad"]["error"]["type"] == "OSError"


async def test_report_deadline_caps_every_collector_and_unknown_names_fail_clearly() -> None:
    ctx = DiagContext(Settings())
    collectors = [Collector("hang", _hangs, 10.0), Collector("a", _ok)]
    sections = await collect_report(ctx, collectors, time.monotonic() + 0.3, only=["hang", "nope"])
    assert list(sections) == ["hang", "nope"]
    assert sections["hang"]["error"]["type"] == "CollectorTimeout"
    assert sections["nope"]["error"] == {
        "type": "CollectorError",
        "message": "no collector named 'nope'",
    }


def test_to_tree_gives_msgpack_types_within_depth() -> None:
    deep: object = "leaf"
    for _ in range(60):
        deep = [deep]
    tree = to_tree({"nan": math.nan, 1: (1, 2), "big": 2**70, "deep": deep, "b": b"\x10\x04"})
    assert tree["nan"] is None
    assert tree["1"] == [1, 2]
    assert tree["big"] == str(2**70)
    assert tree["b"] == "1004"
    report = m.DiagnosticsReport(id=1, device_id="t", collected_at=1.0, sections={"x": tree})
    frame = Codec().encode(report)  # arrays come back as tuples: compare the frames
    assert Codec().encode(Codec().decode(frame)) == frame


async def test_full_report_with_simulated_printers_fits_a_diagnostics_report(
    printer, tmp_path
) -> None:
    host, port = printer.start_tcp()
    (tmp_path / "pos" / "logs").mkdir(parents=True)
    (tmp_path / "pos" / "logs" / "pos.log").write_text("ERROR card 4111111111111111\n")
    printer.set_state(PrinterState.COVER_OPEN)
    settings = Settings(relay_url="", printers=(PrinterConfig("receipt", host=host, port=port),))
    ctx = DiagContext(settings, tmp_path, load_profile("demo", tmp_path))
    sections = await collect_report(ctx, default_collectors(), time.monotonic() + 10)
    for name in ("system", "network", "serial", "printers", "pos"):
        assert sections[name]["ok"], (name, sections[name])
    (row,) = sections["printers"]["data"]["printers"]
    assert row["outcome"] == "ok"
    assert "cover_open" in row["problems"]
    assert "4111111111111111" not in str(sections)
    report = m.DiagnosticsReport(id=3, device_id="t", collected_at=1.0, sections=sections)
    frame = Codec().encode(report)
    assert Codec().encode(Codec().decode(frame)) == frame


async def test_printer_is_not_probed_while_a_sale_is_open(printer, tmp_path) -> None:
    host, port = printer.start_tcp()
    (tmp_path / "pos").mkdir()
    (tmp_path / "pos" / "sale.open").write_text("receipt 10023")
    settings = Settings(printers=(PrinterConfig("receipt", host=host, port=port),))
    ctx = DiagContext(settings, tmp_path, load_profile("demo", tmp_path))
    only = ["printers"]
    sections = await collect_report(ctx, default_collectors(), time.monotonic() + 5, only=only)
    (row,) = sections["printers"]["data"]["printers"]
    assert row["outcome"] == "skipped"
    assert row["detail"].startswith("sale open: file ")
    assert printer.bytes_received == 0


async def test_printer_probes_are_rate_limited(printer, tmp_path) -> None:
    host, port = printer.start_tcp()
    settings = Settings(printers=(PrinterConfig("receipt", host=host, port=port),))
    ctx = DiagContext(settings, tmp_path, limiter=ProbeLimiter(60.0))
    first = await collect_report(ctx, default_collectors(), time.monotonic() + 30, ["printers"])
    sent = printer.bytes_received
    second = await collect_report(ctx, default_collectors(), time.monotonic() + 30, ["printers"])
    assert first["printers"]["data"]["printers"][0]["cached"] is False
    assert second["printers"]["data"]["printers"][0]["cached"] is True
    assert printer.bytes_received == sent > 0


def _holds(pid: int, path: str) -> bool:
    """Whether process ``pid`` has ``path`` open (Linux /proc)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    real = os.path.realpath(path)
    return any(os.path.realpath(f"/proc/{pid}/fd/{fd}") == real for fd in fds)


async def test_held_serial_printer_is_reported_and_never_opened(printer, tmp_path) -> None:
    path = printer.start_pty()
    holder = subprocess.Popen(  # noqa: ASYNC220 - a stand-in POS holding the port
        [sys.executable, "-c", f"f = open({path!r}, 'rb'); import time; time.sleep(30)"]
    )
    try:
        deadline = time.monotonic() + 30
        while not _holds(holder.pid, path):  # the stand-in POS has opened the port
            assert time.monotonic() < deadline, "the holder never opened the port"
            await asyncio.sleep(0.02)
        settings = Settings(printers=(PrinterConfig("receipt", serial=path),))
        ctx = DiagContext(settings, tmp_path)
        sections = await collect_report(
            ctx, default_collectors(), time.monotonic() + 30, ["printers"]
        )
        (row,) = sections["printers"]["data"]["printers"]
        assert row["outcome"] == "held"
        assert [h["pid"] for h in row["held_by"]] == [holder.pid]
        assert printer.bytes_received == 0
    finally:
        holder.kill()
        holder.wait()


def test_diag_offline_prints_json_and_text(tmp_path) -> None:
    (tmp_path / "settings.json").write_text('{"pos_profile": "demo"}')
    (tmp_path / "pos" / "logs").mkdir(parents=True)
    (tmp_path / "pos" / "logs" / "pos.log").write_text("ERROR 打印机 offline\n")
    run = [sys.executable, "-m", "posassist.agent", "diag", "--offline", "--data", str(tmp_path)]
    done = subprocess.run([*run, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    import json

    report = json.loads(done.stdout)
    assert set(report["sections"]) == {
        "system",
        "network",
        "serial",
        "printers",
        "pos",
        "print_queue",
        "host",
    }
    assert report["sections"]["pos"]["data"]["logs"][0]["error_count"] == 1
    assert report["schema"] == "posassist.diag/1"
    for section in report["sections"].values():
        assert section["status"] in ("ok", "info", "warning", "fault", "critical", "unreadable")
        assert isinstance(section["findings"], list)
    (log_errors,) = report["sections"]["pos"]["findings"][-1:]
    assert log_errors["code"] == "pos.log_errors"
    assert "打印机 offline" in log_errors["detail"]["en"]
    text = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert text.index("== 诊断结论 / Findings") < text.index("== 系统 / System")
    assert "== 收银软件 / POS application" in text
    assert "收银软件日志有错误 / POS log has errors" in text
    assert "{'" not in text  # no dict reprs
    refused = subprocess.run(
        [*run[:4], "--data", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2
    assert "--offline" in refused.stderr


async def test_workers_are_reused_and_a_stuck_one_is_abandoned_not_waited_for() -> None:
    import threading

    from posassist.agent.diagnostics import run_in_worker

    first = await run_in_worker(threading.get_ident, 5.0)
    again = await run_in_worker(threading.get_ident, 5.0)
    assert again == first  # no thread started for the second call
    release = threading.Event()
    stuck_on: list[int] = []

    def stuck() -> None:
        stuck_on.append(threading.get_ident())
        release.wait(10)

    try:
        started = time.monotonic()
        with pytest.raises(CollectorTimeout):
            await run_in_worker(stuck, 0.2)
        assert time.monotonic() - started < 2
        # the next call runs at once, on a thread other than the stuck one
        other = await run_in_worker(threading.get_ident, 5.0)
        assert stuck_on
        assert other != stuck_on[0]
        assert await run_in_worker(lambda: 6 * 7, 5.0) == 42
    finally:
        release.set()


async def test_the_agent_loads_its_collectors_ahead_of_the_first_request() -> None:
    from posassist.agent import connection

    connection._WARM = False
    await connection._warm_up()
    assert connection._WARM


async def test_printers_with_none_configured_are_answered_without_a_worker_thread(
    printer, tmp_path, monkeypatch
) -> None:
    # The cheap answer (nothing configured) comes from the collector's at_once on the loop; a
    # configured printer is still probed in a worker (its probe is I/O).
    import threading

    from posassist.agent import diagnostics
    from posassist.agent.collectors.printers import NO_PRINTERS

    handed: list[object] = []
    real = diagnostics.run_in_worker

    async def counted(fn, timeout):
        handed.append(fn)
        return await real(fn, timeout)

    monkeypatch.setattr(diagnostics, "run_in_worker", counted)
    ran_on: list[int] = []
    at_once = diagnostics.default_collectors()[3].at_once
    assert at_once is not None

    def noted(ctx):
        ran_on.append(threading.get_ident())
        return at_once(ctx)

    printers = diagnostics.default_collectors()[3]._replace(at_once=noted)
    assert printers.name == "printers"
    idle = DiagContext(Settings())
    sections = await collect_report(idle, [printers], time.monotonic() + 5, ["printers"])
    assert sections["printers"]["ok"] is True
    assert sections["printers"]["data"] == {"printers": [], "note": NO_PRINTERS}
    assert handed == []
    assert ran_on == [threading.get_ident()]  # on the loop's own thread

    host, port = printer.start_tcp()
    settings = Settings(printers=(PrinterConfig("receipt", host=host, port=port),))
    busy = DiagContext(settings, tmp_path)
    sections = await collect_report(busy, [printers], time.monotonic() + 5, ["printers"])
    assert len(handed) == 1
    (row,) = sections["printers"]["data"]["printers"]
    assert row["outcome"] == "ok"
    assert printer.bytes_received > 0


async def test_an_at_once_answer_that_fails_is_a_failed_section_not_a_crash() -> None:
    def broken_at_once(ctx):
        raise ValueError("settings changed under us")

    collectors = [Collector("odd", _ok, at_once=broken_at_once), Collector("a", _ok)]
    sections = await collect_report(DiagContext(Settings()), collectors, time.monotonic() + 5)
    assert sections["odd"]["ok"] is False
    assert sections["odd"]["error"]["type"] == "ValueError"
    assert sections["a"]["data"] == {"fine": True}
