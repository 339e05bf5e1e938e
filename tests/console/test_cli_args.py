"""``posassist`` with bad arguments: exit 2 and one line naming the problem (BadArgument), never
a traceback or a usage dump, and nothing sent. The saved session points at a port where nothing
listens: a command that tried to connect would exit 1 (relay unreachable) instead."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import TYPE_CHECKING

import pytest

from posassist.console.__main__ import main

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = tmp_path / "home"
    home.mkdir()
    (home / "session.json").write_text(
        json.dumps({"relay": f"ws://127.0.0.1:{port}", "token": "t", "user": "tech"})
    )
    monkeypatch.setenv("POSASSIST_HOME", str(home))


BAD = {
    "device id with a space": (["diag", "dev 1"], "DEVICE must be a device id"),
    "device id with an escape": (["diag", "dev\x1b[2J"], "DEVICE must be a device id"),
    "device id too long": (["restore", "d" * 65, "bk-1"], "DEVICE must be a device id"),
    "run on a bad device": (["run", "<b>", "s", "--version", "1"], "DEVICE must be a device id"),
    "param without =": (["run", "d1", "s", "--version", "1", "--param", "x"], "name=value"),
    "param without a name": (["run", "d1", "s", "--version", "1", "--param", "=5"], "name=value"),
    "param given twice": (
        ["run", "d1", "s", "--version", "1", "--param", "a=1", "--param", "a=2"],
        "given twice",
    ),
    "param NaN": (["run", "d1", "s", "--version", "1", "--param", "a=NaN"], "finite"),
    "param 1e999": (["run", "d1", "s", "--version", "1", "--param", "a=1e999"], "finite"),
    "param past 64 bits": (["run", "d1", "s", "--version", "1", "--param", "a=1" + "0" * 30], "64"),
    "empty version": (["run", "d1", "s", "--version", ""], "version has a bad value"),
    "timeout a word": (["diag", "d1", "--timeout", "soon"], "not a number of seconds"),
    "timeout NaN": (["diag", "d1", "--timeout", "nan"], "between 0.1 and 600"),
    "timeout negative": (["run", "d1", "s", "--version", "1", "--timeout", "-5"], "between"),
    "timeout past the protocol's": (["diag", "d1", "--timeout", "601"], "between 0.1 and 600"),
    "unknown command": (["bogus"], "invalid choice"),
    "unknown command with escapes": (["\x1b[2Jbogus"], "invalid choice"),
    "missing argument": (["run", "d1"], "required"),
}


@pytest.mark.parametrize(("argv", "why"), BAD.values(), ids=BAD.keys())
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: bad argument: ")
    assert lines[0].endswith("/ 参数有误")
    assert why in lines[0]
    assert "Traceback" not in err
    assert "\x1b" not in err


@pytest.mark.parametrize(
    "argv",
    [["diag", "dev_0a1b"], ["run", "dev:1.a-b_c", "s", "--version", "1", "--param", "n=5"]],
)
def test_good_arguments_get_as_far_as_the_relay(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # the control: the same commands with good arguments try the (absent) relay and exit 1
    assert main(argv) == 1
    assert "bad argument" not in capsys.readouterr().err


@pytest.fixture
def refusing_relay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """A stand-in relay on 127.0.0.1 that answers every request 429 with hostile JSON words."""
    body = json.dumps(
        {"error": "RateLimited", "message": "slow down\x1b[2J", "message_zh": "请稍后再试"}
    ).encode()
    answer = (
        b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
        + f"Retry-After: 20\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    seen: list[bytes] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            with conn:
                seen.append(conn.recv(65536))
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    home = tmp_path / "home429"
    home.mkdir()
    relay = f"ws://127.0.0.1:{server.getsockname()[1]}"
    (home / "session.json").write_text(json.dumps({"relay": relay, "token": "t", "user": "x"}))
    monkeypatch.setenv("POSASSIST_HOME", str(home))
    try:
        yield seen
    finally:
        server.close()
        thread.join(10)


def test_a_refused_websocket_upgrade_is_one_line_not_a_traceback(
    refusing_relay: list[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["diag", "dev_1"]) == 1
    err = capsys.readouterr().err
    assert refusing_relay[0].startswith(b"GET /v1/console")  # it did try the relay
    assert len(err.splitlines()) == 1, err
    assert "HTTP 429 RateLimited: slow down" in err
    assert "\x1b" not in err
    assert "Traceback" not in err


def test_a_reader_that_stops_early_gets_no_error_line() -> None:
    """README walk: `posassist alerts --json | head` printed "[Errno 32] Broken pipe / 参数或
    文件有误" (a raw errno, and "bad argument" in Chinese)."""
    import subprocess
    import sys

    code = (
        "import sys, posassist.console.__main__ as c\n"
        "def flood(args):\n"
        "    for _ in range(200000):\n"
        "        print('x' * 100)\n"
        "    return 0\n"
        "c._command = flood\n"
        "sys.exit(c.main(['alerts']))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"x" * 100 + b"\n"
    proc.stdout.close()  # as `head` does
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (0, b"")


def test_a_reader_that_stops_early_during_diag_is_not_an_unreachable_relay() -> None:
    """README walk (17a): `posassist diag dev_… | head -1` said "relay unreachable:
    BrokenPipeError" and exit 1: the report is printed while the websocket is open."""
    import subprocess
    import sys

    code = (
        "import sys, posassist.console.__main__ as c\n"
        "async def flood(*args):\n"
        "    for _ in range(200000):\n"
        "        print('x' * 100)\n"
        "    return 0\n"
        "c._diag = flood\n"
        "sys.exit(c.main(['diag', 'dev_1']))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"x" * 100 + b"\n"
    proc.stdout.close()  # as `head -1` does
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (0, b"")


def test_a_mistyped_collector_is_refused_by_the_console_and_the_names_are_the_agents() -> None:
    """readme-walk 14: ``--collector printer`` reached the till, which reported an unknown
    collector as a warning telling the cashier to call support, and the command exited 0."""
    from posassist.agent.diagnostics import default_collectors
    from posassist.client.render import HEADINGS
    from posassist.console.__main__ import main

    assert set(HEADINGS) == {c.name for c in default_collectors()}
    assert main(["diag", "dev_1", "--collector", "printer"]) == 2
