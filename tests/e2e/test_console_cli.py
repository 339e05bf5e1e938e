"""A technician's console against a real relay and a real agent with a simulated printer."""

from __future__ import annotations

import json
import platform
import time
from typing import TYPE_CHECKING

import pytest

from tests.conftest import mode
from tests.e2e.cli import (
    Technician,
    invite,
    ok,
    provision,
    py,
    start_agent,
    start_relay,
    stop,
)
from tests.fakes.simprinter import PrinterState, SimPrinter

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.usefixtures("umask_022")  # the processes below inherit it
def test_technician_sees_paper_near_end_through_the_relay(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    store = provision(data)
    relay, url = start_relay(data)
    printer = SimPrinter(PrinterState.PAPER_NEAR_END)
    host, port = printer.start_tcp()
    till = tmp_path / "till"
    agent = None
    try:
        ok(py("agent", "enroll", invite(data, store, url), "--data", str(till)))
        # readme-walk F1: the till's data folder and everything enroll wrote in it are private
        assert mode(till) == 0o700
        assert {p.name: mode(p) for p in till.iterdir()} == dict.fromkeys(
            ("agent.key", "agent.pub", "agent.json"), 0o600
        )
        assert mode(data / "relay.url") == 0o600
        (till / "settings.json").write_text(
            json.dumps({"printers": [{"name": "receipt", "tcp": f"{host}:{port}"}]})
        )
        agent, device = start_agent(till)
        tech = Technician(tmp_path / "tech")

        assert tech("devices").returncode != 0  # not signed in yet: clear refusal
        wrong = tmp_path / "wrong.pw"
        wrong.write_text("not the password")
        refused = tech("login", "--relay", url, "--user", "admin", "--password-file", str(wrong))
        assert refused.returncode != 0
        assert "invalid username or password" in refused.stderr
        assert "signed in as admin" in ok(tech(*tech.login_args(url)))
        assert oct((tech.home / "session.json").stat().st_mode & 0o777) == "0o600"
        assert mode(tech.home) == 0o700  # readme-walk F1 (the console's session folder)
        listing = ok(tech("devices"))
        assert device in listing
        assert "yes" in listing
        # the agent reports its facts right after it connects; the listing shows them
        deadline = time.monotonic() + 15
        detail = ok(tech("devices", "--facts"))
        while "printers / 打印机" not in detail and time.monotonic() < deadline:
            time.sleep(0.2)
            detail = ok(tech("devices", "--facts"))
        assert f"  hostname / 主机名: {platform.node()}" in detail
        assert f"  printers / 打印机: receipt (tcp://{host}:{port})" in detail
        assert f"{platform.node()} · {platform.system()}" in ok(tech("devices"))

        report = json.loads(ok(tech("diag", device, "--collector", "printers", "--json")))
        (probe,) = report["printers"]["data"]["printers"]
        assert probe["status"]["paper_near_end"] is True
        assert probe["problems"] == ["paper_near_end"]
        (finding,) = report["printers"]["findings"]  # the agent's findings ride with the data
        assert finding["code"] == "printer.paper_near_end"
        assert report["printers"]["status"] == "warning"

        text = ok(tech("diag", device, "--collector", "printers"))
        assert text.startswith(f"diagnostics of {device}")
        assert "[WARNING 警告] 打印纸快用完 / Printer paper near end [receipt]" in text
        missing = tech("diag", "dev_nonexistent")
        assert missing.returncode == 3  # not found / not in scope, as other not-found errors
        assert "forbidden" in missing.stderr
        assert "设备不存在或不在你的权限范围内" in missing.stderr
    finally:
        if agent is not None:
            stop(agent)
        printer.stop()
        stop(relay)


def test_login_with_the_relays_http_address_keeps_its_websocket_one(tmp_path: Path) -> None:
    """Outside attack 16, F6: ``login --relay http://…`` was kept as typed, and every websocket
    command then ended in a traceback (InvalidURI)."""
    data = tmp_path / "relay"
    provision(data)
    relay, url = start_relay(data)
    try:
        http_address = url.replace("ws://", "http://") + "/"
        tech = Technician(tmp_path / "tech")
        assert "signed in as admin" in ok(tech(*tech.login_args(http_address)))
        assert json.loads((tech.home / "session.json").read_text())["relay"] == url
        asked = tech("diag", "dev_nobody")  # over the websocket: the relay's own refusal
        assert asked.returncode == 3, asked.stderr
        assert "error: forbidden" in asked.stderr
        assert "Traceback" not in asked.stderr

        # A session kept before the fix, with the http address in it, works too.
        session = json.loads((tech.home / "session.json").read_text())
        session["relay"] = http_address
        (tech.home / "session.json").write_text(json.dumps(session))
        again = tech("diag", "dev_nobody")
        assert (again.returncode, "Traceback" in again.stderr) == (3, False), again.stderr
    finally:
        stop(relay)
