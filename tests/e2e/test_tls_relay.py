"""The relay over TLS with a certificate the test makes; agents trust it by the token's pin."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from tests.e2e.cli import invite, ok, provision, py, start_relay, stop
from tests.relay.certs import make_certificate

if TYPE_CHECKING:
    from pathlib import Path


def test_agent_enrols_and_connects_over_pinned_tls(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    store = provision(data)
    cert, key = make_certificate().write(tmp_path / "tls")
    proc, url = start_relay(data, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert url.startswith("wss://127.0.0.1:")
        token = invite(data, store, url, tls_cert=cert)
        till = tmp_path / "till"
        ok(py("agent", "enroll", token, "--data", str(till)))
        saved = json.loads((till / "agent.json").read_text())
        assert len(saved["tls_pin"]) == 64
        connected = py("agent", "run", "--data", str(till), "--once")
        assert connected.returncode == 0, connected.stderr
        assert "connected to relay" in connected.stdout
    finally:
        stop(proc)


def test_agent_refuses_a_relay_whose_key_is_not_the_pinned_one(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    store = provision(data)
    cert, key = make_certificate().write(tmp_path / "tls")
    other_cert, _ = make_certificate().write(tmp_path / "other")
    proc, url = start_relay(data, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        # a token pinned to another key: an impostor relay, as far as the agent can tell
        token = invite(data, store, url, tls_cert=other_cert)
        till = tmp_path / "till"
        refused = py("agent", "enroll", token, "--data", str(till))
        assert refused.returncode != 0
        assert "does not match the pin" in refused.stderr + refused.stdout
        assert not (till / "agent.key").exists()
        # the secret never reached the relay: the token is still unused and works once pinned
        assert ok(py("relay", "device", "list", "--data", str(data))) == ""
    finally:
        stop(proc)


def test_plain_websocket_to_a_tls_relay_fails_clearly(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    store = provision(data)
    cert, key = make_certificate().write(tmp_path / "tls")
    proc, url = start_relay(data, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        plain = url.replace("wss://", "ws://")
        refused = py("agent", "enroll", invite(data, store, plain), "--data", str(tmp_path / "t"))
        assert refused.returncode != 0
        assert not (tmp_path / "t" / "agent.key").exists()
    finally:
        stop(proc)
