"""Alert delivery with real processes: a real agent process (checks on, durable outbox) against a
real in-process relay whose alert ingest is a stand-in (issue 13's relay half, helper 13R, is
not on main yet): it records each ``alert.raised`` and answers as the issue says the relay will.

Covered (issue 13, faults and bad input): the agent SIGKILLed with events queued (delivered
after restart); the same event delivered twice (the relay had it; its ack was lost); an agent
clock 2 hours wrong (the agent's time and its measured offset ride with every event); an
invalid policy (the agent keeps its last good one).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from posassist.agent.enrol import enrol
from posassist.protocol import (
    AlertAcknowledged,
    AlertRaised,
    DeviceFacts,
    Heartbeat,
    PolicyUpdated,
)
from posassist.relay.handlers import agents
from tests.relay.harness import Relay, start_relay, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ROOT = Path(__file__).resolve().parents[2]
#: disk fires at once on any machine (free under 99 %), the clock is sampled every 5 s
FIRING = {
    "version": 2,
    "checks": {"disk": {"thresholds": {"free_pct": 99}}, "clock": {"interval": 5}},
}


class AlertDesk:
    """The stand-in ingest: records events; answers with an ack (``duplicate`` when the key was
    had before), or not at all (``answer=False``: stored, then the ack was lost)."""

    def __init__(self) -> None:
        self.received: list[tuple[AlertRaised, float]] = []
        self.stored: set[str] = set()
        self.answer = False
        self.policies: list[dict[str, Any]] = [FIRING]
        self.sent_to: set[int] = set()

    def keys(self, check: str, state: str = "firing") -> list[str]:
        return [e.alert_key for e, _ in self.received if e.check_name == check and e.state == state]


@pytest.fixture
async def relay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path, heartbeat_interval=1.0)
    desk = AlertDesk()
    original = agents._handle

    async def handle(device_id: str, peer: Any, state: Any, event: Any, lost: Any) -> None:
        if isinstance(event, (Heartbeat, DeviceFacts)) and id(peer) not in desk.sent_to:
            # once per connection, on its first heartbeat or its facts (gathering those may
            # take seconds on a busy machine): the device's policy, as the relay sends it
            desk.sent_to.add(id(peer))
            for policy in desk.policies:
                version = policy["version"]
                peer.send_nowait(PolicyUpdated(version=version, policy=policy, hours={}))
        if isinstance(event, AlertRaised):
            desk.received.append((event, state.now()))
            duplicate = event.alert_key in desk.stored
            desk.stored.add(event.alert_key)
            if desk.answer:
                peer.send_nowait(AlertAcknowledged(id=event.id, duplicate=duplicate))
            return
        await original(device_id, peer, state, event, lost)

    monkeypatch.setattr(agents, "_handle", handle)
    relay.desk = desk  # type: ignore[attr-defined]
    yield relay
    await relay.server.close()


async def _start_agent(data: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as err:  # the child has its own copy of the descriptor
        return await _spawn(data, err)


async def _spawn(data: Path, err: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "posassist.agent",
        "run",
        "--data",
        str(data),
        "--max-backoff",
        "1",
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=err,
    )


def _queued(data: Path) -> list[str]:
    db = sqlite3.connect(str(data / "outbox.sqlite3"))
    try:
        return [k for (k,) in db.execute("SELECT alert_key FROM events ORDER BY seq")]
    finally:
        db.close()


async def _stop(agent: asyncio.subprocess.Process, how: int = signal.SIGTERM) -> None:
    if agent.returncode is None:
        agent.send_signal(how)
    await asyncio.wait_for(agent.wait(), 15)


async def test_events_queued_when_the_agent_is_killed_are_delivered_after_restart(
    relay: Relay, tmp_path: Path
) -> None:
    desk: AlertDesk = relay.desk  # type: ignore[attr-defined]
    data = tmp_path / "till"
    await asyncio.to_thread(enrol, await relay.invite(), data)
    log = tmp_path / "agent.log"
    agent = await _start_agent(data, log)
    try:
        # the relay stores the event, and its ack is lost: the agent still holds it
        await wait_until(lambda: bool(desk.keys("disk")), timeout=20)
        [key] = desk.keys("disk")
        assert key in await asyncio.to_thread(_queued, data)
    finally:
        await _stop(agent, signal.SIGKILL)
    assert agent.returncode == -signal.SIGKILL
    assert key in await asyncio.to_thread(_queued, data)  # on disk across the kill

    desk.answer = True
    agent = await _start_agent(data, log)
    try:
        await wait_until(lambda: desk.keys("disk").count(key) >= 2, timeout=20)
        await wait_until(lambda: key not in _queued(data), timeout=10)
    finally:
        await _stop(agent)
    # the same event twice: once stored, once acknowledged as a duplicate; never a second alert
    # for the still-failing disk (its firing state survived the kill)
    assert set(desk.keys("disk")) == {key}
    redelivered = [e for e, _ in desk.received if e.alert_key == key]
    assert redelivered[0].observed_at == redelivered[-1].observed_at
    assert redelivered[-1].details["attempt"] >= 2
    assert redelivered[-1].details["outbox_dropped"] == 0
    assert redelivered[-1].details["policy_version"] == 2


async def test_an_agent_clock_two_hours_wrong_is_named_in_every_event(
    relay: Relay, tmp_path: Path
) -> None:
    desk: AlertDesk = relay.desk  # type: ignore[attr-defined]
    desk.answer = True
    relay.clock.offset = 7200.0  # the relay's clock is right, the till's two hours behind
    data = tmp_path / "till"
    await asyncio.to_thread(enrol, await relay.invite(), data)
    agent = await _start_agent(data, tmp_path / "agent.log")
    try:
        await wait_until(lambda: bool(desk.keys("clock")), timeout=30)
        await wait_until(lambda: not _queued(data), timeout=10)
    finally:
        await _stop(agent)
    event, received_at = next((e, t) for e, t in desk.received if e.check_name == "clock")
    assert list(event.details["codes"]) == ["clock.offset"]
    assert "2 h" in event.summary or "120 min" in event.summary
    assert abs(event.details["clock_offset"] - 7200) < 60
    # the agent's own time is sent as it is, labelled; the relay's receipt time differs by 2 h
    assert event.details["agent_time"] == event.observed_at
    assert abs(received_at - event.observed_at - 7200) < 60


async def test_an_invalid_policy_from_the_relay_keeps_the_last_good_one(
    relay: Relay, tmp_path: Path
) -> None:
    desk: AlertDesk = relay.desk  # type: ignore[attr-defined]
    desk.answer = True
    bad = {"version": 3, "checks": {"disk": {"thresholds": {"free_pct": 250}}}}
    desk.policies = [FIRING, bad]
    data = tmp_path / "till"
    await asyncio.to_thread(enrol, await relay.invite(), data)
    log = tmp_path / "agent.log"
    agent = await _start_agent(data, log)
    try:
        await wait_until(lambda: "invalid health policy v3" in log.read_text("utf-8"), timeout=20)
        await wait_until(lambda: bool(desk.keys("disk")), timeout=20)
    finally:
        await _stop(agent)
    text = log.read_text("utf-8")
    assert "checks.disk.thresholds.free_pct: must be between 0 and 99, not 250" in text
    assert "keeping v2" in text
    event = next(e for e, _ in desk.received if e.check_name == "disk")
    assert event.details["policy_version"] == 2  # the good one runs; the agent did not stop
    assert agent.returncode == 0


async def test_an_event_that_cannot_be_sent_does_not_block_the_ones_behind_it(
    relay: Relay, tmp_path: Path
) -> None:
    from posassist.agent.outbox import Outbox

    desk: AlertDesk = relay.desk  # type: ignore[attr-defined]
    desk.answer = True
    desk.policies = [{"version": 1}]  # the defaults: nothing fires on this machine
    data = tmp_path / "till"
    await asyncio.to_thread(enrol, await relay.invite(), data)
    box = Outbox(data / "outbox.sqlite3")  # left by an older agent, one row damaged
    good = {
        "check_name": "printer",
        "severity": "critical",
        "state": "firing",
        "summary": "打印机缺纸 / paper out",
        "observed_at": 1_780_000_000.0,
        "details": {"codes": ["printer.paper_out"]},
    }
    box.put("printer:old:1", dict(good, severity="fatal"), now=1.0)
    box.put("printer:old:2", good, now=2.0)
    box.close()
    agent = await _start_agent(data, tmp_path / "agent.log")
    try:
        await wait_until(lambda: "printer:old:2" in desk.stored, timeout=20)
        await wait_until(lambda: not _queued(data), timeout=10)
    finally:
        await _stop(agent)
    assert "printer:old:1" not in desk.stored
    [(sent, _)] = [(e, t) for e, t in desk.received if e.alert_key == "printer:old:2"]
    assert sent.details["outbox_dropped"] == 1  # the damaged one, counted
    assert "can't be sent, dropped" in (tmp_path / "agent.log").read_text("utf-8")
