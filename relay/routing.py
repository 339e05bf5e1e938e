"""Routing between consoles and agents, behind a small interface; this is the in-process one.

It knows nothing of aiohttp or SQL: links are anything with ``session`` and ``send_nowait``. A
multi-node router (PostgreSQL + Redis or NATS) implements the same :class:`Router` protocol.

A route belongs to the agent link it was sent on: agent request ids come from that link's own
session (every connection counts from 1), so a newer connection for the same device can reuse an
id still in flight on the one it replaces.

A request lives as long as its work (docs/protocol.md#requests): every reply moves its deadline,
and a consent question holds it open for the consent timeout the agent states. A script route
that expires anyway is kept as an *orphan* until its terminal reply or its agent's disconnect, so
that a late outcome still reaches the job and the audit chain.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from posassist.protocol import ErrorReply, Message, PosAssistError, SessionState
from posassist.protocol.messages import ScriptProgress, ScriptStarted

if TYPE_CHECKING:
    from posassist.protocol import Session

__all__ = [
    "MAX_AUDITED_STEPS",
    "MAX_CONSENT_TIMEOUT",
    "MAX_ORPHANS",
    "MAX_RUN_TIMEOUT",
    "RECONCILABLE",
    "InProcessRouter",
    "Link",
    "OfflineError",
    "Route",
    "Router",
    "relay_owned",
]

#: Requests whose work may change the till: their outcome is never guessed. Forwarded to a v3
#: agent with the relay's job id; when the relay loses track of one, its job ends ``unknown``
#: and is reconciled from the agent's own report (docs/protocol.md#requests).
RECONCILABLE = frozenset({"script.run", "script.restore"})
#: The longest consent wait an agent's ``consent_asked`` step can hold a route open for.
MAX_CONSENT_TIMEOUT = 900.0
#: The longest run timeout an agent's ``verified`` step can hold a route open for.
MAX_RUN_TIMEOUT = 3600.0
#: ``script.progress`` steps of one route written to the audit chain; the rest are counted.
MAX_AUDITED_STEPS = 64
#: Expired script routes kept for their late outcome, across all agents; the oldest goes first.
MAX_ORPHANS = 256


class Link(Protocol):
    """A connected peer the router can write to without waiting."""

    session: Session
    peer: str

    def send_nowait(self, msg: Message, request_id: int | None = None) -> None:
        """Queue ``msg`` (under ``request_id`` if given, as forwarded requests and replies are)."""


class OfflineError(PosAssistError):
    """The target device has no live connection to this relay (relay/errors.py draws the tree)."""

    http_status = 503
    public_reason = "device offline"
    public_reason_zh = "设备不在线"


@dataclass(slots=True, eq=False)
class Route:
    """One request in flight from a console to an agent, on the agent link it was sent on."""

    device_id: str
    agent: Link
    agent_request_id: int
    console: Link
    console_request_id: int
    tag: str
    job_id: str
    user: str
    started_at: float
    timeout: float
    deadline: float
    replies: int = 0
    #: The run timeout the agent stated in its ``verified`` step (bounded): the route is held
    #: that much longer once the script starts (docs/protocol.md#request-lifetime-relay).
    run_timeout: float = 0.0
    #: ``script.progress`` steps written to the audit chain, and those only counted (past
    #: :data:`MAX_AUDITED_STEPS`): a flood of steps can't flood the chain.
    steps_audited: int = 0
    steps_not_audited: int = 0
    #: Expired (or lost its agent) while its script may still run: its job is ``unknown``, its
    #: console was told; only its terminal reply or its agent's disconnect ends it now.
    orphaned: bool = False


class Router(Protocol):
    """What handlers need from routing; see :class:`InProcessRouter`."""

    def attach_agent(self, device_id: str, link: Link) -> Link | None: ...
    def detach_agent(self, device_id: str, link: Link) -> list[Route]: ...
    def agent(self, device_id: str) -> Link | None: ...
    def agents_online(self) -> int: ...
    @property
    def routes_in_flight(self) -> int: ...
    def forward(
        self,
        console: Link,
        request: Message,
        *,
        device_id: str,
        job_id: str,
        user: str,
        now: float,
        timeout: float,
    ) -> Route: ...
    def deliver(self, agent: Link, reply: Message, now: float) -> Route | None: ...
    def audit_step(self, route: Route) -> bool: ...
    @property
    def orphans(self) -> int: ...
    def expire(self, now: float) -> list[Route]: ...
    def detach_console(self, console: Link) -> list[Route]: ...
    def abandon(self, route: Route) -> None: ...


class InProcessRouter:
    """Routes within one relay process. Every method is synchronous and never waits."""

    def __init__(
        self,
        *,
        max_consent_timeout: float = MAX_CONSENT_TIMEOUT,
        max_run_timeout: float = MAX_RUN_TIMEOUT,
        max_orphans: int = MAX_ORPHANS,
        max_audited_steps: int = MAX_AUDITED_STEPS,
    ) -> None:
        self.max_consent_timeout = max_consent_timeout
        self.max_run_timeout = max_run_timeout
        self.max_audited_steps = max_audited_steps
        self.max_orphans = max_orphans
        self._agents: dict[str, Link] = {}
        #: (agent link, agent request id) → route; links hash by identity. Orphans included.
        self._routes: dict[tuple[Link, int], Route] = {}
        #: Orphaned routes, oldest first (a dict keeps insertion order; values unused).
        self._orphans: collections.OrderedDict[tuple[Link, int], None] = collections.OrderedDict()

    # --- presence -------------------------------------------------------------------------------

    def attach_agent(self, device_id: str, link: Link) -> Link | None:
        """Make ``link`` the device's connection; return the one it replaces, if any."""
        previous = self._agents.get(device_id)
        self._agents[device_id] = link
        return previous if previous is not link else None

    def detach_agent(self, device_id: str, link: Link) -> list[Route]:
        """Forget ``link`` (if still current) and return the routes sent on it, which can never
        finish now. Routes sent on a newer connection for the device are kept."""
        if self._agents.get(device_id) is link:
            del self._agents[device_id]
        lost = [route for route in self._routes.values() if route.agent is link]
        for route in lost:
            key = (link, route.agent_request_id)
            del self._routes[key]
            self._orphans.pop(key, None)
        return lost

    def agent(self, device_id: str) -> Link | None:
        return self._agents.get(device_id)

    def agents_online(self) -> int:
        return len(self._agents)

    @property
    def routes_in_flight(self) -> int:
        """Requests a console still waits for (orphans are not counted)."""
        return len(self._routes) - len(self._orphans)

    @property
    def orphans(self) -> int:
        """Expired script routes kept for their late outcome."""
        return len(self._orphans)

    # --- requests and replies ---------------------------------------------------------------------

    def forward(
        self,
        console: Link,
        request: Message,
        *,
        device_id: str,
        job_id: str,
        user: str,
        now: float,
        timeout: float,
    ) -> Route:
        """Send ``request`` to the device under a fresh id; OfflineError if it isn't connected,
        or its connection is closing or being replaced (its session no longer open).

        A script request carries ``job_id`` to a v3 agent, and never the console's own value.
        Raises whatever the agent link raises (LocalProtocolError, SlowConsumerError); the route
        is only recorded once the request is queued.
        """
        agent = self._agents.get(device_id)
        if agent is None or agent.session.state is not SessionState.OPEN:
            raise OfflineError(device_id)
        agent_request_id = agent.session.next_id()
        console_request_id: int = getattr(request, "id")  # noqa: B009 - requests have ids
        if request.TAG in RECONCILABLE:
            stamped = job_id if (agent.session.version or 0) >= 3 else None
            if getattr(request, "job_id", None) != stamped:
                request = dataclasses.replace(request, job_id=stamped)  # type: ignore[type-var]
        agent.send_nowait(request, agent_request_id)
        route = Route(
            device_id=device_id,
            agent=agent,
            agent_request_id=agent_request_id,
            console=console,
            console_request_id=console_request_id,
            tag=request.TAG,
            job_id=job_id,
            user=user,
            started_at=now,
            timeout=timeout,
            deadline=now + timeout,
        )
        self._routes[(agent, agent_request_id)] = route
        return route

    def deliver(self, agent: Link, reply: Message, now: float) -> Route | None:
        """Match a reply that came in on the link ``agent`` to its route; the caller sends it on
        to ``route.console`` under ``route.console_request_id``.

        The route is forgotten when the reply is terminal. Every other reply moves its deadline
        (docs/protocol.md#requests): the agent is alive and working; a ``verified`` step states
        the run timeout the agent will enforce (``run_timeout``, at most ``max_run_timeout``),
        held from ``script.started`` on; a ``consent_asked`` step holds it for the consent
        timeout it states (at most ``max_consent_timeout``) and then the run; each plus the
        route's own timeout. An orphaned route is returned too (``route.orphaned``): its console
        no longer waits, but its outcome still counts. None when nobody waits for the reply any
        more (the console left, or it timed out and was not a script).
        """
        agent_request_id: int = getattr(reply, "id")  # noqa: B009 - replies have ids
        key = (agent, agent_request_id)
        route = self._routes.get(key)
        if route is None:
            return None
        route.replies += 1
        if reply.TERMINAL:
            del self._routes[key]
            self._orphans.pop(key, None)
        elif not route.orphaned:
            deadline = now + route.timeout
            if isinstance(reply, ScriptProgress):
                if reply.step == "verified":
                    if "run_timeout" in reply.detail:
                        stated = reply.detail["run_timeout"]
                        route.run_timeout = _bounded(stated, self.max_run_timeout)
                    deadline += route.run_timeout
                elif reply.step == "consent_asked":
                    consent = _bounded(reply.detail.get("timeout"), self.max_consent_timeout)
                    deadline += consent + route.run_timeout
            elif isinstance(reply, ScriptStarted):
                deadline += route.run_timeout
            if deadline > route.deadline:
                route.deadline = deadline
        return route

    def audit_step(self, route: Route) -> bool:
        """Whether the next ``script.progress`` step of ``route`` goes into the audit chain; past
        ``max_audited_steps`` it is only counted (``route.steps_not_audited``)."""
        if route.steps_audited < self.max_audited_steps:
            route.steps_audited += 1
            return True
        route.steps_not_audited += 1
        return False

    def expire(self, now: float) -> list[Route]:
        """Remove and return the routes past their deadline; the caller tells both sides.

        A script route (:data:`RECONCILABLE`) is not forgotten but orphaned (``route.orphaned``):
        its late outcome still finds it. Past ``max_orphans`` the oldest orphan is dropped.
        """
        late = [
            route for route in self._routes.values() if route.deadline <= now and not route.orphaned
        ]
        for route in late:
            if route.tag in RECONCILABLE:
                self._orphan(route)
            else:
                self._drop(route)
        return late

    def _orphan(self, route: Route) -> None:
        key = (route.agent, route.agent_request_id)
        route.orphaned = True
        route.deadline = math.inf
        self._orphans[key] = None
        while len(self._orphans) > self.max_orphans:
            oldest, _ = self._orphans.popitem(last=False)
            self._drop(self._routes[oldest])

    def detach_console(self, console: Link) -> list[Route]:
        """A console left: its routes are returned for the caller to end. A script route
        (:data:`RECONCILABLE`) is orphaned, not dropped: the agent runs on regardless, and its
        outcome still finds the job; other routes are dropped and late replies discarded."""
        gone = [r for r in self._routes.values() if r.console is console and not r.orphaned]
        for route in gone:
            if route.tag in RECONCILABLE:
                self._orphan(route)
            else:
                self._drop(route)
        return gone

    def abandon(self, route: Route) -> None:
        """Stop forwarding ``route``'s replies before its end (one could not reach its console):
        a script route is orphaned (its end still reconciles the job), others dropped."""
        if (route.agent, route.agent_request_id) not in self._routes or route.orphaned:
            return
        if route.tag in RECONCILABLE:
            self._orphan(route)
        else:
            self._drop(route)

    def _drop(self, route: Route) -> None:
        """Forget ``route`` before its reply; its own link then drops a late reply quietly."""
        del self._routes[(route.agent, route.agent_request_id)]
        route.agent.session.abandon(route.agent_request_id)


def _bounded(stated: object, limit: float) -> float:
    """A wait an agent states, within 0 … ``limit``; ``limit`` if it isn't a finite number."""
    if type(stated) not in (int, float) or not math.isfinite(stated):  # type: ignore[arg-type]
        return limit
    return min(max(float(stated), 0.0), limit)  # type: ignore[arg-type]


def error_reply(route: Route, code: str, message: str) -> ErrorReply:
    """The console-side error ending ``route``."""
    return ErrorReply(id=route.console_request_id, code=code, message=message)


#: Reply fields the relay owns: taken from the route, whatever the agent wrote there.
RELAY_OWNED_FIELDS = ("device_id", "job_id")


#: Error codes that are the relay's word (or a result's), never an agent's: an agent's error
#: reply with one becomes ``agent_error``, so a till can't pass its failure off as "ok",
#: "offline" or "succeeded" in a store-wide answer (outside attack 16, F1).
RELAY_CODES = frozenset(
    {
        "ok",
        "info",
        "succeeded",
        "offline",
        "timeout",
        "unavailable",
        "outcome_unknown",
        "too_big",
        "console_gone",
        "handed_over",
        "rate_limited",
        "truncated",
    }
)
AGENT_ERROR = "agent_error"


def relay_owned(reply: Message, route: Route) -> Message:
    """``reply`` with the fields the relay owns (:data:`RELAY_OWNED_FIELDS`) set from ``route``:
    a console sees the device and job it asked about, never an agent's claim of another
    (docs/protocol.md#requests), nor an error code of :data:`RELAY_CODES` from an agent.
    ``reply`` itself when they already agree (the common case)."""
    if type(reply) is ErrorReply and reply.code in RELAY_CODES:
        reply = dataclasses.replace(
            reply, code=AGENT_ERROR, message=f"{reply.code}: {reply.message}"[:1024]
        )
    names = _OWNED_BY_TYPE.get(type(reply))
    if names is None:  # once per message type
        names = tuple(name for name in RELAY_OWNED_FIELDS if name in reply.FIELDS)
        _OWNED_BY_TYPE[type(reply)] = names
    for name in names:
        if getattr(reply, name) != getattr(route, name):
            break
    else:
        return reply  # the common case: the agent wrote what the relay owns
    changes = {name: getattr(route, name) for name in names}
    return dataclasses.replace(reply, **changes)  # type: ignore[type-var]


#: Message type → the fields of :data:`RELAY_OWNED_FIELDS` it has (replies are on the hot path).
_OWNED_BY_TYPE: dict[type[Message], tuple[str, ...]] = {}
