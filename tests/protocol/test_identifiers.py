"""Identifiers and strings a peer sends (issue 10, wp-edges): a device id is
``[A-Za-z0-9._:-]{1,64}`` in every message that carries one, and the names peers give themselves
in the handshake (hello/welcome software, relay id, principal) hold no control character.
A bad one is refused on decoding with InvalidMessage, and can't be built locally."""

from __future__ import annotations

import re

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posassist.protocol import Codec, LocalProtocolError
from posassist.protocol import messages as m
from posassist.protocol.errors import InvalidMessage
from tests.protocol.samples import SAMPLES

CODEC = Codec()
GOOD = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")
WITH_DEVICE_ID = [s for s in SAMPLES if "device_id" in s.FIELDS]
NAMES = [
    (m.Hello, "software"),
    (m.Welcome, "software"),
    (m.Welcome, "relay_id"),
    (m.AuthAccepted, "principal"),
    (m.AuthRefused, "code"),
]
BAD_IDS = ["", "a" * 65, "dev 1", "dev/1", "dev\x1b[2J", "<b>dev</b>", "dév", "dev\n", "dev\u202e"]
CONTROL = ["\x1b[31m", "\x00", "\n", "\r", "\x7f", "\x9b2J", "a\tb"]


def _sample(cls: type[m.Message]) -> m.Message:
    return next(s for s in SAMPLES if type(s) is cls)


def _frame(msg: m.Message, **changes: object) -> bytes:
    wire = msg.to_wire()
    wire.update(changes)
    frame: bytes = msgpack.packb(wire, use_bin_type=True)
    return frame


def test_every_message_with_a_device_id_is_covered() -> None:
    assert {type(s) for s in WITH_DEVICE_ID} == {
        cls for cls in m.MESSAGE_TYPES if "device_id" in cls.FIELDS
    }


@pytest.mark.parametrize("sample", WITH_DEVICE_ID, ids=lambda s: s.TAG)
@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_a_bad_device_id_is_refused(sample: m.Message, bad: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        CODEC.decode(_frame(sample, device_id=bad))
    assert info.value.tag == sample.TAG
    assert info.value.public_reason == "invalid message"  # never the peer's text
    with pytest.raises(LocalProtocolError):
        type(sample)(**{**{f: getattr(sample, f) for f in sample.FIELDS}, "device_id": bad})


@pytest.mark.slow
@settings(max_examples=max(100, settings().max_examples // 5))  # 2,000 in CI (not a byte fuzzer)
@given(st.text(max_size=80))
def test_device_ids_are_exactly_the_pattern(text: str) -> None:
    sample = _sample(m.AuthResponse)
    frame = _frame(sample, device_id=text)
    if GOOD.match(text):
        decoded = CODEC.decode(frame)
        assert isinstance(decoded, m.AuthResponse)
        assert decoded.device_id == text
    else:
        with pytest.raises(InvalidMessage):
            CODEC.decode(frame)


@pytest.mark.parametrize(("cls", "field"), NAMES, ids=lambda x: getattr(x, "__name__", x))
@pytest.mark.parametrize("bad", CONTROL, ids=repr)
def test_handshake_names_with_control_characters_are_refused(
    cls: type[m.Message], field: str, bad: str
) -> None:
    sample = _sample(cls)
    with pytest.raises(InvalidMessage):
        CODEC.decode(_frame(sample, **{field: f"posassist{bad}1.0"}))
    with pytest.raises(LocalProtocolError):
        cls(**{**{f: getattr(sample, f) for f in sample.FIELDS}, field: f"x{bad}"})


@pytest.mark.parametrize(("cls", "field"), NAMES, ids=lambda x: getattr(x, "__name__", x))
def test_handshake_names_may_be_any_printable_text(cls: type[m.Message], field: str) -> None:
    sample = _sample(cls)
    decoded = CODEC.decode(_frame(sample, **{field: "收银助手 posassist-agent/1.0 (Win 7)"}))
    assert getattr(decoded, field).startswith("收银助手")
