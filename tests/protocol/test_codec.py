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


# --- a decoded reply forwarded under another id: its frame, with only the id changed ----------

IDS = [1, 127, 128, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, m.MAX_ID]


@pytest.mark.parametrize("sample", [s for s in SAMPLES if "id" in s.FIELDS], ids=lambda s: s.TAG)
def test_a_decoded_message_forwarded_under_another_id_is_the_frame_of_the_copy(
    sample: m.Message,
) -> None:
    # encode_with_id of the message just decoded re-uses its frame (only the id's bytes change):
    # byte for byte what encoding the copy gives, for every size of id on either side.
    codec = Codec()
    for old in IDS:
        frame = codec.encode(sample.with_id(old))
        for new in IDS:
            decoded = codec.decode(frame)
            assert codec.encode_with_id(decoded, new) == codec.encode(sample.with_id(new))


def _odd_frame(request_id: int, data: bytes = b"x") -> bytes:
    """A script.output frame laid out as encode writes it up to its id (a one-byte int), then
    its other fields in another order, with seq 1 as a 16-bit integer: valid, not canonical."""
    head = b"\x86" + b"".join(msgpack.packb(p) for p in ("t", "script.output", "id", request_id))
    rest = ("data", data, "stream", "stdout", "job_id", "j", "seq")
    return head + b"".join(msgpack.packb(p) for p in rest) + b"\xcd\x00\x01"


def test_a_decoded_frame_is_passed_on_as_it_came_except_for_its_id() -> None:
    # The values after the id stay as the peer wrote them (here the fields in another order and
    # a seq as a 16-bit integer): they decode into the message that was checked, in any peer.
    codec = Codec()
    frame = _odd_frame(3)
    decoded = codec.decode(frame)
    assert decoded == m.ScriptOutput(id=3, job_id="j", seq=1, stream="stdout", data=b"x")
    forwarded = codec.encode_with_id(decoded, 300)
    assert forwarded == frame.replace(b"\xa2id\x03", b"\xa2id\xcd\x01\x2c")
    assert codec.decode(forwarded) == decoded.with_id(300)


_FIELDS_AFTER_ID = b"".join(
    msgpack.packb(p) for p in ("job_id", "j", "seq", 1, "stream", "stdout", "data", b"x")
)


@pytest.mark.parametrize(
    "frame",
    [
        msgpack.packb(  # the id before the tag
            {
                "id": 3,
                "t": "script.output",
                "job_id": "j",
                "seq": 1,
                "stream": "stdout",
                "data": b"x",
            }
        ),
        b"\x86"  # the id as a signed int8
        + b"".join(msgpack.packb(p) for p in ("t", "script.output", "id"))
        + b"\xd0\x03"
        + _FIELDS_AFTER_ID,
    ],
    ids=["other order", "signed id"],
)
def test_a_frame_not_laid_out_as_encode_writes_it_is_encoded_again(frame: bytes) -> None:
    codec = Codec()
    decoded = codec.decode(frame)
    assert codec.encode_with_id(decoded, 9) == codec.encode(decoded.with_id(9))


def test_only_the_message_just_decoded_re_uses_its_frame() -> None:
    codec = Codec()
    first = codec.decode(_odd_frame(1, b"a"))
    second = codec.decode(_odd_frame(2, b"b"))
    codec.decode(msgpack.packb(HEARTBEAT))  # no id: the last one with an id is still remembered
    assert codec.encode_with_id(first, 5) == codec.encode(first.with_id(5))  # encoded again
    equal = m.ScriptOutput(id=2, job_id="j", seq=1, stream="stdout", data=b"b")  # equal, not it
    assert equal == second
    assert codec.encode_with_id(equal, 5) == codec.encode(equal.with_id(5))
    assert codec.encode_with_id(second, 5) == _odd_frame(5, b"b")  # its own frame, re-used


def test_a_re_used_frame_keeps_the_frame_limit() -> None:
    # a frame at the limit with a one-byte id can't take a nine-byte one
    codec = Codec(limits=Limits(max_frame=300))
    probe = codec.encode(m.ScriptOutput(id=1, job_id="j", seq=0, stream="stdout", data=b""))
    data = b"x" * (300 - len(probe))  # under 256 bytes: the same bin 8 header as the empty one
    frame = codec.encode(m.ScriptOutput(id=1, job_id="j", seq=0, stream="stdout", data=data))
    assert len(frame) == 300
    decoded = codec.decode(frame)
    with pytest.raises(LocalProtocolError, match="encodes to 308 bytes"):
        codec.encode_with_id(decoded, m.MAX_ID)
    assert len(codec.encode_with_id(decoded, 127)) == 300


def test_a_frame_with_a_map_in_it_is_encoded_again_not_passed_on() -> None:
    # A nested map may repeat a key: the decoder keeps the last value, so the frame as it came
    # would carry a first value nobody checked (here an extension type). Only messages of plain
    # fields are passed on as they came (outside attack 16).
    codec = Codec()
    sections = b"\x81" + msgpack.packb("s") + b"\x82" + msgpack.packb("k") + b"\xc7\x00\x05"
    sections += msgpack.packb("k") + msgpack.packb("v")
    frame = (
        b"\x85"
        + b"".join(msgpack.packb(p) for p in ("t", "diag.report", "id", 4, "device_id", "d"))
        + b"".join(msgpack.packb(p) for p in ("collected_at", 1.5, "sections"))
        + sections
    )
    decoded = codec.decode(frame)
    assert isinstance(decoded, m.DiagnosticsReport)
    assert decoded.sections == {"s": {"k": "v"}}
    forwarded = codec.encode_with_id(decoded, 9)
    assert forwarded == codec.encode(decoded.with_id(9))
    assert b"\xc7\x00\x05" not in forwarded
