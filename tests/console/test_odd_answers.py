"""attack 15 #2: a relay answering JSON of another shape than docs/api.md's made ``posassist
health`` (and others) print a Python traceback; every command now says it in one line, exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ANSWERS: dict[str, object] = {
    "a list": [],
    "null": None,
    "a string": "ok",
    "no relay_id": {"status": "ok"},
    "nested deep": "DEEP",
}


@pytest.mark.parametrize("answer", list(ANSWERS.values()), ids=list(ANSWERS))
def test_health_against_a_relay_of_another_shape_is_one_line(answer: object) -> None:
    body = ("[" * 5000 + "]" * 5000).encode() if answer == "DEEP" else json.dumps(answer).encode()

    class Odd(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Odd)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = subprocess.run(
            [sys.executable, "-m", "posassist.console", "health", "--relay", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
