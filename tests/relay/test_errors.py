from __future__ import annotations

import inspect

import pytest

import posassist.relay.errors as relay_errors
from posassist.protocol.errors import PosAssistError
from posassist.relay.errors import LockedOut

ERRORS = [
    cls
    for _, cls in inspect.getmembers(relay_errors, inspect.isclass)
    if issubclass(cls, PosAssistError) and cls.__module__ == "posassist.relay.errors"
]


def test_every_relay_error_is_exported():
    assert sorted(cls.__name__ for cls in ERRORS) == sorted(relay_errors.__all__)


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_relay_errors_have_fixed_public_reason_and_http_status(cls):
    assert issubclass(cls, PosAssistError)
    assert cls.public_reason
    if cls is not relay_errors.StorageError:
        assert cls.public_reason != "internal error"
    assert 400 <= cls.http_status < 600


def test_public_reason_never_echoes_the_message():
    exc = relay_errors.TokenUnknown("token abc123 of alice")
    assert "abc123" not in exc.public_reason
    assert LockedOut(until=1234.5).until == 1234.5
    assert "1234" not in LockedOut(until=1234.5).public_reason
