"""Routing between consoles and agents, behind a small interface; this is the in-process one.

It knows nothing of aiohttp or SQL: links are anything with ``session`` and ``send_nowait``. A
multi-node router (PostgreSQL + Redis or NATS) implements the same :class:`Router` protocol.

A route belongs to the agent link it was sent on: agent request ids come from that link's own
session (every connection counts from 1), so a newer connection for the same device can reuse an
id still in flight on the one it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from posassist.protocol import ErrorReply, Message, PosAssistError
from posassist.protocol.messages import ScriptOutput, ScriptStarted

if TYPE_CHECKING:
    from posassist.protocol import Session

__all__ = ["InProcessRouter", "Link", "OfflineError", "Route", "Router"]


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
    extra: dict[str, object] = field(default_factory=dict)


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
    def expire(self, now: float) -> list[Route]: ...
    def detach_console(self, console: Link) -> list[Route]: ...


class InProcessRouter:
    """Routes within one relay process. Every method is synchronous and never waits."""

    def __init__(self) -> None:
        self._agents: dict[str, Link] = {}
        #: (agent link, agent request id) → route; links hash by identity.
        self._routes: dict[tuple[Link, int], Route] = {}

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
            del self._routes[(link, route.agent_request_id)]
        return lost

    def agent(self, device_id: str) -> Link | None:
        return self._agents.get(device_id)

    def agents_online(self) -> int:
        return len(self._agents)

    @property
    def routes_in_flight(self) -> int:
        return len(self._routes)

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
        """Send ``request`` to the device under a fresh id; OfflineError if it isn't connected.

        Raises whatever the agent link raises (LocalProtocolError, SlowConsumerError); the route
        is only recorded once the request is queued.
        """
        agent = self._agents.get(device_id)
        if agent is None:
            raise OfflineError(device_id)
        agent_request_id = agent.session.next_id()
        console_request_id: int = getattr(request, "id")  # noqa: B009 - requests have ids
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

        The route is forgotten when the reply is terminal. None when nobody waits for the reply
        any more (the console left, or it timed out).
        """
        agent_request_id: int = getattr(reply, "id")  # noqa: B009 - replies have ids
        route = self._routes.get((agent, agent_request_id))
        if route is None:
            return None
        route.replies += 1
        if reply.TERMINAL:
            del self._routes[(agent, agent_request_id)]
        elif isinstance(reply, ScriptStarted | ScriptOutput):
            route.deadline = now + route.timeout  # progress: the agent is alive and working
        return route

    def expire(self, now: float) -> list[Route]:
        """Remove and return the routes past their deadline; the caller tells both sides."""
        late = [route for route in self._routes.values() if route.deadline <= now]
        for route in late:
            self._drop(route)
        return late

    def detach_console(self, console: Link) -> list[Route]:
        """A console left: its routes are dropped; late replies from agents are discarded."""
        gone = [r for r in self._routes.values() if r.console is console]
        for route in gone:
            self._drop(route)
        return gone

    def _drop(self, route: Route) -> None:
        """Forget ``route`` before its reply; its own link then drops a late reply quietly."""
        del self._routes[(route.agent, route.agent_request_id)]
        route.agent.session.abandon(route.agent_request_id)


def error_reply(route: Route, code: str, message: str) -> ErrorReply:
    """The console-side error ending ``route``."""
    return ErrorReply(id=route.console_request_id, code=code, message=message)
