"""Ending a routed request: tell the console, finish the job, audit the outcome.

Every routed request has a job row from before it is forwarded; this is where it ends. A script
whose outcome the relay lost ends ``unknown`` and is reconciled here when the agent reports
(docs/protocol.md#requests).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from posassist.protocol import DiagnosticsReport, ErrorReply, PosAssistError, ScriptFinished

from ..audit import AuditEntry, Outcome
from ..errors import Conflict, NotFound, StorageError
from ..routing import error_reply
from ..storage import JobStatus

if TYPE_CHECKING:
    from collections.abc import Mapping

    from posassist.protocol import JobResults, Message

    from ..routing import Route
    from ..state import RelayState

log = logging.getLogger("posassist.relay")

#: Routing error codes → the ``outcome`` label of posassist_relay_requests_routed_total.
_OUTCOME = {
    "timeout": "timeout",
    "offline": "offline",
    "console_gone": "cancelled",
    "outcome_unknown": "unknown",
}
#: What the console reads when the relay lost track of a script that may have run.
OUTCOME_UNKNOWN = (
    "结果未知：脚本可能已运行，设备重新连接后将核对结果 / "
    "outcome unknown: the script may have run; it is reconciled when the device reconnects"
)

_SCRIPT_STATUS = {
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "timed_out": JobStatus.TIMED_OUT,
    "cancelled": JobStatus.CANCELLED,
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
        status = JobStatus.UNKNOWN if error_code == "outcome_unknown" else JobStatus.FAILED
        error = f"{error_code}: {error_message}"
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
            _audit_outcome(status),
            {
                "job": route.job_id,
                "status": status.value,
                "error": error,
                "elapsed_ms": round(seconds * 1000, 1),
                **_not_audited(route),
            },
        )
        defer = getattr(route.console, "end_later", None)
        if defer is not None:  # a store-wide request writes its jobs' ends together (fanout.py)
            defer(status, error, entry, state.now())
            return
        flush = getattr(route.console, "flush_nowait", None)
        if flush is not None:  # the reply goes out now, not after the write below
            flush()
        # The job's end and its audit record commit together.
        await state.storage.finish_job(
            route.job_id, status, now=state.now(), error=error, audit=entry
        )
    except StorageError as exc:
        log.error("could not record the end of job %s: %s", route.job_id, exc)


def _audit_outcome(status: JobStatus) -> Outcome:
    if status is JobStatus.SUCCEEDED:
        return Outcome.OK
    return Outcome.UNKNOWN if status is JobStatus.UNKNOWN else Outcome.FAILED


async def reconcile_route(state: RelayState, route: Route, reply: Message) -> None:
    """The terminal reply of an orphaned route (its job is ``unknown``) came after all."""
    status, error = job_outcome(reply)
    await reconcile_job(
        state,
        route.job_id,
        route.device_id,
        f"user:{route.user}",
        route.tag,
        status,
        error,
        {"via": "late reply", **_not_audited(route)},
    )


def _not_audited(route: Route) -> dict[str, object]:
    """``steps_not_audited`` for a route whose steps overflowed the audit cap, else nothing."""
    return {"steps_not_audited": route.steps_not_audited} if route.steps_not_audited else {}


async def reconcile_results(state: RelayState, device_id: str, answer: JobResults) -> list[str]:
    """An agent's ``job.results``: each job of this device still ``unknown`` ends as it really
    did. Results for another device's job, or a job not in ``unknown``, change nothing.

    Returns the ids of the jobs the agent says still run: the relay asks again about them.
    """
    running = []
    for result in answer.results:
        job_id = str(result["job_id"])
        status, error = _result_outcome(result)
        if status is None:
            log.info("device %s has no outcome for job %s (%s)", device_id, job_id, error)
            if result["status"] == "running":
                running.append(job_id)
            continue
        try:
            job = await state.storage.get_job(job_id)
        except NotFound:
            job = None
        except StorageError as exc:
            log.error("job %s not reconciled: %s", job_id, exc)
            continue
        if job is None or job.device_id != device_id or job.status is not JobStatus.UNKNOWN:
            log.warning("device %s reported on job %s, which it can't reconcile", device_id, job_id)
            continue
        extra = {"via": "job.query", "exit_code": result["exit_code"]}
        if result["backup_id"] is not None:
            extra["backup_id"] = result["backup_id"]
        await reconcile_job(
            state, job_id, device_id, f"user:{job.requested_by}", job.kind, status, error, extra
        )
    return running


def _result_outcome(result: Mapping[str, object]) -> tuple[JobStatus | None, str | None]:
    """The job status a ``job.results`` entry means; None while it is still open.

    ``never_received`` is the till's proof (its receipts log) that the request never reached
    it, so the script never ran there. ``unknown`` (the till received it but no longer keeps its
    result, or a v3 till without receipts has no record) proves nothing: the job stays
    ``unknown``, and so does a job still ``running`` (docs/protocol.md#requests).
    """
    reported = str(result["status"])
    if reported == "never_received":
        return JobStatus.FAILED, "never_delivered: the device never received this job"
    if reported not in _SCRIPT_STATUS:
        return None, reported
    status = _SCRIPT_STATUS[reported]
    detail = str(result["detail"])
    return status, None if status is JobStatus.SUCCEEDED else f"{reported}: {detail}"


async def reconcile_job(
    state: RelayState,
    job_id: str,
    device_id: str,
    actor: str,
    tag: str,
    status: JobStatus,
    error: str | None,
    extra: dict[str, object],
) -> None:
    """``unknown`` → ``status``, with a ``<tag>.reconciled`` record in the same transaction."""
    entry = AuditEntry(
        actor,
        f"{tag}.reconciled",
        f"device:{device_id}",
        _audit_outcome(status),
        {"job": job_id, "status": status.value, "error": error, **extra},
    )
    try:
        await state.storage.reconcile_job(job_id, status, now=state.now(), error=error, audit=entry)
    except Conflict:  # reconciled already (a late reply and a query answer both came)
        log.info("job %s was reconciled already", job_id)
    except StorageError as exc:
        log.error("could not reconcile job %s: %s", job_id, exc)
    else:
        log.info("job %s on %s reconciled: %s", job_id, device_id, status.value)
