"""Terminal escapes an agent slips into what it reports never reach the technician's terminal.

The real console CLI (``posassist``) runs against an in-process relay; the agent is played by the
test and puts escape sequences in every string it supplies.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING

import pytest

import posassist.console.__main__ as console_main
from posassist.console.render import printable
from posassist.protocol import messages as m
from tests.relay.harness import Agent, Relay, start_relay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

#: Each a different way to drive a terminal: clear screen, set title (OSC, BEL and ST ended),
#: 8-bit CSI, DCS, cursor movement, carriage return overwrite, bidi override, bell, backspace.
EVIL = (
    "\x1b[2J\x1b]0;owned\x07\x1b]8;;http://x\x1b\\\x9b31m\x1bP1$r\x1b\\\x1b[10A"
    "\rFAKE\u202eevil\x07\x08\x00\x7f\x1bc"
)
#: What a terminal must never receive: ESC, C0 but newline and tab, DEL, C1, bidi overrides.
FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.mark.parametrize(
    ("text", "multiline", "expected"),
    [
        ("a\x1b[2;31mb", True, "ab"),
        ("t\x1b]0;title\x07u", True, "tu"),
        ("t\x1b]0;title\x1b\\u", True, "tu"),
        ("\x9b31mred", True, "red"),
        ("x\x1bPq#0;2\x1b\\y", True, "xy"),
        ("a\r\nb\rc", True, "a\nbc"),
        ("keep\ttabs\nand lines\n", True, "keep\ttabs\nand lines\n"),
        ("one\ttwo\nthree", False, "one two three"),
        ("abc\u202eevil\u2066x", True, "abcevilx"),
        ("trailing escape\x1b", True, "trailing escape"),
        ("bell\x07 nul\x00 del\x7f", True, "bell nul del"),
        ("中文 ok", True, "中文 ok"),
    ],
)
def test_printable_strips_escapes_and_controls(text: str, multiline: bool, expected: str) -> None:
    assert printable(text, multiline=multiline) == expected


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path)
    try:
        yield relay
    finally:
        await relay.server.close()


def _sign_in(relay: Relay, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home.mkdir()
    session = {"relay": relay.ws, "token": relay.tokens["tech"], "user": "tech", "tls_pin": None}
    (home / "session.json").write_text(json.dumps(session))
    monkeypatch.setenv("POSASSIST_HOME", str(home))


async def _console(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``posassist ARGV`` (it runs its own event loop, so in a thread) and capture it."""
    code = await asyncio.to_thread(console_main.main, list(argv))
    out, err = capfd.readouterr()
    return code, out, err


def _clean(text: str) -> None:
    assert not FORBIDDEN.search(text), repr(text)
    assert "owned" not in text  # the OSC payload (a window title) is dropped with it


def _fields(msg: m.Message) -> dict[str, object]:
    import dataclasses

    return {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}


async def _reply_to_next(agent: Agent, *replies: m.Message) -> None:
    (request,) = await agent.next(timeout=15)
    rid = request.id  # type: ignore[attr-defined]
    for reply in replies:
        await agent.reply(type(reply)(**{**_fields(reply), "id": rid}))


async def test_agent_strings_reach_the_console_stripped(
    relay: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    device_id, key = await relay.enrol()
    _sign_in(relay, tmp_path / "tech", monkeypatch)
    capfd.readouterr()
    async with Agent(relay, device_id, key) as agent:
        sections = {
            f"printer{EVIL}": {
                "ok": True,
                "data": {f"name{EVIL}": f"TM-T20{EVIL}", "list": [f"item{EVIL}"]},
            },
            f"queue{EVIL}": {"ok": False, "error": f"paper out{EVIL}"},
        }
        report = m.DiagnosticsReport(id=1, device_id=device_id, collected_at=1.0, sections=sections)
        for as_json in (False, True):
            answer = asyncio.create_task(_reply_to_next(agent, report))
            code, out, err = await _console(
                capfd, "diag", device_id, *(["--json"] if as_json else [])
            )
            await answer
            assert code == 0, err
            _clean(out + err)
            assert "TM-T20" in out
            assert "paper out" in out
            if as_json:
                assert json.loads(out)  # still JSON once cleaned

        run = (
            m.ScriptStarted(id=1, job_id=f"job{EVIL}"[:64], started_at=1.0),
            m.ScriptProgress(id=1, job_id="j", step="verified", at=1.0, detail={EVIL: EVIL}),
            m.ScriptOutput(
                id=1, job_id="j", seq=0, stream="stdout", data=f"col1\tcol2\nrow{EVIL}\n".encode()
            ),
            m.ScriptOutput(id=1, job_id="j", seq=1, stream="stderr", data=f"warn{EVIL}\n".encode()),
            m.ScriptFinished(
                id=1,
                job_id="j",
                status="failed",
                finished_at=2.0,
                exit_code=3,
                backup_id=f"bak{EVIL}"[:64],
                detail=f"printer jammed{EVIL}",
            ),
        )
        answer = asyncio.create_task(_reply_to_next(agent, *run))
        code, out, err = await _console(capfd, "run", device_id, "s", "--version", "1")
        await answer
        assert code == 1
        _clean(out + err)
        assert "col1\tcol2\nrow" in out  # script output keeps its tabs and newlines
        assert "warn" in err
        assert "printer jammed" in out

        restore = (
            m.ScriptProgress(id=1, job_id="j", step="restored", at=1.0, detail={"f": EVIL}),
            m.ScriptFinished(
                id=1, job_id="j", status="failed", finished_at=2.0, detail=f"no backup{EVIL}"
            ),
        )
        answer = asyncio.create_task(_reply_to_next(agent, *restore))
        code, out, err = await _console(capfd, "restore", device_id, "bak_1")
        await answer
        assert code == 1
        _clean(out + err)
        assert "no backup" in out

        refusal = m.ErrorReply(id=1, code="failed", message=f"agent says{EVIL}")
        answer = asyncio.create_task(_reply_to_next(agent, refusal))
        code, out, err = await _console(capfd, "diag", device_id)
        await answer
        assert code == 1
        _clean(out + err)
        assert "agent says" in err

    code, out, err = await _console(capfd, "devices", "--facts")
    assert code == 0, err
    _clean(out + err)
    assert device_id in out
