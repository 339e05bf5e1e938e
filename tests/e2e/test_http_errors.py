"""Every HTTP error of a real relay process is JSON ``{"error", "message", "message_zh"}`` with
a fixed sentence, never the request's input echoed: aiohttp's own 404, 405, 413 and the answers
to request heads it can't parse or that are too large, over raw sockets on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING

import pytest

from tests.e2e.cli import provision, py, start_relay, stop
from tests.e2e.test_untrusted_relay import audit_rows

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

#: Put into every request: it must never come back in an answer.
MARK = "zz<script>alert(1)</script>zz"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    data = tmp_path_factory.mktemp("relay")
    provision(data)
    with (data / "relay.log").open("w") as log:
        proc, url = start_relay(data, log=log)
        host, _, port = url.removeprefix("ws://").partition(":")
        try:
            yield host, int(port)
        finally:
            stop(proc)
    # a stranger's bytes don't reach the log either, nor a traceback per bad request
    logged = (data / "relay.log").read_text()
    assert "bad request from 127.0.0.1: HTTP 400" in logged
    assert "Traceback" not in logged
    assert "<script>" not in logged


def _exchange(address: tuple[str, int], request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; the status, headers and body of the answer (the relay closes after)."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _check(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict[str, str]:
    assert status == expected, body
    assert headers["content-type"].startswith("application/json"), headers
    assert MARK.encode() not in body
    assert b"zz" not in body
    answer: dict[str, str] = json.loads(body)
    assert set(answer) == {"error", "message", "message_zh"}, answer
    assert all(isinstance(v, str) and v for v in answer.values())
    return answer


def test_unknown_path_is_json_404(relay: tuple[str, int]) -> None:
    request = f"GET /v1/{MARK} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    answer = _check(*_exchange(relay, request), 404)
    assert answer["error"] == "NotFound"


def test_wrong_method_is_json_405_with_allow(relay: tuple[str, int]) -> None:
    request = b"DELETE /v1/login HTTP/1.1\r\nHost: x\r\nX-Note: " + MARK.encode()
    request += b"\r\nConnection: close\r\n\r\n"
    status, headers, body = _exchange(relay, request)
    answer = _check(status, headers, body, 405)
    assert answer["error"] == "MethodNotAllowed"
    assert "POST" in headers["allow"]


def test_oversized_body_is_json_413(relay: tuple[str, int]) -> None:
    body = json.dumps({"username": MARK, "password": "x" * 100_000}).encode()
    request = (
        b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    answer = _check(*_exchange(relay, request), 413)
    assert answer["error"] == "PayloadTooLarge"


def test_oversized_header_is_json_and_not_echoed(relay: tuple[str, int]) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + (MARK * 2000).encode()
    request += b"\r\nConnection: close\r\n\r\n"
    status, headers, body = _exchange(relay, request)
    assert status in (400, 431)
    _check(status, headers, body, status)


def test_unparseable_request_line_is_json_400(relay: tuple[str, int]) -> None:
    request = f"GET /{MARK} HTTP/1.1 extra\r\nHost: x\r\n\r\n".encode()
    answer = _check(*_exchange(relay, request), 400)
    assert answer["error"] == "BadRequest"


def test_our_own_errors_carry_chinese_too(relay: tuple[str, int]) -> None:
    request = b"GET /v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    request += MARK.encode() + b"\r\nConnection: close\r\n\r\n"
    answer = _check(*_exchange(relay, request), 401)
    assert answer["message_zh"] == "登录已失效, 请重新登录"


@pytest.mark.parametrize("bad", ["dev 1", "dev\x1b[2J", "d" * 65])
def test_relay_cli_refuses_to_revoke_what_cannot_be_a_device_id(tmp_path: Path, bad: str) -> None:
    data = tmp_path / "relay"
    provision(data)
    before = audit_rows(data)
    result = py("relay", "device", "revoke", bad, "--data", str(data))
    assert result.returncode == 2
    assert result.stderr.startswith("error: bad argument: DEVICE_ID must be"), result.stderr
    assert len(result.stderr.splitlines()) == 1  # nothing opened: not even a migration log
    assert "\x1b" not in result.stderr
    assert audit_rows(data) == before  # nothing revoked, nothing audited
