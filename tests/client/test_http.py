"""client/http.py against a raw TLS server on 127.0.0.1 that records every byte it receives.

The same rules for the agent's standard-library client and the console's aiohttp client: a wrong
pin is refused before a single byte of the request (a password, a token) reaches the server,
query strings are kept, oversized answers are refused, an unreachable relay is a clear error.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from posassist.client import http
from posassist.protocol.errors import EXIT_FAILURE, EXIT_REFUSED, EXIT_USAGE
from posassist.protocol.pins import PinMismatch, spki_pin_from_pem
from posassist.relay.tls import server_ssl_context
from tests.relay.certs import SelfSignedCertificate, make_certificate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]
WRONG_PIN = "0" * 64
SECRET = "correct-horse-battery-staple"


def ok_json(body: object, status: str = "200 OK") -> bytes:
    data = json.dumps(body).encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
    return (head + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data


class RecordingServer:
    """A TLS server that records each connection's bytes and answers with ``answer(request)``."""

    def __init__(self, context: ssl.SSLContext, answer: Callable[[bytes], bytes]) -> None:
        self._context = context
        self._answer = answer
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(10)
        self.port = self._listener.getsockname()[1]
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve_one, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _serve_one(self) -> None:
        try:
            raw, _ = self._listener.accept()
        except OSError:
            return
        got = b""
        with raw:
            raw.settimeout(10)
            try:
                with self._context.wrap_socket(raw, server_side=True) as tls:
                    while b"\r\n\r\n" not in got:
                        chunk = tls.recv(65536)
                        if not chunk:
                            break
                        got += chunk
                    head, _, body = got.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n"):
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(body) < length:
                        chunk = tls.recv(65536)
                        if not chunk:
                            break
                        body += chunk
                        got += chunk
                    if got:
                        tls.sendall(self._answer(got))
            except (OSError, ssl.SSLError):
                pass
        self.received.append(got)

    def wait(self) -> bytes:
        """What the (one) connection sent, once the server is done with it."""
        self._thread.join(15)
        assert not self._thread.is_alive()
        (got,) = self.received
        return got

    def close(self) -> None:
        self._listener.close()
        self._thread.join(15)


@pytest.fixture(scope="module")
def cert() -> SelfSignedCertificate:
    return make_certificate()


@pytest.fixture(scope="module")
def context(
    tmp_path_factory: pytest.TempPathFactory, cert: SelfSignedCertificate
) -> ssl.SSLContext:
    return server_ssl_context(*cert.write(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def pin(cert: SelfSignedCertificate) -> str:
    return spki_pin_from_pem(cert.cert_pem)


@pytest.fixture
def serve(context: ssl.SSLContext) -> Iterator[Callable[..., RecordingServer]]:
    servers: list[RecordingServer] = []

    def start(
        answer: Callable[[bytes], bytes] = lambda _: ok_json({"ok": True}),
    ) -> RecordingServer:
        server = RecordingServer(context, answer)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _sync_login(url: str, pin: str | None) -> http.Response:
    body = json.dumps({"username": "admin", "password": SECRET}).encode()
    return http.request("POST", url + "/v1/login", body=body, pin=pin)


async def _async_login(url: str, pin: str | None) -> http.Response:
    return await http.fetch(
        "POST", url + "/v1/login", json_body={"password": SECRET}, token="tok-" + SECRET, pin=pin
    )


def test_sync_client_with_wrong_pin_sends_no_byte_of_the_request(serve) -> None:
    server = serve()
    with pytest.raises(PinMismatch) as info:
        _sync_login(server.url, WRONG_PIN)
    assert info.value.exit_code == EXIT_REFUSED
    assert server.wait() == b""  # the handshake finished, then nothing: no password


async def test_async_client_with_wrong_pin_sends_no_byte_of_the_request(serve) -> None:
    server = serve()
    with pytest.raises(PinMismatch) as info:
        await _async_login(server.url, WRONG_PIN)
    assert info.value.got  # the relay's real pin, for the operator's log
    got = server.wait()
    assert got == b""
    assert SECRET.encode() not in got


def test_sync_client_with_right_pin_sends_the_request_and_keeps_the_query(serve, pin) -> None:
    server = serve()
    answer = http.request("GET", server.url + "/v1/x?since=5&name=a%20b", pin=pin)
    assert answer.raise_for_status().json() == {"ok": True}
    assert server.wait().startswith(b"GET /v1/x?since=5&name=a%20b HTTP/1.1\r\n")


async def test_async_client_with_right_pin_sends_the_request_and_keeps_the_query(
    serve, pin
) -> None:
    server = serve()
    answer = await http.fetch("GET", server.url + "/v1/x?since=5&name=a%20b", token="t", pin=pin)
    assert answer.raise_for_status().json() == {"ok": True}
    got = server.wait()
    assert got.startswith(b"GET /v1/x?since=5&name=a%20b HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer t\r\n" in got


async def test_async_login_with_right_pin_reaches_the_server(serve, pin) -> None:
    server = serve()
    await _async_login(server.url, pin)
    assert SECRET.encode() in server.wait()  # the recorder does see what a right pin lets through


def test_without_a_pin_a_self_signed_relay_is_untrusted(serve) -> None:
    server = serve()
    with pytest.raises(http.CertificateUntrusted) as info:
        _sync_login(server.url, None)
    assert info.value.exit_code == EXIT_REFUSED
    assert server.wait() == b""


async def test_async_without_a_pin_a_self_signed_relay_is_untrusted(serve) -> None:
    server = serve()
    with pytest.raises(http.CertificateUntrusted):
        await _async_login(server.url, None)
    assert server.wait() == b""


def _declared_too_big(_: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\nConnection: close\r\n\r\n" + b"x" * 10


def _streamed_too_big(_: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 300_000


@pytest.mark.parametrize("answer", [_declared_too_big, _streamed_too_big], ids=["length", "body"])
def test_sync_client_refuses_an_oversized_answer(serve, pin, answer) -> None:
    server = serve(answer)
    with pytest.raises(http.ResponseTooLarge):
        http.request("GET", server.url + "/big", pin=pin, max_bytes=100_000)
    server.wait()


@pytest.mark.parametrize("answer", [_declared_too_big, _streamed_too_big], ids=["length", "body"])
async def test_async_client_refuses_an_oversized_answer(serve, pin, answer) -> None:
    server = serve(answer)
    with pytest.raises(http.ResponseTooLarge):
        await http.fetch("GET", server.url + "/big", pin=pin, max_bytes=100_000)
    server.wait()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_relay_is_a_clear_error(pin) -> None:
    with pytest.raises(http.RelayUnreachable) as info:
        http.request("GET", f"https://127.0.0.1:{_closed_port()}/healthz", pin=pin, timeout=5)
    assert info.value.exit_code == EXIT_FAILURE
    assert info.value.public_reason == "relay unreachable"


async def test_async_unreachable_relay_is_a_clear_error(pin) -> None:
    with pytest.raises(http.RelayUnreachable):
        await http.fetch("GET", f"http://127.0.0.1:{_closed_port()}/healthz", timeout=5)


def test_refusal_statuses_map_to_errors_with_the_relays_public_message(serve, pin) -> None:
    message = {"error": "BadCredentials", "message": "invalid username or password"}
    server = serve(lambda _: ok_json(message, "401 Unauthorized"))
    answer = _sync_login(server.url, pin)
    with pytest.raises(http.HttpRefusedError) as info:
        answer.raise_for_status()
    assert (info.value.status, info.value.error) == (401, "BadCredentials")
    assert info.value.exit_code == EXIT_REFUSED
    assert "invalid username or password" in str(info.value)
    broken = http.Response(502, {}, b"<html>bad gateway</html>")
    with pytest.raises(http.HttpStatusError) as status:
        broken.raise_for_status()
    assert not isinstance(status.value, http.HttpRefusedError)
    assert status.value.exit_code == EXIT_FAILURE


@pytest.mark.parametrize(
    ("relay", "base"),
    [
        ("ws://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("wss://relay.example/", "https://relay.example"),
        ("wss://relay.example:9/v1/agent", "https://relay.example:9"),
        ("https://relay.example/prefix/v1/console", "https://relay.example/prefix"),
    ],
)
def test_relay_urls_become_http_bases(relay: str, base: str) -> None:
    assert http.http_url(relay) == base


@pytest.mark.parametrize(
    ("relay", "base"),
    [
        ("http://127.0.0.1:8765", "ws://127.0.0.1:8765"),
        ("https://relay.example/", "wss://relay.example"),
        ("ws://127.0.0.1:8765/v1/console", "ws://127.0.0.1:8765"),
        ("wss://relay.example/prefix/", "wss://relay.example/prefix"),
    ],
)
def test_relay_urls_become_websocket_bases(relay: str, base: str) -> None:
    assert http.ws_url(relay) == base
    assert http.http_url(base) == http.http_url(relay)


@pytest.mark.parametrize(
    "bad", ["ftp://x", "relay.example", "http://", "http://h:port", "ws://h?q"]
)
def test_a_relay_url_that_is_not_http_or_ws_is_a_usage_error(bad: str) -> None:
    with pytest.raises(http.InvalidRelayUrl) as info:
        http.http_url(bad)
    assert info.value.exit_code == EXIT_USAGE
    with pytest.raises(http.InvalidRelayUrl):
        http.ws_url(bad)


def test_the_agent_side_never_imports_aiohttp() -> None:
    code = (
        "import sys; import posassist.client.http, posassist.agent.enrol, "
        "posassist.agent.scripts.verify; print('aiohttp' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr
