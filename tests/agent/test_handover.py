"""Telling the old relay (agent/handover.py ``tell_old_relay``) against a real in-process relay:
told (and told again), a relay of protocol 6 that can't be told, a relay that can't be reached."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest

from posassist.agent.config import Identity
from posassist.agent.handover import tell_old_relay
from posassist.protocol import Session
from posassist.relay.handlers import agents
from posassist.relay.storage import DeviceStatus
from tests.relay.harness import Relay, start_relay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path)
    yield relay
    await relay.server.close()


async def test_the_old_relay_is_told_once_and_says_so_again(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    identity = Identity(device_id, relay.ws, key)
    told, at = await tell_old_relay(identity, 5.0)
    assert told == "told"
    assert at is not None
    device = await relay.state.storage.get_device(device_id)
    assert (device.status, device.handed_over_at) == (DeviceStatus.HANDED_OVER, at)
    # a switch interrupted after telling it, run again: refused handed_over counts as told
    assert await tell_old_relay(identity, 5.0) == ("told", None)


async def test_a_relay_of_protocol_6_is_not_sent_the_new_message(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what an older relay release negotiates: versions up to 6
    monkeypatch.setattr(agents, "Session", lambda role: Session(role, versions=(1, 2, 3, 4, 5, 6)))
    device_id, key = await relay.enrol()
    assert await tell_old_relay(Identity(device_id, relay.ws, key), 5.0) == ("older_relay", None)
    assert (await relay.state.storage.get_device(device_id)).status is DeviceStatus.ACTIVE


async def test_a_relay_that_can_not_be_reached_is_named(relay: Relay) -> None:
    device_id, key = await relay.enrol()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens there once closed
    told, at = await tell_old_relay(Identity(device_id, f"ws://127.0.0.1:{port}", key), 2.0)
    assert told.startswith("unreachable: ")
    assert at is None
