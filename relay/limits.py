"""Limits on connections that have not signed in: deadlines, and caps in total and per address.

aiohttp bounds neither how long a request head may take nor how many idle sockets a stranger may
hold (docs/relay.md#limits-before-sign-in). :class:`ConnectionTable` is the pure rule (clock
passed as ``now``); :class:`ConnectionGuard` applies it to the relay's listening socket.

A connection is *untrusted* from accept until its websocket signs in (:func:`trust_connection`),
and counts against the caps while it is. Its deadline:

- from accept, ``header_timeout`` to deliver a complete request head (a request trickled one
  byte at a time included);
- once a plain HTTP request reaches a handler, ``http_request_timeout`` for the whole request:
  a slow body, and the response sent after the handler returns (a script file);
- a websocket upgrade in its handler has none here: its sign-in is bounded by the handshake
  timeout (relay/handlers/agents.py, consoles.py);
- after a handler returns, ``idle_timeout`` until the next request head is complete
  (keep-alive), or the request's own deadline if later; aiohttp's keep-alive timer, also
  ``idle_timeout`` and started once the response is sent, closes idle connections sooner.

A signed-in websocket has no deadline and costs nothing per frame: the table forgets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import ipaddress
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from aiohttp import web

from .responses import http_error_response

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from aiohttp.web_request import BaseRequest

    from .config import RelayConfig
    from .ratelimit import KeyedLimiter

__all__ = [
    "GUARD",
    "Admission",
    "ConnectionGuard",
    "ConnectionLimits",
    "ConnectionTable",
    "HandshakeBudget",
    "HandshakeGate",
    "Refusal",
    "address_key",
    "fit_to_descriptors",
    "guard_middleware",
    "raise_descriptor_limit",
    "trust_connection",
]

log = logging.getLogger("posassist.relay")

C = TypeVar("C", bound=Hashable)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    """The limits for connections that have not signed in (``RelayConfig`` fields)."""

    header_timeout: float = 10.0
    idle_timeout: float = 15.0
    http_request_timeout: float = 30.0
    #: 0 means no cap.
    max_unauthenticated: int = 1024
    #: 0 means no cap (a relay behind a proxy that hides client addresses).
    max_unauthenticated_per_address: int = 256

    def __post_init__(self) -> None:
        for name in ("header_timeout", "idle_timeout", "http_request_timeout"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        for name in ("max_unauthenticated", "max_unauthenticated_per_address"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (no cap) or more")

    @classmethod
    def of(cls, config: RelayConfig) -> ConnectionLimits:
        return cls(
            header_timeout=config.header_timeout,
            idle_timeout=config.idle_timeout,
            http_request_timeout=config.http_request_timeout,
            max_unauthenticated=config.max_unauthenticated,
            max_unauthenticated_per_address=config.max_unauthenticated_per_address,
        )

    @property
    def sweep_interval(self) -> float:
        """How often deadlines are checked: a quarter of the shortest, within 0.05 .. 1 s."""
        shortest = min(self.header_timeout, self.idle_timeout, self.http_request_timeout)
        return min(1.0, max(0.05, shortest / 4))


class Refusal(enum.StrEnum):
    """Why a new connection was closed at once."""

    TOO_MANY = "too many connections not signed in"
    TOO_MANY_FROM_ADDRESS = "too many connections not signed in from this address"
    #: Closed at its deadline without having sent one complete request (an idle or trickled
    #: socket); a kept-alive connection idle after its requests is not a refusal.
    NO_REQUEST = "no complete request by the deadline"


@dataclass(slots=True)
class _Entry:
    address: str
    #: Monotonic time by which it must progress, or None (a websocket signing in).
    deadline: float | None
    #: Whether a complete request ever reached a handler on it.
    served: bool = False


class ConnectionTable(Generic[C]):
    """Untrusted connections, their addresses and deadlines; pure, ``now`` is passed in.

    Every method is O(1) except :meth:`expired`, which scans the (capped) table.
    """

    __slots__ = ("_by_address", "_entries", "limits")

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._entries: dict[C, _Entry] = {}
        self._by_address: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, conn: object) -> bool:
        return conn in self._entries

    def from_address(self, address: str) -> int:
        """Untrusted connections from ``address`` now."""
        return self._by_address.get(address, 0)

    def deadline(self, conn: C) -> float | None:
        entry = self._entries.get(conn)
        return None if entry is None else entry.deadline

    def admit(self, conn: C, address: str, now: float) -> Refusal | None:
        """Track a new connection (header deadline armed), or say why it must be closed."""
        limits = self.limits
        if limits.max_unauthenticated and len(self._entries) >= limits.max_unauthenticated:
            return Refusal.TOO_MANY
        per_address = limits.max_unauthenticated_per_address
        if per_address and self.from_address(address) >= per_address:
            return Refusal.TOO_MANY_FROM_ADDRESS
        self._entries[conn] = _Entry(address, now + limits.header_timeout)
        self._by_address[address] = self.from_address(address) + 1
        return None

    def request_started(self, conn: C, now: float, *, websocket: bool) -> None:
        """A request head is complete and in a handler: its own deadline, or none for a
        websocket upgrade (the handshake timeout bounds its sign-in)."""
        entry = self._entries.get(conn)
        if entry is not None:
            entry.deadline = None if websocket else now + self.limits.http_request_timeout
            entry.served = True

    def request_finished(self, conn: C, now: float) -> None:
        """Its handler returned: the response is still to be sent (a file, perhaps), so the
        request's own deadline stands if it is later than the idle deadline (keep-alive)."""
        entry = self._entries.get(conn)
        if entry is not None:
            idle = now + self.limits.idle_timeout
            entry.deadline = idle if entry.deadline is None else max(entry.deadline, idle)

    def never_served(self, conn: C) -> str | None:
        """The address of ``conn`` if no complete request ever reached a handler on it (a
        stranger's idle or trickled socket), else None."""
        entry = self._entries.get(conn)
        return entry.address if entry is not None and not entry.served else None

    def trust(self, conn: C) -> None:
        """Signed in: no deadline and no longer counted; forgotten here."""
        self.release(conn)

    def release(self, conn: C) -> None:
        """The connection is gone (or trusted)."""
        entry = self._entries.pop(conn, None)
        if entry is None:
            return
        left = self._by_address[entry.address] - 1
        if left:
            self._by_address[entry.address] = left
        else:
            del self._by_address[entry.address]

    def expired(self, now: float) -> list[C]:
        """Connections past their deadline (still tracked: :meth:`release` them once closed)."""
        return [
            conn
            for conn, entry in self._entries.items()
            if entry.deadline is not None and now >= entry.deadline
        ]


class _GuardedHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, reporting accept and close to the guard (once each
    per connection, never per frame)."""

    __slots__ = ("_guard", "_refused")

    def __init__(self, guard: ConnectionGuard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit(self, transport):
            self._refused = True
            transport.abort()  # type: ignore[attr-defined]
            return
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.release(self)
        if self._refused:  # never started: nothing of aiohttp's to tear down
            return
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request head it could not parse (400: bad framing, a header
        over 8 KiB…) or a handler that failed unexpectedly (500): the relay's fixed JSON error
        instead of text that may quote the request (relay/errors.py ``HTTP_ERRORS``).

        A stranger's bad request is one log line without its bytes (aiohttp logs a traceback
        quoting them, a line per request a flood could fill the disk with); a failure of our
        own (500) keeps aiohttp's traceback."""
        if status >= 500:
            super().handle_error(request, status, exc, message)  # logs; raises if already sent
        elif request.writer.output_size > 0:  # pragma: no cover - a 4xx comes before any reply
            raise ConnectionError("response sent already; cannot send an error")
        else:
            log.info(
                "bad request from %s: HTTP %d (%s)", request.remote, status, type(exc).__name__
            )
        response = http_error_response(status)
        response.force_close()
        return response


class ConnectionGuard:
    """Applies a :class:`ConnectionTable` to real connections: closes the expired, refuses
    connections over the caps (``on_refused(address, refusal)`` is told), and forgets the
    signed in."""

    def __init__(
        self,
        limits: ConnectionLimits,
        *,
        on_refused: Callable[[str, Refusal], None] | None = None,
    ) -> None:
        self.table: ConnectionTable[web.RequestHandler] = ConnectionTable(limits)
        self.on_refused = on_refused
        self._transports: dict[web.RequestHandler, asyncio.BaseTransport] = {}
        self._sweeper: asyncio.Task[None] | None = None

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def protocol_factory(
        self, server: web.Server, **kwargs: Any
    ) -> Callable[[], web.RequestHandler]:
        """For ``loop.create_server``: aiohttp's handler for ``server``, guarded. ``kwargs``
        are RequestHandler options (``access_log``, ``keepalive_timeout``…)."""
        loop = asyncio.get_running_loop()
        return lambda: _GuardedHandler(self, server, loop=loop, **kwargs)

    def admit(self, handler: web.RequestHandler, transport: asyncio.BaseTransport) -> bool:
        peer = transport.get_extra_info("peername")
        address = address_key(str(peer[0])) if isinstance(peer, tuple) and peer else "unknown"
        refusal = self.table.admit(handler, address, self._now())
        if refusal is None:
            self._transports[handler] = transport
            return True
        log.debug("closed a new connection from %s: %s", address, refusal.value)
        if self.on_refused is not None:
            self.on_refused(address, refusal)
        return False

    def release(self, handler: web.RequestHandler) -> None:
        self.table.release(handler)
        self._transports.pop(handler, None)

    def trust(self, handler: web.RequestHandler) -> None:
        self.table.trust(handler)
        self._transports.pop(handler, None)

    def request_started(self, handler: web.RequestHandler, *, websocket: bool) -> None:
        self.table.request_started(handler, self._now(), websocket=websocket)

    def request_finished(self, handler: web.RequestHandler) -> None:
        self.table.request_finished(handler, self._now())

    def close_expired(self) -> int:
        """Abort every connection past its deadline; returns how many."""
        expired = self.table.expired(self._now())
        for handler in expired:
            transport = self._transports.pop(handler, None)
            address = self.table.never_served(handler)
            self.table.release(handler)
            if address is not None and self.on_refused is not None:
                self.on_refused(address, Refusal.NO_REQUEST)  # audited, summarised
            if transport is not None:
                transport.abort()  # type: ignore[attr-defined]
        if expired:
            log.info("closed %d connection(s) that did not sign in in time", len(expired))
        return len(expired)

    def start(self) -> None:
        """Check deadlines in the background until :meth:`stop`."""
        self._sweeper = asyncio.create_task(self._sweep(), name="connection deadlines")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _sweep(self) -> None:
        interval = self.table.limits.sweep_interval
        while True:
            await asyncio.sleep(interval)
            self.close_expired()


class HandshakeBudget:
    """Failed websocket sign-ins per address (bad signature, unknown or revoked device, bad
    console token, a broken handshake): each spends a token of the address's bucket
    (``handshake_failure_rate``/s, burst ``handshake_failure_burst``). An address with no token
    left is answered 429 *before* the websocket upgrade, so retrying costs the relay no
    handshake, no signature check and no database read (docs/relay.md#limits-before-sign-in).
    A successful sign-in spends nothing, and a connection already signed in is never touched.
    Pure: ``now`` is passed in."""

    __slots__ = ("limiter",)

    def __init__(self, limiter: KeyedLimiter[str]) -> None:
        self.limiter = limiter

    def exhausted(self, address: str, now: float) -> bool:
        """Whether ``address`` must be refused before the upgrade."""
        return self.limiter.retry_after(address_key(address), now) > 0

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again."""
        return self.limiter.retry_after(address_key(address), now)

    def failed(self, address: str, now: float) -> None:
        """A sign-in from ``address`` failed: spend a token (none left: nothing more to spend).
        Counted per :func:`address_key`: an IPv6 /64 is one budget, not 2**64."""
        self.limiter.allow(address_key(address), now)


class HandshakeGate:
    """Load shedding for sign-ins (docs/relay.md#load-shedding): at most ``max_in_flight``
    websocket sign-ins are worked on at once; past that a new one is answered 503 with a
    ``Retry-After`` *before* the upgrade (an HTTP answer, no handshake, no signature check, no
    database read), and the agent comes back then, with its own jitter (agent/backoff.py
    ``retry_after_delay``). More sign-ins at once would only wait longer on this one core,
    while the retries of connections cut at the caps above cost it more.

    The waits form a queue in time: each shed agent is given the next free slot at the rate
    the relay has been completing sign-ins (at least :data:`MIN_SIGN_IN_RATE` a second), no
    sooner than :data:`MIN_RETRY_AFTER` and no later than :data:`MAX_RETRY_AFTER`; so a storm
    of shed agents comes back spread at the pace the relay can take them, not in one wave and
    not later than needed. The queue's end never lags behind ``now`` (an idle relay has no
    queue).

    A sign-in counts for at most :data:`STALLED_AFTER` seconds: one still open after that is
    waiting on its peer (a stranger who never says hello), not on this relay's CPU, so a
    stranger's idle sockets can't keep the gate shut (they are bounded by the caps above and
    ``handshake_timeout``, as before). Pure: ``now`` is passed in. ``max_in_flight`` 0: no
    shedding.
    """

    __slots__ = (
        "_admitted",
        "_bucket_count",
        "_bucket_start",
        "_full",
        "_next_slot",
        "_next_ticket",
        "max_in_flight",
        "rate",
        "shed",
    )

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 0:
            raise ValueError("max_in_flight must be 0 (no shedding) or more")
        self.max_in_flight = max_in_flight
        #: Sign-ins shed since the start (for the metrics and benchmarks).
        self.shed = 0
        #: Sign-ins completed per second, smoothed over the last seconds.
        self.rate = INITIAL_SIGN_IN_RATE
        #: ticket → when it was admitted, oldest first (a dict keeps the order)
        self._admitted: dict[int, float] = {}
        self._next_ticket = 0
        self._next_slot = 0.0  # when the next shed agent may come back
        self._bucket_start = 0.0
        self._bucket_count = 0  # sign-ins completed since _bucket_start
        self._full = False  # whether the gate shed anything since _bucket_start

    def in_flight(self, now: float) -> int:
        """Sign-ins admitted, not done, and not yet stalled."""
        self._forget_stalled(now)
        return len(self._admitted)

    def admit(self, now: float) -> Admission:
        """A ticket to give back to :meth:`done` when the sign-in ends (however it ends), or
        no ticket and the seconds to ask the agent to wait."""
        self._measure(now)
        if not self.max_in_flight or self.in_flight(now) < self.max_in_flight:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._admitted[ticket] = now
            return Admission(ticket, 0.0)
        self.shed += 1
        self._full = True
        slot = max(self._next_slot, now + MIN_RETRY_AFTER)
        self._next_slot = slot + 1.0 / self.rate
        return Admission(None, min(slot - now, MAX_RETRY_AFTER))

    def done(self, ticket: int, now: float) -> None:
        """The sign-in of ``ticket`` has ended (signed in, refused or gone)."""
        self._measure(now)
        self._admitted.pop(ticket, None)
        self._bucket_count += 1

    def _forget_stalled(self, now: float) -> None:
        admitted = self._admitted
        while admitted:
            ticket, at = next(iter(admitted.items()))
            if now - at < STALLED_AFTER:
                return
            del admitted[ticket]  # waiting on its peer: no longer counted

    def _measure(self, now: float) -> None:
        """Close the rate's one-second bucket when it is over: half the old rate, half the
        new. Only a bucket in which the gate was full measures the relay's pace (at other
        times it is the agents' pace)."""
        elapsed = now - self._bucket_start
        if elapsed < RATE_BUCKET:
            return
        if self._full:
            measured = self._bucket_count / elapsed
            self.rate = max(MIN_SIGN_IN_RATE, (self.rate + measured) / 2)
        self._bucket_start, self._bucket_count, self._full = now, 0, False


class Admission(NamedTuple):
    """:meth:`HandshakeGate.admit`'s answer: a ticket, or None and the wait to ask for."""

    ticket: int | None
    retry_after: float


#: Seconds over which completed sign-ins are counted for the rate (HandshakeGate).
RATE_BUCKET = 1.0
#: Seconds after which a sign-in still in flight no longer counts (it waits on its peer).
STALLED_AFTER = 2.0
#: The sign-in rate assumed until one is measured, and the least ever assumed (per second;
#: one core here does about 1,000, docs/notes/16b-status.md).
INITIAL_SIGN_IN_RATE = 500.0
MIN_SIGN_IN_RATE = 100.0
#: Bounds of the wait a shed sign-in is asked for, in seconds.
MIN_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 60.0


GUARD = web.AppKey("connection_guard", ConnectionGuard)


def trust_connection(request: web.Request) -> None:
    """The peer on ``request``'s connection has signed in: lift its deadline and caps."""
    guard = request.app.get(GUARD)
    if guard is not None:
        guard.trust(request.protocol)


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


@web.middleware
async def guard_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Move the connection's deadline as its requests start and finish (see the module doc)."""
    guard = request.app.get(GUARD)
    protocol = request.protocol
    if guard is None or protocol not in guard.table:
        return await handler(request)
    guard.request_started(protocol, websocket=_is_websocket(request))
    try:
        return await handler(request)
    finally:
        guard.request_finished(protocol)


# --- file descriptors ---------------------------------------------------------------------------

#: Descriptors kept out of the connection caps: the database and its journal, checkpoint and log
#: files, listening sockets, worker threads' files and the like.
RESERVED_DESCRIPTORS = 64


def raise_descriptor_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit (as a server should); the
    soft limit in force afterwards, or 0 where there is no such limit (Windows)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return 0 if soft == resource.RLIM_INFINITY else int(soft)


def fit_to_descriptors(limits: ConnectionLimits, descriptors: int) -> ConnectionLimits:
    """``limits`` with caps a stranger can't turn into descriptor exhaustion.

    Connections not signed in may take at most half of what is left of ``descriptors`` (the
    process's file limit) after :data:`RESERVED_DESCRIPTORS`, the other half kept for signed-in
    agents and consoles; one address at most half of that, so a single stranger never fills it
    (docs/relay.md#limits-before-sign-in). A cap already smaller stays; a per-address cap of 0
    (a relay behind a proxy) stays 0; a total cap of 0 is bounded all the same. ``descriptors``
    of 0 (unknown) changes nothing.
    """
    if descriptors <= 0:
        return limits
    room = max(2, (descriptors - RESERVED_DESCRIPTORS) // 2)
    total = limits.max_unauthenticated
    total = room if total == 0 or total > room else total
    per_address = limits.max_unauthenticated_per_address
    if per_address:
        per_address = min(per_address, max(1, total // 2))
    return replace(limits, max_unauthenticated=total, max_unauthenticated_per_address=per_address)


# --- addresses ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # parsed once per address: every connection asks
def address_key(address: str) -> str:
    """What the per-address cap counts ``address`` under: an IPv4 address as it is (an
    IPv4-mapped IPv6 address as its IPv4 one), an IPv6 address by its /64 network, which one
    subscriber usually holds whole: a stranger with a /64 has 2**64 addresses, not one cap each.
    Anything else (a Unix socket, "unknown") as given."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # (no zone index: fe80::1%eth0)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
