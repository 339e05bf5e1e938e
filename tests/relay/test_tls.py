"""Relay TLS over real sockets on 127.0.0.1: HTTPS and wss verified by SPKI pin, wrong pins refused.

The agent's pin check also runs under Python 3.8 (``.venv38``), against the same live server.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import connect

from posassist.client.tlspin import check_pin, client_ssl_context_for_pin
from posassist.protocol.pins import PinMismatch, spki_pin_from_der
from posassist.relay.tls import aiohttp_pin, server_ssl_context, spki_pin
from tests.relay.certs import SelfSignedCertificate, make_certificate, make_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ROOT = Path(__file__).resolve().parents[2]
PY38 = ROOT / ".venv38" / "bin" / "python"
WRONG_PIN = "0" * 64


@pytest.fixture(scope="module")
def cert() -> SelfSignedCertificate:
    return make_certificate()


@pytest.fixture
def pin(cert: SelfSignedCertificate) -> str:
    return spki_pin(cert.cert_pem)


class Relay:
    """A real aiohttp server over TLS on 127.0.0.1 that counts the requests reaching it."""

    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.hits = 0

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"


@pytest.fixture
async def relay(tmp_path: Path, cert: SelfSignedCertificate) -> AsyncIterator[Relay]:
    cert_file, key_file = cert.write(tmp_path)
    app = web.Application()
    holder: list[Relay] = []

    async def ping(request: web.Request) -> web.Response:
        holder[0].hits += 1
        return web.json_response({"ok": True})

    async def echo(request: web.Request) -> web.WebSocketResponse:
        holder[0].hits += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_bytes(msg.data)
        return ws

    app.router.add_get("/ping", ping)
    app.router.add_get("/v1/agent", echo)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=server_ssl_context(cert_file, key_file))
    holder.append(Relay(server))
    yield holder[0]
    await server.close()


def test_pin_is_sha256_of_the_certificates_subject_public_key_info(
    cert: SelfSignedCertificate, pin: str
) -> None:
    spki = cert.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pin == hashlib.sha256(spki).hexdigest()
    assert pin == spki_pin(cert.cert_pem.decode("ascii"))
    assert pin == spki_pin_from_der(cert.cert_der)
    assert len(pin) == 64
    assert pin == pin.lower()


def test_pin_survives_reissue_with_the_same_key_and_changes_with_a_new_key() -> None:
    key = make_key()
    first, reissued = make_certificate(key=key), make_certificate(key=key)
    assert first.cert_pem != reissued.cert_pem
    assert spki_pin(first.cert_pem) == spki_pin(reissued.cert_pem)
    assert spki_pin(make_certificate().cert_pem) != spki_pin(first.cert_pem)


def test_pin_of_a_chain_file_is_the_leafs(cert: SelfSignedCertificate, pin: str) -> None:
    chain = cert.cert_pem + make_certificate().cert_pem
    assert spki_pin(chain) == pin


async def test_https_client_trusting_the_pin_reaches_the_relay(relay: Relay, pin: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{relay.https}/ping", ssl=aiohttp_pin(pin)) as resp,
    ):
        assert resp.status == 200
        assert await resp.json() == {"ok": True}
    assert relay.hits == 1


async def test_https_client_with_a_wrong_pin_is_refused_before_sending_the_request(
    relay: Relay,
) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ServerFingerprintMismatch):
            await session.get(f"{relay.https}/ping", ssl=aiohttp_pin(WRONG_PIN))
    assert relay.hits == 0


async def test_rsa_certificate_works_too(tmp_path: Path) -> None:
    cert = make_certificate(key=make_key("rsa"))
    cert_file, key_file = cert.write(tmp_path)

    async def pong(request: web.Request) -> web.Response:
        return web.Response(text="pong")

    app = web.Application()
    app.router.add_get("/ping", pong)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=server_ssl_context(cert_file, key_file))
    try:
        url = f"https://127.0.0.1:{server.port}/ping"
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, ssl=aiohttp_pin(spki_pin(cert.cert_pem))) as resp,
        ):
            assert await resp.text() == "pong"
    finally:
        await server.close()


async def test_client_using_the_system_trust_store_refuses_the_self_signed_relay(
    relay: Relay,
) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"{relay.https}/ping")
    assert relay.hits == 0


async def test_agent_websocket_verifies_the_relay_by_pin(relay: Relay, pin: str) -> None:
    url = f"wss://127.0.0.1:{relay.server.port}/v1/agent"
    async with connect(url, ssl=client_ssl_context_for_pin(pin)) as ws:
        ssl_object = ws.transport.get_extra_info("ssl_object")
        check_pin(ssl_object, pin)
        assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
        await ws.send(b"hello")
        assert await ws.recv() == b"hello"


async def test_agent_websocket_with_a_wrong_pin_raises_before_sending_anything(
    relay: Relay,
) -> None:
    url = f"wss://127.0.0.1:{relay.server.port}/v1/agent"
    async with connect(url, ssl=client_ssl_context_for_pin(WRONG_PIN)) as ws:
        with pytest.raises(PinMismatch) as info:
            check_pin(ws.transport.get_extra_info("ssl_object"), WRONG_PIN)
    assert info.value.expected == WRONG_PIN
    assert len(info.value.got) == 64


def test_check_pin_treats_a_connection_without_tls_as_a_mismatch(pin: str) -> None:
    with pytest.raises(PinMismatch):
        check_pin(None, pin)


async def test_server_speaks_tls12_with_forward_secret_aead_ciphers(relay: Relay, pin: str) -> None:
    # An old agent's OpenSSL that tops out at TLS 1.2 still gets in, with ECDHE + AEAD.
    context = client_ssl_context_for_pin(pin)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    _, writer = await asyncio.open_connection("127.0.0.1", relay.server.port, ssl=context)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        check_pin(ssl_object, pin)
        assert ssl_object.version() == "TLSv1.2"
        cipher = ssl_object.cipher()[0]
        assert cipher.startswith("ECDHE-")
        assert "GCM" in cipher or "CHACHA20" in cipher
    finally:
        writer.close()
        await writer.wait_closed()


def test_server_context_refuses_old_protocols_and_plain_rsa_key_exchange(
    tmp_path: Path, cert: SelfSignedCertificate
) -> None:
    context = server_ssl_context(*cert.write(tmp_path))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    names = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names
    assert all(n.startswith("ECDHE-") and ("GCM" in n or "CHACHA20" in n) for n in names)


def test_server_context_names_the_files_when_the_key_does_not_match(
    tmp_path: Path, cert: SelfSignedCertificate
) -> None:
    cert_file, _ = cert.write(tmp_path / "a")
    _, other_key = make_certificate().write(tmp_path / "b")
    with pytest.raises(ValueError, match="cannot use TLS certificate") as info:
        server_ssl_context(cert_file, other_key)
    assert str(cert_file) in str(info.value)
    assert str(other_key) in str(info.value)
    with pytest.raises(ValueError, match=r"missing\.crt"):
        server_ssl_context(tmp_path / "missing.crt", other_key)


@pytest.mark.parametrize("bad", ["", "ABC", "A" * 64, "g" * 64, "0" * 63, "0" * 65])
def test_malformed_pins_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        client_ssl_context_for_pin(bad)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        aiohttp_pin(bad)


PY38_CLIENT = """
import socket, sys
from posassist.client import tlspin
port, pin = int(sys.argv[1]), sys.argv[2]
context = tlspin.client_ssl_context_for_pin(pin)
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        try:
            tlspin.check_pin(tls, pin)
        except tlspin.PinMismatch as exc:
            print("mismatch", exc.got)
            sys.exit(3)
        print("ok", sys.version_info[:2], tls.version())
"""


@pytest.mark.py38
@pytest.mark.parametrize("good", [True, False], ids=["right-pin", "wrong-pin"])
async def test_pin_check_runs_on_python38_against_the_live_relay(
    relay: Relay, pin: str, good: bool
) -> None:
    if not PY38.exists():
        pytest.fail(f"{PY38} is missing: `make test` builds it from Python 3.8 (docs/windows7.md)")
    expected = pin if good else WRONG_PIN
    proc = await asyncio.create_subprocess_exec(
        str(PY38),
        "-c",
        PY38_CLIENT,
        str(relay.server.port),
        expected,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    if good:
        assert proc.returncode == 0, err.decode()
        assert out.decode().startswith("ok (3, 8)")
    else:
        assert proc.returncode == 3, err.decode()
        assert out.decode().split() == ["mismatch", pin]
    assert relay.hits == 0  # raw TLS only: no HTTP request was ever sent
