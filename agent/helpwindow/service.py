"""The agent service's side of the help window: forwards the window's requests to the relay, pushes
ticket updates to every open window, keeps the till's note of its tickets, and asks consent.

Python 3.8, stdlib + protocol. It lives as long as the agent, not a connection: windows come and
go (the agent works on with none), relay connections come and go (:meth:`attach`/:meth:`detach`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import re
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    FrozenSet,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
)

from posassist.protocol import (
    ConsentAnswer,
    ConsentRequest,
    ErrorReply,
    HelpRequested,
    Message,
    TicketList,
    TicketOpened,
    TicketQuery,
    TicketRate,
    TicketReply,
    TicketUpdated,
)
from posassist.protocol.errors import PosAssistError
from posassist.protocol.states import SINCE_VERSION

from ..scripts.consent import (
    CURRENT_JOB,
    ConsentDecision,
    Decided,
    LinkConsent,
    PendingConsents,
)
from .link import LinkEndpoint, LinkMessage, LinkPeer, LinkServer
from .tickets import TicketBook

if TYPE_CHECKING:
    from pathlib import Path

    from posassist.client.connection import Connection
    from posassist.protocol.manifest import Manifest

    from ..diagnostics import DiagContext
    from ..scripts.results import ResultStore

__all__ = ["RELAY_TIMEOUT", "HelpService"]

log = logging.getLogger("posassist.agent")

#: Seconds the relay has to answer a window's request.
RELAY_TIMEOUT = 15.0
#: Seconds the fresh diagnostics snapshot of a help request may take.
DIAGNOSE_TIMEOUT = 8.0
#: A snapshot taken when the window opened (``link.diagnose``) rides with a help request sent
#: within this many seconds; an older one is taken again at send.
SNAPSHOT_MAX_AGE = 30.0
#: What an IANA zone name looks like (the relay checked it against its zone database).
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}")
#: The protocol version that carries the merchant's reply (``ticket.reply``).
REPLY_VERSION = SINCE_VERSION[TicketReply.TAG]
NO_REPLIES = (
    "这台服务器还不能接收在线回复, 请致电技术员 / "
    "this service can't take replies from the till yet: please phone the technician"
)
OFFLINE = (
    "暂时连不上服务器, 您填写的内容已保留, 请稍后再发送或致电客服 / "
    "the service can't be reached right now; what you wrote is kept: send again later, or phone"
)


class HelpService:
    """One per agent. Args: the data folder, this till's device id, the store's time zone, the
    desktop users allowed on the link, the link's transport (None: the platform's), the
    diagnostics context (for the summary a help request carries), the script results (to deny
    a consent question a restart left open), the consent timeout and the store's policy for
    unattended-ok scripts."""

    def __init__(
        self,
        data_dir: Path,
        device_id: str,
        *,
        timezone: str = "Asia/Shanghai",
        allowed_uids: Optional[FrozenSet[int]] = None,
        transport: Optional[str] = None,
        diagnostics: Optional[DiagContext] = None,
        results: Optional[ResultStore] = None,
        consent_timeout: float = 120.0,
        unattended_policy: str = "ask",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.device_id = device_id
        self.timezone = timezone
        self.diagnostics = diagnostics
        self.results = results
        self.clock = clock
        self.link = LinkServer(
            LinkEndpoint.default(data_dir, transport),
            self._welcome,
            self._handle,
            allowed_uids=allowed_uids,
        )
        self.tickets = TicketBook(data_dir / "help" / "tickets.json")
        self.pending = PendingConsents(data_dir / "help" / "consent-pending.json")
        self.consent = LinkConsent(self, consent_timeout, unattended_policy)
        self.relay: Optional[Connection] = None
        self._ids = itertools.count(1)
        self._tasks: Set[asyncio.Future[None]] = set()
        #: consent question id -> the future its answer sets
        self._questions: Dict[int, asyncio.Future[Decided]] = {}
        #: consent questions open now, and when (monotonic) each one's time is up
        self._asked: Dict[int, Tuple[ConsentRequest, float]] = {}
        #: (when, the bounded facts) of the last diagnostics snapshot
        self._last_snapshot: Optional[Tuple[float, Dict[str, Any]]] = None

    async def start(self) -> None:
        """Deny what a restart left open, then listen for windows."""
        found = self.pending.recover(self.results, self.clock())
        if found:
            log.warning("%d consent question(s) left open by the last run: denied", len(found))
        await self.link.start()

    async def close(self) -> None:
        for future in self._questions.values():
            if not future.done():
                future.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.link.close()

    # --- the relay connection --------------------------------------------------------------

    def attach(self, connection: Connection) -> None:
        """A connection to the relay is open: requests go over it; windows hear it."""
        self.relay = connection
        self.link.broadcast(self._status())
        task = asyncio.ensure_future(self._refresh_tickets())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def store_timezone(self, name: object) -> None:
        """The store's time zone, as the relay says it (``policy.updated``): the windows show
        the promised times in it, as the technician's console does. A name that can't be one
        is ignored (the settings' zone stays)."""
        if not isinstance(name, str) or len(name) > 64 or not _ZONE_NAME.fullmatch(name):
            return
        if name == self.timezone:
            return
        self.timezone = name
        self.link.broadcast(self._status())

    def detach(self, connection: Connection) -> None:
        if self.relay is connection:
            self.relay = None
            self.link.broadcast(self._status())

    def relay_message(self, msg: Message) -> bool:
        """A message the relay sent on its own; True if it was the help service's."""
        if isinstance(msg, TicketUpdated):
            self.tickets.updated(msg)
            self.link.broadcast(msg)
            return True
        return False

    async def _refresh_tickets(self) -> None:
        """After a connect: the relay's list replaces the note, and windows get each ticket."""
        reply = await self._ask_relay(TicketQuery(id=1))
        if isinstance(reply, TicketList):
            self.tickets.replace(list(reply.tickets))
            for entry in reply.tickets:
                self.link.broadcast(TicketUpdated.from_wire({"t": TicketUpdated.TAG, **entry}))

    async def _ask_relay(self, msg: Message) -> Optional[Message]:
        """The relay's terminal reply to ``msg``; None if there is no relay to ask (offline, the
        connection ended, no answer in time)."""
        connection = self.relay
        if connection is None:
            return None
        request = msg.with_id(connection.session.next_id())
        try:
            async for reply in connection.request(request, timeout=RELAY_TIMEOUT):
                if reply.TERMINAL:
                    return reply
        except (asyncio.TimeoutError, OSError, PosAssistError) as exc:
            log.info("relay did not answer %s: %s", msg.TAG, type(exc).__name__)
        except Exception as exc:  # ConnectionClosed and kin: the connection ended
            log.info("relay connection ended during %s: %s", msg.TAG, type(exc).__name__)
        return None

    # --- the windows -----------------------------------------------------------------------

    def _status(self) -> Dict[str, Any]:
        return {
            "t": "link.welcome",
            "device_id": self.device_id,
            "timezone": self.timezone,
            "user": "",
            "relay_connected": self.relay is not None,
            "follows": 0,
        }

    def _welcome(self, peer: LinkPeer) -> Dict[str, Any]:
        welcome = self._status()
        welcome["user"] = peer.user
        # the open tickets follow at once, so a reopened window shows them before any relay,
        # and a consent question still open, with the time it has left
        # (``follows`` says how many, so the window draws once it has them)
        behind: List[LinkMessage] = [
            TicketUpdated.from_wire({"t": TicketUpdated.TAG, **entry})
            for entry in self.tickets.entries(self.clock())
        ]
        for question, deadline in self._asked.values():
            left = deadline - time.monotonic()
            if left >= 1.0:
                behind.append(dataclasses.replace(question, timeout=min(left, 3600.0)))
        later = asyncio.get_event_loop().call_soon
        for msg in behind:
            later(peer.send_nowait, msg)
        welcome["follows"] = len(behind)
        return welcome

    async def _handle(self, peer: LinkPeer, msg: LinkMessage) -> None:
        if isinstance(msg, dict):  # link.diagnose
            peer.send_nowait(await self._summary(msg["id"]))
        elif isinstance(msg, ConsentAnswer):
            self._answer(peer, msg)
        elif isinstance(msg, HelpRequested):
            await self._help(peer, msg)
        elif isinstance(msg, TicketQuery):
            await self._query(peer, msg)
        elif isinstance(msg, TicketRate):
            await self._forward(peer, msg)
        elif isinstance(msg, TicketReply):
            connection = self.relay
            if connection is not None and (connection.session.version or 0) < REPLY_VERSION:
                peer.send_nowait(_error(msg.id, "not_supported", NO_REPLIES))
                return
            await self._forward(peer, msg)

    async def _help(self, peer: LinkPeer, msg: HelpRequested) -> None:
        if msg.device_id != self.device_id:
            peer.send_nowait(_error(msg.id, "bad_request", "not this till's device id"))
            return
        # the snapshot is the agent's own (a window's word is not trusted): the one taken while
        # the merchant typed, if recent, so "send" does not wait for the collectors again
        taken = self._last_snapshot
        if taken is None or self.clock() - taken[0] > SNAPSHOT_MAX_AGE:
            await self._snapshot()
            taken = self._last_snapshot
        diagnostics = {} if taken is None else taken[1]
        sent = HelpRequested(
            id=msg.id,
            device_id=self.device_id,
            category=msg.category,
            description=msg.description,
            contact=msg.contact,
            language=msg.language,
            diagnostics=diagnostics,
        )
        reply = await self._ask_relay(sent)
        if reply is None:
            peer.send_nowait(_error(msg.id, "offline", OFFLINE))
            return
        if isinstance(reply, TicketOpened):
            entry = self.tickets.opened(reply)
            self.link.broadcast(TicketUpdated.from_wire({"t": TicketUpdated.TAG, **entry}))
        peer.send_nowait(reply.with_id(msg.id))

    async def _query(self, peer: LinkPeer, msg: TicketQuery) -> None:
        reply = await self._ask_relay(msg)
        if reply is None:
            reply = TicketList(id=msg.id, tickets=tuple(self.tickets.entries(self.clock())))
        elif isinstance(reply, TicketList):
            self.tickets.replace(list(reply.tickets))
        peer.send_nowait(reply.with_id(msg.id))

    async def _forward(self, peer: LinkPeer, msg: Message) -> None:
        request_id: int = getattr(msg, "id")  # noqa: B009
        reply = await self._ask_relay(msg)
        if reply is None:
            peer.send_nowait(_error(request_id, "offline", OFFLINE))
            return
        peer.send_nowait(reply.with_id(request_id))

    async def _summary(self, request_id: int) -> Dict[str, Any]:
        """``link.summary``: a fresh snapshot's findings in words, for the window to show."""
        findings, _, error = await self._snapshot()
        return {"t": "link.summary", "id": request_id, "findings": findings, "error": error}

    async def _snapshot(self) -> Tuple[List[Dict[str, Any]], Dict[str, Any], str]:
        """A fresh diagnostics snapshot: its findings in words, the bounded form a help request
        carries (agent.facts limits), and what went wrong ("" if nothing)."""
        if self.diagnostics is None:
            return [], {}, "no diagnostics on this agent"
        from ..diagnostics import collect_report, default_collectors
        from ..findings import evaluate
        from .summary import summarise

        context = self.diagnostics
        try:
            sections = await collect_report(
                context, default_collectors(), time.monotonic() + DIAGNOSE_TIMEOUT
            )
            report = {"sections": sections, "profile_error": context.profile_error}
            findings = evaluate(report, context.profile, self.clock())  # clock, profile too
        except Exception as exc:  # a snapshot is a help, never a reason not to send
            log.warning("help diagnostics failed: %s: %s", type(exc).__name__, exc)
            return [], {}, type(exc).__name__
        summary = summarise(findings)
        self._last_snapshot = (self.clock(), summary["facts"])
        return summary["findings"], summary["facts"], ""

    # --- consent ---------------------------------------------------------------------------

    @property
    def window_open(self) -> bool:
        return self.link.connected

    async def ask_window(
        self, manifest: Manifest, params: Mapping[str, Any], timeout: float
    ) -> Decided:
        """Put the question to every open window; the first answer counts. Cancelled by the
        runner's timeout (then the question is withdrawn: a late answer is refused)."""
        question_id = next(self._ids)
        key = f"q{question_id}"
        future: asyncio.Future[Decided] = asyncio.get_event_loop().create_future()
        self._questions[question_id] = future
        question = _question(question_id, self.device_id, manifest, timeout, params)
        self._asked[question_id] = (question, time.monotonic() + timeout)  # for late windows
        self.pending.add(key, CURRENT_JOB.get(), manifest.id, self.clock())
        deadline = time.monotonic() + timeout
        try:
            self.link.broadcast(question)
            return await future
        finally:
            self._questions.pop(question_id, None)
            self._asked.pop(question_id, None)
            self.pending.remove(key)
            # cancelled (script.cancel) or timed out (awaiting it cancelled the future): no
            # answer came, so each window is told to stop asking
            if future.cancelled() or not future.done():
                future.cancel()
                # the runner's bound started a moment before this one: within a second of the
                # end it is the timeout, before that a cancel (the agent stopping closes the link)
                late = time.monotonic() >= deadline - 1.0
                self.link.broadcast(_closed(question_id, "expired" if late else "withdrawn"))

    def _answer(self, peer: LinkPeer, msg: ConsentAnswer) -> None:
        future = self._questions.get(msg.id)
        if future is None or future.done():
            # timed out, answered already, or never asked: said so, changes nothing
            peer.send_nowait(
                _error(
                    msg.id,
                    "consent_expired",
                    "该请求已过期或已被回答 / this question has expired or was answered already",
                )
            )
            return
        decision = ConsentDecision.GRANTED if msg.granted else ConsentDecision.DENIED
        future.set_result(Decided(decision, peer.user))  # who clicked: the link says, not them
        for other in list(self.link.peers):  # the question leaves every other window
            if other is not peer and not other.closed:
                other.send_nowait(_closed(msg.id, "answered"))


def _closed(question_id: int, reason: str) -> Dict[str, Any]:
    """``link.consent_closed``: the window stops asking (docs/helpwindow.md#consent)."""
    return {"t": "link.consent_closed", "id": question_id, "reason": reason}


def _error(request_id: int, code: str, message: str) -> ErrorReply:
    return ErrorReply(id=request_id, code=code, message=message)


def _settings(params: Mapping[str, Any]) -> str:
    """This run's parameters, one line (the script's words say what it does in general)."""
    shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    return shown if len(shown) <= 300 else shown[:299] + "…"


def _question(
    question_id: int,
    device_id: str,
    manifest: Manifest,
    timeout: float,
    params: Optional[Mapping[str, Any]] = None,
) -> ConsentRequest:
    (title_zh, title_en), (changes_zh, changes_en) = manifest.title, manifest.changes
    if params:  # what this run was asked to do (README walk: "action=status" printed nothing)
        changes_zh += f"\n本次设置: {_settings(params)}"
        changes_en += f"\nThis run: {_settings(params)}"
    if manifest.backup:
        changes_zh += "\n运行前会先备份将被修改的文件, 失败时自动恢复。"
        changes_en += "\nThe files it changes are backed up first, and put back if it fails."
    else:
        changes_zh += "\n不做备份。"
        changes_en += "\nNo backup is taken."
    return ConsentRequest(
        id=question_id,
        device_id=device_id,
        script=manifest.id,
        title_zh=title_zh[:256],
        title_en=title_en[:256],
        changes_zh=changes_zh[:2000],
        changes_en=changes_en[:2000],
        expected_duration=min(max(manifest.expected_duration, 0.0), 86400.0),
        timeout=min(max(timeout, 1.0), 3600.0),
    )
