"""``/v1/agent``: authenticate a store agent (docs/protocol.md#agent-authentication) and serve it.

Replies from the agent go back, through the router, to the console that asked and only to it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import TYPE_CHECKING

from posassist.protocol import (
    AlertRaised,
    AuthenticationError,
    AuthResponse,
    DeviceFacts,
    DeviceHandedOver,
    DeviceHandover,
    ErrorReply,
    Heartbeat,
    HeartbeatAck,
    Hello,
    JobQuery,
    JobResults,
    Kind,
    PeerSilentError,
    PosAssistError,
    Role,
    ScriptProgress,
    Session,
    SessionState,
    signing,
)
from posassist.protocol.errors import (
    InvalidMessage,
    LocalProtocolError,
    RemoteProtocolError,
    SignatureError,
    SignInTimeout,
    UnexpectedMessage,
)

from .. import __version__
from ..audit import Outcome, bounded
from ..connection import ConnectionClosedError, SlowConsumerError, WebSocketSession
from ..errors import Overloaded, RateLimited, StorageError
from ..limits import trust_connection
from ..routing import RECONCILABLE, error_reply, relay_owned
from ..state import STATE, RelayState
from ..storage import DeviceStatus, JobStatus
from .alerts import ingest_alert
from .cancel import cancel_answered, links_gone
from .jobs import (
    OUTCOME_UNKNOWN,
    finish_route,
    reconcile_job,
    reconcile_results,
    reconcile_route,
)
from .policies import send_policy
from .tickets import AGENT_REQUESTS

if TYPE_CHECKING:
    from aiohttp import web

    from posassist.protocol import Message

    from ..routing import Route

log = logging.getLogger("posassist.relay")
SOFTWARE = f"posassist-relay/{__version__}"
#: Close code telling an agent its device was revoked, or that a newer connection replaced it.
REVOKED = 4003
REPLACED = 4002
#: Close code after ``device.handed_over``: the device moved to another provider.
HANDED_OVER = 4004


async def refuse_over_budget(state: RelayState, request: web.Request, action: str) -> None:
    """RateLimited (429, before the websocket upgrade) if the request's address has spent its
    failed sign-in budget (relay/limits.py ``HandshakeBudget``); the refusal is audited,
    summarised per address and window like every refusal before sign-in."""
    address = str(request.remote)
    now = state.now()
    if state.handshake_budget.exhausted(address, now):
        await state.audit(
            f"ip:{address}", action, "relay", Outcome.REFUSED, {"reason": "rate limited"}
        )
        raise RateLimited(
            "too many failed sign-ins from this address",
            retry_after=state.handshake_budget.retry_after(address, now),
        )


def handshake_failed(state: RelayState, peer: WebSocketSession, exc: BaseException) -> None:
    """A sign-in failed (refused, broken or too slow): it costs its address budget. A peer
    that merely went away costs nothing (the caps on connections bound those)."""
    if isinstance(exc, PosAssistError | TimeoutError) and not isinstance(
        exc, ConnectionClosedError
    ):
        state.handshake_budget.failed(peer.peer, state.now())


def shed_at_load(state: RelayState) -> int:
    """Overloaded (503 + Retry-After, before the upgrade) when as many sign-ins as the relay
    works on at once are in flight (relay/limits.py ``HandshakeGate``); else the ticket to give
    back when the sign-in ends."""
    admission = state.handshake_gate.admit(state.now())
    if admission.ticket is None:
        state.metrics.refused("overloaded")
        raise Overloaded("sign-ins in flight at the limit", retry_after=admission.retry_after)
    return admission.ticket


async def agent_endpoint(request: web.Request) -> web.WebSocketResponse:
    state = request.app[STATE]
    await refuse_over_budget(state, request, "agent.connect")
    ticket = shed_at_load(state)  # counted in flight until the sign-in ends, however it ends
    try:
        peer = await state.accept(request, Session(Role.RELAY_FOR_AGENT), "agent")
    except BaseException:
        state.handshake_gate.done(ticket, state.now())
        raise
    ws = peer.ws
    device_id: str | None = None
    ended = "closed"  # why, for the one line that says the agent left
    try:
        try:
            with state.metrics.handshake_duration.time():
                device_id = await _authenticate(peer, state)
        finally:
            state.handshake_gate.done(ticket, state.now())
        trust_connection(request)  # signed in: no deadline or cap from relay/limits.py
        lost_jobs = LostJobs()
        await _ask_about_lost_jobs(device_id, peer, state, lost_jobs)
        await send_policy(state, device_id, peer)  # v5: its checks' policy and store hours
        await _serve(device_id, peer, state, lost_jobs)
    except (ConnectionClosedError, TimeoutError, ConnectionResetError) as exc:
        if device_id is None:
            handshake_failed(state, peer, exc)
            log.info("agent connection from %s ended: %s %s", peer.peer, type(exc).__name__, exc)
        else:  # said once, in the line below
            ended = f"{type(exc).__name__} {exc}".strip()
        if device_id is None and isinstance(exc, TimeoutError):  # docs/protocol.md#close-codes
            await peer.close_for(SignInTimeout("no sign-in within the handshake timeout"))
    except PosAssistError as exc:
        if device_id is None:
            handshake_failed(state, peer, exc)
        ended = f"{type(exc).__name__} {exc}".strip()
        if device_id is not None and isinstance(exc, RemoteProtocolError):
            # before closing: once the socket is closed aiohttp may cancel this handler
            await _audit_refused_frame(state, device_id, peer, exc)
        await peer.close_for(exc)
    finally:
        # Detached before anything is awaited: no request may be routed to a closing agent.
        lost = [] if device_id is None else state.router.detach_agent(device_id, peer)
        links_gone(state, peer)  # cancels waiting on this connection: answered offline
        state.sockets.discard(ws)
        await peer.stop_writer()
        if device_id is not None:
            for route in lost:
                await _end_lost_route(state, route)
            state.seen(device_id)
            state.heard.pop(device_id, None)
            log.info("agent %s disconnected from %s: %s", device_id, peer.peer, ended)
        if not ws.closed:
            await ws.close()
    return ws


#: How a job ends whose device was revoked while it ran or was ``unknown``: a revoked device
#: never reconnects, so it can never be reconciled (attack finding F5).
DEVICE_REVOKED = "device_revoked"
DEVICE_REVOKED_TEXT = "the device was revoked / 设备已被吊销"


async def disconnect_revoked(state: RelayState, device_id: str) -> None:
    """Close the device's connection, if it has one here, because it was revoked (4003); its
    jobs of unknown outcome end ``failed`` (``device_revoked``), audited."""
    link = state.router.agent(device_id)
    if link is not None:
        assert isinstance(link, WebSocketSession)
        log.warning("device %s revoked: disconnecting it", device_id)
        # Its routes end here, not in its handler (which aiohttp may cancel once it is closed).
        for route in state.router.detach_agent(device_id, link):
            if not route.orphaned:  # an orphan's job is ``unknown``: ended just below
                await finish_route(state, route, DEVICE_REVOKED, DEVICE_REVOKED_TEXT)
        await link.close(REVOKED, "device revoked")
    await end_jobs_of_revoked(state, device_id)


async def end_jobs_of_revoked(
    state: RelayState, device_id: str, why: str = DEVICE_REVOKED, text: str = DEVICE_REVOKED_TEXT
) -> None:
    """Every ``unknown`` job of a revoked device → ``failed`` ``device_revoked`` (or, for a
    device handed over to another provider, ``device_handed_over``: it never comes back)."""
    try:
        jobs = await state.storage.unknown_jobs(device_id, limit=MAX_REVOKED_JOBS)
    except StorageError as exc:
        log.warning("jobs of revoked device %s not ended: %s", device_id, exc)
        return
    for job in jobs:
        await reconcile_job(
            state,
            job.id,
            device_id,
            "relay",
            job.kind,
            JobStatus.FAILED,
            f"{why}: {text}",
            {"via": why},
        )


#: At most this many ``unknown`` jobs of a revoked device are ended at once (bounded work).
MAX_REVOKED_JOBS = 1000


async def _authenticate(peer: WebSocketSession, state: RelayState) -> str:
    """Hello, Welcome, fresh challenge, signed response bound to this relay and device."""
    config = state.config
    session = peer.session
    hello = await peer.wait_one(config.handshake_timeout)
    if not isinstance(hello, Hello):  # pragma: no cover - the session only lets Hello through
        raise UnexpectedMessage(hello.TAG)
    nonce = secrets.token_bytes(32)
    session.send_welcome(config.relay_id, SOFTWARE)
    session.send_challenge(nonce)
    await peer.flush()
    response = await peer.wait_one(config.handshake_timeout)
    if not isinstance(response, AuthResponse):  # pragma: no cover - as above
        raise UnexpectedMessage(response.TAG)
    assert session.version is not None
    device_id = response.device_id
    code = await _check_device(state, response, nonce, session.version)
    if code is not None:
        log.warning("refused agent %r from %s: %s", device_id, peer.peer, code)
        await state.audit(
            f"device:{device_id}",
            "agent.connect",
            f"device:{device_id}",
            Outcome.REFUSED,
            {"reason": code, "peer": peer.peer},
        )
        _check_still_open(session, device_id)
        session.send_refused(code)
        await peer.flush()
        raise AuthenticationError(f"{device_id}: {code}")
    _check_still_open(session, device_id)
    session.send_accepted(device_id, config.heartbeat_interval)
    await peer.flush()
    peer.start_writer()
    # Attached only once accepted, and before anything else is awaited: from here on requests
    # may be routed to it (docs/protocol.md#requests).
    previous = state.router.attach_agent(device_id, peer)
    state.seen(device_id, hello.software)
    state.heard_from(device_id)  # heartbeats move last seen from here on (once a minute)
    if previous is not None:
        # A second connection for the same device replaces the first, cleanly.
        assert isinstance(previous, WebSocketSession)
        await previous.close(REPLACED, "replaced by a newer connection")
        await _count_replacement(state, device_id, previous.peer, peer.peer)
    log.info(
        "agent %s connected from %s (%s, protocol v%d)",
        device_id,
        peer.peer,
        hello.software,
        session.version,
    )
    return device_id


async def _count_replacement(
    state: RelayState, device_id: str, old_address: str, new_address: str
) -> None:
    """Count a replacement (4002); a device past the threshold is audited ``agent.flapping``
    once per window with the addresses seen (docs/relay.md#flapping-agents)."""
    state.metrics.agent_replacements.inc()
    report = state.flaps.replaced(device_id, old_address, new_address, state.now())
    if report is None:
        return
    log.warning(
        "device %s is flapping: %d connections replaced each other since %.0f, from %s "
        "(one identity on two tills?)",
        device_id,
        report.replacements,
        report.since,
        ", ".join(report.addresses),
    )
    try:
        await state.audit(
            "relay", "agent.flapping", f"device:{device_id}", Outcome.FAILED, report.detail
        )
    except StorageError as exc:  # the connection is served all the same
        log.warning("flapping of %s not audited: %s", device_id, exc)


def _check_still_open(session: Session, device_id: str) -> None:
    """The connection was closed while the handshake waited (the relay is shutting down, or the
    socket went): the handler ends quietly with a clear log line, not with an internal error."""
    if session.state is SessionState.CLOSED:
        raise ConnectionClosedError(f"{device_id}: connection closed during the handshake")


#: Jobs in ``unknown`` one reconnect asks about (protocol.messages.MAX_JOB_QUERY).
MAX_JOBS_ASKED = 32


class LostJobs:
    """One agent connection's questions about jobs of unknown outcome: the ``job.query`` in
    flight (one at a time), and the jobs the agent said still run, asked about again at each of
    its heartbeats until their end is known (docs/protocol.md#request-lifetime-relay)."""

    __slots__ = ("asking", "running")

    def __init__(self) -> None:
        self.asking: int | None = None
        self.running: tuple[str, ...] = ()


async def _ask_about_lost_jobs(
    device_id: str, peer: WebSocketSession, state: RelayState, lost: LostJobs
) -> None:
    """A v3 agent is asked how the device's ``unknown`` jobs really ended (``job.query``); its
    ``job.results`` reconcile them. Older agents are not asked: their jobs stay unknown."""
    if (peer.session.version or 0) < 3:
        return
    try:
        jobs = await state.storage.unknown_jobs(device_id, limit=MAX_JOBS_ASKED)
    except StorageError as exc:  # asked again on the next connection
        log.warning("unknown jobs of %s not read: %s", device_id, exc)
        return
    if jobs and _send_query(device_id, peer, lost, tuple(job.id for job in jobs)):
        log.info("asked %s about %d job(s) of unknown outcome", device_id, len(jobs))


def _send_query(
    device_id: str, peer: WebSocketSession, lost: LostJobs, job_ids: tuple[str, ...]
) -> bool:
    if lost.asking is not None or peer.session.state is not SessionState.OPEN:
        return False  # one question at a time; a closing connection is asked next time
    query = JobQuery(id=peer.session.next_id(), job_ids=job_ids)
    try:
        peer.send_nowait(query)
    except (LocalProtocolError, SlowConsumerError) as exc:  # asked on the next connection
        log.info("job query for %s not sent: %s", device_id, exc)
        return False
    lost.asking = query.id
    return True


async def _end_lost_route(state: RelayState, route: Route) -> None:
    """A route whose agent left: a script may have run (``unknown``, reconciled later), other
    requests failed ``offline``; an orphan's job is already ``unknown``."""
    if route.orphaned:
        return
    if route.tag in RECONCILABLE:
        await finish_route(state, route, "outcome_unknown", OUTCOME_UNKNOWN)
    else:
        await finish_route(state, route, "offline", "the device disconnected")


async def _audit_refused_frame(
    state: RelayState, device_id: str, peer: WebSocketSession, exc: RemoteProtocolError
) -> None:
    """An authenticated agent's frame was refused (bad facts…) and the connection is closing;
    what it had sent before, its stored facts included, is kept."""
    detail = {"reason": exc.public_reason, "close_code": exc.close_code, "peer": peer.peer}
    if isinstance(exc, InvalidMessage) and exc.tag is not None:
        detail["message"] = exc.tag  # a registered tag, never the agent's own text
    try:
        await state.audit(
            f"device:{device_id}", "agent.message", f"device:{device_id}", Outcome.REFUSED, detail
        )
    except StorageError as error:  # the connection still closes; say so in the log at least
        log.warning("refusal of %s's frame not audited: %s", device_id, error)


async def _check_device(
    state: RelayState, response: AuthResponse, nonce: bytes, version: int
) -> str | None:
    """None if the device may connect, else the refusal code sent to it."""
    # read with the other sign-ins of this moment: one database hop for a storm's batch
    device = await state.device_reads.get(response.device_id)
    if device is None:
        return "unknown_device"
    if device.status is DeviceStatus.REVOKED:
        return "revoked"
    if device.status is DeviceStatus.HANDED_OVER:
        return "handed_over"  # moved to another provider (docs/protocol.md#changing-provider)
    payload = signing.auth_payload(state.config.relay_id, device.id, nonce, version)
    try:
        signing.verify(signing.public_key_from_raw(device.public_key), response.signature, payload)
    except SignatureError:
        return "bad_signature"
    return None


async def _serve(device_id: str, peer: WebSocketSession, state: RelayState, lost: LostJobs) -> None:
    """Answer heartbeats and route replies until the agent leaves or falls silent: nothing at all
    (frame, ping, pong) within the session's silence deadline (docs/protocol.md#liveness)."""
    while True:
        try:
            events = await peer.wait_events()
        except TimeoutError:
            raise PeerSilentError(f"agent {device_id} silent") from None
        for event in events:
            await _handle(device_id, peer, state, event, lost)


async def _handle(
    device_id: str, peer: WebSocketSession, state: RelayState, event: Message, lost: LostJobs
) -> None:
    # Replies first: nearly every frame of a busy agent is one (a script's output streaming to
    # its console), so they meet one test before their route, not a chain of them.
    if event.KIND is Kind.REPLY:
        if isinstance(event, JobResults):
            lost.asking = None
            lost.running = tuple(await reconcile_results(state, device_id, event))
        elif isinstance(event, ErrorReply) and event.id == lost.asking:
            lost.asking = None  # the agent could not answer; asked again on the next connection
        elif state.cancels and cancel_answered(state, peer, event):
            pass  # the answer to a script.cancel, handed to its request (relay/handlers/cancel.py)
        else:
            route = state.router.deliver(peer, event, state.now())
            if route is None:
                return
            # The device and job are the route's, not the agent's word (docs/protocol.md#requests).
            event = relay_owned(event, route)
            if not route.orphaned and not _forward_reply(state, route, event):
                await _reply_too_big(state, route, event)
                return
            if isinstance(event, ScriptProgress):
                # Every step of a vetted run is audited: verified, refused and why, consent,
                # backup. The agent's detail goes under its own key: it can't set the relay's
                # fields. At most MAX_AUDITED_STEPS per route; the rest are counted in its end's
                # record.
                if state.router.audit_step(route):
                    await _audit_step(state, device_id, route, event)
            if event.TERMINAL and route.orphaned:
                await reconcile_route(state, route, event)
            elif event.TERMINAL:
                await finish_route(state, route, None, None, reply=event)
    elif isinstance(event, Heartbeat):
        now = state.now()
        peer.send_nowait(HeartbeatAck(seq=event.seq, sent_at=event.sent_at, received_at=now))
        state.heard_from(device_id)
        if lost.running:  # still running when last asked: ask again until they end
            _send_query(device_id, peer, lost, lost.running)
    elif isinstance(event, DeviceFacts):
        # Kept with presence and shown to technicians; the device's own word, so nothing is
        # decided on it (docs/protocol.md#device-facts). Already validated by the session.
        state.seen(device_id, facts=event.facts)
    elif isinstance(event, DeviceHandover):
        await _hand_over(device_id, peer, state, event)
    elif isinstance(event, AlertRaised):
        await ingest_alert(state, device_id, peer, event)
    elif event.KIND is Kind.REQUEST:
        handler = AGENT_REQUESTS.get(event.TAG)  # tickets (relay/handlers/tickets.py)
        if handler is not None:
            await handler(state, device_id, peer, event)
            return
        # Alerts get their handler with the alerts work; until then the agent hears a clear
        # "not supported", not silence.
        request_id: int = getattr(event, "id")  # noqa: B009
        peer.send_nowait(
            ErrorReply(
                id=request_id,
                code="unsupported",
                message=f"{event.TAG} is not handled by this relay yet",
            )
        )


#: Why requests in flight to a device end when it moves to another provider.
HANDED_OVER_TEXT = "the device moved to another provider / 设备已转移到其他服务商"


async def _hand_over(
    device_id: str, peer: WebSocketSession, state: RelayState, event: DeviceHandover
) -> None:
    """The agent enrolled with another provider, with its merchant's consent, and says so
    (docs/protocol.md#changing-provider): the device is marked ``handed_over``, audited, told
    when, and closed (4004); its identity is refused from now on. Only its own device."""
    if event.device_id != device_id:
        await state.audit(
            f"device:{device_id}",
            "device.handover",
            f"device:{device_id}",
            Outcome.REFUSED,
            {"reason": "another device", "peer": peer.peer},
        )
        peer.send_nowait(
            ErrorReply(
                id=event.id,
                code="forbidden",
                message="a device can hand over only itself / 设备只能转移自己",
            )
        )
        return
    device = await state.storage.hand_over_device(device_id, now=state.now())
    if device.status is not DeviceStatus.HANDED_OVER or device.handed_over_at is None:
        # revoked while it asked: it stays revoked, and is refused like any revoked device
        peer.send_nowait(
            ErrorReply(id=event.id, code="revoked", message="the device was revoked / 设备已被吊销")
        )
        return
    await state.audit(
        f"device:{device_id}",
        "device.handover",
        f"device:{device_id}",
        Outcome.OK,
        {"handed_over_at": device.handed_over_at, "peer": peer.peer},
    )
    log.warning("device %s handed over to another provider by its agent", device_id)
    # Nothing more is routed to it; what was in flight ends here, not in a later sweep.
    for route in state.router.detach_agent(device_id, peer):
        if not route.orphaned:
            await finish_route(state, route, "handed_over", HANDED_OVER_TEXT)
    # its jobs of unknown outcome can never be reconciled: it does not come back
    await end_jobs_of_revoked(state, device_id, "device_handed_over", HANDED_OVER_TEXT)
    # The answer is its last frame: written directly, after the outbox (dropped: it is leaving).
    await peer.stop_writer()
    peer.session.send(DeviceHandedOver(id=event.id, handed_over_at=device.handed_over_at))
    await peer.flush()
    await peer.close(HANDED_OVER, "device handed over")
    raise ConnectionClosedError(f"{device_id} handed over")  # ends its handler, said once


async def _audit_step(
    state: RelayState, device_id: str, route: Route, event: ScriptProgress
) -> None:
    outcome = Outcome.REFUSED if event.step == "refused" else Outcome.OK
    # The agent's detail is bounded: a till can't write megabytes per step (attack finding F11).
    detail = {"job": route.job_id, "user": route.user, "agent": bounded(event.detail)}
    action = f"script.run.{event.step}"
    try:
        await state.audit(f"device:{device_id}", action, f"device:{device_id}", outcome, detail)
    except ValueError:  # a detail JSON can't hold: the step is still audited
        await state.audit(
            f"device:{device_id}",
            action,
            f"device:{device_id}",
            outcome,
            {"job": route.job_id, "user": route.user},
        )


#: Said to a console whose reply did not fit its frame limit once re-numbered (attack F8).
TOO_BIG_TEXT = "the device's reply is too big to forward / 设备的回复过大，无法转发"


async def _reply_too_big(state: RelayState, route: Route, event: Message) -> None:
    """A reply that fit the agent's frame but not the console's under the console's request id:
    the console hears ``too_big`` at once, and the job ends saying so (audited), never
    ``succeeded`` on a reply nobody saw. A script's job keeps its real end: a terminal reply
    is recorded as such; before that, the route is orphaned (``unknown``, reconciled by it)."""
    log.warning("%s for job %s too big for its console: not forwarded", event.TAG, route.job_id)
    if not event.TERMINAL:
        state.router.abandon(route)
    if route.tag not in RECONCILABLE:
        await finish_route(state, route, "too_big", TOO_BIG_TEXT)
        return
    with contextlib.suppress(PosAssistError):  # the console may be closing
        route.console.send_nowait(error_reply(route, "too_big", TOO_BIG_TEXT))
    if event.TERMINAL:
        await finish_route(state, route, None, None, reply=event)
    else:
        await finish_route(state, route, "outcome_unknown", TOO_BIG_TEXT)


def _forward_reply(state: RelayState, route: Route, event: Message) -> bool:
    """Send ``event`` on to its console; False if it can't be encoded there (too big)."""
    try:
        route.console.send_nowait(event, route.console_request_id)
    except LocalProtocolError as exc:
        if route.console.session.state is SessionState.OPEN:
            log.info("reply for job %s not forwarded: %s", route.job_id, exc)
            return False
        log.debug("reply for a closing console dropped: %s", exc)
    except SlowConsumerError as exc:
        # The console stopped reading: it is closed (not this agent); its routes then fail.
        assert isinstance(route.console, WebSocketSession)
        state.spawn(route.console.close_for(exc))
    except PosAssistError as exc:
        # The console is already closing; whatever is wrong there must not cost this agent
        # its connection. Its routes end when its handler finishes.
        log.debug("reply for a closing console dropped: %s", exc)
    return True
