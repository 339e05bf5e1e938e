"""The live "still waiting" line (console/progress.py): ``posassist diag`` with stderr on a real
terminal (a pty) shows it while the till has not answered and takes it away before the report;
with ``--json``, or when stderr is not a terminal, nothing extra is written. The relay is real
(in-process aiohttp), the till is played by the test, the console is a real subprocess."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pty
import select
import sys
import time
from typing import TYPE_CHECKING

from posassist.console.progress import Progress
from posassist.protocol import messages as m
from tests.relay.harness import Agent, start_relay

if TYPE_CHECKING:
    from pathlib import Path

    from tests.relay.harness import Relay


class Terminal:
    """A pty: the console writes to its slave; the test reads what a person would see."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.seen = b""

    def read_until(self, wanted: bytes, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while wanted not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, self.seen
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:  # EIO: every slave end closed, the process is gone
                    break
        return self.seen

    def rest(self) -> bytes:
        """What is left to read, without waiting (the writer has exited)."""
        while select.select([self.master], [], [], 0)[0]:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.seen += chunk
        return self.seen

    def close(self) -> None:
        for fd in (self.master, self.slave):
            os.close(fd)


def _signed_in(relay: Relay, home: Path) -> None:
    home.mkdir(exist_ok=True)
    session = {"relay": relay.ws, "token": relay.tokens["tech"], "user": "tech"}
    (home / "session.json").write_text(json.dumps(session))


async def _diag(
    relay: Relay, home: Path, device_id: str, stderr: int, *extra: str
) -> asyncio.subprocess.Process:
    _signed_in(relay, home)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "posassist.console", "diag", device_id, "--timeout", "60", *extra),
        env={**os.environ, "POSASSIST_HOME": str(home)},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )


async def _request(agent: Agent) -> m.DiagnosticsRequest:
    for _ in range(10):
        for msg in await agent.next(timeout=30):
            if isinstance(msg, m.DiagnosticsRequest):
                return msg
    raise AssertionError("no diagnostics request reached the till")


def _report(asked: m.DiagnosticsRequest, device_id: str) -> m.DiagnosticsReport:
    sections = {"disk": {"ok": True, "data": {"free": 1}}}
    return m.DiagnosticsReport(
        id=asked.id, device_id=device_id, collected_at=time.time(), sections=sections
    )


async def test_diag_shows_a_waiting_line_on_a_terminal_and_nothing_with_json(
    tmp_path: Path,
) -> None:
    relay = await start_relay(tmp_path)
    device_id, key = await relay.enrol()
    human, quiet = Terminal(), Terminal()
    try:
        async with Agent(relay, device_id, key) as agent:
            as_json = await _diag(relay, tmp_path / "j", device_id, quiet.slave, "--json")
            json_asked = await _request(agent)  # --json: its Progress began before this
            person = await _diag(relay, tmp_path / "p", device_id, human.slave)
            person_asked = await _request(agent)
            line = f"waiting for {device_id}'s diagnostics / 等待设备诊断 … 1 s".encode()
            await asyncio.to_thread(human.read_until, line)
            # the --json console has waited longer than that: a ticker would have drawn by now
            await agent.reply(_report(json_asked, device_id))
            json_out, _ = await as_json.communicate()
            await agent.reply(_report(person_asked, device_id))
            person_out, _ = await person.communicate()
        assert as_json.returncode == 0
        assert json.loads(json_out)["disk"]["ok"] is True
        assert quiet.rest() == b""  # nothing at all on its terminal's stderr
        assert person.returncode == 0
        assert b"diagnostics of" in person_out  # the report went to stdout, as always
        shown = human.rest()
        assert shown.endswith(b"\r\x1b[K")  # the line was taken away before the end
        assert b"\r\x1b[K" + line in shown
    finally:
        human.close()
        quiet.close()
        await relay.server.close()


async def test_a_stream_that_is_not_a_terminal_gets_nothing() -> None:
    stream = io.StringIO()
    async with Progress("waiting", stream=stream) as progress:
        assert progress.enabled is False
        progress.clear()
    assert stream.getvalue() == ""
