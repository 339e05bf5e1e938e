"""Found in the outside attack (F10): a request whose body never fully arrives (trickled, then cut
by the relay's request deadline) ends in one INFO line, not an aiohttp ERROR with a traceback."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.e2e.cli import provision, start_relay, stop

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.slow
def test_a_body_cut_by_the_deadline_logs_one_line_without_a_traceback(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    provision(data)
    log = tmp_path / "relay.log"
    with log.open("w") as out:
        relay, url = start_relay(data, "--http-request-timeout", "1", log=out)
        try:
            where = urlsplit(url)
            with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
                sock.sendall(
                    b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b'Content-Length: 1000\r\n\r\n{"user'
                )
                assert sock.recv(65536) == b""  # bounded by the socket timeout: cut, no answer
            deadline = time.monotonic() + 10
            while "connection was lost" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.05)
        finally:
            stop(relay)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert " ERROR " not in text, text[-3000:]
