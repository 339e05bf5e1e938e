"""Renewing the relay's TLS certificate without dropping agents: the operator replaces the files
(same key) and sends SIGHUP; new connections get the new certificate, open ones stay up, and a
certificate with another key (which every till would refuse) is not loaded (docs/operating.md#tls).
"""

from __future__ import annotations

import datetime as dt
import signal
import socket
import ssl
import time
from typing import TYPE_CHECKING

from tests.e2e.cli import communicate, invite, ok, provision, py, start_agent, start_relay, stop
from tests.relay.certs import SelfSignedCertificate, make_certificate, make_key

if TYPE_CHECKING:
    from pathlib import Path


def _served_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _wait_served(port: int, cert: SelfSignedCertificate) -> None:
    """Until new connections get ``cert`` (the relay handles SIGHUP on its loop)."""
    deadline = time.monotonic() + 30
    while _served_certificate(port) != cert.cert_der:
        assert time.monotonic() < deadline, "the relay never served the renewed certificate"
        time.sleep(0.05)


def _wait_logged(log: Path, text: str) -> None:
    deadline = time.monotonic() + 30
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"the relay never logged {text!r}"
        time.sleep(0.05)


def test_sighup_serves_a_renewed_certificate_and_keeps_agents_connected(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    store = provision(data)
    key = make_key()
    first = make_certificate(key=key)
    cert_file, key_file = first.write(tmp_path / "tls")
    log = tmp_path / "relay.log"
    with log.open("w") as out:
        relay, url = start_relay(
            data, "--tls-cert", str(cert_file), "--tls-key", str(key_file), log=out
        )
    port = int(url.rsplit(":", 1)[1])
    agent = None
    try:
        till = tmp_path / "till"
        ok(py("agent", "enroll", invite(data, store, url, tls_cert=cert_file), "--data", str(till)))
        agent, _device = start_agent(till)
        assert _served_certificate(port) == first.cert_der

        # renewed with the same key: served to new connections after SIGHUP
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=90)
        renewed = make_certificate(key=key, not_after=later)
        renewed.write(tmp_path / "tls")
        relay.send_signal(signal.SIGHUP)
        _wait_served(port, renewed)

        # another key: refused (every till would refuse it), the renewed one stays
        make_certificate().write(tmp_path / "tls")
        relay.send_signal(signal.SIGHUP)
        _wait_logged(log, "has another key")
        assert _served_certificate(port) == renewed.cert_der
        third = make_certificate(key=key, not_after=later)
        third.write(tmp_path / "tls")
        relay.send_signal(signal.SIGHUP)
        _wait_served(port, third)

        # a till enrolled now (pin unchanged) connects; the first one never reconnected
        other = tmp_path / "till2"
        ok(
            py(
                "agent",
                "enroll",
                invite(data, store, url, tls_cert=cert_file),
                "--data",
                str(other),
            )
        )
        ran = py("agent", "run", "--data", str(other), "--once")
        assert ran.returncode == 0, ran.stderr
        assert agent.poll() is None
        agent.kill()
        rest, _ = communicate(agent, 15)
        assert "connected to relay" not in rest  # its one connection (first line) held
    finally:
        if agent is not None and agent.poll() is None:
            stop(agent)
        stop(relay)
    assert "TLS certificate reloaded" in log.read_text()
