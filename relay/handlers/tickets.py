"""Tickets on the relay: the agent's ``help.requested`` / ``ticket.query`` / ``ticket.rate``,
the technicians' and merchants' API, the SLA breach sweeper.

Every change is audited in the transaction that makes it (relay/storage/tickets.py). Lookups by
support code answer an unknown code, a malformed one and another tenant's alike (404), are
audited, and a user whose lookups keep missing is slowed down (429) so codes can't be
enumerated. Merchant-role users read their own stores' tickets and reports; anything else they
try is refused and audited. Times are shown in the store's time zone (relay/hours.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from typing import TYPE_CHECKING, Any

from aiohttp import web

from posassist.protocol import ErrorReply, PosAssistError
from posassist.protocol.messages import (
    HELP_CATEGORIES,
    HELP_LANGUAGES,
    MAX_CONTACT,
    MAX_TICKET_LIST,
    HelpRequested,
    TicketList,
    TicketOpened,
    TicketQuery,
    TicketRate,
    TicketRated,
    TicketReplied,
    TicketReply,
    TicketUpdated,
    merchant_text_problem,
)
from posassist.protocol.states import SINCE_VERSION

from ..audit import AuditEntry, Outcome
from ..errors import (
    BadRequest,
    Conflict,
    NotFound,
    RateLimited,
    ScopeError,
    StorageError,
    role_needed,
)
from ..hours import BusinessHours, local_iso, parse_hours
from ..ratelimit import KeyedLimiter
from ..state import STATE, RelayState
from ..storage import Job, RetailStore, Role, Scope, ScopeKind, User
from ..storage.tickets import Ticket, TicketEvent, TicketStore
from ..tickets import (
    OPEN_STATES,
    STATE_WORDS,
    TRANSITIONS,
    BadSla,
    BadTicketField,
    BadTicketQuery,
    BadTicketText,
    Sla,
    due_times,
    new_support_code,
    normalise_code,
    resume_clock,
)
from ..webhooks import WebhookSender
from .request import _json, current_user

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from posassist.protocol import Message

    from ..audit import AuditRecord
    from ..connection import WebSocketSession

log = logging.getLogger("posassist.relay")

#: Open tickets one till may have at once: a merchant pressing "send" again and again, or a
#: broken agent, gets a clear answer instead of filling the technicians' queue.
MAX_OPEN_PER_DEVICE = 5
#: A help request with the same category and words as one the till made this long ago, still
#: open, is the same request sent again (its answer lost, "send" pressed twice).
REPEAT_WINDOW = 15 * 60.0
#: How long a resolved ticket stays in the device's ``ticket.list``.
RECENT = 7 * 86400
#: Lookups by code that miss, per user: a burst of 10, then one every 6 s.
MISS_RATE, MISS_BURST = 1 / 6, 10.0
#: How often breaches are looked for and recorded (and resolved tickets closed after RECENT).
SWEEP_INTERVAL = 30.0
TECH_ROLES = frozenset({Role.ADMIN, Role.TECHNICIAN})
#: Tickets one listing shows, newest first (``truncated`` says when there were more).
MAX_LIST = 500
#: The longest note, in characters.
MAX_NOTE = 2000


class Tickets:
    """One relay's ticket service: its storage and the per-user limiter of missed lookups."""

    def __init__(self, state: RelayState) -> None:
        self.state = state
        self.store = TicketStore(state.storage)
        self.misses: KeyedLimiter[str] = KeyedLimiter(MISS_RATE, MISS_BURST, max_keys=100_000)


TICKETS = web.AppKey("tickets", Tickets)


def _tickets(state: RelayState) -> TicketStore:
    return TicketStore(state.storage)


# --- shared helpers ------------------------------------------------------------------------------


async def store_hours(state: RelayState, store_id: str) -> tuple[RetailStore, BusinessHours]:
    store = await state.storage.get_store(store_id)
    try:
        hours = parse_hours(dict(store.hours), store.timezone)
    except BadRequest:  # pragma: no cover - checked when set; the default keeps SLA counting
        log.warning("store %s has unreadable hours; counting all hours", store_id)
        hours = BusinessHours()
    return store, hours


#: The protocol version that carries a technician's question and the merchant's reply.
REPLY_VERSION = SINCE_VERSION[TicketReply.TAG]


def update_message(ticket: Ticket, question: str | None = None) -> TicketUpdated:
    """The ``ticket.updated`` a device is sent (and each ``ticket.list`` entry); ``question``
    (what the technician asked, for a ticket waiting for the merchant) only to a device whose
    session speaks :data:`REPLY_VERSION`."""
    zh, en = STATE_WORDS[ticket.status]
    tech = ticket.technician or "技术员"
    asked = question if ticket.status == "waiting_merchant" and question else None
    return TicketUpdated(
        question=asked,
        ticket_id=ticket.id,
        support_code=ticket.support_code,
        status=ticket.status,
        message_zh=zh.format(tech=tech),
        message_en=en.format(tech=ticket.technician or "A technician"),
        updated_at=ticket.updated_at,
        technician=ticket.technician,
        response_due=_finite(ticket.response_due),
        resolve_due=_finite(ticket.resolve_due),
    )


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def push(state: RelayState, ticket: Ticket, question: str | None = None) -> None:
    """Tell the ticket's device, if it is connected here, that its ticket changed."""
    if ticket.device_id is None:
        return
    link = state.router.agent(ticket.device_id)
    if link is None:
        return
    if (link.session.version or 0) < REPLY_VERSION:
        question = None
    try:
        link.send_nowait(update_message(ticket, question))
    except PosAssistError as exc:  # closing, or not keeping up: it asks again on reconnect
        log.info("ticket update for %s not sent: %s", ticket.device_id, exc)


def _description_audit(text: str) -> dict[str, object]:
    """What the audit keeps of merchant text: its length and hash (the ticket keeps the text)."""
    return {"chars": len(text), "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def live_breaches(ticket: Ticket, now: float) -> dict[str, bool]:
    """Whether each target is missed by ``now`` (recorded or not yet: the sweeper records)."""

    def missed(due: float | None, done: float | None, until: float) -> bool:
        if due is None:
            return False
        return (done is not None and done > due) or (done is None and until > due)

    # While the ticket waits for the merchant its resolution clock stands still.
    stopped = now if ticket.sla_paused_at is None else min(now, ticket.sla_paused_at)
    return {
        "response": missed(ticket.response_due, ticket.first_response_at, now),
        "resolution": missed(ticket.resolve_due, ticket.resolved_at, stopped),
    }


# --- the agent's requests ------------------------------------------------------------------------


#: What a till is told when a request of its own is refused (English / Chinese).
_NOT_ITSELF = "a device asks help for itself only"
_TOO_MANY = (
    f"this till already has {MAX_OPEN_PER_DEVICE} open tickets; a technician will answer them"
    f" / 本收银机已有 {MAX_OPEN_PER_DEVICE} 个未完成的工单，请等待技术员处理"
)
_NO_TICKET = "no such ticket on this till / 未找到该工单"
_NOT_YET = "a ticket can be rated once it is resolved / 工单解决后才能评分"
_CLOSED = "this ticket is closed: ask for help again / 工单已结束, 如需帮助请重新求助"


async def _answer(peer: WebSocketSession, request_id: int, code: str, text: str) -> None:
    with contextlib.suppress(PosAssistError):
        peer.send_nowait(ErrorReply(id=request_id, code=code, message=text))


async def _refuse(
    state: RelayState,
    peer: WebSocketSession,
    request_id: int,
    audit: tuple[str, str, str],
    reason: str,
    code: str,
    text: str,
) -> None:
    """A device's request refused: audited (``audit``: actor, action, target) with ``reason``,
    and answered ``code`` with ``text`` (the till's words, English / Chinese)."""
    actor, action, target = audit
    await state.audit(actor, action, target, Outcome.REFUSED, {"reason": reason})
    await _answer(peer, request_id, code, text)


async def help_requested(
    state: RelayState, device_id: str, peer: WebSocketSession, event: Message
) -> None:
    assert isinstance(event, HelpRequested)
    actor = f"device:{device_id}"
    if event.device_id != device_id:  # a till asks for itself only
        where = (actor, "ticket.open", f"device:{device_id}")
        await _refuse(state, peer, event.id, where, "other device", "forbidden", _NOT_ITSELF)
        return
    tickets = _tickets(state)
    try:
        still_open = await tickets.open_of_device(device_id)
        repeat = _repeat_of(still_open, event, state.now())
        if repeat is not None:
            # the same words again (the reply was lost, "send" pressed twice): the same ticket
            await state.audit(
                actor,
                "ticket.open.repeat",
                f"ticket:{repeat.id}",
                Outcome.OK,
                {"code": repeat.support_code},
            )
            with contextlib.suppress(PosAssistError):
                peer.send_nowait(_opened(event.id, repeat))
            return
        if len(still_open) >= MAX_OPEN_PER_DEVICE:
            where = (actor, "ticket.open", f"device:{device_id}")
            reason = "too many open tickets"
            await _refuse(state, peer, event.id, where, reason, "too_many_tickets", _TOO_MANY)
            return
        path = await state.storage.device_path(device_id)
        ticket = await open_ticket(
            state,
            store_id=path.store_id,
            device_id=device_id,
            channel="agent",
            category=event.category,
            description=event.description,
            contact=event.contact,
            language=event.language,
            diagnostics=event.diagnostics,
            actor=actor,
        )
    except StorageError as exc:
        log.warning("help request of %s not stored: %s", device_id, exc)
        await _answer(
            peer,
            event.id,
            "unavailable",
            "the relay can't store tickets now; try again / 请稍后重试",
        )
        return
    with contextlib.suppress(PosAssistError):
        peer.send_nowait(_opened(event.id, ticket))


def _opened(request_id: int, ticket: Ticket) -> TicketOpened:
    return TicketOpened(
        id=request_id,
        ticket_id=ticket.id,
        support_code=ticket.support_code,
        status=ticket.status,
        created_at=ticket.created_at,
        response_due=_finite(ticket.response_due),
    )


def _repeat_of(still_open: list[Ticket], event: HelpRequested, now: float) -> Ticket | None:
    """An open ticket of the device asked with the same category and words within
    :data:`REPEAT_WINDOW`: a request sent again is answered with the ticket it made."""
    for ticket in still_open:
        if (
            ticket.channel == "agent"
            and ticket.category == event.category
            and ticket.description == event.description
            and now - ticket.created_at <= REPEAT_WINDOW
        ):
            return ticket
    return None


async def open_ticket(
    state: RelayState,
    *,
    store_id: str,
    device_id: str | None,
    channel: str,
    category: str,
    description: str,
    contact: str,
    language: str,
    diagnostics: dict[str, Any],
    actor: str,
    technician: str | None = None,
) -> Ticket:
    """A new ticket with its SLA due times counted in the store's hours, audited."""
    store, hours = await store_hours(state, store_id)
    sla = await _tickets(state).sla(store.merchant_id)
    now = state.now()
    response_due, resolve_due = due_times(sla, hours, now)
    tickets = _tickets(state)
    for _ in range(3):  # a code already taken (1 in ~10^12): draw another
        code = new_support_code()
        entry = AuditEntry(
            actor,
            "ticket.open",
            f"store:{store_id}",
            Outcome.OK,
            {
                "code": code,
                "channel": channel,
                "device": device_id,
                "category": category,
                "description": _description_audit(description),
                "technician": technician,
                "response_due": response_due,
                "resolve_due": resolve_due,
            },
        )
        try:
            opened = await tickets.open_ticket(
                code=code,
                store_id=store_id,
                device_id=device_id,
                channel=channel,
                category=category,
                description=description,
                contact=contact,
                language=language,
                diagnostics=diagnostics,
                opened_by=actor,
                now=now,
                response_due=response_due,
                resolve_due=resolve_due,
                technician=technician,
                audit=entry,
            )
        except Conflict:
            continue
        wake_webhooks(state)
        return opened
    raise Conflict("no free support code")  # pragma: no cover - three collisions in a row


async def ticket_query(
    state: RelayState, device_id: str, peer: WebSocketSession, event: Message
) -> None:
    assert isinstance(event, TicketQuery)
    try:
        found = await _tickets(state).of_device(
            device_id, since=state.now() - RECENT, limit=MAX_TICKET_LIST
        )
    except StorageError as exc:
        log.warning("tickets of %s not read: %s", device_id, exc)
        await _answer(
            peer, event.id, "unavailable", "the relay can't read tickets now / 请稍后重试"
        )
        return
    questions: dict[str, str] = {}
    waiting = [t.id for t in found if t.status == "waiting_merchant"]
    if waiting and (peer.session.version or 0) >= REPLY_VERSION:
        with contextlib.suppress(StorageError):  # the list goes out without them then
            for ticket_id, history in (await _tickets(state).events(waiting)).items():
                questions[ticket_id] = _question(history)
    entries = []
    for ticket in found:
        wire = update_message(ticket, questions.get(ticket.id)).to_wire()
        del wire["t"]
        entries.append(wire)
    with contextlib.suppress(PosAssistError):
        peer.send_nowait(TicketList(id=event.id, tickets=tuple(entries)))


async def ticket_rate(
    state: RelayState, device_id: str, peer: WebSocketSession, event: Message
) -> None:
    assert isinstance(event, TicketRate)
    actor = f"device:{device_id}"
    tickets = _tickets(state)
    now = state.now()
    entry = AuditEntry(
        actor,
        "ticket.rate",
        f"ticket:{event.ticket_id}",
        Outcome.OK,
        {"rating": event.rating, "comment": _description_audit(event.comment)},
    )
    try:
        current = await tickets.get(event.ticket_id)
        if current.device_id != device_id:
            raise NotFound("ticket")
        ticket = await tickets.change(
            event.ticket_id,
            from_states={"resolved", "closed"},
            to="closed",
            actor=actor,
            kind="rated",
            text=event.comment,
            now=now,
            audit=entry,
            device_id=device_id,
            values={
                "rating": event.rating,
                "rating_comment": event.comment,
                "rated_at": now,
                "closed_at": current.closed_at or now,
            },
        )
    except NotFound:
        where = (actor, "ticket.rate", "ticket")
        await _refuse(state, peer, event.id, where, "unknown ticket", "not_found", _NO_TICKET)
        return
    except Conflict:
        where = (actor, "ticket.rate", f"ticket:{event.ticket_id}")
        await _refuse(state, peer, event.id, where, "not resolved", "not_resolved", _NOT_YET)
        return
    except StorageError as exc:
        log.warning("rating of %s not stored: %s", event.ticket_id, exc)
        await _answer(peer, event.id, "unavailable", "the relay can't store it now / 请稍后重试")
        return
    with contextlib.suppress(PosAssistError):
        peer.send_nowait(TicketRated(id=event.id))
    push(state, ticket)


def _question(history: list[TicketEvent]) -> str:
    """What the technician asked when the ticket last started waiting for the merchant."""
    for event in reversed(history):
        if event.status == "waiting_merchant" and event.actor.startswith("user:"):
            return event.text
        if event.status != "waiting_merchant":
            break
    return ""


async def ticket_reply(
    state: RelayState, device_id: str, peer: WebSocketSession, event: Message
) -> None:
    """The merchant answers from the till: their words go on the ticket; a ticket waiting for
    them goes back to ``in_progress`` and its resolution clock runs again."""
    assert isinstance(event, TicketReply)
    actor = f"device:{device_id}"
    tickets = _tickets(state)
    now = state.now()
    entry = AuditEntry(
        actor,
        "ticket.reply",
        f"ticket:{event.ticket_id}",
        Outcome.OK,
        {"text": _description_audit(event.text)},
    )
    try:
        current = await tickets.get(event.ticket_id)
        if current.device_id != device_id:
            raise NotFound("ticket")
        if current.status == "waiting_merchant":
            ticket = await tickets.change(
                event.ticket_id,
                from_states={"waiting_merchant"},
                to="in_progress",
                actor=actor,
                kind="reply",
                text=event.text,
                now=now,
                audit=entry,
                device_id=device_id,
                values=await _sla_clock(state, current, "in_progress", now),
            )
        elif current.status in OPEN_STATES:
            await tickets.note(event.ticket_id, actor=actor, text=event.text, now=now, audit=entry)
            ticket = current
        else:
            raise Conflict(f"ticket {current.id} is {current.status}")
    except NotFound:
        where = (actor, "ticket.reply", "ticket")
        await _refuse(state, peer, event.id, where, "unknown ticket", "not_found", _NO_TICKET)
        return
    except Conflict:
        where = (actor, "ticket.reply", f"ticket:{event.ticket_id}")
        await _refuse(state, peer, event.id, where, "not open", "not_open", _CLOSED)
        return
    except StorageError as exc:
        log.warning("reply on %s not stored: %s", event.ticket_id, exc)
        await _answer(peer, event.id, "unavailable", "the relay can't store it now / 请稍后重试")
        return
    with contextlib.suppress(PosAssistError):
        peer.send_nowait(TicketReplied(id=event.id))
    if ticket.status != current.status:
        push(state, ticket)


#: The agent's requests this module answers (relay/handlers/agents.py dispatches on the tag).
AGENT_REQUESTS: dict[str, Callable[[RelayState, str, WebSocketSession, Message], Awaitable[None]]]
AGENT_REQUESTS = {
    HelpRequested.TAG: help_requested,
    TicketQuery.TAG: ticket_query,
    TicketRate.TAG: ticket_rate,
    TicketReply.TAG: ticket_reply,
}


# --- the API: technicians and merchants ----------------------------------------------------------


def _service(request: web.Request) -> Tickets:
    return request.app[TICKETS]


async def _user(request: web.Request) -> tuple[RelayState, User]:
    return request.app[STATE], await current_user(request)


async def _require_tech(state: RelayState, user: User, action: str, target: str) -> None:
    """Refuse (403, audited) a user whose role may not change tickets (merchant, viewer)."""
    if user.role not in TECH_ROLES:
        await state.audit(
            f"user:{user.username}",
            action,
            target,
            Outcome.REFUSED,
            {"reason": f"role {user.role}"},
        )
        raise role_needed(f"{user.username} ({user.role}) may not {action}", "admin", "technician")


async def _in_scope(state: RelayState, user: User, ticket: Ticket) -> bool:
    if user.scope.kind is ScopeKind.DEVICE:
        return ticket.device_id == user.scope.id
    return await state.covers(user, Scope(ScopeKind.STORE, ticket.store_id))


async def find(request: web.Request, user: User, action: str) -> Ticket:
    """The ticket the path's code names, if ``user`` may see it. Unknown, malformed and out of
    scope are one answer (404), audited; a user whose lookups keep missing gets 429."""
    service = _service(request)
    state = service.state
    now = state.now()
    actor = f"user:{user.username}"
    if service.misses.retry_after(user.username, now) > 0:
        await state.audit(actor, action, "ticket", Outcome.REFUSED, {"reason": "rate limited"})
        raise RateLimited(
            "too many unknown support codes",
            retry_after=service.misses.retry_after(user.username, now),
        )
    code = normalise_code(request.match_info["code"])
    ticket = None if code is None else await service.store.by_code(code)
    if ticket is not None and await _in_scope(state, user, ticket):
        return ticket
    service.misses.allow(user.username, now)
    reason = (
        "malformed code" if code is None else "unknown code" if ticket is None else "out of scope"
    )
    target = "ticket" if ticket is None else f"ticket:{ticket.id}"
    await state.audit(actor, action, target, Outcome.REFUSED, {"reason": reason, "code": code})
    raise NotFound("ticket")


def _conflict(ticket: Ticket, wanted: str) -> web.Response:
    """409 naming the ticket's real state (the relay's words, never the caller's input)."""
    who = f" ({ticket.technician})" if ticket.technician else ""
    return web.json_response(
        {
            "error": "Conflict",
            "message": f"ticket {ticket.support_code} is {ticket.status}{who}: can't {wanted}",
            "message_zh": f"工单 {ticket.support_code} 当前为 {ticket.status}{who}，无法执行此操作",
            "status": ticket.status,
            "technician": ticket.technician,
        },
        status=409,
    )


async def ticket_json(
    state: RelayState,
    ticket: Ticket,
    *,
    hours: BusinessHours | None = None,
    events: list[TicketEvent] | None = None,
) -> dict[str, Any]:
    """A ticket for the API: epochs, the same instants on the store's wall clock, the SLA."""
    if hours is None:
        _, hours = await store_hours(state, ticket.store_id)
    now = state.now()
    out: dict[str, Any] = {
        "id": ticket.id,
        "code": ticket.support_code,
        "store_id": ticket.store_id,
        "device_id": ticket.device_id,
        "channel": ticket.channel,
        "category": ticket.category,
        "description": ticket.description,
        "contact": ticket.contact,
        "language": ticket.language,
        "status": ticket.status,
        "technician": ticket.technician,
        "opened_by": ticket.opened_by,
        "timezone": hours.timezone,
        "rating": ticket.rating,
        "rating_comment": ticket.rating_comment,
        "breached": live_breaches(ticket, now),
        "sla_paused": ticket.sla_paused_at is not None,
        "sla_paused_seconds": round(ticket.sla_paused_seconds),
        "breach_recorded": {
            "response": ticket.response_breached_at is not None,
            "resolution": ticket.resolve_breached_at is not None,
        },
    }
    times = {
        "created_at": ticket.created_at,
        "updated_at": ticket.updated_at,
        "clock_started_at": ticket.clock_started_at,
        "first_response_at": ticket.first_response_at,
        "resolved_at": ticket.resolved_at,
        "closed_at": ticket.closed_at,
        "response_due": _finite(ticket.response_due),
        "resolve_due": _finite(ticket.resolve_due),
        "rated_at": ticket.rated_at,
        "sla_paused_at": ticket.sla_paused_at,
    }
    out.update(times)
    out["local"] = {k: None if v is None else local_iso(hours, v) for k, v in times.items()}
    if events is not None:  # the full record: diagnostics and history
        out["diagnostics"] = dict(ticket.diagnostics)
        out["events"] = [
            {
                "at": e.at,
                "local": local_iso(hours, e.at),
                "actor": e.actor,
                "kind": e.kind,
                "status": e.status,
                "text": e.text,
                "audit_seq": e.audit_seq,
            }
            for e in events
        ]
    return out


def state_tickets(state: RelayState) -> TicketStore:
    return _tickets(state)


def _states(text: str | None) -> list[str] | None:
    if not text:
        return None
    states = [s for s in text.split(",") if s]
    if not states or any(s not in TRANSITIONS for s in states):
        raise BadTicketQuery("state must be one of " + ", ".join(TRANSITIONS))
    return states


async def list_tickets(request: web.Request) -> web.Response:
    """``GET /v1/tickets?store=&state=a,b&breached=1``: tickets in the caller's scope."""
    state, user = await _user(request)
    query = request.query
    store = query.get("store") or None
    states = _states(query.get("state"))
    breached_text = query.get("breached")
    if breached_text not in (None, "", "0", "1", "true", "false"):
        raise BadTicketQuery("breached must be 1 or 0")
    breached = None if not breached_text else breached_text in ("1", "true")
    if store is not None and not await state.covers(user, Scope(ScopeKind.STORE, store)):
        await state.audit(
            f"user:{user.username}",
            "ticket.list",
            f"store:{store[:64]}",
            Outcome.REFUSED,
            {"reason": "out of scope"},
        )
        raise ScopeError(f"{user.username} may not list tickets of that store")
    found = await _service(request).store.search(
        user.scope, store_id=store, states=states, limit=MAX_LIST + 1
    )
    truncated = len(found) > MAX_LIST
    found = found[:MAX_LIST]
    now = state.now()
    if breached is not None:
        found = [t for t in found if any(live_breaches(t, now).values()) == breached]
    hours_of: dict[str, BusinessHours] = {}
    rows = []
    for ticket in found:
        if ticket.store_id not in hours_of:
            hours_of[ticket.store_id] = (await store_hours(state, ticket.store_id))[1]
        rows.append(await ticket_json(state, ticket, hours=hours_of[ticket.store_id]))
    return web.json_response({"tickets": rows, "truncated": truncated})


async def show_ticket(request: web.Request) -> web.Response:
    state, user = await _user(request)
    ticket = await find(request, user, "ticket.show")
    _, hours = await store_hours(state, ticket.store_id)
    events = (await state_tickets(state).events([ticket.id]))[ticket.id]
    body = await ticket_json(state, ticket, hours=hours, events=events)
    body["jobs"] = await linked_jobs(state, ticket, hours, events)
    return web.json_response(body)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    return await _json(request)


def _text(body: dict[str, Any], name: str, *, required: bool, max_len: int = MAX_NOTE) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise BadTicketText(f"{name} must be text")
    problem = merchant_text_problem(name, value, min_len=1 if required else 0, max_len=max_len)
    if problem is not None:
        raise BadTicketText(problem)
    return value


async def _change(
    request: web.Request,
    action: str,
    *,
    from_states: frozenset[str],
    to: str | None,
    kind: str,
    text_required: bool = False,
    values: Callable[[Ticket, float, User], Awaitable[dict[str, Any]]] | None = None,
    own: bool = False,
) -> web.Response:
    """One technician's change of one ticket: checked, conditional, audited, pushed."""
    state, user = await _user(request)
    body = await _body(request)
    ticket = await find(request, user, action)
    await _require_tech(state, user, action, f"ticket:{ticket.id}")
    text = _text(body, "text", required=text_required)
    target_state = to
    if kind == "note" and body.get("state") is not None:
        target_state = body["state"]
        if target_state not in ("in_progress", "waiting_merchant"):
            raise BadTicketField("state must be in_progress or waiting_merchant")
        from_states = frozenset(s for s, nxt in TRANSITIONS.items() if target_state in nxt)
        own = True  # only the ticket's technician (or an admin) says they work or wait on it
    now = state.now()
    clock = await _sla_clock(state, ticket, target_state, now)
    if target_state is not None:
        # What this change does (to the SLA clock above, among others) follows from the state
        # read here: it must find the ticket still in it, or it is a conflict. (A "work" racing
        # a "wait" otherwise left the clock stopped on a ticket in progress: outside attack.)
        from_states = from_states & {ticket.status}
    entry = AuditEntry(
        f"user:{user.username}",
        action,
        f"ticket:{ticket.id}",
        Outcome.OK,
        {"code": ticket.support_code, "to": target_state, "text": _description_audit(text)},
    )
    try:
        if kind == "note" and target_state is None:
            await state_tickets(state).note(
                ticket.id, actor=f"user:{user.username}", text=text, now=now, audit=entry
            )
            changed = await state_tickets(state).get(ticket.id)
        else:
            changed = await state_tickets(state).change(
                ticket.id,
                from_states=from_states,
                to=target_state,
                actor=f"user:{user.username}",
                kind=kind,
                text=text,
                now=now,
                audit=entry,
                values={**clock, **({} if values is None else await values(ticket, now, user))},
                technician=user.username if own and user.role is not Role.ADMIN else None,
            )
    except Conflict:
        current = await state_tickets(state).get(ticket.id)
        await state.audit(
            f"user:{user.username}",
            action,
            f"ticket:{ticket.id}",
            Outcome.REFUSED,
            {"reason": f"ticket is {current.status}", "technician": current.technician},
        )
        return _conflict(current, action.partition(".")[2])
    if changed.status != ticket.status:  # a note alone is the technicians' business
        push(state, changed, text if changed.status == "waiting_merchant" else None)
    return web.json_response(await ticket_json(state, changed))


async def _sla_clock(
    state: RelayState, ticket: Ticket, to: str | None, now: float
) -> dict[str, Any]:
    """What a change does to the resolution clock: it stops when the ticket starts waiting for
    the merchant and starts again, with what was left, when it leaves that state."""
    if to == "waiting_merchant" and ticket.status != "waiting_merchant":
        return {"sla_paused_at": now}
    if ticket.status == "waiting_merchant" and to not in (None, "waiting_merchant"):
        if ticket.sla_paused_at is None:  # waiting since before the clock could stop (0007)
            return {}
        _, hours = await store_hours(state, ticket.store_id)
        due, stopped = resume_clock(hours, ticket.sla_paused_at, ticket.resolve_due, now)
        return {
            "sla_paused_at": None,
            "sla_paused_seconds": ticket.sla_paused_seconds + stopped,
            "resolve_due": due,
        }
    return {}


async def accept_ticket(request: web.Request) -> web.Response:
    """Take a ``new`` or ``reopened`` ticket: of two technicians at once, exactly one wins."""

    async def values(ticket: Ticket, now: float, user: User) -> dict[str, Any]:
        return {"technician": user.username, "first_response_at": ticket.first_response_at or now}

    return await _change(
        request,
        "ticket.accept",
        from_states=frozenset({"new", "reopened"}),
        to="accepted",
        kind="accepted",
        values=values,
    )


async def work_ticket(request: web.Request) -> web.Response:
    """``run --ticket``: the assigned technician starts working (accepted → in_progress)."""
    return await _change(
        request,
        "ticket.work",
        from_states=frozenset({"accepted", "waiting_merchant", "in_progress"}),
        to="in_progress",
        kind="working",
        own=True,
    )


async def note_ticket(request: web.Request) -> web.Response:
    return await _change(
        request,
        "ticket.note",
        from_states=frozenset(),
        to=None,
        kind="note",
        text_required=True,
    )


async def resolve_ticket(request: web.Request) -> web.Response:
    async def values(ticket: Ticket, now: float, user: User) -> dict[str, Any]:
        return {"resolved_at": now}

    return await _change(
        request,
        "ticket.resolve",
        from_states=frozenset({"accepted", "in_progress", "waiting_merchant"}),
        to="resolved",
        kind="resolved",
        values=values,
    )


async def reopen_ticket(request: web.Request) -> web.Response:
    """A resolved or closed ticket back in the queue: its SLA clocks start again from now,
    counted in the store's hours and under the merchant's SLA as they are now."""

    async def values(ticket: Ticket, now: float, user: User) -> dict[str, Any]:
        state = request.app[STATE]
        store, hours = await store_hours(state, ticket.store_id)
        sla = await state_tickets(state).sla(store.merchant_id)
        response_due, resolve_due = due_times(sla, hours, now)
        return {
            "clock_started_at": now,
            "first_response_at": None,
            "resolved_at": None,
            "closed_at": None,
            "response_due": response_due,
            "resolve_due": resolve_due,
            "sla_paused_at": None,
            "sla_paused_seconds": 0.0,
        }

    return await _change(
        request,
        "ticket.reopen",
        from_states=frozenset({"resolved", "closed"}),
        to="reopened",
        kind="reopened",
        values=values,
    )


async def create_ticket(request: web.Request) -> web.Response:
    """A technician opens a ticket for a merchant who phoned (channel ``phone``); it is theirs."""
    state, user = await _user(request)
    body = await _body(request)
    store_id = body.get("store_id")
    if not isinstance(store_id, str) or not 0 < len(store_id) <= 64:
        raise BadTicketField("store_id must be a store id")
    await _require_tech(state, user, "ticket.open", f"store:{store_id}")
    await state.require_scope(user, Scope(ScopeKind.STORE, store_id), "ticket.open")
    device_id = body.get("device_id")
    if device_id is not None:
        if not isinstance(device_id, str) or not await state.device_in_scope(
            device_id, Scope(ScopeKind.STORE, store_id)
        ):
            raise BadTicketField("device_id must be a device of that store")
    category = body.get("category", "other")
    if category not in HELP_CATEGORIES:
        raise BadTicketField("category must be one of " + ", ".join(HELP_CATEGORIES))
    language = body.get("language", "zh-CN")
    if language not in HELP_LANGUAGES:
        raise BadTicketField("language must be zh-CN or en")
    description = _text(body, "description", required=True)
    contact = _text(body, "contact", required=False, max_len=MAX_CONTACT)
    ticket = await open_ticket(
        state,
        store_id=store_id,
        device_id=device_id,
        channel="phone",
        category=category,
        description=description,
        contact=contact,
        language=language,
        diagnostics={},
        actor=f"user:{user.username}",
        technician=user.username,
    )
    push(state, ticket)
    return web.json_response(await ticket_json(state, ticket), status=201)


async def get_sla(request: web.Request) -> web.Response:
    """``GET /v1/merchants/{id}/sla``: the merchant's targets, for anyone whose scope holds it."""
    state, user = await _user(request)
    merchant_id = request.match_info["merchant_id"]
    await state.require_scope(user, Scope(ScopeKind.MERCHANT, merchant_id), "merchant.sla.read")
    sla = await state_tickets(state).sla(merchant_id)
    return web.json_response({"merchant_id": merchant_id, **sla.to_json()})


async def set_sla(request: web.Request) -> web.Response:
    """``POST /v1/merchants/{id}/sla {"response_seconds", "resolve_seconds"}`` (admins)."""
    state, user = await _user(request)
    merchant_id = request.match_info["merchant_id"]
    body = await _body(request)
    if user.role is not Role.ADMIN:
        await state.audit(
            f"user:{user.username}",
            "merchant.sla",
            f"merchant:{merchant_id[:64]}",
            Outcome.REFUSED,
            {"reason": f"role {user.role}"},
        )
        raise role_needed(f"{user.username} is not an admin", "admin")
    await state.require_scope(user, Scope(ScopeKind.MERCHANT, merchant_id), "merchant.sla")
    unknown = sorted(set(body) - {"response_seconds", "resolve_seconds"})
    if unknown:  # a misspelt target must not read as "no target" and clear the one in force
        raise BadSla("unknown field: give only response_seconds and/or resolve_seconds")
    # a target left out keeps its value; null clears it
    targets = (await state_tickets(state).sla(merchant_id)).to_json()
    for name in ("response_seconds", "resolve_seconds"):
        if name not in body:
            continue
        value = body[name]
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 60 <= value <= 90 * 86400
        ):
            raise BadSla(f"{name} must be null or 60 s .. 90 days of business time")
        targets[name] = None if value is None else float(value)
    sla = Sla(targets["response_seconds"], targets["resolve_seconds"])
    await state_tickets(state).set_sla(
        merchant_id,
        sla,
        now=state.now(),
        audit=AuditEntry(
            f"user:{user.username}",
            "merchant.sla",
            f"merchant:{merchant_id}",
            Outcome.OK,
            sla.to_json(),
        ),
    )
    return web.json_response({"merchant_id": merchant_id, **sla.to_json()})


def _outcome(status: str, error: str | None) -> str:
    """How a run ended: its job status, except that a run the merchant or a precondition
    stopped (``refused``) or that was cancelled is said so, not "failed" (relay/handlers/jobs.py
    keeps the till's status as the head of ``error``)."""
    kind = (error or "").partition(":")[0]
    return kind if kind in ("refused", "cancelled") else status


async def linked_jobs(
    state: RelayState,
    ticket: Ticket,
    hours: BusinessHours,
    events: list[TicketEvent],
    records: list[AuditRecord] | None = None,
    marks: dict[str, list[tuple[float, str, str]]] | None = None,
) -> list[dict[str, Any]]:
    """The jobs run for the ticket, each with what the audit says of it: the script, consent
    asked and answered, backups, how it ended (seq and hash of each).

    A job is the ticket's when it ran on the ticket's device while the ticket was open, and the
    last ticket its requester marked as being worked on (``run --ticket``, ``POST …/work``)
    before it is this one: so a job belongs to one ticket at most, and a run nobody said was
    for a ticket belongs to none (outside the report's ticket records).

    ``records``: the device's audit records from the ticket's opening on, when the caller read
    them already (a report reads them once for all its tickets); else read here, as one range
    of the chain by seq from the ticket's first record, never a scan of the whole log.
    ``marks``: each device's "working" steps, kept across calls by a caller that asks for
    several tickets of one device (a report), so they are read once per device."""
    if ticket.device_id is None:
        return []
    end = ticket.resolved_at if ticket.status in ("resolved", "closed") else None
    end = state.now() if end is None else end
    jobs = await state_tickets(state).jobs_between(ticket.device_id, ticket.created_at, end)
    if jobs:
        marks = {} if marks is None else marks
        if ticket.device_id not in marks:
            marks[ticket.device_id] = await state_tickets(state).work_marks(ticket.device_id)
        device_marks = marks[ticket.device_id]

        def owner(job: Job) -> str | None:
            mine = [
                m
                for m in device_marks
                if m[1] == f"user:{job.requested_by}" and m[0] <= job.created_at
            ]
            return mine[-1][2] if mine else None

        jobs = [job for job in jobs if owner(job) == ticket.id]
    if not jobs:
        return []
    if records is None:
        first = min((e.audit_seq for e in events if e.audit_seq is not None), default=1)
        records = await state_tickets(state).audit_for([f"device:{ticket.device_id}"], first)
    by_job: dict[str, list[AuditRecord]] = {job.id: [] for job in jobs}
    for record in records:
        job_id = record.detail.get("job") if isinstance(record.detail, dict) else None
        if isinstance(job_id, str) and job_id in by_job:
            by_job[job_id].append(record)
    out = []
    for job in jobs:
        entry: dict[str, Any] = {
            "id": job.id,
            "kind": job.kind,
            "status": job.status.value,
            "requested_by": job.requested_by,
            "created_at": job.created_at,
            "finished_at": job.finished_at,
            "local": {
                "created_at": local_iso(hours, job.created_at),
                "finished_at": None
                if job.finished_at is None
                else local_iso(hours, job.finished_at),
            },
            "error": job.error,
            "outcome": _outcome(job.status.value, job.error),
            "script": None,
            "version": None,
            "consent": [],
            "backups": [],
            "audit": [],
        }
        for record in by_job[job.id]:
            detail = record.detail
            said = detail.get("agent")  # the agent's own detail of a step (bounded)
            agent: dict[str, Any] = said if isinstance(said, dict) else {}
            if record.action in ("script.run", "script.restore"):
                entry["script"] = detail.get("script")
                entry["version"] = detail.get("version")
            elif record.action == "script.run.consent_answered":
                entry["consent"].append(
                    {
                        "decision": agent.get("decision"),
                        "answered_by": agent.get("answered_by"),
                        "at": record.at,
                    }
                )
            elif record.action == "script.run.backup_made" and agent.get("backup_id"):
                entry["backups"].append(agent.get("backup_id"))
            entry["audit"].append(
                {"seq": record.seq, "action": record.action, "hash": record.hash.hex()}
            )
        out.append(entry)
    return out


# --- the SLA sweeper -----------------------------------------------------------------------------


async def sweep_breaches(state: RelayState) -> int:
    """Record every breach due by now (dated at its due time); how many were recorded."""
    found = await state_tickets(state).mark_breaches(state.now())
    for ticket, which in found:
        log.warning("ticket %s missed its %s target", ticket.support_code, which)
    if found:
        wake_webhooks(state)
    return len(found)


def wake_webhooks(state: RelayState) -> None:
    """Tell the webhook sender (when the relay runs one) that news was queued."""
    sender = getattr(state.health, "sender", None)
    if isinstance(sender, WebhookSender):
        sender.wake()


async def close_resolved(state: RelayState) -> int:
    """Close tickets resolved and left unrated for :data:`RECENT` (the merchant may still rate
    them); each audited as ``ticket.close`` by the relay and pushed to its device."""
    tickets = state_tickets(state)
    now = state.now()
    closed = 0
    for ticket in await tickets.resolved_before(now - RECENT):
        try:
            changed = await tickets.change(
                ticket.id,
                from_states={"resolved"},
                to="closed",
                actor="relay",
                kind="closed",
                text="",
                now=now,
                audit=AuditEntry(
                    "relay",
                    "ticket.close",
                    f"ticket:{ticket.id}",
                    Outcome.OK,
                    {"code": ticket.support_code, "reason": "resolved 7 days ago, not rated"},
                ),
                values={"closed_at": now},
            )
        except Conflict:  # reopened or rated meanwhile
            continue
        push(state, changed)
        closed += 1
    return closed


async def _sweeper(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    app[TICKETS] = Tickets(state)

    async def loop() -> None:
        while True:
            try:
                await sweep_breaches(state)  # at once after a start: a restart misses nothing
                await close_resolved(state)
            except StorageError as exc:
                log.warning("SLA breaches not recorded, will retry: %s", exc)
            await asyncio.sleep(SWEEP_INTERVAL)

    task = asyncio.create_task(loop(), name="SLA sweeper")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def add_routes(app: web.Application) -> None:
    """The ticket endpoints and the sweeper; call after the storage's own cleanup context (the
    merchant's report over tickets: relay/handlers/reports.py ``add_routes``)."""
    app.cleanup_ctx.append(_sweeper)
    app.router.add_get("/v1/tickets", list_tickets)
    app.router.add_post("/v1/tickets", create_ticket)
    app.router.add_get("/v1/tickets/{code}", show_ticket)
    app.router.add_post("/v1/tickets/{code}/accept", accept_ticket)
    app.router.add_post("/v1/tickets/{code}/work", work_ticket)
    app.router.add_post("/v1/tickets/{code}/note", note_ticket)
    app.router.add_post("/v1/tickets/{code}/resolve", resolve_ticket)
    app.router.add_post("/v1/tickets/{code}/reopen", reopen_ticket)
    app.router.add_get("/v1/merchants/{merchant_id}/sla", get_sla)
    app.router.add_post("/v1/merchants/{merchant_id}/sla", set_sla)
