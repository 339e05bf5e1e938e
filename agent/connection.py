"""Drives a protocol.Session over the agent's outbound websocket (websockets, asyncio client).

One call of :func:`connect_once` is one connection: handshake, then heartbeats and requests.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, List, Optional, Sequence, Set

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from posassist.client.tlspin import check_pin, client_ssl_context_for_pin
from posassist.protocol import (
    AuthAccepted,
    AuthChallenge,
    AuthRefused,
    DeviceFacts,
    DiagnosticsReport,
    DiagnosticsRequest,
    ErrorReply,
    Heartbeat,
    HeartbeatAck,
    JobQuery,
    Kind,
    Message,
    Role,
    ScriptRestoreRequest,
    ScriptRunRequest,
    Session,
    Welcome,
    signing,
)
from posassist.protocol.errors import LocalProtocolError, UnexpectedMessage
from posassist.protocol.states import SINCE_VERSION

from . import __version__
from .errors import ConfigError, RelayRefusedError

if TYPE_CHECKING:
    from .config import Identity
    from .diagnostics import Collector, DiagContext
    from .scripts.service import ScriptService

log = logging.getLogger("posassist.agent")
SOFTWARE = "posassist-agent/" + __version__
#: diagnostics requests served at once; more get ErrorReply "busy" (each runs several threads)
MAX_DIAGNOSES = 2
#: seconds to gather the device facts in; past that they are not sent on this connection
FACTS_TIMEOUT = 10.0


class Opened:
    """What the agent learnt from a successful handshake."""

    __slots__ = ("heartbeat_interval", "relay_id", "version")

    def __init__(self, relay_id: str, version: int, heartbeat_interval: float) -> None:
        self.relay_id = relay_id
        self.version = version
        self.heartbeat_interval = heartbeat_interval


class AgentConnection:
    """One websocket to the relay and the protocol state for it."""

    def __init__(
        self,
        ws: ClientConnection,
        identity: Identity,
        diagnostics: Optional[DiagContext] = None,
        collectors: Optional[Sequence[Collector]] = None,
        scripts: Optional[ScriptService] = None,
    ) -> None:
        self.ws = ws
        self.identity = identity
        self.session = Session(Role.AGENT)
        self.diagnostics = diagnostics
        self.scripts = scripts
        self.collectors = collectors
        self._tasks: Set[asyncio.Future[None]] = set()

    async def flush(self) -> None:
        for frame in self.session.data_to_send():
            await self.ws.send(frame)

    async def wait_events(self) -> List[Message]:
        """Frames until at least one message arrives (the caller bounds the wait)."""
        while True:
            frame = await self.ws.recv()
            if isinstance(frame, str):
                frame = frame.encode("utf-8")  # the codec refuses it as malformed
            self.session.receive_data(frame)
            events = self.session.events_received()
            if events:
                return events

    async def wait_one(self, timeout: float) -> Message:
        events = await asyncio.wait_for(self.wait_events(), timeout)
        return events[0]

    async def handshake(self, timeout: float) -> Opened:
        """Hello, Welcome, sign the challenge, accepted (docs/protocol.md#agent-authentication)."""
        self.session.send_hello(SOFTWARE)
        await self.flush()
        welcome = await self.wait_one(timeout)
        challenge = await self.wait_one(timeout)
        if not isinstance(welcome, Welcome) or not isinstance(challenge, AuthChallenge):
            raise UnexpectedMessage("handshake out of order")  # pragma: no cover - session guards
        version = welcome.version
        payload = signing.auth_payload(
            welcome.relay_id, self.identity.device_id, challenge.nonce, version
        )
        self.session.send_auth_response(
            self.identity.device_id, signing.sign(self.identity.key, payload)
        )
        await self.flush()
        answer = await self.wait_one(timeout)
        if isinstance(answer, AuthRefused):
            raise RelayRefusedError(answer.code)
        if not isinstance(answer, AuthAccepted):  # pragma: no cover - session guards
            raise UnexpectedMessage(answer.TAG)
        return Opened(welcome.relay_id, version, answer.heartbeat_interval)

    async def serve(self, opened: Opened, clock: Callable[[], float] = time.time) -> None:
        """Heartbeats out, answers in, until the connection ends (raises ConnectionClosed)."""
        background = [asyncio.ensure_future(self._heartbeats(opened.heartbeat_interval, clock))]
        if opened.version >= SINCE_VERSION[DeviceFacts.TAG]:  # a v1 relay would refuse them
            background.append(asyncio.ensure_future(self._send_facts()))
        try:
            while True:
                for event in await self.wait_events():
                    self._answer(event, clock)
                await self.flush()
        finally:
            for task in (*background, *self._tasks):
                task.cancel()
            await asyncio.gather(*background, *self._tasks, return_exceptions=True)

    def _answer(self, event: Message, clock: Callable[[], float]) -> None:
        if isinstance(event, Heartbeat):
            self.session.send_heartbeat_ack(event, clock())
        elif isinstance(event, HeartbeatAck):
            if self.diagnostics is not None:  # round trips give the clock offset (§5.3 #18)
                self.diagnostics.clock.add(event.sent_at, event.received_at, clock())
        elif isinstance(event, DiagnosticsRequest) and self.diagnostics is not None:
            if len(self._tasks) >= MAX_DIAGNOSES:
                self.session.send(
                    ErrorReply(id=event.id, code="busy", message="diagnostics already running")
                )
                return
            task = asyncio.ensure_future(self._diagnose(event, clock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(event, ScriptRestoreRequest) and self.scripts is not None:
            if self.scripts.busy:
                self.session.send(
                    ErrorReply(id=event.id, code="busy", message="a script is running")
                )
                return
            task = asyncio.ensure_future(self.scripts.restore(event, self._send, clock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(event, ScriptRunRequest) and self.scripts is not None:
            if self.scripts.busy:
                self.session.send(
                    ErrorReply(id=event.id, code="busy", message="another script is running")
                )
                return
            task = asyncio.ensure_future(self.scripts.handle(event, self._send, clock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(event, JobQuery) and self.scripts is not None:
            self.session.send(self.scripts.answer(event))  # docs/protocol.md#requests
        elif event.KIND is Kind.REQUEST:
            # A request this agent does not (yet) know how to serve: a clear error, no crash.
            request_id: int = getattr(event, "id")  # noqa: B009
            self.session.send(
                ErrorReply(
                    id=request_id,
                    code="unsupported",
                    message=f"{event.TAG} not supported by {SOFTWARE}",
                )
            )

    async def _send(self, msg: Message) -> None:
        """Send from a task (a report, script progress); a closed connection drops it."""
        if self.session.state.name == "CLOSED":
            return
        self.session.send(msg)
        try:
            await self.flush()
        except ConnectionClosed:
            pass

    async def _send_facts(self) -> None:
        """Once per connection, the till's facts (docs/protocol.md#device-facts), gathered in a
        worker thread. Best effort: a failure is logged and costs the connection nothing."""
        from .diagnostics import run_in_worker
        from .facts import gather

        diagnostics = self.diagnostics
        try:
            facts = await run_in_worker(lambda: gather(diagnostics), FACTS_TIMEOUT)
            message = DeviceFacts(facts=facts)
        except Exception as exc:  # a timeout, an OS surprise, or facts out of bounds (a bug)
            log.warning("device facts not sent: %s: %s", type(exc).__name__, exc)
            return
        await self._send(message)

    async def _diagnose(self, request: DiagnosticsRequest, clock: Callable[[], float]) -> None:
        """Collect within the request's timeout (less a margin for the reply's trip), then reply."""
        from .diagnostics import collect_report, default_collectors

        assert self.diagnostics is not None
        budget = request.timeout - min(0.5, request.timeout * 0.2)
        collectors = self.collectors if self.collectors is not None else default_collectors()
        sections = await collect_report(
            self.diagnostics, collectors, time.monotonic() + budget, only=request.collectors
        )
        report = DiagnosticsReport(
            id=request.id,
            device_id=self.identity.device_id,
            collected_at=clock(),
            sections=sections,
        )
        try:
            await self._send(report)
        except LocalProtocolError:  # over the frame limit (docs/protocol.md#limits)
            await self._send(
                ErrorReply(id=request.id, code="report_too_big", message="report over 1 MiB")
            )

    async def _heartbeats(self, interval: float, clock: Callable[[], float]) -> None:
        seq = 0
        while True:
            await asyncio.sleep(interval)
            self.session.send_heartbeat(seq, clock())
            seq += 1
            await self.flush()


def _nodelay(ws: ClientConnection) -> None:
    # Without TCP_NODELAY small frames wait on Nagle + delayed ACK (tens of ms).
    sock: Optional[socket.socket] = ws.transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def agent_url(relay_url: str) -> str:
    """The agent endpoint of a relay: ``ws://host:port`` means ``ws://host:port/v1/agent``."""
    scheme, _, rest = relay_url.partition("://")
    host, slash, path = rest.partition("/")
    if not slash or not path:
        return f"{scheme}://{host}/v1/agent"
    return relay_url


async def connect_once(
    identity: Identity,
    *,
    handshake_timeout: float = 10.0,
    on_open: Optional[Callable[[Opened], Awaitable[Any]]] = None,
    serve: bool = True,
    diagnostics: Optional[DiagContext] = None,
    collectors: Optional[Sequence[Collector]] = None,
    scripts: Optional[ScriptService] = None,
) -> Opened:
    """Connect, authenticate, call ``on_open``, then serve until the connection ends.

    A ``wss://`` relay is trusted by the enrolment token's pin alone (docs/protocol.md#enrolment),
    checked before the first protocol frame; ConfigError if a wss:// identity has no pin.
    """
    ssl_context = None
    if identity.relay_url.startswith("wss://"):
        if not identity.tls_pin:
            raise ConfigError("a wss:// relay needs the TLS pin from the enrolment token")
        ssl_context = client_ssl_context_for_pin(identity.tls_pin)
    async with connect(
        agent_url(identity.relay_url),
        compression=None,  # deflate costs ~33 KB per connection on a small till
        max_size=1024 * 1024,
        ping_interval=None,  # liveness is the protocol's own heartbeat
        open_timeout=handshake_timeout,
        close_timeout=2,
        ssl=ssl_context,
    ) as ws:
        if identity.tls_pin and ssl_context is not None:
            check_pin(ws.transport.get_extra_info("ssl_object"), identity.tls_pin)
        _nodelay(ws)
        conn = AgentConnection(ws, identity, diagnostics, collectors, scripts)
        opened = await conn.handshake(handshake_timeout)
        if on_open is not None:
            await on_open(opened)
        if serve:
            try:
                await conn.serve(opened)
            except ConnectionClosed:
                log.info("relay closed the connection")
        return opened
