"""Issue 13 end to end with real processes: ``posassist-agent run`` (checks on, durable outbox)
and ``posassist-relay serve`` (alert ingest, policies). The relay is down while a check fires
and the agent is SIGKILLed with the event queued: after both restart, the alert list holds every
event exactly once and the outbox is empty."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.cli import (
    admin_token,
    api,
    communicate,
    invite,
    ok,
    provision,
    py,
    start_agent,
    start_relay,
    stop,
)

if TYPE_CHECKING:
    from pathlib import Path

#: the demo POS's log is checked every 5 s; its process (not running here) is not checked
POLICY = {
    "version": 1,
    "checks": {"pos_log": {"interval": 5}, "pos_process": {"enabled": False}},
}


def _queued(till: Path) -> list[str]:
    db = sqlite3.connect(str(till / "outbox.sqlite3"))
    try:
        return [k for (k,) in db.execute("SELECT alert_key FROM events ORDER BY seq")]
    finally:
        db.close()


def _policy(till: Path) -> Any:
    if not (till / "outbox.sqlite3").exists():
        return None
    db = sqlite3.connect(str(till / "outbox.sqlite3"))
    try:
        return db.execute("SELECT value FROM meta WHERE name = 'policy'").fetchone()
    except sqlite3.OperationalError:  # the agent is making its tables
        return None
    finally:
        db.close()


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.slow
def test_checks_firing_while_the_relay_is_down_and_the_agent_killed_arrive_once(
    tmp_path: Path,
) -> None:
    data, till = tmp_path / "relay", tmp_path / "till"
    store = provision(data)
    relay, url = start_relay(data)
    agent = None
    try:
        ok(py("agent", "enroll", invite(data, store, url), "--data", str(till)))
        (till / "settings.json").write_text('{"pos_profile": "demo"}')
        (till / "pos" / "logs").mkdir(parents=True)
        log = till / "pos" / "logs" / "pos.log"
        log.write_text("2026-12-05 11:00:00 INFO open\n", encoding="utf-8")
        token = asyncio.run(admin_token(url))
        device = asyncio.run(api(url, token, "GET", "/v1/devices"))["devices"][0]["id"]
        asyncio.run(
            api(url, token, "POST", "/v1/policies",
                 {"scope_kind": "device", "scope_id": device, "policy": POLICY})
        )  # fmt: skip
        agent, _ = start_agent(till)
        _wait(lambda: _policy(till) is not None, 20, "the relay's policy was not applied")
        _wait(lambda: not _queued(till), 20, "what fired before the policy came was not sent")

        stop(relay)  # the relay goes down; then the POS logs errors
        with log.open("a", encoding="utf-8") as f:
            f.write("2026-12-05 11:05:00 ERROR 打印机 timeout\n")
        _wait(lambda: bool(_queued(till)), 30, "the pos_log check did not fire")
        queued = _queued(till)
        assert len(queued) == 1, queued
        [key] = queued
        agent.send_signal(signal.SIGKILL)  # killed with the event queued
        communicate(agent, 15)

        port = url.rsplit(":", 1)[1]
        relay, url = start_relay(data, "--port", port)
        agent, _ = start_agent(till)
        _wait(lambda: not _queued(till), 30, "the queued event was not delivered")
        alerts = asyncio.run(api(url, token, "GET", "/v1/alerts"))["alerts"]
    finally:
        if agent is not None:
            stop(agent)
        stop(relay)
    [alert] = [a for a in alerts if a["check"] == "pos_log"]
    assert alert["status"] == "open"
    assert alert["events"] == 1  # exactly once
    assert "打印机 timeout" in alert["summary"]
    assert key.startswith("pos_log:")
