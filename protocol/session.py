"""The sans-I/O Session: frames in, events out, messages in, frames out; no sockets, no clock.

Like h11 and the websockets core: the I/O layer feeds ``receive_data`` one websocket frame at a
time, reads ``events_received()``, calls ``send_*`` and writes ``data_to_send()``.
"""

from __future__ import annotations

import collections
from typing import Deque, Dict, List, Optional, Tuple

from .codec import Codec
from .errors import (
    LocalProtocolError,
    ProtocolError,
    TooManyRequests,
    UnexpectedMessage,
    UnknownReply,
    UnsupportedVersion,
)
from .messages import (
    AuthAccepted,
    AuthChallenge,
    AuthRefused,
    AuthResponse,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Kind,
    Message,
    TokenAuth,
    Welcome,
)
from .states import (
    OPEN_SENDERS,
    REPLIES,
    SUPPORTED_VERSIONS,
    TRANSITIONS,
    Direction,
    Role,
    SessionState,
    open_tags,
)

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "SILENCE_FACTOR", "Session"]

DEFAULT_MAX_IN_FLIGHT = 256
#: The peer is gone when nothing at all (a frame, a ping, a pong) arrived for this many heartbeat
#: intervals (docs/protocol.md#liveness). Heartbeats go out every interval and are answered at
#: once, so a live peer is heard from about once an interval; 1.5 leaves half an interval for a
#: slow round trip, and a black-holed peer is noticed within 1.5 intervals of its last frame.
SILENCE_FACTOR = 1.5
#: How many abandoned request ids are remembered so that late replies are dropped quietly.
MAX_ABANDONED = 1024

_DEFAULT_CODEC = Codec()


class Session:
    """One end of one connection: agent↔relay or console↔relay, from ``role``'s side."""

    # A relay holds one per connected till: slots, not a dict each (docs/relay.md#memory).
    __slots__ = (
        "_abandoned",
        "_abandoned_order",
        "_events",
        "_heartbeat_at",
        "_incoming",
        "_next_id",
        "_out",
        "_outgoing",
        "_received_at",
        "_receives",
        "_sends",
        "codec",
        "error",
        "heartbeat_interval",
        "max_in_flight",
        "peer_hello",
        "peer_welcome",
        "role",
        "state",
        "version",
        "versions",
    )

    def __init__(
        self,
        role: Role,
        *,
        codec: Optional[Codec] = None,
        versions: Tuple[int, ...] = SUPPORTED_VERSIONS,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.role = role
        self.codec = codec or _DEFAULT_CODEC
        self.versions = versions
        self.max_in_flight = max_in_flight
        self.state = SessionState.IDLE
        #: The negotiated protocol version, once Hello/Welcome are through.
        self.version: Optional[int] = None
        #: The peer's Hello (relay side) or Welcome (client side).
        self.peer_hello: Optional[Hello] = None
        self.peer_welcome: Optional[Welcome] = None
        #: The error that closed the session, if one did.
        self.error: Optional[ProtocolError] = None
        self._sends, self._receives = OPEN_SENDERS[role]
        self._events: List[Message] = []
        self._out: List[bytes] = []
        self._next_id = 1
        # request id → request tag, for requests we sent and requests we must answer
        self._outgoing: Dict[int, str] = {}
        self._incoming: Dict[int, str] = {}
        self._abandoned: Dict[int, str] = {}
        # Made at the first abandoned request: an empty deque is 760 bytes, per connection.
        self._abandoned_order: Optional[Deque[int]] = None
        #: Seconds between heartbeats once the session is open: what ``auth.accepted`` said.
        self.heartbeat_interval: Optional[float] = None
        # Liveness times, on whatever clock the I/O layer passes as ``now`` (monotonic).
        self._received_at: Optional[float] = None
        self._heartbeat_at: Optional[float] = None

    # --- liveness (docs/protocol.md#liveness): pure queries on times the I/O layer reports --------

    def data_received(self, now: float) -> None:
        """Note that something (a frame, a ping, a pong) arrived from the peer at ``now``."""
        self._received_at = now

    @property
    def peer_silent_since(self) -> Optional[float]:
        """When the last traffic of any kind arrived from the peer (None: nothing yet)."""
        return self._received_at

    def silence_deadline(self) -> Optional[float]:
        """When the peer counts as gone unless something arrives first (None: not open yet).

        ``peer_silent_since + SILENCE_FACTOR × heartbeat_interval``; any traffic moves it.
        """
        if self.heartbeat_interval is None or self._received_at is None:
            return None
        return self._received_at + SILENCE_FACTOR * self.heartbeat_interval

    def peer_silent(self, now: float) -> bool:
        """Whether the silence deadline has passed at ``now``."""
        deadline = self.silence_deadline()
        return deadline is not None and now >= deadline

    def next_heartbeat_at(self) -> Optional[float]:
        """When our next heartbeat is due: one interval after the last (or after opening)."""
        if self.heartbeat_interval is None or self._heartbeat_at is None:
            return None
        return self._heartbeat_at + self.heartbeat_interval

    def heartbeat_due(self, now: float) -> bool:
        """Whether a heartbeat should be sent at ``now`` (only while open)."""
        due = self.next_heartbeat_at()
        return due is not None and self.state is SessionState.OPEN and now >= due

    def _opened(self, heartbeat_interval: float) -> None:
        # The heartbeat clock starts at the last traffic: the auth frame just handled.
        self.heartbeat_interval = heartbeat_interval
        self._heartbeat_at = self._received_at

    # --- the sans-I/O verbs -------------------------------------------------------------------

    def receive_data(self, frame: bytes) -> None:
        """Take one frame from the peer. Raises RemoteProtocolError (and closes) on bad input."""
        if self.state is SessionState.CLOSED:
            raise UnexpectedMessage("frame received after the session closed")
        try:
            msg = self.codec.decode(frame)
            if self.state is SessionState.OPEN:
                if self._check_receive(msg):  # False: a late reply, dropped quietly
                    self._events.append(msg)
            else:
                self._handshake_received(msg)
                self._events.append(msg)
        except ProtocolError as exc:
            self.state = SessionState.CLOSED
            self.error = exc
            raise

    def events_received(self) -> List[Message]:
        """The messages received since the last call, in order."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> List[bytes]:
        """Frames to write to the websocket, in order, since the last call."""
        out, self._out = self._out, []
        return out

    def send(self, msg: Message) -> None:
        """Queue ``msg``; LocalProtocolError if it is illegal now (the session stays as it was)."""
        if self.state is SessionState.CLOSED:
            raise LocalProtocolError(f"cannot send {msg.TAG} on a closed session")
        frame = self.codec.encode(msg)  # first, so that a message too big changes nothing
        if self.state is SessionState.OPEN:
            self._check_send(msg, None)
        else:
            self.state = self._handshake_step(msg, Direction.SEND)
        self._out.append(frame)

    def send_with_id(self, msg: Message, request_id: int) -> None:
        """Queue ``msg`` under another request id: ``send(msg.with_id(request_id))``, no copy.

        What a relay does with each request and reply it forwards (the session must be open);
        LocalProtocolError as for ``send`` (the session stays as it was).
        """
        if self.state is not SessionState.OPEN:
            raise LocalProtocolError(f"cannot forward {msg.TAG} in state {self.state.name}")
        frame = self.codec.encode_with_id(msg, request_id)
        self._check_send(msg, request_id)
        self._out.append(frame)

    def close(self) -> None:
        """Mark the session closed; nothing more is sent or accepted."""
        self.state = SessionState.CLOSED

    # --- helpers for each handshake step ------------------------------------------------------

    def next_id(self) -> int:
        """A fresh request id for this session."""
        request_id = self._next_id
        self._next_id += 1
        return request_id

    def send_hello(self, software: str) -> None:
        self.send(Hello(role=self.role.client_role, versions=self.versions, software=software))

    def send_welcome(self, relay_id: str, software: str) -> None:
        assert self.version is not None  # set when the Hello was received
        self.send(Welcome(version=self.version, relay_id=relay_id, software=software))

    def send_challenge(self, nonce: bytes) -> None:
        self.send(AuthChallenge(nonce=nonce))

    def send_auth_response(self, device_id: str, signature: bytes) -> None:
        self.send(AuthResponse(device_id=device_id, signature=signature))

    def send_token(self, token: str) -> None:
        self.send(TokenAuth(token=token))

    def send_accepted(self, principal: str, heartbeat_interval: float) -> None:
        self.send(AuthAccepted(principal=principal, heartbeat_interval=heartbeat_interval))
        self._opened(heartbeat_interval)

    def send_refused(self, code: str) -> None:
        self.send(AuthRefused(code=code))

    def send_heartbeat(self, seq: int, now: float, sent_at: Optional[float] = None) -> None:
        """Queue a heartbeat stamped ``sent_at`` (default ``now``); ``now``, on the liveness
        clock, starts the next interval (docs/protocol.md#liveness)."""
        self.send(Heartbeat(seq=seq, sent_at=now if sent_at is None else sent_at))
        self._heartbeat_at = now

    def send_heartbeat_ack(self, heartbeat: Heartbeat, now: float) -> None:
        self.send(HeartbeatAck(seq=heartbeat.seq, sent_at=heartbeat.sent_at, received_at=now))

    # --- requests in flight ---------------------------------------------------------------------

    def abandon(self, request_id: int) -> None:
        """Give up on a request we sent (it timed out): a late reply is then dropped quietly."""
        tag = self._outgoing.pop(request_id, None)
        if tag is None:
            return
        self._abandoned[request_id] = tag
        order = self._abandoned_order
        if order is None:
            order = self._abandoned_order = collections.deque()
        order.append(request_id)
        while len(order) > MAX_ABANDONED:
            self._abandoned.pop(order.popleft(), None)

    @property
    def requests_in_flight(self) -> int:
        """Requests we sent that have not had their final reply."""
        return len(self._outgoing)

    @property
    def requests_to_answer(self) -> int:
        """Requests the peer sent that we have not finished answering."""
        return len(self._incoming)

    # --- internals ------------------------------------------------------------------------------

    def _handshake_received(self, msg: Message) -> None:
        """Apply a received handshake message to the state."""
        self.state = self._handshake_step(msg, Direction.RECEIVE)
        if isinstance(msg, Hello):
            self._receive_hello(msg)
        elif isinstance(msg, Welcome):
            if msg.version not in self.versions:
                raise UnsupportedVersion(f"relay chose version {msg.version}")
            self._negotiated(msg.version)
            self.peer_welcome = msg
        elif isinstance(msg, AuthAccepted):
            self._opened(msg.heartbeat_interval)

    def _receive_hello(self, hello: Hello) -> None:
        if hello.role != self.role.client_role:
            raise UnexpectedMessage(f"a {hello.role} said hello on the {self.role.name} endpoint")
        common = set(hello.versions) & set(self.versions)
        if not common:
            raise UnsupportedVersion(f"peer speaks {hello.versions[:8]}")
        self._negotiated(max(common))
        self.peer_hello = hello

    def _negotiated(self, version: int) -> None:
        self.version = version
        # What may pass once open, in this version: one set lookup per message, not two.
        self._sends, self._receives = open_tags(self.role, version)

    def _handshake_step(self, msg: Message, direction: Direction) -> SessionState:
        after = TRANSITIONS.get((self.role, self.state, direction, msg.TAG))
        if after is None:
            what = f"{msg.TAG} in state {self.state.name} for {self.role.name}"
            if direction is Direction.SEND:
                raise LocalProtocolError(f"cannot send {what}")
            raise UnexpectedMessage(f"received {what}")
        return after

    def _check_send(self, msg: Message, request_id: Optional[int]) -> None:
        if msg.TAG not in self._sends:
            raise LocalProtocolError(self._not_allowed(msg.TAG, Direction.SEND))
        kind = msg.KIND
        if kind is Kind.REQUEST:
            self._track_request(msg, self._outgoing, True, request_id)
        elif kind is Kind.REPLY:
            self._track_reply(msg, self._incoming, True, request_id)

    def _check_receive(self, msg: Message) -> bool:
        if msg.TAG not in self._receives:
            raise UnexpectedMessage(self._not_allowed(msg.TAG, Direction.RECEIVE))
        kind = msg.KIND
        if kind is Kind.REQUEST:
            self._track_request(msg, self._incoming, False, None)
        elif kind is Kind.REPLY:
            return self._track_reply(msg, self._outgoing, False, None)
        return True

    def _not_allowed(self, tag: str, direction: Direction) -> str:
        """Why an open session may not carry ``tag`` this way: its role never may, or only a
        later protocol version than the one negotiated (docs/protocol.md#versions)."""
        sending = direction is Direction.SEND
        if tag in OPEN_SENDERS[self.role][0 if sending else 1]:
            what = "cannot send" if sending else "received"
            return f"{what} {tag} in protocol version {self.version}"
        return f"{self.role.name} may not {'send' if sending else 'receive'} {tag}"

    def _track_request(
        self, msg: Message, table: Dict[int, str], sending: bool, request_id: Optional[int]
    ) -> None:
        if request_id is None:
            request_id = getattr(msg, "id")  # noqa: B009 - every REQUEST has an id
        if request_id in table:
            if sending:
                raise LocalProtocolError(f"request id {request_id} is already in flight")
            raise UnexpectedMessage(f"request id {request_id} is already in flight")
        if len(table) >= self.max_in_flight:
            if sending:
                raise LocalProtocolError(f"{len(table)} requests already in flight")
            raise TooManyRequests(f"peer has {len(table)} requests in flight")
        table[request_id] = msg.TAG

    def _track_reply(
        self, msg: Message, table: Dict[int, str], sending: bool, request_id: Optional[int]
    ) -> bool:
        if request_id is None:
            request_id = getattr(msg, "id")  # noqa: B009 - every REPLY has an id
        request_tag = table.get(request_id)
        if request_tag is None and not sending and request_id in self._abandoned:
            if msg.TERMINAL:
                del self._abandoned[request_id]
            return False
        if request_tag is None or msg.TAG not in REPLIES[request_tag]:
            what = f"{msg.TAG} for request id {request_id} ({request_tag or 'none in flight'})"
            if sending:
                raise LocalProtocolError(f"cannot send {what}")
            raise UnknownReply(f"received {what}")
        if msg.TERMINAL:
            del table[request_id]
        return True
