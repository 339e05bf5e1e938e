"""The agent's side of the relay connection: requests answered over the shared client driver.

One call of :func:`connect_once` is one connection (``posassist.client.connection``): handshake
signed with the device key, heartbeats and liveness, then diagnostics, scripts and facts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Optional, Sequence, Set

from websockets.exceptions import ConnectionClosed

from posassist.client.connection import Connection, open_connection
from posassist.protocol import (
    AuthChallenge,
    DeviceFacts,
    DiagnosticsReport,
    DiagnosticsRequest,
    ErrorReply,
    HeartbeatAck,
    JobQuery,
    Kind,
    Message,
    PeerSilentError,
    PolicyUpdated,
    Role,
    ScriptCancel,
    ScriptRestoreRequest,
    ScriptRunRequest,
    Session,
    Welcome,
    signing,
)
from posassist.protocol.errors import LocalProtocolError, PosAssistError, ProtocolError
from posassist.protocol.states import SINCE_VERSION

from . import __version__
from .errors import ConfigError, GoingAwayError, ReplacedError

if TYPE_CHECKING:
    from .checks.monitor import HealthMonitor
    from .config import Identity
    from .diagnostics import Collector, DiagContext
    from .helpwindow.service import HelpService
    from .scripts.service import ScriptService

log = logging.getLogger("posassist.agent")
SOFTWARE = "posassist-agent/" + __version__
#: diagnostics requests served at once; more get ErrorReply "busy" (each runs several threads)
MAX_DIAGNOSES = 2
#: Close code of a connection the relay replaced by a newer one of the same device.
REPLACED = 4002
#: Close code of a relay going away (restarting): RFC 6455 §7.4.1.
GOING_AWAY = 1001
#: seconds to gather the device facts in; past that they are not sent on this connection
FACTS_TIMEOUT = 10.0
#: seconds to load the collectors in ahead of the first request
WARM_UP_TIMEOUT = 30.0


class Opened:
    """What the agent learnt from a successful handshake."""

    __slots__ = ("heartbeat_interval", "relay_id", "version")

    def __init__(self, relay_id: str, version: int, heartbeat_interval: float) -> None:
        self.relay_id = relay_id
        self.version = version
        self.heartbeat_interval = heartbeat_interval


class AgentConnection:
    """What the agent does on one connection: answer the relay's requests, send its facts."""

    def __init__(
        self,
        identity: Identity,
        diagnostics: Optional[DiagContext] = None,
        collectors: Optional[Sequence[Collector]] = None,
        scripts: Optional[ScriptService] = None,
        session: Optional[Session] = None,
        help_service: Optional[HelpService] = None,
        health: Optional[HealthMonitor] = None,
    ) -> None:
        self.identity = identity
        self.help = help_service
        self.health = health
        self.session = session or Session(Role.AGENT)
        self.diagnostics = diagnostics
        self.scripts = scripts
        self.collectors = collectors
        self.connection: Optional[Connection] = None
        self._welcome: Optional[Welcome] = None
        self._tasks: Set[asyncio.Future[None]] = set()

    def authenticate(self, session: Session, msg: Message) -> None:
        """The handshake step (docs/protocol.md#agent-authentication): sign the challenge."""
        if isinstance(msg, Welcome):
            self._welcome = msg
        elif isinstance(msg, AuthChallenge) and self._welcome is not None:
            payload = signing.auth_payload(
                self._welcome.relay_id, self.identity.device_id, msg.nonce, self._welcome.version
            )
            session.send_auth_response(
                self.identity.device_id, signing.sign(self.identity.key, payload)
            )

    def opened(self) -> Opened:
        """What the handshake gave (after it)."""
        welcome, interval = self._welcome, self.session.heartbeat_interval
        assert welcome is not None
        assert interval is not None
        return Opened(welcome.relay_id, welcome.version, interval)

    def on_heartbeat_ack(self, ack: HeartbeatAck) -> None:
        if self.diagnostics is not None:  # round trips give the clock offset (§5.3 #18)
            self.diagnostics.clock.add(ack.sent_at, ack.received_at, time.time())

    def on_message(self, event: Message) -> None:
        self._answer(event, time.time)

    async def serve(self, connection: Connection, opened: Opened) -> BaseException:
        """Answer requests until the connection ends; returns why it ended."""
        background = []
        if self.help is not None:
            self.help.attach(connection)  # the help window's requests go over this connection
        if opened.version >= SINCE_VERSION[DeviceFacts.TAG]:  # a v1 relay would refuse them
            background.append(asyncio.ensure_future(self._send_facts()))
        if self.diagnostics is not None and self.health is not None and not _WARM:
            # the health checks load the collectors and findings anyway: load them now, not in
            # the first request; a till without checks keeps its idle set small until asked
            background.append(asyncio.ensure_future(_warm_up()))
        health = self.health
        if health is not None:
            health.link_up()
            background.append(asyncio.ensure_future(self._deliver_alerts(health, connection)))
        ended: Optional[BaseException] = None
        try:
            ended = await connection.wait_closed()
            return ended
        finally:
            if self.help is not None:
                self.help.detach(connection)
            if health is not None:
                health.link_down(type(ended).__name__ if ended is not None else "stopped")
            for task in (*background, *self._tasks):
                task.cancel()
            await asyncio.gather(*background, *self._tasks, return_exceptions=True)

    async def _deliver_alerts(self, health: HealthMonitor, connection: Connection) -> None:
        """The outbox's events over this connection (agent/checks/monitor.py); its end is the
        connection's end, which loses nothing: what was not acknowledged stays queued."""
        try:
            await health.deliver(connection, self.session, self.identity.device_id)
        except (ConnectionClosed, PosAssistError, OSError) as exc:
            log.info("alert delivery paused: %s", type(exc).__name__)

    def _answer(self, event: Message, clock: Callable[[], float]) -> None:
        """One message from the relay (heartbeats are the driver's): replies are queued on the
        session, which the driver writes after each frame; long work runs in tasks."""
        if isinstance(event, DiagnosticsRequest) and self.diagnostics is not None:
            if len(self._tasks) >= MAX_DIAGNOSES:
                self.session.send(
                    ErrorReply(id=event.id, code="busy", message="diagnostics already running")
                )
                return
            from .diagnostics import collect_at_once

            sections = collect_at_once(self.diagnostics, self._collectors(), event.collectors)
            if sections is not None:  # nothing to wait for: the driver writes it after this frame
                self._reply_nowait(event, sections, clock)
                return
            task = asyncio.ensure_future(self._diagnose(event, clock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(event, (ScriptRunRequest, ScriptRestoreRequest)) and self.scripts:
            # The run is the script service's, not this connection's: it outlives a drop.
            refused = self.scripts.submit(event, self._send, clock)
            if refused is not None:
                self.session.send(refused)
        elif isinstance(event, ScriptCancel) and self.scripts is not None:
            # protocol v7 (docs/protocol.md#cancel): the run stops even if this link drops
            refused = self.scripts.cancel(event, self._send)
            if refused is not None:
                self.session.send(refused)
        elif isinstance(event, PolicyUpdated):
            if self.health is not None:
                # validated by the one validator; an invalid policy keeps the last good one
                self.health.apply_policy(event)
            if self.help is not None:  # the help window shows times in the store's zone
                self.help.store_timezone(event.hours.get("timezone"))
        elif isinstance(event, JobQuery) and self.scripts is not None:
            # docs/protocol.md#requests; "never_received" only for a relay that knows it (v4)
            self.session.send(
                self.scripts.answer(event, never_received=(self.session.version or 0) >= 4)
            )
        elif self.help is not None and self.help.relay_message(event):
            pass  # a ticket update, pushed to the open help windows
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
        if self.session.state.name == "CLOSED" or self.connection is None:
            return
        self.session.send(msg)
        try:
            await self.connection.flush()
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

    def _collectors(self) -> Sequence[Collector]:
        from .diagnostics import default_collectors

        return self.collectors if self.collectors is not None else default_collectors()

    async def _diagnose(self, request: DiagnosticsRequest, clock: Callable[[], float]) -> None:
        """Collect within the request's timeout (less a margin for the reply's trip), then reply."""
        from .diagnostics import collect_report

        assert self.diagnostics is not None
        budget = request.timeout - min(0.5, request.timeout * 0.2)
        sections = await collect_report(
            self.diagnostics, self._collectors(), time.monotonic() + budget, only=request.collectors
        )
        report = self._report(request, sections, clock)
        try:
            await self._send(report)
        except LocalProtocolError:  # over the frame limit (docs/protocol.md#limits)
            await self._send(_too_big(request))

    def _reply_nowait(
        self, request: DiagnosticsRequest, sections: Dict[str, Any], clock: Callable[[], float]
    ) -> None:
        """Queue the report on the session (the driver writes it after the request's frame)."""
        if self.session.state.name == "CLOSED":
            return
        try:
            self.session.send(self._report(request, sections, clock))
        except LocalProtocolError:  # over the frame limit (docs/protocol.md#limits)
            self.session.send(_too_big(request))

    def _report(
        self, request: DiagnosticsRequest, sections: Dict[str, Any], clock: Callable[[], float]
    ) -> DiagnosticsReport:
        """The report of ``sections``, each with its status and findings (docs/findings.md)."""
        from .findings import annotate

        assert self.diagnostics is not None
        collected_at = clock()
        # each section carries its status and findings next to its raw data (docs/findings.md);
        # the report-wide ones (clock, a profile that did not load) join their sections
        profile_error = self.diagnostics.profile_error
        annotate(
            {"sections": sections, "profile_error": profile_error},
            self.diagnostics.profile,
            collected_at,
            fold=True,
        )
        return DiagnosticsReport(
            id=request.id,
            device_id=self.identity.device_id,
            collected_at=collected_at,
            sections=sections,
        )


def _too_big(request: DiagnosticsRequest) -> ErrorReply:
    return ErrorReply(id=request.id, code="report_too_big", message="report over 1 MiB")


#: Whether this process has loaded what a diagnostics request needs (:func:`_warm_up`).
_WARM = False


async def _warm_up() -> None:
    """Load the collectors and the findings once, in a worker, right after the first connection:
    otherwise the first request pays for it (0.1-1 s on a till), and a store-wide request pays
    it on every till at the same moment (docs/notes/16a-status.md)."""
    global _WARM
    from .diagnostics import run_in_worker

    def load() -> None:
        from . import findings  # noqa: F401 - imported for its cost, now
        from .diagnostics import default_collectors

        default_collectors()

    try:
        await run_in_worker(load, WARM_UP_TIMEOUT)
        _WARM = True
    except Exception as exc:  # the first request then loads them itself, as before
        log.info("diagnostics not loaded ahead: %s: %s", type(exc).__name__, exc)


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
    help_service: Optional[HelpService] = None,
    health: Optional[HealthMonitor] = None,
) -> Opened:
    """Connect, authenticate, call ``on_open``, then serve until the connection ends.

    A ``wss://`` relay is trusted by the enrolment token's pin alone (docs/protocol.md#enrolment),
    checked before the first protocol frame; ConfigError if a wss:// identity has no pin.
    """
    if identity.relay_url.startswith("wss://") and not identity.tls_pin:
        raise ConfigError("a wss:// relay needs the TLS pin from the enrolment token")
    agent = AgentConnection(
        identity, diagnostics, collectors, scripts, help_service=help_service, health=health
    )
    async with open_connection(
        agent_url(identity.relay_url),
        Role.AGENT,
        SOFTWARE,
        agent.authenticate,
        tls_pin=identity.tls_pin if identity.relay_url.startswith("wss://") else None,
        handshake_timeout=handshake_timeout,
        session=agent.session,
        on_message=agent.on_message,
        on_heartbeat_ack=agent.on_heartbeat_ack,
    ) as connection:
        agent.connection = connection
        opened = agent.opened()
        if on_open is not None:
            await on_open(opened)
        if serve:
            ended = await agent.serve(connection, opened)
            if isinstance(ended, (PeerSilentError, ProtocolError)):
                raise ended  # reconnected with backoff by run_agent, like any lost link
            if isinstance(ended, ConnectionClosed) and ended.rcvd and ended.rcvd.code == REPLACED:
                # Another connection of this identity took over: backed off, never at once.
                raise ReplacedError(f"closed {REPLACED} by relay {opened.relay_id}")
            if isinstance(ended, ConnectionClosed) and ended.rcvd and ended.rcvd.code == GOING_AWAY:
                # The relay restarts: tried again soon, at random (agent/backoff.py).
                log.info("服务器正在重启, 马上重连 / the relay is restarting; reconnecting soon")
                raise GoingAwayError(f"closed {GOING_AWAY} by relay {opened.relay_id}")
            log.info(
                "服务器断开了连接, 稍后自动重连 / the relay closed the connection; reconnecting"
            )
        return opened
