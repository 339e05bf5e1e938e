"""Real relay and agent processes on 127.0.0.1, driven by their command lines."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from tests.e2e.cli import ROOT, communicate, invite, lines, ok, provision, py, start_relay, stop

if TYPE_CHECKING:
    from pathlib import Path


def test_operator_enrols_a_till_and_it_connects(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    store = provision(data)
    proc, url = start_relay(data)
    try:
        token = invite(data, store, url)
        assert token.startswith("PA1-")
        till = str(tmp_path / "till")
        enrolled = py("agent", "enroll", token, "--data", till)
        assert enrolled.returncode == 0, enrolled.stderr
        assert "登记成功" in enrolled.stdout
        again = py("agent", "enroll", token, "--data", str(tmp_path / "till2"))
        assert again.returncode == 3
        # readme-walk F26: what to do, in both languages, no class name, one line
        assert again.stderr.splitlines() == [
            "error: refused by relay: this enrolment token was already used: ask support for a "
            "new one / 服务器拒绝了本设备或登录: 此登记码已被使用, 请向技术支持索取新的登记码"
        ]
        connected = py("agent", "run", "--data", till, "--once")
        assert connected.returncode == 0, connected.stderr
        assert "已连接到服务器" in connected.stdout
        health = ok(py("console", "health", "--relay", url))
        assert "ok, 0 agent(s) connected" in health
        devices = ok(py("relay", "device", "list", "--data", str(data)))
        assert devices.startswith("dev_")
    finally:
        stop(proc)


def test_relay_stops_gracefully_on_sigterm_and_agent_keeps_running(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    store = provision(data)
    proc, url = start_relay(data)
    till = str(tmp_path / "till")
    ok(py("agent", "enroll", invite(data, store, url), "--data", till))
    agent = subprocess.Popen(
        [sys.executable, "-m", "posassist.agent", "run", "--data", till],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "connected to relay" in lines(agent).readline(within=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert proc.stdout is not None
        assert "shutting down" in proc.stdout.read()
        time.sleep(0.5)
        assert agent.poll() is None  # the agent keeps running, waiting to reconnect
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=15) == 0
        assert "agent stopped" in communicate(agent, 15)[0]
    finally:
        stop(agent)
        stop(proc)


def test_init_twice_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    provision(data)
    again = py("relay", "init", "--data", str(data))
    assert again.returncode == 2
    assert "already initialised" in again.stderr
    assert "intact" in ok(py("relay", "audit", "verify", "--data", str(data))).lower()


def test_init_prints_a_one_time_password_when_none_given(tmp_path: Path) -> None:
    out = ok(py("relay", "init", "--data", str(tmp_path / "relay")))
    assert "one-time admin password" in out


def test_agent_run_without_identity_is_clear_error(tmp_path: Path) -> None:
    result = py("agent", "run", "--data", str(tmp_path / "nothing"), "--once")
    assert result.returncode == 2
    assert "no usable agent identity" in result.stderr


def test_agent_enroll_with_damaged_token_is_clear_error(tmp_path: Path) -> None:
    result = py("agent", "enroll", "PA1-garbage", "--data", str(tmp_path / "till"))
    assert result.returncode == 2
    assert not (tmp_path / "till" / "agent.key").exists()


def test_console_health_unreachable_relay() -> None:
    result = py("console", "health", "--relay", "ws://127.0.0.1:9")
    assert result.returncode == 1
    assert "unreachable" in result.stderr
    assert py("console", "health", "--relay", "ftp://x").returncode == 2


def test_scripts_tool_without_a_command_shows_usage() -> None:
    result = py("console.scripts_cli")
    assert result.returncode == 2
    assert "init,add,sign,status,publish,retire,rotate-key" in result.stderr
