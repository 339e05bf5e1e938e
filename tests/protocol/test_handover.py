"""``device.handover`` / ``device.handed_over`` (version 7): who may send them, when, and what
they carry (docs/protocol.md#changing-provider)."""

from __future__ import annotations

import pytest

from posassist.protocol import (
    Codec,
    LocalProtocolError,
    RemoteProtocolError,
    UnexpectedMessage,
    UnknownReply,
)
from posassist.protocol import messages as m
from posassist.protocol.states import REPLIES, SINCE_VERSION

from .test_session import open_agent_pair, open_console_pair, pump

CODEC = Codec()


def test_handover_and_its_reply_are_version_7() -> None:
    assert SINCE_VERSION["device.handover"] == SINCE_VERSION["device.handed_over"] == 7
    assert REPLIES["device.handover"] == frozenset({"device.handed_over", "error"})


def test_an_agent_tells_its_relay_and_hears_when() -> None:
    agent, relay = open_agent_pair()
    assert agent.version == 7
    agent.send(m.DeviceHandover(id=agent.next_id(), device_id="dev_1"))
    (handover,) = pump(agent, relay)
    assert handover == m.DeviceHandover(id=1, device_id="dev_1")
    assert relay.requests_to_answer == 1
    relay.send(m.DeviceHandedOver(id=1, handed_over_at=1700000000.5))
    (done,) = pump(relay, agent)
    assert done == m.DeviceHandedOver(id=1, handed_over_at=1700000000.5)
    assert agent.requests_in_flight == relay.requests_to_answer == 0


def test_an_older_relay_is_never_told() -> None:
    agent, relay = open_agent_pair(versions=(1, 2, 3, 4, 5, 6))
    with pytest.raises(LocalProtocolError):
        agent.send(m.DeviceHandover(id=1, device_id="dev_1"))
    assert agent.data_to_send() == []
    # and a peer that sends it anyway in a version 6 session is refused
    raw = CODEC.encode(m.DeviceHandover(id=1, device_id="dev_1"))
    with pytest.raises(UnexpectedMessage):
        relay.receive_data(raw)


def test_only_the_agent_hands_over_and_only_the_relay_answers() -> None:
    agent, relay = open_agent_pair()
    with pytest.raises(LocalProtocolError):
        relay.send(m.DeviceHandover(id=1, device_id="dev_1"))
    with pytest.raises(LocalProtocolError):  # nothing asked: nothing to answer
        relay.send(m.DeviceHandedOver(id=1, handed_over_at=1.0))
    console, _ = open_console_pair()
    with pytest.raises(LocalProtocolError):
        console.send(m.DeviceHandover(id=1, device_id="dev_1"))
    # an unasked answer from the relay is refused by the agent
    agent.send(m.DeviceHandover(id=agent.next_id(), device_id="dev_1"))
    pump(agent, relay)
    relay.send(m.DeviceHandedOver(id=1, handed_over_at=1.0))
    with pytest.raises(UnknownReply):
        agent.receive_data(CODEC.encode(m.DeviceHandedOver(id=9, handed_over_at=1.0)))


@pytest.mark.parametrize(
    "wire",
    [
        {"t": "device.handover", "id": 1, "device_id": "dev 1"},
        {"t": "device.handover", "id": 1, "device_id": ""},
        {"t": "device.handover", "id": 0, "device_id": "dev_1"},
        {"t": "device.handover", "id": 1},
        {"t": "device.handover", "id": 1, "device_id": "dev_1", "relay": "x"},
        {"t": "device.handed_over", "id": 1, "handed_over_at": float("nan")},
        {"t": "device.handed_over", "id": 1, "handed_over_at": "now"},
    ],
)
def test_bad_handover_frames_are_refused(wire: dict[str, object]) -> None:
    import msgpack

    with pytest.raises(RemoteProtocolError):
        CODEC.decode(msgpack.packb(wire))
