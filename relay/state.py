"""What one running relay holds: config, storage, router, and the helpers every handler uses.

One RelayState per application (``app[STATE]``); nothing here is global.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from aiohttp import web

from .audit import Outcome
from .batching import Batcher
from .connection import WebSocketSession
from .errors import NotFound, ScopeError, StorageError
from .flapping import FlapDetector
from .limits import HandshakeGate
from .lockout import LoginBackoff
from .metrics import refusal_reason
from .refusals import pre_sign_in_address
from .storage import Role, Scope, ScopeKind

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping

    from aiohttp.web_ws import WebSocketResponse

    from posassist.protocol import Message, Session

    from .config import RelayConfig
    from .limits import HandshakeBudget
    from .metrics import RelayMetrics
    from .ratelimit import KeyedLimiter
    from .refusals import RefusalLedger
    from .routing import Router
    from .storage import Device, SqlStorage, TenantPath, User

log = logging.getLogger("posassist.relay")

#: (last seen, agent version or None, facts or None): one device's presence not yet written.
Presence: TypeAlias = "tuple[float, str | None, Mapping[str, Any] | None]"

#: How often a connected device's heartbeats move its last seen (seconds): at most one presence
#: write a minute per device, however often its heartbeats come (1,000s of tills beat).
PRESENCE_REFRESH = 60.0

#: Which roles may send which request to a device (viewers may look, not touch).
ROUTE_ROLES: dict[str, frozenset[Role]] = {
    "diag.request": frozenset({Role.ADMIN, Role.TECHNICIAN, Role.VIEWER}),
    "script.run": frozenset({Role.ADMIN, Role.TECHNICIAN}),
    "script.restore": frozenset({Role.ADMIN, Role.TECHNICIAN}),
}


@dataclass(slots=True)
class RelayState:
    """Everything the running relay holds; handlers reach it as ``request.app[STATE]``."""

    config: RelayConfig
    storage: SqlStorage
    router: Router
    login_limiter: KeyedLimiter[str]
    console_limiter: KeyedLimiter[str]
    enrol_limiter: KeyedLimiter[str]
    #: Failed websocket sign-ins per address (relay/limits.py ``HandshakeBudget``).
    handshake_budget: HandshakeBudget
    metrics: RelayMetrics
    #: Refusals before sign-in, summarised per address and window (relay/refusals.py).
    refusals: RefusalLedger
    clock: Callable[[], float] = time.time
    sockets: set[WebSocketResponse] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: device id → (last seen, agent version, facts) not yet written (presence is written
    #: behind); None where nothing new is known, so what is stored stays.
    presence: dict[str, Presence] = field(default_factory=dict)
    #: The batch flush_presence is writing now.
    writing: dict[str, Presence] = field(default_factory=dict)
    #: device id → when its heartbeats last moved its last seen (:meth:`heard_from`); only
    #: connected devices (dropped when the connection ends).
    heard: dict[str, float] = field(default_factory=dict)
    _paths: OrderedDict[str, TenantPath] = field(default_factory=OrderedDict)
    consoles: int = 0
    #: Loop time by which requests in flight must finish once shutdown has begun.
    shutdown_deadline: float | None = None
    #: SHA-256 of a bearer token → the consoles signed in with it, closed when it is revoked.
    console_tokens: dict[bytes, set[WebSocketSession]] = field(default_factory=dict)
    #: Failed sign-ins per (address, username) and the back-off they earn (relay/lockout.py).
    login_backoff: LoginBackoff = field(default_factory=LoginBackoff)
    #: Devices whose connections keep replacing each other (relay/flapping.py).
    flaps: FlapDetector = field(default_factory=lambda: FlapDetector(60.0, 5))
    #: Health alerts, webhooks and remediation (relay/handlers/alerts.py ``Health``), once up.
    health: object | None = None
    #: (agent link, request id) → the answer awaited to a ``script.cancel`` sent on that link
    #: (relay/handlers/cancel.py); None when the link went away first.
    cancels: dict[tuple[object, int], asyncio.Future[Message | None]] = field(default_factory=dict)

    #: Devices read for sign-ins, many at once (relay/batching.py).
    device_reads: Batcher[str, Device] = field(init=False)

    #: Sign-ins worked on at once, the rest shed (relay/limits.py ``HandshakeGate``).
    handshake_gate: HandshakeGate = field(init=False)

    def __post_init__(self) -> None:
        self.device_reads = Batcher(self.storage.get_devices)
        self.handshake_gate = HandshakeGate(self.config.max_handshakes_in_flight)

    def now(self) -> float:
        return self.clock()

    def seen(
        self,
        device_id: str,
        agent_version: str | None = None,
        *,
        facts: Mapping[str, Any] | None = None,
    ) -> None:
        """Note a device's presence; written in batches (off the connect path), not audited.

        ``facts`` (docs/protocol.md#device-facts) replace the device's stored facts when written;
        None keeps them. They are the device's own word: shown, never used to decide anything.
        """
        entry = (self.now(), agent_version, facts)
        previous = self.presence.get(device_id)
        self.presence[device_id] = entry if previous is None else _merged(entry, previous)

    def heard_from(self, device_id: str) -> None:
        """A heartbeat (or a sign-in) from a connected device: its last seen moves on, noted at
        most once per :data:`PRESENCE_REFRESH`, so heartbeats add no write of their own."""
        now = self.now()
        last = self.heard.get(device_id)
        if last is not None and 0 <= now - last < PRESENCE_REFRESH:
            return
        self.heard[device_id] = now
        self.seen(device_id)

    def pending(self, device_id: str) -> Presence | None:
        """Presence noted for ``device_id`` and not yet written (or being written), if any."""
        entry = self.presence.get(device_id)
        if entry is None:
            return self.writing.get(device_id)
        older = self.writing.get(device_id)
        return entry if older is None else _merged(entry, older)

    async def flush_presence(self) -> None:
        """Write the presence noted since the last flush, in one transaction."""
        batch, self.presence = self.presence, {}
        self.writing = batch  # still shown by pending() until it is committed
        try:
            await self.storage.record_presences(batch)
        except StorageError:
            for device_id, entry in batch.items():  # keep it for the next try
                newer = self.presence.get(device_id)
                self.presence[device_id] = entry if newer is None else _merged(newer, entry)
            raise
        finally:
            self.writing = {}

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` in the background (closing a peer that may never answer), tracked so
        that shutdown waits for it; an error in it is logged, not lost."""
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed: %r", task.exception())

    async def audit(
        self,
        actor: str,
        action: str,
        target: str,
        outcome: Outcome,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append to the hash-chained audit log (every change, command and refusal).

        Every refusal passes through here, so this is also where refusals are counted for
        ``/metrics``, labelled by why (:func:`metrics.refusal_reason`), never by the action.
        Refusals of peers not signed in are summarised (relay/refusals.py): only the first per
        address, action and window is written here; :meth:`write_refusal_summaries` the rest.
        """
        if outcome is Outcome.REFUSED:
            reason = refusal_reason(action, detail)
            self.metrics.refused(reason)
            address = pre_sign_in_address(actor, action, detail)
            if address is not None and not self.refusals.note(address, action, reason, self.now()):
                return
        await self.storage.append(
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            now=self.now(),
            detail=detail,
        )

    async def write_refusal_summaries(self, *, final: bool = False) -> int:
        """Append the summaries of refusal windows that have ended (all of them if ``final``);
        returns how many were written."""
        now = self.now()
        summaries = self.refusals.drain(now) if final else self.refusals.due(now)
        for written, summary in enumerate(summaries):
            try:
                await self.storage.append(
                    actor=summary.actor,
                    action=summary.action,
                    target="relay",
                    outcome=Outcome.REFUSED,
                    now=now,
                    detail=summary.detail,
                )
            except StorageError:
                self.refusals.put_back(summaries[written:])  # written next time
                raise
        return len(summaries)

    async def accept(
        self, request: web.Request, session: Session, endpoint: str
    ) -> WebSocketSession:
        """Upgrade ``request`` to a websocket peer with this relay's limits and counters."""
        config = self.config
        # autoping=False: pings reach WebSocketSession.wait_events, which answers them, so that
        # they count as traffic for the silence deadline (docs/protocol.md#liveness).
        ws = web.WebSocketResponse(
            max_msg_size=config.limits.max_frame,
            compress=False,
            timeout=config.close_timeout,
            autoping=False,
        )
        await ws.prepare(request)
        self.sockets.add(ws)
        return WebSocketSession(
            ws,
            session,
            str(request.remote),
            max_outbox=config.max_outbox,
            max_outbox_bytes=config.max_outbox_bytes,
            frames_in=self.metrics.frames_received.labels(endpoint=endpoint),
            frames_out=self.metrics.frames_sent.labels(endpoint=endpoint),
            transport=request.transport,
        )

    async def device_in_scope(self, device_id: str, scope: Scope) -> bool:
        """Whether ``scope`` covers the device; False for unknown devices. A device never moves
        in the tenancy tree, so its path is cached (bounded) after the first lookup."""
        path = self._paths.get(device_id)
        if path is None:
            try:
                path = await self.storage.device_path(device_id)
            except NotFound:
                return False
            self._paths[device_id] = path
            if len(self._paths) > MAX_CACHED_PATHS:
                self._paths.popitem(last=False)
        return path.within(scope)

    def forget_device(self, device_id: str) -> None:
        """A deleted device has left the tree: its cached path must not keep it in scope."""
        self._paths.pop(device_id, None)

    async def require_device(self, user: User, device_id: str, action: str, target: str) -> None:
        """Refuse (404, audited ``out of scope``) unless ``user``'s scope covers the device;
        an unknown device looks the same, so ids can't be probed."""
        if not await self.device_in_scope(device_id, user.scope):
            await self.audit(
                f"user:{user.username}",
                action,
                target[:80],
                Outcome.REFUSED,
                {"reason": "out of scope"},
            )
            raise NotFound(f"{target[:80]} outside the scope of {user.username}")

    async def covers(self, user: User, target: Scope) -> bool:
        """Whether ``user``'s scope contains ``target`` (False if ``target`` doesn't exist)."""
        if user.scope.kind is ScopeKind.ROOT:
            return True
        try:
            return user.scope in await self.storage.scope_ancestors(target)
        except NotFound:
            return False

    async def require_scope(self, user: User, target: Scope, action: str) -> None:
        """Refuse (and audit) unless ``user`` may act on ``target``; not-found looks the same."""
        if not await self.covers(user, target):
            await self.audit(
                f"user:{user.username}",
                action,
                f"{target.kind}:{target.id}",
                Outcome.REFUSED,
                {"reason": "out of scope"},
            )
            raise ScopeError(f"{user.username} may not {action} on {target}")


def _merged(newer: Presence, older: Presence) -> Presence:
    """``newer``, keeping ``older``'s agent version and facts where ``newer`` has none."""
    seen_at, version, facts = newer
    return (seen_at, version or older[1], older[2] if facts is None else facts)


STATE = web.AppKey("state", RelayState)
#: Devices whose place in the tenancy tree is kept in memory for scope checks.
MAX_CACHED_PATHS = 200_000
