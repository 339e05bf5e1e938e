"""A technician's console against a real relay and a real agent with a simulated printer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

from agent.simprinter import PrinterState, SimPrinter
from tests.e2e.cli import ADMIN_PASSWORD, ROOT, invite, ok, provision, start_relay, stop

if TYPE_CHECKING:
    from pathlib import Path


def console(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, POSASSIST_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "console", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_technician_sees_paper_near_end_through_the_relay(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    store = provision(data)
    relay, url = start_relay(data)
    printer = SimPrinter(PrinterState.PAPER_NEAR_END)
    host, port = printer.start_tcp()
    till = tmp_path / "till"
    agent = None
    try:
        ok(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "agent",
                    "enroll",
                    invite(data, store, url),
                    "--data",
                    str(till),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
        )
        (till / "settings.json").write_text(
            json.dumps({"printers": [{"name": "receipt", "tcp": f"{host}:{port}"}]})
        )
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--data", str(till)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert agent.stdout is not None
        assert "connected to relay" in agent.stdout.readline()
        device = json.loads((till / "agent.json").read_text())["device_id"]
        home = tmp_path / "tech"

        assert console(home, "devices").returncode != 0  # not signed in yet: clear refusal
        wrong = tmp_path / "wrong.pw"
        wrong.write_text("not the password")
        refused = console(
            home, "login", "--relay", url, "--user", "admin", "--password-file", str(wrong)
        )
        assert refused.returncode != 0
        assert "invalid username or password" in refused.stderr
        right = tmp_path / "right.pw"
        right.write_text(ADMIN_PASSWORD)
        assert "signed in as admin" in ok(
            console(home, "login", "--relay", url, "--user", "admin", "--password-file", str(right))
        )
        assert oct((home / "session.json").stat().st_mode & 0o777) == "0o600"
        listing = ok(console(home, "devices"))
        assert device in listing
        assert "yes" in listing

        report = json.loads(ok(console(home, "diag", device, "--collector", "printers", "--json")))
        (probe,) = report["printers"]["data"]["printers"]
        assert probe["status"]["paper_near_end"] is True
        assert probe["problems"] == ["paper_near_end"]

        text = ok(console(home, "diag", device, "--collector", "printers"))
        assert text.startswith(f"diagnostics of {device}")
        missing = console(home, "diag", "dev_nonexistent")
        assert missing.returncode == 1
        assert "forbidden" in missing.stderr
    finally:
        if agent is not None:
            stop(agent)  # type: ignore[arg-type]
        printer.stop()
        stop(relay)
