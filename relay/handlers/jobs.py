"""Ending a routed request: tell the console, finish the job, audit the outcome.

Every routed request has a job row from before it is forwarded; this is where it ends.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from posassist.protocol import DiagnosticsReport, ErrorReply, PosAssistError, ScriptFinished

from ..audit import AuditEntry, Outcome
from ..errors import StorageError
from ..routing import error_reply
from ..storage import JobStatus

if TYPE_CHECKING:
    from posassist.protocol import Message

    from ..routing import Route
    from ..state import RelayState

log = logging.getLogger("posassist.relay")

#: Routing error codes → the ``outcome`` label of posassist_relay_requests_routed_total.
_OUTCOME = {"timeout": "timeout", "offline": "offline", "console_gone": "cancelled"}

_SCRIPT_STATUS = {
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "timed_out": JobStatus.TIMED_OUT,
    "cancelled": JobStatus.FAILED,
    "refused": JobStatus.FAILED,
}


def job_outcome(reply: Message) -> tuple[JobStatus, str | None]:
    """The job status (and error text) a terminal reply from an agent means."""
    if isinstance(reply, DiagnosticsReport):
        return JobStatus.SUCCEEDED, None
    if isinstance(reply, ScriptFinished):
        status = _SCRIPT_STATUS[reply.status]
        return status, None if status is JobStatus.SUCCEEDED else f"{reply.status}: {reply.detail}"
    if isinstance(reply, ErrorReply):
        return JobStatus.FAILED, f"{reply.code}: {reply.message}"
    return JobStatus.SUCCEEDED, None  # pragma: no cover - every terminal reply is listed above


async def finish_route(
    state: RelayState,
    route: Route,
    error_code: str | None,
    error_message: str | None,
    *,
    reply: Message | None = None,
) -> None:
    """End ``route``: on error tell the console (if still there); then finish job and audit."""
    error: str | None
    seconds = state.now() - route.started_at
    if error_code is not None:
        state.metrics.routed(route.tag, _OUTCOME.get(error_code, "error"), seconds=seconds)
        with contextlib.suppress(PosAssistError):  # the console may be gone or closing
            route.console.send_nowait(error_reply(route, error_code, error_message or error_code))
        status, error = JobStatus.FAILED, f"{error_code}: {error_message}"
    else:
        assert reply is not None
        status, error = job_outcome(reply)
        ok = status is JobStatus.SUCCEEDED
        state.metrics.routed(route.tag, "ok" if ok else "error", seconds=seconds)
    try:
        entry = AuditEntry(
            f"user:{route.user}",
            f"{route.tag}.finished",
            f"device:{route.device_id}",
            Outcome.OK if status is JobStatus.SUCCEEDED else Outcome.FAILED,
            {
                "job": route.job_id,
                "status": status.value,
                "error": error,
                "elapsed_ms": round(seconds * 1000, 1),
            },
        )
        # The job's end and its audit record commit together.
        await state.storage.finish_job(
            route.job_id, status, now=state.now(), error=error, audit=entry
        )
    except StorageError as exc:
        log.error("could not record the end of job %s: %s", route.job_id, exc)
