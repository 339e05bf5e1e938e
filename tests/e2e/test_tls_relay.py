"""The relay over TLS with a certificate the test makes; agents trust it by the token's pin."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from tests.e2e.cli import invite, ok, provision, py, start_relay, stop
from tests.relay.certs import make_certificate

if TYPE_CHECKING:
    from pathlib import Path

    from posassist.protocol.manifest import Manifest


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


def test_vetted_script_verifies_over_pinned_tls_and_a_wrong_pin_is_refused(
    tmp_path: Path,
) -> None:
    import pytest

    from posassist.agent.scripts.verify import ScriptVerificationError, verify_script
    from posassist.console.scripts_repo import init_repository
    from tests.agent.test_verify import PASS, add, approve, manifest

    data = tmp_path / "relay"
    store = provision(data)
    repo = init_repository(tmp_path / "approvers", ["alice", "bob"], PASS)
    add(repo, tmp_path, manifest("tls-echo"), body=b"echo over pinned tls\n")
    approve(repo, "alice", "bob")
    repo.publish(data)
    cert, key = make_certificate().write(tmp_path / "tls")
    proc, url = start_relay(data, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        till = tmp_path / "till"
        token = invite(data, store, url, tls_cert=cert)
        ok(py("agent", "enroll", token, "--data", str(till), "--root-hash", repo.root_hash()))
        saved = json.loads((till / "agent.json").read_text())
        root = till / "scripts" / "root.json"
        assert root.exists()  # fetched over pinned TLS at enrolment
        base = url.replace("wss://", "https://")

        def verify(pin: str | None, cache: str) -> tuple[Manifest, Path]:
            return verify_script(
                base + "/v1/scripts/metadata/",
                base + "/v1/scripts/targets/",
                root,
                tmp_path / cache,
                "tls-echo",
                "1.0.0",
                1 << 20,
                root_hash=saved["root_hash"],
                tls_pin=pin,
            )

        found, folder = verify(saved["tls_pin"], "good")
        assert found.id == "tls-echo"
        assert (folder / "run.sh").read_bytes() == b"echo over pinned tls\n"
        with pytest.raises(ScriptVerificationError) as info:
            verify("0" * 64, "wrong-pin")
        assert info.value.reason == "unreachable"
        with pytest.raises(ScriptVerificationError):
            verify(None, "no-pin")
    finally:
        stop(proc)


def test_technician_console_over_pinned_tls_runs_a_vetted_script(tmp_path: Path) -> None:
    from posassist.console.scripts_repo import init_repository
    from tests.agent.test_verify import PASS, add, approve, manifest
    from tests.e2e.cli import Technician, start_agent

    data = tmp_path / "relay"
    store = provision(data)
    repo = init_repository(tmp_path / "approvers", ["alice", "bob"], PASS)
    script = manifest("tls-echo")
    script.update({"risk": "A", "unattended": True, "consent": False})
    add(repo, tmp_path, script, body=b"echo over pinned tls\n")
    approve(repo, "alice", "bob")
    repo.publish(data)
    cert, key = make_certificate().write(tmp_path / "tls")
    other, _ = make_certificate().write(tmp_path / "other")
    proc, url = start_relay(data, "--tls-cert", str(cert), "--tls-key", str(key))
    agent = None
    try:
        till = tmp_path / "till"
        token = invite(data, store, url, tls_cert=cert)
        ok(py("agent", "enroll", token, "--data", str(till), "--root-hash", repo.root_hash()))
        agent, device = start_agent(till)
        tech = Technician(tmp_path / "tech")
        login = tech.login_args(url)
        # without a pin the system CA store can't vouch for a self-signed relay; with the wrong
        # pin the password is never sent
        untrusted = tech(*login)
        assert untrusted.returncode == 3, untrusted.stderr  # EXIT_REFUSED: CertificateUntrusted
        assert "relay certificate not trusted" in untrusted.stderr
        wrong = tech(*login, "--tls-cert", str(other))
        assert wrong.returncode == 3  # EXIT_REFUSED: PinMismatch
        assert "does not match the pin" in wrong.stderr
        assert not (tech.home / "session.json").exists()
        assert tech("health", "--relay", url).returncode == 3  # no pin yet: not trusted
        assert "1 agent(s) connected" in ok(tech("health", "--relay", url, "--tls-cert", str(cert)))
        tech.login(url, "--tls-cert", str(cert))
        assert "1 agent(s) connected" in ok(tech("health", "--relay", url))  # the session's pin
        assert device in ok(tech("devices"))
        assert "tls-echo" in ok(tech("scripts", "list"))
        listed = json.loads(ok(tech("scripts", "list", "--json")))
        assert [(s["id"], s["version"]) for s in listed] == [("tls-echo", "1.0.0")]
        ran = tech("run", device, "tls-echo", "--version", "1.0.0", "--unattended")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "over pinned tls" in ran.stdout
    finally:
        if agent is not None:
            stop(agent)
        stop(proc)
