"""Every bad frame named in issue 3 gets the protocol's own error with the right close code."""

from __future__ import annotations

import msgpack
import pytest

from posassist.protocol import (
    Codec,
    Heartbeat,
    InvalidMessage,
    Limits,
    LocalProtocolError,
    MalformedMessage,
    PayloadTooBig,
    RemoteProtocolError,
    UnknownMessageType,
)
from posassist.protocol import messages as m

from .samples import SAMPLES

HEARTBEAT = {"t": "heartbeat", "seq": 1, "sent_at": 2.0}


def _declared_map(entries: int) -> bytes:
    # map32 header declaring `entries` pairs, followed by only one real pair
    return b"\xdf" + entries.to_bytes(4, "big") + b"\xa1a\x01"  # "a": 1


BAD_FRAMES = [
    ("oversized frame", b"\x80" + b"\x00" * (1024 * 1024), PayloadTooBig, 1009),
    ("truncated msgpack", msgpack.packb(HEARTBEAT)[:-3], MalformedMessage, 1007),
    ("trailing garbage", msgpack.packb(HEARTBEAT) + b"\xc1garbage", MalformedMessage, 1007),
    ("nesting 10,000 deep", b"\x91" * 10_000 + b"\xc0", MalformedMessage, 1007),
    ("map of a million entries declared", _declared_map(1_000_000), MalformedMessage, 1007),
    ("non-string map key", msgpack.packb({1: "heartbeat"}), MalformedMessage, 1007),
    ("bytes map key", msgpack.packb({b"t": "heartbeat"}), MalformedMessage, 1007),
    ("unknown tag", msgpack.packb({"t": "rm-rf", "x": 1}), UnknownMessageType, 1003),
    ("missing field", msgpack.packb({"t": "heartbeat", "seq": 1}), InvalidMessage, 1007),
    ("extra field", msgpack.packb({**HEARTBEAT, "evil": 1}), InvalidMessage, 1007),
    (
        "renamed field",
        msgpack.packb({"t": "heartbeat", "seq": 1, "sent": 2.0}),
        InvalidMessage,
        1007,
    ),
    ("wrong type", msgpack.packb({**HEARTBEAT, "seq": "1"}), InvalidMessage, 1007),
    ("not a map", msgpack.packb([1, 2, 3]), MalformedMessage, 1007),
    ("no tag", msgpack.packb({"seq": 1}), MalformedMessage, 1007),
    ("tag not a string", msgpack.packb({"t": 5}), MalformedMessage, 1007),
    ("empty frame", b"", MalformedMessage, 1007),
    ("reserved byte", b"\xc1", MalformedMessage, 1007),
    ("ext type", msgpack.packb(msgpack.ExtType(1, b"x")), MalformedMessage, 1007),
    (
        "nested too deep for a message",
        msgpack.packb(
            {
                "t": "diag.report",
                "id": 1,
                "device_id": "d",
                "collected_at": 1.0,
                "sections": {
                    "a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
                },
            }
        ),
        InvalidMessage,
        1007,
    ),
    (
        "nested int key inside a section",
        msgpack.packb(
            {
                "t": "diag.report",
                "id": 1,
                "device_id": "d",
                "collected_at": 1.0,
                "sections": {"a": {1: 2}},
            }
        ),
        MalformedMessage,
        1007,
    ),
    ("huge str", msgpack.packb({"t": "x" * (300 * 1024)}), MalformedMessage, 1007),
]


@pytest.mark.parametrize(
    ("what", "frame", "error", "close_code"), BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES]
)
def test_codec_refuses_bad_frame(what: str, frame: bytes, error: type, close_code: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        Codec().decode(frame)
    assert type(info.value) is error
    assert info.value.close_code == close_code
    # what may be told to the peer never echoes its input
    assert info.value.public_reason in {
        "message too big",
        "malformed message",
        "unknown message type",
        "invalid message",
    }


def test_codec_limits_are_configurable() -> None:
    codec = Codec(limits=Limits(max_frame=64))
    frame = Codec().encode(Heartbeat(seq=1, sent_at=1.0))
    assert codec.decode(frame) == Heartbeat(seq=1, sent_at=1.0)
    with pytest.raises(PayloadTooBig):
        codec.decode(frame + b"\x00" * 64)
    small_arrays = Codec(limits=Limits(max_array_len=1))
    hello = Codec().encode(m.Hello(role="agent", versions=(1, 2), software=""))
    with pytest.raises(MalformedMessage):
        small_arrays.decode(hello)


def test_codec_refuses_to_encode_over_the_frame_limit() -> None:
    codec = Codec(limits=Limits(max_frame=32))
    with pytest.raises(LocalProtocolError):
        codec.encode(m.ErrorReply(id=1, code="big", message="x" * 100))


def test_codec_refuses_to_encode_unregistered_type() -> None:
    codec = Codec(types=[Heartbeat])
    with pytest.raises(LocalProtocolError):
        codec.encode(m.AuthRefused(code="x"))
    with pytest.raises(UnknownMessageType):
        codec.decode(Codec().encode(m.AuthRefused(code="x")))


def test_codec_registers_each_tag_once() -> None:
    codec = Codec(types=[Heartbeat])
    with pytest.raises(ValueError, match="already registered"):
        codec.register(Heartbeat)
    assert codec.lookup("heartbeat") is Heartbeat
    assert codec.lookup("nope") is None


def test_codec_applies_cross_field_rules_when_decoding() -> None:
    frame = msgpack.packb({"t": "hello", "role": "agent", "versions": [], "software": ""})
    with pytest.raises(InvalidMessage):
        Codec().decode(frame)


@pytest.mark.parametrize("sample", [s for s in SAMPLES if "id" in s.FIELDS], ids=lambda s: s.TAG)
def test_encode_with_id_is_the_frame_of_the_copy(sample: m.Message) -> None:
    # A relay forwards requests and replies under its own ids without building copies; the frame
    # must be byte for byte what encoding the copy gives.
    codec = Codec()
    assert codec.encode_with_id(sample, 424242) == codec.encode(sample.with_id(424242))
    assert codec.decode(codec.encode_with_id(sample, m.MAX_ID)) == sample.with_id(m.MAX_ID)


@pytest.mark.parametrize("bad", [0, -1, m.MAX_ID + 1, "7", 1.0, True, None])
def test_encode_with_id_refuses_bad_ids_and_messages_without_ids(bad: object) -> None:
    codec = Codec()
    request = m.DiagnosticsRequest(id=1, device_id="dev-1")
    with pytest.raises(LocalProtocolError, match="cannot take request id"):
        codec.encode_with_id(request, bad)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="cannot take request id"):
        codec.encode_with_id(Heartbeat(seq=1, sent_at=1.0), 5)


def test_encode_with_id_keeps_the_frame_limit_and_the_registry() -> None:
    big = m.ErrorReply(id=1, code="big", message="x" * 100)
    with pytest.raises(LocalProtocolError, match="encodes to"):
        Codec(limits=Limits(max_frame=32)).encode_with_id(big, 2)
    with pytest.raises(LocalProtocolError, match="not registered"):
        Codec(types=[Heartbeat]).encode_with_id(big, 2)
