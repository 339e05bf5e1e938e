"""``POST /v1/stores/{store_id}/diag``: one diagnostics request to every active device of a store,
answered once with each device's result (``posassist diag --store``).

The checks are a console's ``diag.request``'s (role, scope, the per-user rate), and each device
gets its own job and audit records as it would from a console; but the jobs and their
``diag.request`` records are written in one transaction before anything is forwarded, and their
ends (``diag.request.finished``) in one more once the last device has answered or timed out: two
commits for the whole store instead of two per device (issue 16: the per-device writes were most
of a fan-out's time). The work runs to its end even if the caller goes away, so no job is left
pending.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from posassist.protocol import (
    DiagnosticsReport,
    DiagnosticsRequest,
    ErrorReply,
    PosAssistError,
    Role,
    Session,
)
from posassist.protocol.errors import LocalProtocolError

from ..audit import AuditEntry, Outcome, bounded
from ..connection import SlowConsumerError, WebSocketSession
from ..errors import BadRequest, NotFound, RateLimited, ScopeError
from ..routing import OfflineError
from ..state import ROUTE_ROLES, STATE
from ..storage import DeviceStatus, JobStatus, Scope, ScopeKind
from .request import _json, _store_id, current_user

if TYPE_CHECKING:
    from posassist.protocol import Message

    from ..routing import Route
    from ..state import RelayState
    from ..storage import User

__all__ = ["MAX_STORE_DEVICES", "add_routes"]

log = logging.getLogger("posassist.relay")

ACTION = "diag.request"
#: Devices one store-wide request reaches at most (a bigger store is refused, 400).
MAX_STORE_DEVICES = 1000
#: The answer's device results carry their reports up to this many bytes of JSON in all; past
#: it a device's result says ``"sections": null, "truncated": true`` (its job is complete). Each
#: report is encoded as it arrives and only its text kept, so this also bounds what a store's
#: replies hold in the relay's memory (up to 1,000 devices × 1 MiB frames otherwise).
MAX_ANSWER_BYTES = 16 * 1024 * 1024
#: What all store-wide requests in flight hold of their reports at once, in bytes of UTF-8 JSON:
#: past it a new report comes as truncated too, so many stores asked together can't hold
#: 16 MB each (:class:`HeldReports`).
MAX_HELD_BYTES = 64 * 1024 * 1024
#: Seconds past the request's timeout the relay waits for the router's own timeouts before it
#: ends what is left itself.
GRACE = 2.0


@dataclass(eq=False)
class DeviceAnswer:
    """The router's link for one device's request: it keeps the reply, and takes the job's end
    from :func:`relay.handlers.jobs.finish_route` (``end_later``) instead of a write per device."""

    device_id: str
    job_id: str
    fanout: StoreFanout
    peer: str = "store-diag"
    session: Session = field(default_factory=lambda: Session(Role.CONSOLE))
    #: The report's sections as UTF-8 JSON (None: no report, or past a size cap).
    sections: bytes | None = None
    collected_at: float | None = None
    answered: bool = False
    truncated: bool = False
    error: ErrorReply | None = None
    end: tuple[JobStatus, str | None, AuditEntry] | None = None
    route: Route | None = None
    #: Seconds from the request's start until its end was known, and when that was (the job's
    #: ``finished_at``).
    seconds: float = 0.0
    ended_at: float = 0.0

    def send_nowait(self, msg: Message, request_id: int | None = None) -> None:
        """A reply the router hands on: kept (never blocks, never raises)."""
        if isinstance(msg, DiagnosticsReport) and not self.answered:
            self.answered = True
            self.collected_at = _finite(msg.collected_at)
            try:
                text = json.dumps(_jsonable(msg.sections), ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError):  # nothing the codec lets in: left out all the same
                self.truncated = True
                return
            data = text.encode("utf-8")  # the caps count bytes: 汉字 are 3 each, not 1
            del text
            if self.fanout.size + len(data) > MAX_ANSWER_BYTES or not self.fanout.hold(len(data)):
                self.truncated = True
            else:
                self.sections = data
        elif isinstance(msg, ErrorReply):
            self.error = msg

    def end_later(
        self, status: JobStatus, error: str | None, entry: AuditEntry, now: float
    ) -> None:
        """The job's end (at ``now``) and its audit record, written with the store's others."""
        if self.end is None:
            self.end = (status, error, entry)
            self.ended_at = now
            self.seconds = time.monotonic() - self.fanout.started
            self.fanout.ended()

    @property
    def status(self) -> str:
        if self.answered:
            return "ok"
        if self.error is not None:
            return self.error.code
        return "timeout"


@dataclass(eq=False)
class HeldReports:
    """Bytes of report JSON every store-wide request in flight holds, relay-wide."""

    size: int = 0

    def take(self, size: int) -> bool:
        if self.size + size > MAX_HELD_BYTES:
            return False
        self.size += size
        return True

    def give_back(self, size: int) -> None:
        self.size -= size


#: The relay's one :class:`HeldReports` (app state, never a global).
HELD = web.AppKey("held_reports", HeldReports)


@dataclass(eq=False)
class StoreFanout:
    """One store-wide request: every device's link, and an event set when all have ended."""

    answers: list[DeviceAnswer] = field(default_factory=list)
    left: int = 0
    started: float = field(default_factory=time.monotonic)
    #: Bytes of report JSON kept so far (:data:`MAX_ANSWER_BYTES`).
    size: int = 0
    all_ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: The relay's count of what every store-wide request holds (:data:`MAX_HELD_BYTES`).
    held: HeldReports = field(default_factory=lambda: HeldReports())

    def hold(self, size: int) -> bool:
        """Keep ``size`` more bytes if both this answer's and the relay's caps allow it."""
        if not self.held.take(size):
            return False
        self.size += size
        return True

    def release(self) -> None:
        """The answer was sent (or its caller left): what it held is free for others."""
        self.held.give_back(self.size)
        self.size = 0

    def ended(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.all_ended.set()


def _body(body: dict[str, Any]) -> tuple[tuple[str, ...], float]:
    """``collectors`` (names, empty for all) and ``timeout`` (seconds) from the request body,
    checked as a ``diag.request`` would be; BadRequest otherwise."""
    unknown = set(body) - {"collectors", "timeout"}
    if unknown:
        raise BadRequest("give collectors and/or timeout, nothing else")
    collectors = body.get("collectors", [])
    timeout = body.get("timeout", 10.0)
    if not isinstance(collectors, list) or not all(isinstance(c, str) for c in collectors):
        raise BadRequest("collectors must be a list of names")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise BadRequest("timeout must be a number of seconds")
    try:
        DiagnosticsRequest(id=1, device_id="dev_x", collectors=tuple(collectors), timeout=timeout)
    except LocalProtocolError:
        raise BadRequest("collectors or timeout out of bounds") from None
    return tuple(collectors), float(timeout)


async def _refuse(state: RelayState, user: User, store_id: str, reason: str) -> None:
    await state.audit(
        f"user:{user.username}", ACTION, f"store:{store_id}", Outcome.REFUSED, {"reason": reason}
    )


async def store_diag(request: web.Request) -> web.Response:
    """Diagnostics from every active device of the store; one result per device, in the relay's
    device order: ``ok`` with its sections, or why not (``offline``, ``timeout``, the agent's
    error code)."""
    store_id = _store_id(request)
    state = request.app[STATE]
    user = await current_user(request)
    collectors, timeout = _body(await _json(request))
    if user.role not in ROUTE_ROLES[ACTION]:
        await _refuse(state, user, store_id, "forbidden")
        raise ScopeError(f"{user.username} ({user.role}) may not ask for diagnostics")
    store = Scope(ScopeKind.STORE, store_id)
    if not await state.covers(user, store):  # out of scope and unknown look the same (404)
        await _refuse(state, user, store_id, "out of scope")
        raise NotFound(f"store {store_id} outside the scope of {user.username}")
    listed = await state.storage.list_devices(store)
    devices = [d.id for d in listed if d.status is DeviceStatus.ACTIVE]
    if len(devices) > MAX_STORE_DEVICES:
        raise BadRequest(f"the store has more than {MAX_STORE_DEVICES} devices")
    # One per device, at most the whole burst (so a store bigger than the burst can be asked).
    cost = float(min(max(1, len(devices)), state.config.console_burst))
    if not state.console_limiter.allow(user.username, state.now(), cost):
        await _refuse(state, user, store_id, "rate_limited")
        raise RateLimited(f"{user.username}: store diag rate")
    fanout = StoreFanout(held=request.app[HELD])
    work = asyncio.ensure_future(
        _fan_out(state, user, store_id, devices, collectors, timeout, fanout)
    )
    state.tasks.add(work)  # type: ignore[arg-type] # shutdown waits for it
    work.add_done_callback(state.tasks.discard)
    # Shielded: a caller who leaves does not leave the jobs pending; what the reports hold is
    # given back once the answer is made, or once the work ends if the caller left.
    try:
        results = await asyncio.shield(work)
    except asyncio.CancelledError:
        work.add_done_callback(lambda _: fanout.release())
        raise
    try:
        body = _answer(store_id, results)
    finally:
        fanout.release()
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def _fan_out(
    state: RelayState,
    user: User,
    store_id: str,
    devices: list[str],
    collectors: tuple[str, ...],
    timeout: float,
    fanout: StoreFanout,
) -> list[DeviceAnswer]:
    actor = f"user:{user.username}"
    detail = {"collectors": bounded(collectors), "store": store_id}
    entries = [(d, AuditEntry(actor, ACTION, f"device:{d}", Outcome.OK, detail)) for d in devices]
    now = state.now()
    # The jobs and their records commit together, before anything reaches a device.
    jobs = await state.storage.create_jobs(entries, ACTION, user.username, now=now)
    fanout.left = len(jobs)
    for number, job in enumerate(jobs, 1):
        answer = DeviceAnswer(job.device_id, job.id, fanout)
        fanout.answers.append(answer)
        message = DiagnosticsRequest(
            id=number, device_id=job.device_id, collectors=collectors, timeout=timeout
        )
        try:
            answer.route = state.router.forward(
                answer,
                message,
                device_id=job.device_id,
                job_id=job.id,
                user=user.username,
                now=now,
                timeout=timeout,
            )
        except OfflineError:
            _unrouted(state, answer, actor, "offline", "the device is not connected / 设备离线")
        except LocalProtocolError:  # the agent's session refused it (too many in flight)
            _unrouted(state, answer, actor, "unavailable", "the device is busy; try again")
        except SlowConsumerError:
            _unrouted(state, answer, actor, "unavailable", "the device is not keeping up")
            agent = state.router.agent(job.device_id)
            if isinstance(agent, WebSocketSession):
                state.spawn(
                    agent.close(SlowConsumerError.close_code, SlowConsumerError.public_reason)
                )
    if fanout.left > 0:
        try:
            async with asyncio.timeout(timeout + state.config.sweep_interval + GRACE):
                await fanout.all_ended.wait()
        except TimeoutError:  # the router's own timeouts should have come first; end the rest
            for answer in fanout.answers:
                if answer.end is None:
                    if answer.route is not None:
                        state.router.abandon(answer.route)
                    _unrouted(state, answer, actor, "timeout", "no reply from the device")
    ends = []
    for answer in fanout.answers:
        assert answer.end is not None
        status, error, entry = answer.end
        ends.append((answer.job_id, status, error, entry))
    try:
        await state.storage.finish_jobs(
            ends, now=state.now(), ended_at=[a.ended_at for a in fanout.answers]
        )
    except PosAssistError as exc:
        log.error("could not record the end of store %s's diagnostics: %s", store_id, exc)
    return fanout.answers


def _unrouted(state: RelayState, answer: DeviceAnswer, actor: str, code: str, text: str) -> None:
    """A device the request never reached (or that never answered): its error and job end."""
    state.metrics.routed(ACTION, "offline" if code == "offline" else "error", seconds=0.0)
    answer.error = ErrorReply(id=1, code=code, message=text)
    entry = AuditEntry(
        actor,
        f"{ACTION}.finished",
        f"device:{answer.device_id}",
        Outcome.FAILED,
        {"job": answer.job_id, "error": code},
    )
    answer.end_later(JobStatus.FAILED, f"{code}: {text}", entry, state.now())


def _answer(store_id: str, answers: list[DeviceAnswer]) -> bytes:
    """The JSON answer: each device's result with its report's sections (encoded on arrival,
    within :data:`MAX_ANSWER_BYTES`). The agents' strings go as they came (JSON-escaped); a
    console makes them printable before showing them."""
    parts: list[bytes] = []
    for answer in answers:
        result: dict[str, Any] = {
            "device_id": answer.device_id,
            "job_id": answer.job_id,
            "status": answer.status,
            "elapsed_ms": round(answer.seconds * 1000, 1),
        }
        if answer.answered:
            result["collected_at"] = answer.collected_at
            if answer.truncated:
                result.update(sections=None, truncated=True)
        elif answer.error is not None:
            result["message"] = answer.error.message
        text = json.dumps(result, ensure_ascii=False).encode("utf-8")
        if answer.sections is not None:  # spliced in as encoded (valid JSON already)
            text = text[:-1] + b', "sections": ' + answer.sections + b"}"
        parts.append(text)
    head = json.dumps({"store_id": store_id, "devices": len(answers)})[:-1].encode("utf-8")
    return head + b', "results": [' + b", ".join(parts) + b"]}"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    """An agent's report as JSON can carry it: bytes as hex, NaN and infinities as null (the
    codec bounds the depth, docs/protocol.md#limits)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def add_routes(app: web.Application) -> None:
    app[HELD] = HeldReports()
    app.router.add_post("/v1/stores/{store_id}/diag", store_diag)
