"""Enrolment token text: round trip, and every kind of damage gets InvalidEnrolmentToken."""

from __future__ import annotations

import base64

import msgpack
import pytest

from posassist.protocol.enrolment import EnrolmentInvite, InvalidEnrolmentToken

PIN = "ab" * 32
SECRET = "s3cr3t-Secret_0123456789"


def _raw(fields: object) -> str:
    return "PA1-" + base64.urlsafe_b64encode(msgpack.packb(fields)).decode().rstrip("=")


GOOD = {"u": "ws://127.0.0.1:8765", "r": "relay-1", "s": SECRET, "p": None, "h": None}


def test_token_round_trips_with_and_without_optional_fields() -> None:
    plain = EnrolmentInvite(relay_url="ws://127.0.0.1:8765", relay_id="relay-1", secret=SECRET)
    assert EnrolmentInvite.decode(plain.encode()) == plain
    pinned = EnrolmentInvite(
        relay_url="wss://relay.example:443",
        relay_id="r",
        secret=SECRET,
        tls_pin=PIN,
        root_hash="cd" * 32,
    )
    text = pinned.encode()
    assert text.startswith("PA1-")
    assert "=" not in text
    assert EnrolmentInvite.decode("  " + text + "\n") == pinned


def test_token_repr_never_shows_the_secret() -> None:
    invite = EnrolmentInvite(relay_url="ws://h:1", relay_id="r", secret=SECRET)
    assert SECRET not in repr(invite)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"relay_url": "http://h"},
        {"relay_url": "ws://" + "h" * 600},
        {"relay_id": ""},
        {"relay_id": "r" * 129},
        {"secret": "short"},
        {"secret": "has spaces in it!!!!"},
        {"tls_pin": "AB" * 32},
        {"relay_url": "wss://h:1"},  # TLS without a pin
        {"root_hash": "xyz"},
    ],
)
def test_invalid_invite_fields_are_refused(kwargs: dict[str, str]) -> None:
    fields = {"relay_url": "ws://h:1", "relay_id": "r", "secret": SECRET, **kwargs}
    with pytest.raises(InvalidEnrolmentToken):
        EnrolmentInvite(**fields)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "PA2-abc",
        "PA1-" + "A" * 3000,
        "PA1-!!!not base64!!!",
        "PA1-" + base64.urlsafe_b64encode(b"\xc1").decode(),
        _raw([1, 2]),
        _raw({**GOOD, "x": 1}),
        _raw({k: v for k, v in GOOD.items() if k != "s"}),
        _raw({**GOOD, "s": 5}),
        _raw({**GOOD, "p": 5}),
        _raw({**GOOD, "u": "ftp://x"}),
    ],
)
def test_damaged_token_is_refused_clearly(text: str) -> None:
    with pytest.raises(InvalidEnrolmentToken) as info:
        EnrolmentInvite.decode(text)
    assert SECRET not in str(info.value)
    assert info.value.public_reason == "not a valid enrolment token"
