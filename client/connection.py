"""The one websocket driver of the agent and the console: a protocol.Session over websockets.

Python 3.8-compatible. Connect (TLS pin checked before the first protocol byte), handshake with a
pluggable authentication step, then heartbeats out, answers in, and a peer that stays silent past
``Session.silence_deadline()`` closed with :class:`PeerSilentError` (docs/protocol.md#liveness).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Dict,
    List,
    Optional,
    Set,
    Tuple,
)

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from posassist.protocol import (
    AuthAccepted,
    AuthRefused,
    Heartbeat,
    HeartbeatAck,
    Message,
    PeerSilentError,
    Role,
    Session,
)
from posassist.protocol.errors import ProtocolError

from .errors import ClosedByUsError, RelayRefusedError
from .tlspin import check_pin, client_ssl_context_for_pin

if TYPE_CHECKING:
    import ssl

__all__ = [
    "MAX_FRAME",
    "Authenticate",
    "Connection",
    "open_connection",
]

log = logging.getLogger("posassist.client")

#: The protocol's frame limit (docs/protocol.md#limits).
MAX_FRAME = 1024 * 1024
#: Replies of one request waiting for their reader; past it the reader waits (backpressure).
MAX_QUEUED_REPLIES = 64

#: The authentication step: called with the session and each handshake message the relay sends
#: (``welcome``, then ``auth.challenge`` for agents); it queues our answer on the session.
Authenticate = Callable[[Session, Message], None]


def _monotonic() -> float:
    return time.monotonic()


class Connection:
    """One open, authenticated websocket to the relay, driven through its ``Session``.

    Incoming traffic is read by one task: every frame moves the silence deadline; heartbeats are
    answered, acks handed to ``on_heartbeat_ack``, replies to requests sent with :meth:`request`
    routed by id, and anything else given to ``on_message`` (or dropped if there is none).
    A second task sends heartbeats when due and ends the connection when the peer falls silent.
    :meth:`wait_closed` returns the error that ended it.
    """

    def __init__(
        self,
        ws: ClientConnection,
        session: Session,
        *,
        on_message: Optional[Callable[[Message], None]] = None,
        on_heartbeat_ack: Optional[Callable[[HeartbeatAck], None]] = None,
        clock: Callable[[], float] = _monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.ws = ws
        self.session = session
        self.on_message = on_message
        self.on_heartbeat_ack = on_heartbeat_ack
        self._clock = clock
        self._wall_clock = wall_clock
        self._send_lock = asyncio.Lock()
        self._replies: Dict[int, asyncio.Queue[Message]] = {}
        self._tasks: List[asyncio.Future[None]] = []
        self._closed: asyncio.Future[BaseException] = asyncio.get_event_loop().create_future()
        self._heartbeat_seq = 0

    # --- handshake -----------------------------------------------------------------------------

    async def _next_messages(self, deadline: float) -> List[Message]:
        while True:
            left = deadline - self._clock()
            if left <= 0:
                raise asyncio.TimeoutError()
            frame = await asyncio.wait_for(self.ws.recv(), left)
            self._take(frame)
            events = self.session.events_received()
            if events:
                return events

    async def handshake(self, software: str, authenticate: Authenticate, timeout: float) -> None:
        """Hello, then the relay's steps answered by ``authenticate``, until accepted.

        RelayRefusedError on ``auth.refused``; asyncio.TimeoutError past ``timeout``.
        """
        deadline = self._clock() + timeout
        self.session.send_hello(software)
        await self.flush()
        while True:
            for msg in await self._next_messages(deadline):
                if isinstance(msg, AuthRefused):
                    raise RelayRefusedError(msg.code)
                if isinstance(msg, AuthAccepted):
                    return
                authenticate(self.session, msg)
            await self.flush()

    # --- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start reading and heartbeats (after the handshake)."""
        self._tasks = [
            asyncio.ensure_future(self._read_loop()),
            asyncio.ensure_future(self._keepalive_loop()),
        ]

    async def wait_closed(self) -> BaseException:
        """Wait until the connection ends; the reason (ConnectionClosed, PeerSilentError…)."""
        return await asyncio.shield(self._closed)

    async def aclose(self) -> None:
        """Stop the tasks and close the websocket (normal closure)."""
        self._end(ClosedByUsError())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ws.close()

    def _end(self, reason: BaseException) -> None:
        if not self._closed.done():
            self._closed.set_result(reason)
            self.session.close()

    async def _read_loop(self) -> None:
        try:
            while True:
                frame = await self.ws.recv()
                self._take(frame)
                for msg in self.session.events_received():
                    await self._dispatch(msg)
                await self.flush()
        except ProtocolError as exc:
            log.warning("closing: %s (%s)", exc.public_reason, exc)
            self._end(exc)
            with contextlib.suppress(ConnectionClosed):
                await self.ws.close(exc.close_code, exc.public_reason)
        except ConnectionClosed as exc:
            self._end(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a callback: end the connection, say why
            log.exception("connection handler failed")
            self._end(exc)
            self.ws.transport.abort()

    def _take(self, frame: object) -> None:
        """One frame from the peer into the session; it moves the silence deadline."""
        self.session.data_received(self._clock())
        data = frame.encode("utf-8") if isinstance(frame, str) else frame  # text is refused
        assert isinstance(data, bytes)
        self.session.receive_data(data)

    async def _dispatch(self, msg: Message) -> None:
        if isinstance(msg, Heartbeat):
            self.session.send_heartbeat_ack(msg, self._wall_clock())
            return
        if isinstance(msg, HeartbeatAck):
            if self.on_heartbeat_ack is not None:
                self.on_heartbeat_ack(msg)
            return
        request_id = getattr(msg, "id", None)
        queue = self._replies.get(request_id) if isinstance(request_id, int) else None
        if queue is not None and not _is_request(msg):
            await queue.put(msg)  # bounded: a slow reader slows the connection, never grows it
        elif self.on_message is not None:
            self.on_message(msg)

    async def _keepalive_loop(self) -> None:
        session = self.session
        try:
            while True:
                now = self._clock()
                self._check_silence(now)
                if session.heartbeat_due(now):
                    session.send_heartbeat(self._heartbeat_seq, now, self._wall_clock())
                    self._heartbeat_seq += 1
                    await self._flush_unless_silent()
                wake = min(
                    session.silence_deadline() or now + 1.0,
                    session.next_heartbeat_at() or now + 1.0,
                )
                await asyncio.sleep(max(0.0, wake - self._clock()))
        except PeerSilentError as exc:
            log.warning("%s", exc)
            self._end(exc)
            # A silent peer reads nothing, so no closing handshake: drop the TCP connection.
            self.ws.transport.abort()
        except ConnectionClosed as exc:
            self._end(exc)

    def _check_silence(self, now: float) -> None:
        session = self.session
        if session.peer_silent(now):
            since = session.peer_silent_since or now
            raise PeerSilentError(
                f"nothing from the relay for {now - since:.1f} s"
                f" (heartbeat {session.heartbeat_interval} s)"
            )

    async def _flush_unless_silent(self) -> None:
        """Flush, but a write stuck on a silent peer (full buffers) must not stop the watch."""
        flushing = asyncio.ensure_future(self.flush())
        flushing.add_done_callback(_retrieve)
        while not flushing.done():
            deadline = self.session.silence_deadline()
            left = None if deadline is None else max(0.0, deadline - self._clock())
            await asyncio.wait({flushing}, timeout=left)
            if not flushing.done():
                self._check_silence(self._clock())
        flushing.result()

    # --- sending -------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write what the session has queued, in order (one writer at a time)."""
        async with self._send_lock:
            for frame in self.session.data_to_send():
                await self.ws.send(frame)

    async def send(self, msg: Message) -> None:
        """Queue ``msg`` on the session and write it; LocalProtocolError if illegal now, or the
        error that ended the connection if it has ended."""
        if self._closed.done():
            raise self._closed.result()
        self.session.send(msg)
        await self.flush()

    async def request(self, msg: Message, timeout: float) -> AsyncGenerator[Message, None]:
        """Send a request and yield its replies until the terminal one (``error`` included).

        Each reply must come within ``timeout`` seconds of the last (asyncio.TimeoutError; the
        request is then abandoned). Traffic for other requests and events is not yielded.
        The error that ended the connection is raised if it ends first.
        """
        request_id: int = getattr(msg, "id")  # noqa: B009 - requests have ids
        queue: asyncio.Queue[Message] = asyncio.Queue(MAX_QUEUED_REPLIES)
        self._replies[request_id] = queue
        finished = False
        try:
            await self.send(msg)
            while True:
                reply = await self._next_reply(queue, timeout)
                finished = bool(reply.TERMINAL)
                yield reply
                if finished:
                    return
        finally:
            del self._replies[request_id]
            if not finished:
                self.session.abandon(request_id)

    async def _next_reply(self, queue: asyncio.Queue[Message], timeout: float) -> Message:
        if not queue.empty():
            return queue.get_nowait()
        getter: asyncio.Future[Message] = asyncio.ensure_future(queue.get())
        waits: Set[asyncio.Future[Any]] = {getter, self._closed}
        try:
            done, _ = await asyncio.wait(
                waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not getter.done():
                getter.cancel()
        if getter in done:
            return getter.result()
        if self._closed.done():
            raise self._closed.result()
        raise asyncio.TimeoutError()


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved here; whoever awaits it sees it too


def _is_request(msg: Message) -> bool:
    return msg.KIND.name == "REQUEST"


def _nodelay(ws: ClientConnection) -> None:
    # Without TCP_NODELAY small frames wait on Nagle + delayed ACK (tens of ms).
    sock: Optional[socket.socket] = ws.transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@contextlib.asynccontextmanager
async def open_connection(
    url: str,
    role: Role,
    software: str,
    authenticate: Authenticate,
    *,
    tls_pin: Optional[str] = None,
    ca_file: Optional[str] = None,
    handshake_timeout: float = 10.0,
    session: Optional[Session] = None,
    on_message: Optional[Callable[[Message], None]] = None,
    on_heartbeat_ack: Optional[Callable[[HeartbeatAck], None]] = None,
    local_addr: Optional[Tuple[str, int]] = None,
) -> AsyncIterator[Connection]:
    """Connect to ``url``, authenticate, start heartbeats; yield the open Connection.

    A ``wss://`` relay is trusted by ``tls_pin`` alone, checked before the first protocol frame;
    without a pin, by the CA certificates in ``ca_file`` (the console's ``login --ca-file``), or
    else by the system's store.
    ``local_addr`` binds our end (the fleet simulator gives each simulated store its own loopback
    address). Leaving the block closes the connection.
    """
    ssl_context: Optional[ssl.SSLContext] = None
    if tls_pin:
        ssl_context = client_ssl_context_for_pin(tls_pin)
    elif ca_file and url.startswith("wss://"):
        from .http import ssl_for  # only a console gives a CA file: an idle till never loads it

        ssl_context = ssl_for(ca_file)
    async with connect(
        url,
        compression=None,  # deflate costs ~33 KB per connection on a small till
        max_size=MAX_FRAME,
        ping_interval=None,  # liveness is the protocol's own heartbeat (docs/protocol.md#liveness)
        open_timeout=handshake_timeout,
        close_timeout=2,
        ssl=ssl_context,
        local_addr=local_addr,
    ) as ws:
        if tls_pin and ssl_context is not None:
            check_pin(ws.transport.get_extra_info("ssl_object"), tls_pin)
        _nodelay(ws)
        conn = Connection(
            ws,
            session or Session(role),
            on_message=on_message,
            on_heartbeat_ack=on_heartbeat_ack,
        )
        await conn.handshake(software, authenticate, handshake_timeout)
        conn.start()
        try:
            yield conn
        finally:
            await conn.aclose()
