"""Session states and the one transition table of the posassist protocol.

docs/protocol.md#handshake draws the flows; docs/protocol.md#requests lists who may send what.
"""

from __future__ import annotations

import enum
from typing import Dict, FrozenSet, Tuple

__all__ = [
    "OPEN_SENDERS",
    "REPLIES",
    "SINCE_VERSION",
    "SUPPORTED_VERSIONS",
    "TRANSITIONS",
    "Direction",
    "Role",
    "SessionState",
    "open_tags",
]

#: Protocol versions this code speaks, oldest first (docs/protocol.md#versions).
SUPPORTED_VERSIONS: Tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
#: Tags that a session may carry only from this version on; every other tag is in version 1.
#: A peer that speaks only version 1 would refuse them as unknown (docs/protocol.md#versions).
SINCE_VERSION: Dict[str, int] = {
    "agent.facts": 2,
    "device.handed_over": 7,
    "device.handover": 7,
    "job.query": 3,
    "job.results": 3,
    "policy.updated": 5,
    "ticket.reply": 6,
    "ticket.replied": 6,
    "script.cancel": 7,
}


class Role(enum.IntEnum):
    """Which end of which connection a Session drives."""

    AGENT = 1
    RELAY_FOR_AGENT = 2
    CONSOLE = 3
    RELAY_FOR_CONSOLE = 4

    @property
    def is_relay(self) -> bool:
        return self in (Role.RELAY_FOR_AGENT, Role.RELAY_FOR_CONSOLE)

    @property
    def client_role(self) -> str:
        """The ``Hello.role`` a client of this pair announces."""
        return "agent" if self in (Role.AGENT, Role.RELAY_FOR_AGENT) else "console"


class SessionState(enum.IntEnum):
    """States of a Session, in the order a successful handshake passes them."""

    IDLE = 0
    HELLO = 1
    WELCOMED = 2
    CHALLENGED = 3
    AUTHENTICATING = 4
    OPEN = 5
    CLOSED = 6


class Direction(enum.IntEnum):
    SEND = 0
    RECEIVE = 1


_S = SessionState
_CLIENT_FLOWS: Dict[str, Tuple[Tuple[SessionState, bool, str, SessionState], ...]] = {
    # (state, client sends?, tag, next state), from the client's point of view.
    "agent": (
        (_S.IDLE, True, "hello", _S.HELLO),
        (_S.HELLO, False, "welcome", _S.WELCOMED),
        (_S.WELCOMED, False, "auth.challenge", _S.CHALLENGED),
        (_S.CHALLENGED, True, "auth.response", _S.AUTHENTICATING),
        (_S.AUTHENTICATING, False, "auth.accepted", _S.OPEN),
        (_S.AUTHENTICATING, False, "auth.refused", _S.CLOSED),
    ),
    "console": (
        (_S.IDLE, True, "hello", _S.HELLO),
        (_S.HELLO, False, "welcome", _S.WELCOMED),
        (_S.WELCOMED, True, "auth.token", _S.AUTHENTICATING),
        (_S.AUTHENTICATING, False, "auth.accepted", _S.OPEN),
        (_S.AUTHENTICATING, False, "auth.refused", _S.CLOSED),
    ),
}


def _build_transitions() -> Dict[Tuple[Role, SessionState, Direction, str], SessionState]:
    table: Dict[Tuple[Role, SessionState, Direction, str], SessionState] = {}
    pairs = {
        "agent": (Role.AGENT, Role.RELAY_FOR_AGENT),
        "console": (Role.CONSOLE, Role.RELAY_FOR_CONSOLE),
    }
    for flow, (client, relay) in pairs.items():
        for state, client_sends, tag, after in _CLIENT_FLOWS[flow]:
            client_dir = Direction.SEND if client_sends else Direction.RECEIVE
            relay_dir = Direction.RECEIVE if client_sends else Direction.SEND
            table[(client, state, client_dir, tag)] = after
            table[(relay, state, relay_dir, tag)] = after
    return table


#: (role, state, direction, tag) → next state, for every handshake step.
TRANSITIONS = _build_transitions()

_BOTH = frozenset({"heartbeat", "heartbeat.ack", "error"})
_AGENT_SENDS = _BOTH | {
    "agent.facts",
    "diag.report",
    "script.started",
    "script.progress",
    "script.output",
    "script.finished",
    "alert.raised",
    "help.requested",
    "ticket.query",
    "ticket.rate",
    "ticket.reply",
    "consent.answer",
    "job.results",
    "device.handover",
}
_RELAY_SENDS_AGENT = _BOTH | {
    "diag.request",
    "script.run",
    "script.restore",
    "alert.ack",
    "ticket.opened",
    "ticket.updated",
    "ticket.list",
    "ticket.rated",
    "ticket.replied",
    "consent.request",
    "job.query",
    "policy.updated",
    "device.handed_over",
    "script.cancel",
}
_CONSOLE_SENDS = _BOTH | {"diag.request", "script.run", "script.restore"}
_RELAY_SENDS_CONSOLE = _BOTH | {
    "diag.report",
    "script.started",
    "script.progress",
    "script.output",
    "script.finished",
    "ticket.updated",
}

#: role → (tags it may send once open, tags it may receive once open).
OPEN_SENDERS: Dict[Role, Tuple[FrozenSet[str], FrozenSet[str]]] = {
    Role.AGENT: (_AGENT_SENDS, _RELAY_SENDS_AGENT),
    Role.RELAY_FOR_AGENT: (_RELAY_SENDS_AGENT, _AGENT_SENDS),
    Role.CONSOLE: (_CONSOLE_SENDS, _RELAY_SENDS_CONSOLE),
    Role.RELAY_FOR_CONSOLE: (_RELAY_SENDS_CONSOLE, _CONSOLE_SENDS),
}

#: request tag → reply tags that may answer it (``error`` answers any request).
REPLIES: Dict[str, FrozenSet[str]] = {
    "diag.request": frozenset({"diag.report", "error"}),
    "script.run": frozenset(
        {"script.started", "script.progress", "script.output", "script.finished", "error"}
    ),
    "script.restore": frozenset({"script.progress", "script.finished", "error"}),
    "alert.raised": frozenset({"alert.ack", "error"}),
    "help.requested": frozenset({"ticket.opened", "error"}),
    "ticket.query": frozenset({"ticket.list", "error"}),
    "ticket.rate": frozenset({"ticket.rated", "error"}),
    "ticket.reply": frozenset({"ticket.replied", "error"}),
    "consent.request": frozenset({"consent.answer", "error"}),
    "job.query": frozenset({"job.results", "error"}),
    "device.handover": frozenset({"device.handed_over", "error"}),
    "script.cancel": frozenset({"script.finished", "error"}),
}


_OPEN_TAGS: Dict[Tuple[Role, int], Tuple[FrozenSet[str], FrozenSet[str]]] = {}


def open_tags(role: Role, version: int) -> Tuple[FrozenSet[str], FrozenSet[str]]:
    """:data:`OPEN_SENDERS` of ``role`` less the tags newer than ``version``
    (:data:`SINCE_VERSION`): what an open session of that version may send and receive. One
    pair of sets per role and version, shared by every session."""
    tags = _OPEN_TAGS.get((role, version))
    if tags is None:
        sends, receives = OPEN_SENDERS[role]
        newer = frozenset(tag for tag, since in SINCE_VERSION.items() if since > version)
        tags = _OPEN_TAGS[(role, version)] = (sends - newer, receives - newer)
    return tags
