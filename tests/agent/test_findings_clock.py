"""The clock offset of a till that is offline from its relay's websocket (no heartbeats): read from
the relay's HTTP ``Date`` header (§5 #18). A real relay (clock right: no finding), and an HTTP
stand-in whose clock is two hours ahead of the till's."""

from __future__ import annotations

import email.utils
import http.server
import threading
import time
from typing import TYPE_CHECKING

import pytest

from posassist.agent.collectors import network
from posassist.agent.diagnostics import DiagContext
from posassist.agent.findings import Severity, evaluate
from posassist.agent.settings import Settings
from tests.e2e.cli import provision, start_relay, stop

if TYPE_CHECKING:
    from pathlib import Path

SKEW = 2 * 3600.0


class _Skewed(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response_only(200)
        self.send_header("Date", email.utils.formatdate(time.time() + SKEW, usegmt=True))
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_a_real_relays_date_header_gives_a_small_offset(tmp_path: Path) -> None:
    provision(tmp_path / "relay")
    relay, url = start_relay(tmp_path / "relay")
    try:
        data = network.collect(DiagContext(Settings(relay_url=url)))
    finally:
        stop(relay)
    clock = data["clock"]
    assert clock["source"] == "https-date"
    assert abs(clock["offset_s"]) <= 2.0  # one machine, one clock; the header has 1 s steps
    report = {"sections": {"network": {"ok": True, "data": data}}}
    assert [f.code for f in evaluate(report, None, time.time())] == []


def test_a_till_two_hours_behind_its_relay_is_a_fault_while_offline() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Skewed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"ws://127.0.0.1:{server.server_address[1]}/v1/agent"
        data = network.collect(DiagContext(Settings(relay_url=url)))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert abs(data["clock"]["offset_s"] - SKEW) <= 2.0
    report = {"sections": {"network": {"ok": True, "data": data}}}
    (finding,) = evaluate(report, None, time.time())
    assert finding.code == "clock.offset"
    assert finding.severity is Severity.FAULT
    assert "2 h (behind)" in finding.detail["en"]
    assert finding.evidence["clock"]["source"] == "https-date"


def test_heartbeat_samples_win_and_an_unreadable_date_is_none() -> None:
    ctx = DiagContext(Settings())
    ctx.clock.add(100.0, 130.0, 100.2)
    data = network.collect(ctx)
    assert data["clock"]["source"] == "heartbeat"
    assert network.date_offset("not a date", 1.0, 2.0) is None
    assert network.date_offset("", 1.0, 2.0) is None
