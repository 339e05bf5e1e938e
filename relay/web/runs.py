"""Vetted scripts from the web console: a run's live record (steps, consent, output, end). What the
published repository offers is relay/scripts_repo.py's ``offered_scripts``.

A run goes through the same checks, job and audit record as one from a websocket console
(relay/handlers/consoles.py ``route_request``); :class:`WebRun` is the link the router sends its
replies to. The device still verifies every signature before anything runs (docs/scripts.md).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from posassist.protocol import (
    DiagnosticsReport,
    ErrorReply,
    Role,
    ScriptFinished,
    ScriptOutput,
    ScriptProgress,
    ScriptStarted,
    Session,
)

if TYPE_CHECKING:
    from posassist.protocol import Message

__all__ = ["RUNS", "WebRun"]

#: Output kept per run for the page (the job's record and audit hold the outcome).
MAX_OUTPUT = 64 * 1024
#: Runs remembered for their pages; the oldest goes first.
MAX_RUNS = 500


@dataclass(eq=False)
class WebRun:
    """A run started from the web console: the router's link for its replies, and what the
    job page shows of them."""

    device_id: str
    script: str
    version: str
    user: str
    peer: str = "web"
    session: Session = field(default_factory=lambda: Session(Role.CONSOLE))
    job_id: str | None = None
    steps: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    started: bool = False
    output: bytearray = field(default_factory=bytearray)
    output_dropped: int = 0
    finished: ScriptFinished | None = None
    error: ErrorReply | None = None
    #: a ``diag.request``'s answer (the run is then a diagnosis, not a script)
    report: DiagnosticsReport | None = None
    #: the backup a ``script.restore`` puts back (the run is then a restore)
    restoring: str | None = None

    @property
    def done(self) -> bool:
        return self.finished is not None or self.error is not None or self.report is not None

    def send_nowait(self, msg: Message, request_id: int | None = None) -> None:
        """What the router hands a console, kept for the page (never blocks, never grows
        past MAX_OUTPUT)."""
        if isinstance(msg, ScriptProgress):
            self.steps.append((msg.step, dict(msg.detail)))
        elif isinstance(msg, ScriptStarted):
            self.started = True
        elif isinstance(msg, ScriptOutput):
            room = MAX_OUTPUT - len(self.output)
            self.output += msg.data[: max(0, room)]
            self.output_dropped += max(0, len(msg.data) - room)
        elif isinstance(msg, ScriptFinished):
            self.finished = msg
        elif isinstance(msg, ErrorReply):
            self.error = msg
        elif isinstance(msg, DiagnosticsReport):
            self.report = msg


#: job id → its run, per application (relay/web/pages.py keeps it under this key).
RUNS = web.AppKey("posassist.web.runs", OrderedDict[str, WebRun])


def remember(app: web.Application, run: WebRun) -> None:
    runs = app[RUNS]
    assert run.job_id is not None
    runs[run.job_id] = run
    while len(runs) > MAX_RUNS:
        runs.popitem(last=False)
