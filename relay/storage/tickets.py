"""Tickets in the relay's database (migration 0004): each change, its history row and its audit
record commit in one transaction, so the record a merchant keeps can't miss a step.

Built on :class:`~relay.storage.sql.SqlStorage`'s transactions; the rules (states, codes, SLA)
are in :mod:`relay.tickets`. Assignment is one conditional UPDATE: of two technicians accepting
at once, exactly one changes the row; the other finds it taken (``Conflict``).
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from posassist.relay.audit import AuditEntry, AuditRecord, Outcome
from posassist.relay.errors import Conflict, NotFound
from posassist.relay.storage import schema as t
from posassist.relay.storage.models import Scope, ScopeKind
from posassist.relay.storage.sql import _append_in, _audit, _job, _scope_clause, _store

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

    from posassist.relay.storage.models import Job, RetailStore
    from posassist.relay.storage.sql import SqlStorage
    from posassist.relay.tickets import Sla

__all__ = ["Ticket", "TicketEvent", "TicketStore"]

#: Audit rows read per query when following a range of the chain.
_AUDIT_BATCH = 2000


@dataclass(frozen=True, slots=True, kw_only=True)
class Ticket:
    """One row of ``tickets``; times are epoch seconds."""

    id: str
    support_code: str
    store_id: str
    device_id: str | None
    channel: str
    category: str
    description: str
    contact: str
    language: str
    diagnostics: Mapping[str, Any]
    status: str
    technician: str | None
    opened_by: str
    created_at: float
    updated_at: float
    clock_started_at: float
    first_response_at: float | None = None
    resolved_at: float | None = None
    closed_at: float | None = None
    response_due: float | None = None
    resolve_due: float | None = None
    response_breached_at: float | None = None
    resolve_breached_at: float | None = None
    rating: int | None = None
    rating_comment: str | None = None
    rated_at: float | None = None
    version: int = 1
    #: While ``waiting_merchant``: when the resolution clock stopped (None: it runs).
    sla_paused_at: float | None = None
    #: The store's open seconds the resolution clock has been stopped, in all.
    sla_paused_seconds: float = 0.0

    @property
    def breached(self) -> bool:
        return self.response_breached_at is not None or self.resolve_breached_at is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketEvent:
    """One step of a ticket's history (``ticket_events``), with the seq of its audit record."""

    id: int
    ticket_id: str
    at: float
    actor: str
    kind: str
    status: str | None
    text: str
    audit_seq: int | None


def _all(query: sa.Select[Any]) -> Callable[[sa.Connection], Sequence[sa.Row[Any]]]:
    return lambda conn: conn.execute(query).all()


def _ticket(row: sa.Row[Any]) -> Ticket:
    return Ticket(**{f.name: getattr(row, f.name) for f in dataclasses.fields(Ticket)})


def _event(row: sa.Row[Any]) -> TicketEvent:
    return TicketEvent(**{f.name: getattr(row, f.name) for f in dataclasses.fields(TicketEvent)})


_TREE = t.tickets.join(t.stores, t.tickets.c.store_id == t.stores.c.id).join(
    t.merchants, t.stores.c.merchant_id == t.merchants.c.id
)


def _record(
    conn: sa.Connection,
    ticket_id: str,
    *,
    at: float,
    actor: str,
    kind: str,
    status: str | None,
    text: str,
    audit: AuditEntry,
) -> AuditRecord:
    """The history row and its audit record, in the caller's transaction."""
    detail = {"ticket": ticket_id, **dict(audit.detail or {})}
    record = _append_in(conn, dataclasses.replace(audit, detail=detail), at)
    conn.execute(
        t.ticket_events.insert().values(
            ticket_id=ticket_id,
            at=at,
            actor=actor,
            kind=kind,
            status=status,
            text=text,
            audit_seq=record.seq,
        )
    )
    return record


class TicketStore:
    """Tickets, their history and the merchants' SLA on one :class:`SqlStorage`."""

    def __init__(self, storage: SqlStorage) -> None:
        self._storage = storage

    # -- opening -------------------------------------------------------------------------------

    async def open_ticket(
        self,
        *,
        code: str,
        store_id: str,
        device_id: str | None,
        channel: str,
        category: str,
        description: str,
        contact: str,
        language: str,
        diagnostics: Mapping[str, Any],
        opened_by: str,
        now: float,
        response_due: float | None,
        resolve_due: float | None,
        technician: str | None = None,
        audit: AuditEntry,
    ) -> Ticket:
        """A new ticket (``new``; ``accepted`` by ``technician`` when one opens it for a caller)
        with its first history row and audit record. ``Conflict`` if ``code`` is taken (the
        caller draws another)."""
        status = "new" if technician is None else "accepted"
        ticket = Ticket(
            id=f"tkt_{secrets.token_hex(10)}",
            support_code=code,
            store_id=store_id,
            device_id=device_id,
            channel=channel,
            category=category,
            description=description,
            contact=contact,
            language=language,
            diagnostics=dict(diagnostics),
            status=status,
            technician=technician,
            opened_by=opened_by,
            created_at=now,
            updated_at=now,
            clock_started_at=now,
            first_response_at=None if technician is None else now,
            response_due=response_due,
            resolve_due=resolve_due,
        )

        def tx(conn: sa.Connection) -> None:
            conn.execute(t.tickets.insert().values(dataclasses.asdict(ticket)))
            _record(
                conn,
                ticket.id,
                at=now,
                actor=opened_by,
                kind="opened",
                status=status,
                text=description,
                audit=audit,
            )
            from .health import link_alerts_to_ticket, queue_ticket_news

            if device_id is not None:  # the till's open alerts take the ticket (issue 13)
                link_alerts_to_ticket(conn, device_id, ticket.id, opened_by, now)
            # the technicians' group chat hears of it at once (docs/webhooks.md#tickets)
            queue_ticket_news(conn, dataclasses.asdict(ticket), "ticket.opened", now)

        await self._storage.run_write(tx)
        return ticket

    # -- reading -------------------------------------------------------------------------------

    async def get(self, ticket_id: str) -> Ticket:
        query = t.tickets.select().where(t.tickets.c.id == ticket_id)
        row = await self._storage.run_read(lambda conn: conn.execute(query).first())
        if row is None:
            raise NotFound("ticket")
        return _ticket(row)

    async def by_code(self, code: str) -> Ticket | None:
        query = t.tickets.select().where(t.tickets.c.support_code == code)
        row = await self._storage.run_read(lambda conn: conn.execute(query).first())
        return None if row is None else _ticket(row)

    async def search(
        self,
        scope: Scope,
        *,
        store_id: str | None = None,
        states: Collection[str] | None = None,
        breached: bool | None = None,
        since: float | None = None,
        limit: int = 500,
    ) -> list[Ticket]:
        """Tickets ``scope`` covers, newest first, filtered as asked."""
        query = (
            sa.select(t.tickets)
            .select_from(_TREE)
            .where(_scope_clause(scope, t.tickets.c.store_id, t.tickets.c.device_id))
        )
        if store_id is not None:
            query = query.where(t.tickets.c.store_id == store_id)
        if states:
            query = query.where(t.tickets.c.status.in_(sorted(states)))
        if breached is not None:
            either = sa.or_(
                t.tickets.c.response_breached_at.is_not(None),
                t.tickets.c.resolve_breached_at.is_not(None),
            )
            query = query.where(either if breached else sa.not_(either))
        if since is not None:
            query = query.where(t.tickets.c.updated_at >= since)
        query = query.order_by(t.tickets.c.created_at.desc(), t.tickets.c.id).limit(limit)
        rows = await self._storage.run_read(lambda conn: conn.execute(query).all())
        return [_ticket(row) for row in rows]

    async def of_device(self, device_id: str, *, since: float, limit: int) -> list[Ticket]:
        """The device's open tickets and those resolved since ``since`` (closed or not), newest
        first: a ticket closed later, unrated, does not come back to the till's list."""
        query = (
            t.tickets.select()
            .where(
                t.tickets.c.device_id == device_id,
                sa.or_(
                    t.tickets.c.status.not_in(["resolved", "closed"]),
                    t.tickets.c.resolved_at >= since,
                ),
            )
            .order_by(t.tickets.c.updated_at.desc(), t.tickets.c.id)
            .limit(limit)
        )
        rows = await self._storage.run_read(lambda conn: conn.execute(query).all())
        return [_ticket(row) for row in rows]

    async def open_of_device(self, device_id: str) -> list[Ticket]:
        """The device's tickets not resolved nor closed, newest first."""
        query = (
            t.tickets.select()
            .where(
                t.tickets.c.device_id == device_id,
                t.tickets.c.status.not_in(["resolved", "closed"]),
            )
            .order_by(t.tickets.c.created_at.desc(), t.tickets.c.id)
        )
        rows = await self._storage.run_read(_all(query))
        return [_ticket(row) for row in rows]

    async def events(self, ticket_ids: Iterable[str]) -> dict[str, list[TicketEvent]]:
        wanted = list(ticket_ids)
        out: dict[str, list[TicketEvent]] = {ticket_id: [] for ticket_id in wanted}
        for start in range(0, len(wanted), 500):
            query = (
                t.ticket_events.select()
                .where(t.ticket_events.c.ticket_id.in_(wanted[start : start + 500]))
                .order_by(t.ticket_events.c.id)
            )
            rows = await self._storage.run_read(_all(query))
            for row in rows:
                out[row.ticket_id].append(_event(row))
        return out

    # -- changes -------------------------------------------------------------------------------

    async def change(
        self,
        ticket_id: str,
        *,
        from_states: Collection[str],
        to: str | None,
        actor: str,
        kind: str,
        text: str,
        now: float,
        audit: AuditEntry,
        values: Mapping[str, Any] | None = None,
        technician: str | None = None,
        device_id: str | None = None,
    ) -> Ticket:
        """Move the ticket to ``to`` (None: keep its state) if it is in one of ``from_states``
        (and, with ``technician``, assigned to them; with ``device_id``, that device's): one
        conditional UPDATE, so of two racing changes one wins and the other gets ``Conflict``.
        Its history row and audit record commit with it. ``NotFound`` if there is no ticket."""
        update_values: dict[str, Any] = {
            "updated_at": now,
            "version": t.tickets.c.version + 1,
            **(values or {}),
        }
        if to is not None:
            update_values["status"] = to
        clauses = [t.tickets.c.id == ticket_id, t.tickets.c.status.in_(sorted(from_states))]
        if technician is not None:
            clauses.append(t.tickets.c.technician == technician)
        if device_id is not None:
            clauses.append(t.tickets.c.device_id == device_id)
        update = t.tickets.update().where(*clauses).values(update_values).returning(*t.tickets.c)

        def tx(conn: sa.Connection) -> sa.Row[Any]:
            row = conn.execute(update).first()
            if row is None:
                exists = conn.scalar(
                    sa.select(t.tickets.c.status).where(t.tickets.c.id == ticket_id)
                )
                if exists is None:
                    raise NotFound("ticket")
                raise Conflict(f"ticket {ticket_id} is {exists}")
            _record(
                conn,
                ticket_id,
                at=now,
                actor=actor,
                kind=kind,
                status=row.status,
                text=text,
                audit=audit,
            )
            return row

        return _ticket(await self._storage.run_write(tx))

    async def note(
        self, ticket_id: str, *, actor: str, text: str, now: float, audit: AuditEntry
    ) -> None:
        """A technician's note: history and audit, the ticket's state unchanged."""

        def tx(conn: sa.Connection) -> None:
            status = conn.scalar(sa.select(t.tickets.c.status).where(t.tickets.c.id == ticket_id))
            if status is None:
                raise NotFound("ticket")
            conn.execute(
                t.tickets.update()
                .where(t.tickets.c.id == ticket_id)
                .values(updated_at=now, version=t.tickets.c.version + 1)
            )
            _record(
                conn,
                ticket_id,
                at=now,
                actor=actor,
                kind="note",
                status=status,
                text=text,
                audit=audit,
            )

        await self._storage.run_write(tx)

    async def resolved_before(self, cutoff: float, *, limit: int = 500) -> list[Ticket]:
        """Tickets ``resolved`` and untouched since before ``cutoff``, oldest first."""
        query = (
            t.tickets.select()
            .where(t.tickets.c.status == "resolved", t.tickets.c.updated_at < cutoff)
            .order_by(t.tickets.c.updated_at, t.tickets.c.id)
            .limit(limit)
        )
        rows = await self._storage.run_read(_all(query))
        return [_ticket(row) for row in rows]

    async def mark_breaches(self, now: float) -> list[tuple[Ticket, str]]:
        """Record every SLA breach that has happened by ``now`` and is not yet recorded: the
        breach is dated at the due time it missed (so a relay that was down records it as of
        then, not as of its restart), with history and audit in the same transaction."""
        started = t.tickets.c.clock_started_at
        checks = {
            "response": (
                t.tickets.c.response_due,
                t.tickets.c.response_breached_at,
                t.tickets.c.first_response_at,
            ),
            "resolution": (
                t.tickets.c.resolve_due,
                t.tickets.c.resolve_breached_at,
                t.tickets.c.resolved_at,
            ),
        }

        paused = t.tickets.c.sla_paused_at

        from .health import queue_ticket_news

        def tx(conn: sa.Connection) -> list[tuple[Ticket, str]]:
            found: list[tuple[Ticket, str]] = []
            for which, (due, breached_at, done_at) in checks.items():
                condition = sa.and_(
                    due.is_not(None),
                    due < now,
                    sa.or_(breached_at.is_(None), breached_at < started),
                    sa.or_(done_at.is_(None), done_at > due),
                )
                if which == "resolution":  # a clock stopped before its due time can't miss it
                    condition = sa.and_(condition, sa.or_(paused.is_(None), paused > due))
                for row in conn.execute(t.tickets.select().where(condition)).all():
                    updated = conn.execute(
                        t.tickets.update()
                        .where(t.tickets.c.id == row.id, condition)
                        .values({breached_at.name: row._mapping[due.name]})
                        .returning(*t.tickets.c)
                    ).first()
                    if updated is None:  # pragma: no cover - changed between the two
                        continue
                    _record(
                        conn,
                        row.id,
                        at=now,
                        actor="relay",
                        kind=f"breach.{which}",
                        status=row.status,
                        text="",
                        audit=AuditEntry(
                            "relay",
                            "ticket.sla_breached",
                            f"store:{row.store_id}",
                            Outcome.FAILED,
                            {"which": which, "due": row._mapping[due.name]},
                        ),
                    )
                    found.append((_ticket(updated), which))
                    queue_ticket_news(
                        conn,
                        dict(updated._mapping),
                        "ticket.sla_breached",
                        now,
                        which=which,
                        due=row._mapping[due.name],
                    )
            return found

        return await self._storage.run_write(tx)

    # -- SLA -----------------------------------------------------------------------------------

    async def sla(self, merchant_id: str) -> Sla:
        from posassist.relay.tickets import Sla

        query = t.sla_policies.select().where(t.sla_policies.c.merchant_id == merchant_id)
        row = await self._storage.run_read(lambda conn: conn.execute(query).first())
        if row is None:
            return Sla()
        return Sla(row.response_seconds, row.resolve_seconds)

    async def set_sla(self, merchant_id: str, sla: Sla, *, now: float, audit: AuditEntry) -> None:
        values = {**sla.to_json(), "updated_at": now}

        def tx(conn: sa.Connection) -> None:
            exists = conn.scalar(sa.select(t.merchants.c.id).where(t.merchants.c.id == merchant_id))
            if exists is None:
                raise NotFound("merchant")
            done = conn.execute(
                t.sla_policies.update()
                .where(t.sla_policies.c.merchant_id == merchant_id)
                .values(values)
            )
            if done.rowcount == 0:
                conn.execute(t.sla_policies.insert().values(merchant_id=merchant_id, **values))
            _append_in(conn, audit, now)

        await self._storage.run_write(tx)

    # -- what a report needs -------------------------------------------------------------------

    async def stores_in(self, scope: Scope) -> list[RetailStore]:
        """The stores ``scope`` covers (a device scope: its device's store), by name."""
        tree = t.stores.join(t.merchants, t.stores.c.merchant_id == t.merchants.c.id)
        query = sa.select(t.stores).select_from(tree)
        match scope.kind:
            case ScopeKind.ROOT:
                pass
            case ScopeKind.ORGANISATION:
                query = query.where(t.merchants.c.organisation_id == scope.id)
            case ScopeKind.MERCHANT:
                query = query.where(t.stores.c.merchant_id == scope.id)
            case ScopeKind.STORE:
                query = query.where(t.stores.c.id == scope.id)
            case ScopeKind.DEVICE:
                device_store = sa.select(t.devices.c.store_id).where(t.devices.c.id == scope.id)
                query = query.where(t.stores.c.id.in_(device_store.scalar_subquery()))
        query = query.order_by(t.stores.c.name, t.stores.c.id)
        rows = await self._storage.run_read(lambda conn: conn.execute(query).all())
        return [_store(row) for row in rows]

    async def merchant_name(self, merchant_id: str) -> str:
        """A merchant's name ("" if there is none by that id)."""
        query = sa.select(t.merchants.c.name).where(t.merchants.c.id == merchant_id)
        name = await self._storage.run_read(lambda conn: conn.scalar(query))
        return str(name or "")

    async def work_marks(self, device_id: str) -> list[tuple[float, str, str]]:
        """(at, actor, ticket id) of every "working" step of the device's tickets, oldest first:
        ``run --ticket`` marks the ticket its technician's next runs are for."""
        e, tk = t.ticket_events.c, t.tickets.c
        query = (
            sa.select(e.at, e.actor, e.ticket_id)
            .select_from(t.ticket_events.join(t.tickets, e.ticket_id == tk.id))
            .where(tk.device_id == device_id, e.kind == "working")
            .order_by(e.at, e.id)
        )
        rows = await self._storage.run_read(_all(query))
        return [(float(row.at), str(row.actor), str(row.ticket_id)) for row in rows]

    async def jobs_between(self, device_id: str, start: float, end: float) -> list[Job]:
        """The device's jobs created in [start, end], oldest first."""
        query = (
            t.jobs.select()
            .where(
                t.jobs.c.device_id == device_id,
                t.jobs.c.created_at >= start,
                t.jobs.c.created_at <= end,
            )
            .order_by(t.jobs.c.created_at, t.jobs.c.id)
        )
        rows = await self._storage.run_read(lambda conn: conn.execute(query).all())
        return [_job(row) for row in rows]

    async def audit_for(self, targets: Collection[str], start_seq: int) -> list[AuditRecord]:
        """Audit records about ``targets`` (``device:…``) from ``start_seq`` on, by seq: a range
        of the primary key read in batches, filtered as it goes."""
        wanted = frozenset(targets)
        out: list[AuditRecord] = []
        next_seq = start_seq
        while True:
            query = (
                t.audit.select()
                .where(t.audit.c.seq >= next_seq)
                .order_by(t.audit.c.seq)
                .limit(_AUDIT_BATCH)
            )
            rows = await self._storage.run_read(_all(query))
            out += [_audit(row) for row in rows if row.target in wanted]
            if len(rows) < _AUDIT_BATCH:
                return out
            next_seq = rows[-1].seq + 1

    async def audit_records(self, seqs: Collection[int]) -> list[AuditRecord]:
        wanted = sorted(set(seqs))
        out: list[AuditRecord] = []
        for start in range(0, len(wanted), 500):
            query = (
                t.audit.select()
                .where(t.audit.c.seq.in_(wanted[start : start + 500]))
                .order_by(t.audit.c.seq)
            )
            rows = await self._storage.run_read(_all(query))
            out += [_audit(row) for row in rows]
        return out
