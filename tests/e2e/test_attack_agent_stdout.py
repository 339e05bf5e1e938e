"""Found in the outside attack (F7): an agent whose stdout is gone (a pipe whose reader left, a
service wrapper) stays connected: printing to the till's console never ends a connection."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from tests.e2e.cli import ROOT, Technician, invite, ok, provision, py, start_relay, stop

if TYPE_CHECKING:
    from pathlib import Path


def _wait_for(path: Path, text: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while text not in (content := path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} not in {path.name}: {content[-2000:]}"
        time.sleep(0.05)
    return content


def test_agent_with_a_closed_stdout_stays_connected(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    store = provision(data)
    relay_log = tmp_path / "relay.log"
    agent_log = tmp_path / "agent.log"
    with relay_log.open("w") as rlog, agent_log.open("w") as alog:
        relay, url = start_relay(data, log=rlog)
        agent = None
        try:
            till = tmp_path / "till"
            ok(py("agent", "enroll", invite(data, store, url), "--data", str(till)))
            device = json.loads((till / "agent.json").read_text())["device_id"]
            agent = subprocess.Popen(
                [sys.executable, "-m", "posassist.agent", "run", "--data", str(till)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=alog,
                text=True,
            )
            assert agent.stdout is not None
            agent.stdout.close()  # the reader is gone: every print is a BrokenPipeError
            logged = _wait_for(agent_log, "could not print to the console", 30)
            assert "BrokenPipeError" in logged
            assert "connected to relay" in logged  # the line is kept, in the log

            tech = Technician(tmp_path / "tech").login(url)
            report = json.loads(ok(tech("diag", device, "--collector", "system", "--json")))
            assert report["system"]["ok"] is True  # the till answered over its one connection
            assert agent.poll() is None
            connects = relay_log.read_text().count(f"agent {device} connected from")
            assert connects == 1, relay_log.read_text()[-3000:]
        finally:
            if agent is not None and agent.poll() is None:
                agent.kill()
                agent.wait(timeout=15)
            stop(relay)
