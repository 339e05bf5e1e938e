"""``POST /v1/jobs/{job_id}/cancel``: stop a running script (docs/protocol.md#cancel).

Checked like running a script: the role of ``script.run`` (a viewer is refused, 403), then the
job's device in the caller's scope (another tenant's job answers 404 exactly as an unknown id
does, audited). A job that has ended is 409; an agent whose session is older than protocol v7 is
never sent ``script.cancel``: 409 ``AgentTooOld``. Otherwise the relay sends ``script.cancel`` on
the device's connection and waits (bounded) for the answer: the run's ``script.finished``
``cancelled`` (200, the job stored ``cancelled``) or ``error`` ``not_running`` (409). Every
request and refusal is audited ``job.cancel``; its outcome ``job.cancel.finished``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any, NoReturn

from aiohttp import web

from posassist.protocol import ErrorReply, ScriptCancel, ScriptFinished, SessionState
from posassist.protocol.errors import LocalProtocolError
from posassist.protocol.states import SINCE_VERSION

from ..audit import AuditEntry, Outcome
from ..connection import SlowConsumerError
from ..errors import (
    AgentTooOld,
    CancelUnanswered,
    Conflict,
    JobFinished,
    NotCancellable,
    NotFound,
    NotRunning,
    ScopeError,
    StorageError,
)
from ..routing import OfflineError
from ..state import ROUTE_ROLES, STATE, RelayState
from ..storage import JobStatus
from .jobs import job_outcome, reconcile_job
from .request import current_user

if TYPE_CHECKING:
    from posassist.protocol import Message

    from ..routing import Link
    from ..storage import Job, User

__all__ = ["CANCEL_TIMEOUT", "add_routes", "cancel_answered", "cancel_job", "links_gone"]

log = logging.getLogger("posassist.relay")

#: Seconds the relay waits for the device to confirm a cancel (killing a process tree and
#: restoring a backup takes a moment; a lost answer must not hold the request for ever).
CANCEL_TIMEOUT = 30.0
#: A job id in a path: what the relay mints; anything else is unknown, never looked up.
_JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_ACTION = "job.cancel"


async def _refuse(
    state: RelayState, user: User, job_id: str, reason: str, error: Exception, **extra: Any
) -> NoReturn:
    await state.audit(
        f"user:{user.username}",
        _ACTION,
        f"job:{job_id}",
        Outcome.REFUSED,
        {"reason": reason, **extra},
    )
    raise error


async def _visible_job(state: RelayState, user: User, job_id: str) -> Job:
    """The job, if the caller may touch it: another tenant's job is 404 like an unknown one."""
    if not _JOB_ID.fullmatch(job_id):
        raise NotFound("not a job id")  # nothing looked up: nothing to audit but the request
    if user.role not in ROUTE_ROLES["script.run"]:
        await _refuse(
            state, user, job_id, f"role {user.role}", ScopeError(f"{user.username} may not cancel")
        )
    try:
        job = await state.storage.get_job(job_id)
    except NotFound:
        await _refuse(state, user, job_id, "unknown job", NotFound("job"))
    if not await state.device_in_scope(job.device_id, user.scope):
        await _refuse(state, user, job_id, "out of scope", NotFound("job"))
    return job


async def cancel_job(state: RelayState, user: User, job_id: str, *, via: str) -> dict[str, Any]:
    """Stop the run of ``job_id`` for ``user``; what the device answered, as JSON.

    Raises (each audited): ScopeError (role, 403), NotFound (unknown or another tenant's, 404),
    NotCancellable, JobFinished, AgentTooOld, NotRunning (409), OfflineError (503),
    CancelUnanswered (504).
    """
    job = await _visible_job(state, user, job_id)
    device = {"device": job.device_id, "via": via}
    if job.kind != "script.run":
        await _refuse(state, user, job.id, f"a {job.kind} job", NotCancellable(job.id), **device)
    # unknown: the relay lost track, but the till may still run it; the till decides
    if job.status.finished and job.status is not JobStatus.UNKNOWN:
        await _refuse(state, user, job.id, f"finished {job.status}", JobFinished(job.id), **device)
    agent = state.router.agent(job.device_id)
    if agent is None or agent.session.state is not SessionState.OPEN:
        await _refuse(state, user, job.id, "offline", OfflineError(job.device_id), **device)
    version = agent.session.version or 0
    if version < SINCE_VERSION[ScriptCancel.TAG]:  # never sent to an older agent
        reason = f"agent too old (protocol {version})"
        await _refuse(state, user, job.id, reason, AgentTooOld(job.device_id), **device)
    await state.audit(f"user:{user.username}", _ACTION, f"job:{job.id}", Outcome.OK, device)
    try:
        reply = await _ask(state, agent, job)
    except CancelUnanswered:
        detail = {**device, "reason": "no answer", "timeout": CANCEL_TIMEOUT}
        await state.audit(
            f"user:{user.username}", f"{_ACTION}.finished", f"job:{job.id}", Outcome.FAILED, detail
        )
        raise
    return await _settle(state, user, job, reply, device)


async def _ask(state: RelayState, agent: Link, job: Job) -> Message | None:
    """Send ``script.cancel`` and wait for its answer; None if the link went away first."""
    request = ScriptCancel(id=agent.session.next_id(), job_id=job.id)
    key = (agent, request.id)
    answer: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()
    state.cancels[key] = answer
    try:
        try:
            agent.send_nowait(request)
        except (LocalProtocolError, SlowConsumerError) as exc:  # closing, or not keeping up
            log.info("cancel of %s not sent: %s", job.id, exc)
            return None
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT):
                return await asyncio.shield(answer)
        except TimeoutError:
            agent.session.abandon(request.id)  # a late answer is dropped quietly
            raise CancelUnanswered(job.id) from None
    finally:
        state.cancels.pop(key, None)


async def _settle(
    state: RelayState, user: User, job: Job, reply: Message | None, device: dict[str, Any]
) -> dict[str, Any]:
    """The device's answer: the job stored ``cancelled``, the outcome audited and returned."""
    actor, target = f"user:{user.username}", f"job:{job.id}"
    if not isinstance(reply, ScriptFinished) or reply.status != "cancelled":
        if isinstance(reply, ErrorReply):
            detail = {**device, "reason": reply.code, "agent": reply.message[:200]}
            await state.audit(actor, f"{_ACTION}.finished", target, Outcome.REFUSED, detail)
            raise NotRunning(job.id)
        await state.audit(
            actor, f"{_ACTION}.finished", target, Outcome.FAILED, {**device, "reason": "offline"}
        )
        raise OfflineError(job.device_id)
    await _store_cancelled(state, job, reply)
    await state.audit(
        actor,
        f"{_ACTION}.finished",
        target,
        Outcome.OK,
        {**device, "status": "cancelled", "backup_id": reply.backup_id},
    )
    return {
        "job_id": job.id,
        "device_id": job.device_id,
        "status": JobStatus.CANCELLED.value,
        "exit_code": reply.exit_code,
        "backup_id": reply.backup_id,
        "detail": reply.detail,
    }


async def _store_cancelled(state: RelayState, job: Job, reply: ScriptFinished) -> None:
    """The run's own ``script.finished`` came first and ended the job through its route; if
    its route was gone (the relay restarted, or lost track: ``unknown``), the cancel's answer
    ends it now."""
    try:
        now = await state.storage.get_job(job.id)
    except StorageError as exc:
        log.error("job %s: cancel not recorded: %s", job.id, exc)
        return
    status, error = job_outcome(reply)
    if now.status is JobStatus.UNKNOWN:
        await reconcile_job(
            state,
            job.id,
            job.device_id,
            f"user:{now.requested_by}",
            now.kind,
            status,
            error,
            {"via": "script.cancel"},
        )
    elif not now.status.finished:
        entry = AuditEntry(
            f"user:{now.requested_by}",
            f"{now.kind}.finished",
            f"device:{job.device_id}",
            Outcome.FAILED,
            {"job": job.id, "status": status.value, "error": error, "via": "script.cancel"},
        )
        try:
            await state.storage.finish_job(
                job.id, status, now=state.now(), error=error, audit=entry
            )
        except Conflict:  # ended by its route meanwhile
            log.info("job %s had ended already", job.id)


def cancel_answered(state: RelayState, agent: object, reply: Message) -> bool:
    """An agent's reply that answers a ``script.cancel`` (relay/handlers/agents.py): handed to
    the waiting request; False if it answers something else."""
    request_id = getattr(reply, "id", None)
    if not isinstance(request_id, int):
        return False
    answer = state.cancels.get((agent, request_id))
    if answer is None:
        return False
    if not answer.done():
        answer.set_result(reply)
    return True


def links_gone(state: RelayState, agent: object) -> None:
    """The agent's connection ended: cancels waiting on it are answered None (offline)."""
    for (link, _), answer in list(state.cancels.items()):
        if link is agent and not answer.done():
            answer.set_result(None)


async def cancel(request: web.Request) -> web.Response:
    """``POST /v1/jobs/{job_id}/cancel`` (docs/api.md)."""
    state = request.app[STATE]
    user = await current_user(request)
    answer = await cancel_job(state, user, request.match_info["job_id"], via="api")
    return web.json_response(answer)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/jobs/{job_id}/cancel", cancel)
