"""Telling the old relay (agent/handover.py ``tell_old_relay``) against a real in-process relay:
told (and told again), a relay of protocol 6 that can't be told, a relay that can't be reached."""

from __future__ import annotations

import os
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


def test_no_switch_while_a_script_runs_nothing_changes(tmp_path: Path) -> None:
    from posassist.agent.config import create_identity
    from posassist.agent.errors import ConfigError
    from posassist.agent.handover import switch_provider
    from posassist.agent.runstate import write_running

    create_identity(tmp_path, "dev-1", "ws://127.0.0.1:9")
    write_running(tmp_path, "job-1", "printer-status 1.0.0", 1.0)  # this process: alive
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}

    def never(_: object) -> bool:
        raise AssertionError("the merchant is not asked while a script runs")

    with pytest.raises(ConfigError, match="runs now"):
        switch_provider(tmp_path, "PA1-anything", None, never)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_a_switch_run_as_root_leaves_the_files_to_the_agents_user(tmp_path: Path) -> None:
    from posassist.agent.handover import RETIRED, _give_back

    data = tmp_path / "data"
    (data / RETIRED / "dev-old" / "scripts").mkdir(parents=True)
    (data / RETIRED / "dev-old" / "agent.key").write_text("old")
    (data / "agent.key").write_text("new")
    (data / "scripts").mkdir()
    (data / "scripts" / "root.json").write_text("{}")
    (data / "settings.json").write_text("{}")  # the merchant's: not touched
    os.chown(data, 4321, 4321)
    _give_back(data, [data / RETIRED / "dev-old", data / "agent.key", data / "scripts"])
    owned = {str(p.relative_to(data)): p.stat().st_uid for p in data.rglob("*") if p.is_file()}
    assert owned == {
        "retired/dev-old/agent.key": 4321,
        "agent.key": 4321,
        "scripts/root.json": 4321,
        "settings.json": 0,
    }
