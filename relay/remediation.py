"""Unattended remediation (docs/alerts.md#remediation): a firing alert whose check the device's
policy maps to a vetted script is fixed by running that script, unattended, at most
``max_attempts`` times per ``window`` seconds; once they are spent and the check still fails,
the alert escalates (audited, notified).

An attempt is an ordinary routed ``script.run``: a job, audited, forwarded to the agent, which
verifies the script's signatures and refuses it unless its manifest allows unattended runs (the
relay cannot make a till run anything else). Its end comes back through :class:`AttemptLink`,
standing where a technician's console would; every step is audited as for a console's run, and
the attempt and its result are attached to the alert.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from posassist.protocol import ErrorReply, Role, ScriptFinished, ScriptRunRequest, Session
from posassist.protocol.errors import LocalProtocolError

from .audit import AuditEntry, Outcome
from .errors import StorageError
from .routing import OfflineError
from .storage import JobStatus

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from posassist.protocol import Message

    from .alerts import Alert
    from .health import Health
    from .state import RelayState

__all__ = ["REQUESTED_BY", "AttemptLink", "after_firing"]

log = logging.getLogger("posassist.relay")
#: Who asks for a remediation run (the job's ``requested_by``, the audit actor ``user:…``): a
#: colon no username may hold, so no person can be taken for it (or pass for it).
REQUESTED_BY = "relay:remediation"
#: Seconds a remediation run may take before its route times out (the agent's run timeout).
RUN_TIMEOUT = 300.0
#: A ``running`` attempt this old never heard its end (the relay restarted mid-run): failed.
STALE_AFTER = 2 * RUN_TIMEOUT


class AttemptLink:
    """Where a remediation run's replies go (a :class:`relay.routing.Link` like a console):
    its end finishes the attempt."""

    peer = "relay"

    def __init__(self, state: RelayState, health: Health, alert: Alert, attempt_id: str) -> None:
        self.state, self.health, self.alert, self.attempt_id = state, health, alert, attempt_id
        self.session = Session(Role.RELAY_FOR_CONSOLE)  # read only on a failed send
        self.done = False

    def send_nowait(self, msg: Message, request_id: int | None = None) -> None:
        if self.done or not msg.TERMINAL:
            return
        self.done = True
        if isinstance(msg, ScriptFinished):
            status = "succeeded" if msg.status == "succeeded" else "failed"
            detail = f"{msg.status}: {msg.detail}"[:1000]
        elif isinstance(msg, ErrorReply):
            status, detail = "failed", f"{msg.code}: {msg.message}"[:1000]
        else:  # pragma: no cover - a script route ends only so
            status, detail = "failed", msg.TAG
        _track(self.health, finish_attempt(self.state, self.health, self, status, detail))


def _track(health: Health, work: Coroutine[Any, Any, None]) -> None:
    task: asyncio.Task[None] = asyncio.create_task(work)
    health.tasks.add(task)
    task.add_done_callback(health.tasks.discard)
    task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("remediation failed: %r", task.exception())


def after_firing(state: RelayState, health: Health, alert: Alert) -> None:
    """A firing event changed ``alert``: try the policy's script, or escalate (background)."""
    key = (alert.device_id, alert.check_name)
    if key in health.remediating:  # one decision at a time per device and check: this event
        health.remediating[key] = alert  # is decided once the one in hand ends, not dropped
        return
    health.remediating[key] = None
    _track(health, _remediate(state, health, alert, key))


async def _remediate(state: RelayState, health: Health, alert: Alert, key: tuple[str, str]) -> None:
    next_alert: Alert | None = alert
    try:
        while next_alert is not None:
            try:
                await _decide(state, health, next_alert)
            except StorageError as exc:  # decided again at the next firing event
                log.warning("remediation of %s on %s not decided: %s", *key[::-1], exc)
            next_alert = health.remediating.get(key)  # a firing event came meanwhile
            health.remediating[key] = None
    finally:
        health.remediating.pop(key, None)


async def _decide(state: RelayState, health: Health, alert: Alert) -> None:
    now = state.now()
    device = await health.policies.for_device(alert.device_id, now)
    plan = device.policy.remediation.get(alert.check_name)
    if plan is None or alert.escalated_at is not None:
        return
    attempts = await health.store.attempts_since(
        alert.device_id, alert.check_name, now - plan.window
    )
    for attempt in attempts:
        if attempt.status != "running":
            continue
        if now - attempt.started_at < STALE_AFTER:
            return  # its end decides
        # its relay stopped (or lost the route) before the end came: it counts as failed
        await health.store.finish_remediation(
            attempt.id, "failed", f"no outcome within {STALE_AFTER:g} s", now=now
        )
    if len(attempts) >= plan.max_attempts:
        await _escalate(state, health, alert, len(attempts), plan.window)
        return
    if state.router.agent(alert.device_id) is None:
        return  # offline: tried at the next firing event once it is back
    await _start(state, health, alert, plan.script, plan.version)


async def _start(
    state: RelayState, health: Health, alert: Alert, script: str, version: str
) -> None:
    """Record the job and the attempt, then forward the unattended run to the agent."""
    now = state.now()
    request = ScriptRunRequest(
        id=1, device_id=alert.device_id, script=script, version=version, unattended=True
    )
    entry = AuditEntry(
        f"user:{REQUESTED_BY}",
        "script.run",
        f"device:{alert.device_id}",
        Outcome.OK,
        {"script": script, "version": version, "unattended": True, "alert": alert.id},
    )
    job = await state.storage.create_job(
        alert.device_id,
        "script.run",
        REQUESTED_BY,
        now=now,
        audit=entry,
        script=script,
        version=version,
    )
    attempt = await health.store.start_remediation(alert, script, version, job.id, now=now)
    link = AttemptLink(state, health, alert, attempt.id)
    try:
        state.router.forward(
            link,
            request,
            device_id=alert.device_id,
            job_id=job.id,
            user=REQUESTED_BY,
            now=now,
            timeout=RUN_TIMEOUT,
        )
    except (OfflineError, LocalProtocolError, StorageError) as exc:
        error = f"not sent: {type(exc).__name__}"
        await state.storage.finish_job(
            job.id,
            JobStatus.FAILED,
            now=state.now(),
            error=error,
            audit=AuditEntry(
                f"user:{REQUESTED_BY}",
                "script.run.finished",
                f"device:{alert.device_id}",
                Outcome.FAILED,
                {"job": job.id, "error": error},
            ),
        )
        link.done = True
        await finish_attempt(state, health, link, "failed", error)
        return
    log.info(
        "remediation %s on %s: %s %s (job %s)", alert.id, alert.device_id, script, version, job.id
    )


async def finish_attempt(
    state: RelayState, health: Health, link: AttemptLink, status: str, detail: str
) -> None:
    """The attempt ended; if it failed and the window's attempts are spent, escalate."""
    ended = await health.store.finish_remediation(link.attempt_id, status, detail, now=state.now())
    if ended is None or status == "succeeded":
        return  # a success is judged by the check: a firing event after it tries again
    alert = await health.store.get_alert(link.alert.id)
    if alert.is_open:
        await _decide_spent(state, health, alert)


async def _decide_spent(state: RelayState, health: Health, alert: Alert) -> None:
    now = state.now()
    device = await health.policies.for_device(alert.device_id, now)
    plan = device.policy.remediation.get(alert.check_name)
    if plan is None:
        return
    attempts = await health.store.attempts_since(
        alert.device_id, alert.check_name, now - plan.window
    )
    if len(attempts) >= plan.max_attempts:
        await _escalate(state, health, alert, len(attempts), plan.window)


async def _escalate(
    state: RelayState, health: Health, alert: Alert, attempts: int, window: float
) -> None:
    reason = f"still failing after {attempts} remediation attempt(s) in {window:g} s"
    escalated = await health.store.escalate(alert.id, reason, now=state.now())
    if escalated is not None:
        log.warning("alert %s on %s escalated: %s", alert.id, alert.device_id, reason)
        health.sender.wake()
