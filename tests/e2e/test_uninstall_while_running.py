"""Uninstalling while a vetted script runs (issue 17, bad input; docs/agent.md#uninstall-while-a-
script-runs), with real processes: a relay, an agent running a signed script, the technician's
console, and the uninstallers' own code run for real: the Linux ``prerm`` run directly (the
agent's command through ``POSASSIST_AGENT``), the Windows ``installer.py uninstall`` under
Python 3.8 with the Windows tools recorded (``net stop`` stops the real agent, as the SCM would).

The uninstaller waits for a run that ends within the bound; one that doesn't is cancelled
cleanly by the agent stopping (its process killed, recorded ``cancelled``). Both are recorded in
the till's audit.log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import psutil  # type: ignore[import-untyped]
import pytest

from posassist.console.scripts_repo import init_repository
from tests.agent.test_verify import PASS, add, approve, manifest
from tests.e2e.cli import (
    ROOT,
    Technician,
    invite,
    ok,
    provision,
    py,
    start_agent,
    start_relay,
    stop,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

PY38 = ROOT / ".venv38" / "bin" / "python"
FLAGS = ("--version", "1.0.0", "--unattended")


class Till:
    """A relay serving one signed script that runs until released (or 25 s), an enrolled till,
    its running agent and a technician."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.began, self.release, self.marker = tmp / "began", tmp / "release", tmp / "done"
        self.relay_dir = tmp / "relay"
        store = provision(self.relay_dir)
        repo = init_repository(tmp / "approvers", ["alice", "bob"], PASS)
        script = manifest("printer-status")
        script.update({"risk": "A", "unattended": True, "consent": False})
        body = (
            f"echo $$ > {self.began}\ni=0\n"
            f"while [ ! -e {self.release} ] && [ $i -lt 250 ]; do sleep 0.1; i=$((i+1)); done\n"
            f"echo done > {self.marker}\n"
        )
        add(repo, tmp, script, body=body.encode())
        approve(repo, "alice", "bob")
        repo.publish(self.relay_dir)
        self.relay, self.url = start_relay(self.relay_dir)
        self.data = tmp / "till"
        token = invite(self.relay_dir, store, self.url)
        ok(py("agent", "enroll", token, "--data", str(self.data), "--root-hash", repo.root_hash()))
        self.agent: subprocess.Popen[str] | None = None
        self.device = ""
        self.tech = Technician(tmp / "tech").login(self.url)
        self.runs: list[subprocess.Popen[bytes]] = []

    @property
    def what(self) -> tuple[str, ...]:
        """``posassist run`` arguments: the script, on this till."""
        return (self.device, "printer-status", *FLAGS)

    def start_agent(self) -> None:
        self.agent, self.device = start_agent(self.data, "--no-checks")

    def run_script(self) -> int:
        """Ask for a run; returns once the script process runs on the till (its pid)."""
        for path in (self.began, self.release, self.marker):
            path.unlink(missing_ok=True)
        self.runs.append(
            subprocess.Popen(
                [sys.executable, "-m", "posassist.console", "run", *self.what],
                env=self.tech.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        deadline = time.monotonic() + 30
        while not (self.began.exists() and self.began.read_text().strip()):
            assert time.monotonic() < deadline, "the run did not start on the till"
            time.sleep(0.05)
        assert (self.data / "running.json").exists()
        return int(self.began.read_text())

    def statuses(self) -> list[str]:
        results = json.loads((self.data / "scripts" / "results.json").read_text())
        return [entry["status"] for entry in results["results"]]

    def journal(self) -> list[dict[str, Any]]:
        text = (self.data / "audit.log").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]

    def close(self) -> None:
        for run in self.runs:
            run.kill()
            run.wait(timeout=15)
        if self.agent is not None:
            stop(self.agent)
        stop(self.relay)


@pytest.fixture
def till(tmp_path: Path) -> Iterator[Till]:
    till = Till(tmp_path)
    try:
        till.start_agent()
        yield till
    finally:
        till.close()


def _prerm(till: Till, wait: float) -> subprocess.Popen[str]:
    """The package's own prerm, run directly as dpkg would (``remove``), on this till."""
    wrapper = till.tmp / "posassist-agent"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m posassist.agent "$@"\n')
    wrapper.chmod(0o755)
    env = dict(
        os.environ,
        POSASSIST_AGENT=str(wrapper),
        POSASSIST_DATA=str(till.data),
        POSASSIST_UNINSTALL_WAIT=f"{wait:g}",
    )
    assert not os.path.isdir("/run/systemd/system")  # no systemctl stop of a real unit here
    return subprocess.Popen(
        ["sh", str(ROOT / "packaging" / "debian" / "prerm"), "remove"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stopped_like_a_service(agent: subprocess.Popen[str]) -> None:
    """What ``systemctl stop`` (or the Windows service host) does: SIGTERM, then wait."""
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 0


def test_prerm_waits_for_a_script_that_ends_within_the_bound(till: Till) -> None:
    from tests.e2e.cli import communicate, lines

    pid = till.run_script()
    prerm = _prerm(till, wait=60)
    first = lines(prerm).readline(within=30)
    assert "waiting for the running script (printer-status 1.0.0) to end, at most 60 s" in first
    assert prerm.poll() is None
    till.release.touch()  # the script ends by itself, well inside the bound
    out, err = communicate(prerm, 30)
    assert prerm.returncode == 0, out + err
    assert "the running script ended (printer-status 1.0.0)" in out
    assert till.marker.read_text() == "done\n"  # it ran to its end
    assert not psutil.pid_exists(pid)
    assert not (till.data / "running.json").exists()
    (waited,) = [e for e in till.journal() if e["action"] == "agent.wait_idle"]
    assert (waited["outcome"], waited["detail"]["for"]) == ("finished", "uninstall")
    assert waited["detail"]["what"] == "printer-status 1.0.0"
    deadline = time.monotonic() + 10
    while till.statuses()[-1] != "succeeded":
        assert time.monotonic() < deadline, till.statuses()
        time.sleep(0.1)


def test_prerm_past_its_bound_leaves_the_run_to_be_cancelled_cleanly_by_the_stop(
    till: Till,
) -> None:
    pid = till.run_script()
    started = time.monotonic()
    prerm = _prerm(till, wait=1)
    out, err = prerm.communicate(timeout=60)
    assert prerm.returncode == 0, out + err  # dpkg goes on: the stop cancels it
    assert time.monotonic() - started >= 1
    assert "stopping the agent cancels it cleanly" in out
    assert psutil.pid_exists(pid)  # still running: nothing was killed by the wait
    assert till.agent is not None
    _stopped_like_a_service(till.agent)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert not till.marker.exists()  # cut short
    assert till.statuses()[-1] == "cancelled"
    assert not (till.data / "running.json").exists()
    actions = [(e["action"], e["outcome"]) for e in till.journal()]
    assert actions == [("agent.wait_idle", "timed_out"), ("script.cancelled", "ok")]
    cancelled = till.journal()[-1]["detail"]
    assert (cancelled["what"], cancelled["why"]) == ("printer-status 1.0.0", "the agent stopped")
    # nothing running: the next prerm does not wait at all
    again = _prerm(till, wait=60)
    out, _ = again.communicate(timeout=60)
    assert "no script is running" in out


DRIVER = r"""
import json, os, signal, sys, time
from pathlib import Path
root, install_dir, data, agent_pid = sys.argv[1:5]
sys.path.insert(0, os.path.join(root, "packaging", "windows"))
import installer
record = []
def run(argv):
    record.append(argv)
    if len(argv) > 1 and argv[1].endswith("launch.py"):
        started = time.monotonic()
        try:
            installer.run_command(argv)  # the installed agent's wait-idle, for real
        finally:
            record.append(["(waited)", round(time.monotonic() - started, 1)])
    elif argv[:2] == ["net", "stop"]:  # the SCM stops the service: the agent gets its stop
        pid = int(agent_pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
            with open("/proc/%d/stat" % pid) as stat:
                if stat.read().split()[2] == "Z":
                    break
            time.sleep(0.05)
try:
    installer.uninstall(Path(install_dir), Path(data), {"PROGRAMDATA": data + "-pd"}, False, run,
                        wait=1.0)
    error = None
except installer.InstallError as exc:
    error = str(exc)
print(json.dumps({"error": error, "commands": record}))
"""


@pytest.mark.py38  # installer.py and the installed agent's wait-idle run on Python 3.8
def test_the_windows_uninstall_waits_then_the_service_stop_cancels_the_run(
    till: Till,
) -> None:
    if not PY38.exists():
        pytest.fail(f"{PY38} is missing: `make venv` builds it from Python 3.8 (docs/windows7.md)")
    pid = till.run_script()
    # an installed agent, as installer.py leaves it: launch.py and the agent in lib/
    install_dir = till.tmp / "Program Files" / "posassist"
    (install_dir / "lib").mkdir(parents=True)
    (install_dir / "launch.py").write_bytes((ROOT / "packaging/windows/launch.py").read_bytes())
    (install_dir / "lib" / "posassist").symlink_to(ROOT / ".venv38" / "src" / "posassist")
    assert till.agent is not None
    done = subprocess.run(
        [str(PY38), "-c", DRIVER, str(ROOT), str(install_dir), str(till.data), str(till.agent.pid)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout.splitlines()[-1])
    assert said["error"] is None
    commands = said["commands"]
    assert commands[0] == ["sc.exe", "query", "posassist-agent"]
    assert commands[1][1:] == [
        str(install_dir / "launch.py"),
        "wait-idle",
        "--data",
        str(till.data),
        "--timeout",
        "1",
        "--for",
        "uninstall",
    ]
    assert commands[2][0] == "(waited)"
    assert commands[2][1] >= 1
    assert commands[3:] == [
        ["net", "stop", "posassist-agent"],
        ["sc.exe", "delete", "posassist-agent"],
    ]
    assert till.agent.wait(timeout=10) == 0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert not till.marker.exists()
    assert till.statuses()[-1] == "cancelled"
    assert not install_dir.exists()
    assert (till.data / "agent.json").exists()  # the identity is kept without --purge
    actions = [(e["action"], e["outcome"]) for e in till.journal()]
    assert actions == [("agent.wait_idle", "timed_out"), ("script.cancelled", "ok")]
