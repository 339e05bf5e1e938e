"""The agent's identity: a private key made once, kept 0600, and clear errors for bad input."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pytest

from posassist.agent.config import create_identity, load_identity
from posassist.agent.connection import agent_url
from posassist.agent.errors import ConfigError
from posassist.protocol import signing
from tests.conftest import mode

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.usefixtures("umask_022")
def test_identity_round_trip_and_key_is_private(tmp_path: Path) -> None:
    data = tmp_path / "till" / "pa"
    made = create_identity(data, "till-1", "ws://127.0.0.1:8765")
    # readme-walk F1: the data folder (key, pinned relay, trust root) is private, so are its files
    assert mode(tmp_path / "till") == mode(data) == 0o700
    assert {p.name: mode(p) for p in data.iterdir()} == dict.fromkeys(
        ("agent.key", "agent.pub", "agent.json"), 0o600
    )
    tmp_path = data
    loaded = load_identity(tmp_path)
    assert loaded.device_id == "till-1"
    assert loaded.relay_url == "ws://127.0.0.1:8765"
    assert loaded.key.sign(b"check") == made.key.sign(b"check")  # the same key, loaded
    assert stat.S_IMODE((tmp_path / "agent.key").stat().st_mode) == 0o600
    pub = signing.public_key_from_pem((tmp_path / "agent.pub").read_bytes())
    assert signing.public_key_to_raw(pub) == signing.public_key_to_raw(made.key.public_key())


def test_identity_is_never_overwritten(tmp_path: Path) -> None:
    create_identity(tmp_path, "till-1", "ws://127.0.0.1:1")
    before = (tmp_path / "agent.key").read_bytes()
    with pytest.raises(ConfigError, match="exists already"):
        create_identity(tmp_path, "till-2", "ws://127.0.0.1:1")
    assert (tmp_path / "agent.key").read_bytes() == before


@pytest.mark.parametrize(
    ("device_id", "url"),
    [("../etc", "ws://x"), ("", "ws://x"), ("a" * 65, "ws://x"), ("till", "http://x")],
)
def test_identity_refuses_bad_arguments(tmp_path: Path, device_id: str, url: str) -> None:
    with pytest.raises(ConfigError):
        create_identity(tmp_path, device_id, url)
    assert not (tmp_path / "agent.key").exists()


def test_missing_identity_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no usable agent identity"):
        load_identity(tmp_path)


def test_agent_url_adds_endpoint_path_only_when_missing() -> None:
    assert agent_url("ws://127.0.0.1:1") == "ws://127.0.0.1:1/v1/agent"
    assert agent_url("ws://127.0.0.1:1/") == "ws://127.0.0.1:1/v1/agent"
    assert agent_url("wss://relay.example/custom") == "wss://relay.example/custom"
