"""``/v1/console``: a technician's console signs in with a bearer token and sends requests.

Each request is checked (role, scope, rate), recorded as a job, audited, then routed to the
device; a refused request never reaches the device.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING, Any

from posassist.protocol import (
    AuthenticationError,
    ErrorReply,
    Heartbeat,
    HeartbeatAck,
    Kind,
    PeerSilentError,
    PosAssistError,
    Role,
    Session,
    TokenAuth,
)
from posassist.protocol.errors import (
    EXIT_REFUSED,
    LocalProtocolError,
    SignInTimeout,
    UnexpectedMessage,
)
from posassist.protocol.manifest import ParamError, validate_params
from posassist.protocol.messages import ScriptRunRequest, username_problem

from ..audit import AuditEntry, Outcome, bounded
from ..connection import ConnectionClosedError, SlowConsumerError, WebSocketSession
from ..errors import DeviceNotActive, TokenError
from ..limits import trust_connection
from ..routing import Link, OfflineError
from ..scripts_repo import offered_scripts, param_reason, wrong_platform
from ..state import ROUTE_ROLES, STATE, RelayState
from ..storage import DeviceStatus, JobStatus
from .agents import SOFTWARE, handshake_failed, refuse_over_budget
from .jobs import finish_route

if TYPE_CHECKING:
    from aiohttp import web

    from posassist.protocol import Message

    from ..routing import Route
    from ..storage import User

log = logging.getLogger("posassist.relay")
#: A script's job when its console left first (docs/protocol.md#request-lifetime-relay).
CONSOLE_LEFT = "the console disconnected while the script ran; reconciled when the device reports"


class SignInEnded(PosAssistError):
    """The console's bearer token expired or was revoked (signed out) while it was connected."""

    close_code = 4001
    http_status = 401
    exit_code = EXIT_REFUSED
    public_reason = "sign-in expired or revoked"
    public_reason_zh = "登录已过期或被撤销"


def token_key(token: str) -> bytes:
    """How :attr:`RelayState.console_tokens` knows a token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).digest()


def end_sign_in(state: RelayState, token: str) -> None:
    """Close every console signed in with ``token`` (just revoked)."""
    for peer in state.console_tokens.pop(token_key(token), set()):
        state.spawn(peer.close_for(SignInEnded("token revoked")))


async def end_revoked_sign_ins(state: RelayState) -> None:
    """Close (4001) the consoles whose token was revoked elsewhere since they signed in: a
    password set with ``posassist-relay user password``, a logout through another relay
    (attack finding F2). One audited ``console.sign_in_ended`` record per token."""
    if not state.console_tokens:
        return
    ended = await state.storage.revoked_tokens(list(state.console_tokens))
    for key, username in ended.items():
        peers = state.console_tokens.pop(key, set())
        if not peers:
            continue
        for peer in peers:
            state.spawn(peer.close_for(SignInEnded("token revoked")))
        log.warning("closed %d console(s) of %s: sign-in token revoked", len(peers), username)
        await state.audit(
            "relay",
            "console.sign_in_ended",
            f"user:{username or '?'}",
            Outcome.OK,
            {"reason": "token revoked", "consoles": len(peers)},
        )


async def console_endpoint(request: web.Request) -> web.WebSocketResponse:
    state = request.app[STATE]
    await refuse_over_budget(state, request, "console.connect")
    session = Session(Role.RELAY_FOR_CONSOLE, max_in_flight=state.config.console_max_in_flight)
    peer = await state.accept(request, session, "console")
    ws = peer.ws
    user: User | None = None
    key = b""
    try:
        user, token, expires_at = await _authenticate(peer, state)
        trust_connection(request)  # signed in: no deadline or cap from relay/limits.py
        key = token_key(token)
        state.console_tokens.setdefault(key, set()).add(peer)
        state.consoles += 1
        await _serve(user, peer, state, expires_at)
    except (ConnectionClosedError, TimeoutError, ConnectionResetError) as exc:
        if user is None:
            handshake_failed(state, peer, exc)
        log.info("console connection from %s ended: %s", peer.peer, type(exc).__name__)
        if user is None and isinstance(exc, TimeoutError):  # docs/protocol.md#close-codes
            await peer.close_for(SignInTimeout("no sign-in within the handshake timeout"))
    except PosAssistError as exc:
        if user is None:
            handshake_failed(state, peer, exc)
        await peer.close_for(exc)
    finally:
        state.sockets.discard(ws)
        if user is not None:
            state.consoles -= 1
            peers = state.console_tokens.get(key)
            if peers is not None:
                peers.discard(peer)
                if not peers:
                    del state.console_tokens[key]
            routes = state.router.detach_console(peer)
            if routes:
                # Shielded in a tracked task: aiohttp may cancel this handler once the socket is
                # closed, and the jobs' ends must still be written (on PostgreSQL the write
                # outlasted the handler and the job stayed pending).
                await asyncio.shield(state.spawn(_end_console_routes(state, routes)))
        await peer.stop_writer()
        if not ws.closed:
            await ws.close()
    return ws


async def _end_console_routes(state: RelayState, routes: list[Route]) -> None:
    for route in routes:
        if route.orphaned:  # a script runs on without its console: reconciled later
            await finish_route(state, route, "outcome_unknown", CONSOLE_LEFT)
        else:
            await finish_route(state, route, "console_gone", "the console disconnected")


async def _authenticate(peer: WebSocketSession, state: RelayState) -> tuple[User, str, float]:
    """The signed-in user, the bearer token and when it expires."""
    config = state.config
    await peer.wait_one(config.handshake_timeout)  # Hello; the session checks role and version
    peer.session.send_welcome(config.relay_id, SOFTWARE)
    await peer.flush()
    auth = await peer.wait_one(config.handshake_timeout)
    if not isinstance(auth, TokenAuth):  # pragma: no cover - the session only lets TokenAuth in
        raise UnexpectedMessage(auth.TAG)
    try:
        user, expires_at = await state.storage.authenticate_token_until(auth.token, now=state.now())
    except TokenError as exc:
        await state.audit(
            f"ip:{peer.peer}",
            "console.connect",
            "relay",
            Outcome.REFUSED,
            {"reason": exc.public_reason},
        )
        peer.session.send_refused("bad_token")
        await peer.flush()
        raise AuthenticationError(exc.public_reason) from None
    if username_problem(user.username) is not None:  # made before names were checked (F9)
        await state.audit(
            f"ip:{peer.peer}",
            "console.connect",
            "relay",
            Outcome.REFUSED,
            {"reason": "username the protocol cannot carry"},
        )
        peer.session.send_refused("bad_username")
        await peer.flush()
        raise AuthenticationError("this account's username can't sign in; create a new account")
    peer.session.send_accepted(user.username, config.heartbeat_interval)
    await peer.flush()
    peer.start_writer()
    log.info("console %s signed in from %s", user.username, peer.peer)
    return user, auth.token, expires_at


async def _serve(user: User, peer: WebSocketSession, state: RelayState, expires_at: float) -> None:
    """Requests until the console leaves, falls silent (nothing at all within the session's
    silence deadline, docs/protocol.md#liveness), or its sign-in expires (closed 4001)."""
    limiter = state.console_limiter
    loop = asyncio.get_running_loop()
    # the token's expiry on the loop's clock, which the silence deadline uses
    expiry_deadline = loop.time() + (expires_at - state.now())
    while True:
        try:
            events = await peer.wait_events(until=expiry_deadline)
        except TimeoutError:
            if state.now() >= expires_at or loop.time() >= expiry_deadline:
                raise SignInEnded(f"{user.username}'s token expired") from None
            raise PeerSilentError(f"console {user.username} silent") from None
        for event in events:
            now = state.now()
            if now >= expires_at:
                if event.KIND is Kind.REQUEST:
                    await _audit_refused(state, user, event, "token expired")
                raise SignInEnded(f"{user.username}'s token expired")
            if isinstance(event, Heartbeat):
                peer.send_nowait(
                    HeartbeatAck(seq=event.seq, sent_at=event.sent_at, received_at=now)
                )
            elif event.KIND is Kind.REQUEST:
                if not limiter.allow(user.username, now):
                    await _refuse(
                        state, user, peer, event, "rate_limited", "too many requests; slow down"
                    )
                    continue
                await _route(user, peer, state, event)


async def _refuse(
    state: RelayState, user: User, peer: Link, event: Message, code: str, text: str
) -> None:
    request_id: int = getattr(event, "id")  # noqa: B009 - requests have ids
    await _audit_refused(state, user, event, code)
    peer.send_nowait(ErrorReply(id=request_id, code=code, message=text))


async def _audit_refused(state: RelayState, user: User, event: Message, reason: str) -> None:
    device_id = str(getattr(event, "device_id", ""))
    await state.audit(
        f"user:{user.username}",
        event.TAG,
        f"device:{device_id}",
        Outcome.REFUSED,
        {"reason": reason},
    )


async def _route(user: User, peer: Link, state: RelayState, event: Message) -> str | None:
    """Check, record, audit and forward one request (docs/protocol.md#requests); the job's id,
    or None when refused before a job was made (the web console, relay/web, shows the job)."""
    device_id: str = getattr(event, "device_id")  # noqa: B009 - routed requests name a device
    if user.role not in ROUTE_ROLES.get(event.TAG, frozenset()):
        await _refuse(state, user, peer, event, "forbidden", "your role may not do this")
        return None
    if not await state.device_in_scope(device_id, user.scope):
        # Out of scope and unknown look the same, so scope can't be probed for device ids.
        await _refuse(state, user, peer, event, "forbidden", "device not in your scope")
        return None
    device = await state.storage.get_device(device_id)
    if device.status is not DeviceStatus.ACTIVE:
        # revoked or handed over: it can't connect, so nothing would reach it; no job is made
        await _refuse(state, user, peer, event, "revoked", DeviceNotActive.public_reason)
        return None
    if isinstance(event, ScriptRunRequest):
        problem = await _script_problem(state, device, event)
        if problem is not None:
            await _refuse(state, user, peer, event, *problem)
            return None
    now = state.now()
    # The job and its audit record commit together, before anything reaches the device.
    entry = AuditEntry(
        f"user:{user.username}",
        event.TAG,
        f"device:{device_id}",
        Outcome.OK,
        _audit_detail(event),
    )
    # A run's job names its script, so job lists can say which ran (issue 15).
    script = event.script if isinstance(event, ScriptRunRequest) else None
    version = event.version if isinstance(event, ScriptRunRequest) else None
    job = await state.storage.create_job(
        device_id,
        event.TAG,
        user.username,
        now=now,
        audit=entry,
        script=script,
        version=version,
    )
    timeout = float(getattr(event, "timeout", state.config.request_timeout))
    try:
        state.router.forward(
            peer,
            event,
            device_id=device_id,
            job_id=job.id,
            user=user.username,
            now=now,
            timeout=timeout,
        )
    except OfflineError:
        # Not connected, or its connection is closing or being replaced: the console hears it,
        # the job fails, audited, and the console stays connected.
        await _fail_unrouted(
            state, user, peer, event, job.id, "offline", "the device is not connected / 设备离线"
        )
    except LocalProtocolError as exc:  # the agent's session refused it (too many in flight…)
        log.info("request for %s not forwarded: %s", device_id, exc)
        await _fail_unrouted(
            state, user, peer, event, job.id, "unavailable", "the device is busy; try again"
        )
    except SlowConsumerError:
        agent = state.router.agent(device_id)
        await _fail_unrouted(
            state,
            user,
            peer,
            event,
            job.id,
            "unavailable",
            "the device is not keeping up; try again",
        )
        if isinstance(agent, WebSocketSession):
            state.spawn(agent.close(SlowConsumerError.close_code, SlowConsumerError.public_reason))
    return job.id


async def _script_problem(
    state: RelayState, device: Any, event: ScriptRunRequest
) -> tuple[str, str] | None:
    """(code, words) when the relay already knows the run can't go ahead: the published
    script's manifest leaves out the till's OS (``wrong_platform``) or refuses the parameters
    (``invalid_params``, the web form's check and words); None when it can, or when the relay
    does not publish that script. The agent checks all of it again, against what it verified."""
    offered = await asyncio.to_thread(offered_scripts, state.config.scripts_dir)
    manifest = offered.get((event.script, event.version))
    if manifest is None:
        return None
    mismatch = wrong_platform(device, manifest)
    if mismatch is not None:
        return "wrong_platform", f"{mismatch[1]} / {mismatch[0]}"
    try:
        if event.unattended and not manifest.unattended:
            raise ParamError("this script may not run unattended")
        validate_params(manifest, event.params)
    except ParamError as exc:
        return "invalid_params", param_reason(str(exc))
    return None


async def _fail_unrouted(
    state: RelayState,
    user: User,
    peer: Link,
    event: Message,
    job_id: str,
    code: str,
    text: str,
) -> None:
    request_id: int = getattr(event, "id")  # noqa: B009
    peer.send_nowait(ErrorReply(id=request_id, code=code, message=text))
    state.metrics.routed(event.TAG, "offline" if code == "offline" else "error", seconds=0.0)
    entry = AuditEntry(
        f"user:{user.username}",
        f"{event.TAG}.finished",
        f"device:{getattr(event, 'device_id', '')}",
        Outcome.FAILED,
        {"job": job_id, "error": code},
    )
    await state.storage.finish_job(
        job_id, JobStatus.FAILED, now=state.now(), error=code, audit=entry
    )


def _audit_detail(event: Message) -> dict[str, object]:
    """What the audit record keeps of a request: its kind-specific fields, the console's bulk
    (``params``, ``collectors``) bounded (:func:`relay.audit.bounded`, attack finding F11)."""
    detail: dict[str, object] = {}
    for name in ("script", "version", "params", "collectors", "unattended"):
        if hasattr(event, name):
            value = getattr(event, name)
            detail[name] = bounded(value) if name in ("params", "collectors") else value
    return detail


async def route_request(user: User, peer: Link, state: RelayState, event: Message) -> str | None:
    """:func:`_route` for the web console (relay/web/runs.py): the same checks, job and audit
    record as a request from a websocket console; the job's id, or None if refused."""
    return await _route(user, peer, state, event)
