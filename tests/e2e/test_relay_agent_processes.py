"""Real relay and agent processes on 127.0.0.1: the hello exchange, refusals, graceful stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]


def py(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    data = tmp_path / "relay"
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--data", str(data), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url_file = data / "relay.url"
    deadline = time.monotonic() + 20
    while not (url_file.exists() and url_file.read_text()):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "relay did not start"
        time.sleep(0.05)
    yield proc, url_file.read_text(), data
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=15)  # reaps it and closes its pipes


def test_agent_and_relay_complete_hello_exchange(relay, tmp_path: Path) -> None:
    _proc, url, data = relay
    agent_dir = tmp_path / "till"
    assert (
        py(
            "agent", "init", "--data", str(agent_dir), "--device-id", "till-1", "--relay", url
        ).returncode
        == 0
    )

    refused = py("agent", "run", "--data", str(agent_dir), "--once")
    assert refused.returncode == 3
    assert "unknown_device" in refused.stdout
    assert "服务器拒绝了本设备" in refused.stdout

    added = py(
        "relay",
        "device",
        "add",
        "--data",
        str(data),
        "--device-id",
        "till-1",
        "--key",
        str(agent_dir / "agent.pub"),
    )
    assert added.returncode == 0, added.stderr
    assert "SHA256:" in added.stdout

    connected = py("agent", "run", "--data", str(agent_dir), "--once")
    assert connected.returncode == 0, connected.stderr
    assert "connected to relay relay-" in connected.stdout
    assert "已连接到服务器" in connected.stdout

    health = py("console", "health", "--relay", url)
    assert health.returncode == 0
    assert "ok, 0 agent(s) connected" in health.stdout


def test_relay_stops_gracefully_on_sigterm_and_agent_notices(relay, tmp_path: Path) -> None:
    proc, url, data = relay
    agent_dir = tmp_path / "till"
    py("agent", "init", "--data", str(agent_dir), "--device-id", "till-1", "--relay", url)
    py(
        "relay",
        "device",
        "add",
        "--data",
        str(data),
        "--device-id",
        "till-1",
        "--key",
        str(agent_dir / "agent.pub"),
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--data", str(agent_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert agent.stdout is not None
        assert "connected to relay" in agent.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert proc.stdout is not None
        assert "shutting down" in proc.stdout.read()
        time.sleep(0.5)
        assert agent.poll() is None  # the agent keeps running, waiting to reconnect
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=15) == 0
        assert "agent stopped" in agent.stdout.read()
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.communicate(timeout=15)


def test_agent_run_without_identity_is_clear_error(tmp_path: Path) -> None:
    result = py("agent", "run", "--data", str(tmp_path / "nothing"), "--once")
    assert result.returncode == 2
    assert "no usable agent identity" in result.stderr


def test_agent_cannot_reach_relay(tmp_path: Path) -> None:
    agent_dir = tmp_path / "till"
    py(
        "agent",
        "init",
        "--data",
        str(agent_dir),
        "--device-id",
        "till-1",
        "--relay",
        "ws://127.0.0.1:9",
    )
    result = py("agent", "run", "--data", str(agent_dir), "--once")
    assert result.returncode == 2
    assert "cannot connect to the relay" in result.stdout


def test_console_health_unreachable_relay() -> None:
    result = py("console", "health", "--relay", "ws://127.0.0.1:9")
    assert result.returncode == 1
    assert "unreachable" in result.stderr
    bad = py("console", "health", "--relay", "ftp://x")
    assert bad.returncode == 2


def test_scripts_tool_says_it_is_not_built_yet() -> None:
    result = py("console.scripts_cli")
    assert result.returncode == 2
    assert "nothing was done" in result.stderr
