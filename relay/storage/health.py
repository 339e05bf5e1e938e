"""Storage of health alerts, check policies, webhooks and remediation attempts (issue 13).

:class:`HealthStore` runs on the same :class:`~relay.storage.engine.Database` as
:class:`~relay.storage.sql.SqlStorage`; each method is one transaction, and every change is
audited in it (the record commits with the change, or neither does). Ingest of an alert event
is one small transaction: the event's key (idempotency), the alert, its audit record and the
webhook deliveries it queues.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import secrets
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa

from posassist.relay.alerts import NOTIFIED, Alert, AlertEvent, Change, decide, worse
from posassist.relay.audit import AuditEntry, Outcome, bounded
from posassist.relay.errors import Conflict, NotFound
from posassist.relay.storage import schema as t
from posassist.relay.storage import schema_health as h
from posassist.relay.storage.models import Scope, ScopeKind
from posassist.relay.storage.sql import _append_in, _json, _Prepared, _scope_clause
from posassist.relay.webhooks import Delivery

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from posassist.relay.storage.sql import SqlStorage

__all__ = ["HealthStore", "Ingested", "PolicyLayers", "Remediation", "Webhook"]

#: Devices ⋈ stores ⋈ merchants: where a device sits (for routing and listing by store).
_TREE = t.devices.join(t.stores, t.devices.c.store_id == t.stores.c.id).join(
    t.merchants, t.stores.c.merchant_id == t.merchants.c.id
)
#: Webhooks a notification can go to: its organisation's, its merchant's, the whole relay's.
_WEBHOOK_LEVELS = (ScopeKind.ROOT, ScopeKind.ORGANISATION, ScopeKind.MERCHANT)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


class PolicyLayers(NamedTuple):
    """What a device's policy is made of (:meth:`HealthStore.policy_layers`)."""

    version: int
    layers: list[dict[str, Any]]
    store_id: str
    timezone: str
    hours: str  # the store's hours as stored (JSON)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Ingested:
    """What one ``alert.raised`` did: ``duplicate`` if its key was seen before (nothing
    changed), the change, the alert after it, and how many webhook deliveries it queued."""

    duplicate: bool
    change: Change
    alert: Alert | None
    deliveries: int = 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    id: str
    scope: Scope
    url: str
    created_at: float
    created_by: str
    disabled_at: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope_kind": self.scope.kind.value,
            "scope_id": self.scope.id,
            "url": self.url,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "disabled_at": self.disabled_at,
        }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Remediation:
    id: str
    alert_id: str
    device_id: str
    check_name: str
    script: str
    version: str
    job_id: str | None
    status: str
    started_at: float
    finished_at: float | None
    detail: str | None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _alert(row: sa.Row[Any], store_id: str | None = None, timezone: str | None = None) -> Alert:
    details = row.details
    if isinstance(details, str):  # read through a prepared statement: the JSON text
        details = json.loads(details)
    return Alert(
        id=row.id,
        device_id=row.device_id,
        check_name=row.check_name,
        status=row.status,
        severity=row.severity,
        summary=row.summary,
        details=details,
        opened_at=row.opened_at,
        updated_at=row.updated_at,
        resolved_at=row.resolved_at,
        first_observed_at=row.first_observed_at,
        last_observed_at=row.last_observed_at,
        events=row.events,
        reopened=row.reopened,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        escalated_at=row.escalated_at,
        ticket_id=row.ticket_id,
        held_until=row.held_until,
        store_id=store_id,
        store_timezone=timezone,
    )


def _alert_from(values: Mapping[str, Any]) -> Alert:
    """An alert from the column values just written."""
    return Alert(**{f.name: values[f.name] for f in dataclasses.fields(Alert) if f.name in values})


# The ingest path's statements, compiled once (relay/storage/sql.py ``_Prepared``): building a
# statement costs more than running it.
_SEEN = _Prepared(
    sa.select(sa.literal_column("1")).where(
        h.alert_events.c.device_id == sa.bindparam("b_device"),
        h.alert_events.c.alert_key == sa.bindparam("b_key"),
    )
)
# The (device, check)'s alert not yet resolved if there is one (at most one: a unique index),
# else its most recently resolved one: the first row (few: an alert reopens within a day).
_ALERT_OF_CHECK = _Prepared(
    h.alerts.select()
    .where(
        h.alerts.c.device_id == sa.bindparam("b_device"),
        h.alerts.c.check_name == sa.bindparam("b_check"),
    )
    .order_by(
        sa.case(
            (h.alerts.c.status == sa.literal_column("'resolved'"), sa.literal_column("1")),
            else_=sa.literal_column("0"),
        ),
        h.alerts.c.resolved_at.desc(),
    )
)
_INSERT_ALERT = _Prepared(
    h.alerts.insert().values({c.name: sa.bindparam(c.name) for c in h.alerts.c})
)
_INSERT_EVENT = _Prepared(
    h.alert_events.insert().values({c.name: sa.bindparam(c.name) for c in h.alert_events.c})
)


# A device's place in the tree with its store's zone and hours (:func:`_path`); then the policies
# on that path (root, organisation, merchant, store, device: five (kind, id) pairs), read at
# every connect.
_DEVICE_PATH = _Prepared(
    sa.select(
        t.merchants.c.organisation_id,
        t.stores.c.merchant_id,
        t.devices.c.store_id,
        t.stores.c.timezone,
        t.stores.c.hours,
    )
    .select_from(_TREE)
    .where(t.devices.c.id == sa.bindparam("b_device"))
)
_PATH_NODES = 5
_PATH_POLICIES = _Prepared(
    sa.select(
        h.policies.c.scope_kind, h.policies.c.scope_id, h.policies.c.version, h.policies.c.document
    ).where(
        sa.or_(
            *(
                sa.and_(
                    h.policies.c.scope_kind == sa.bindparam(f"b_kind{i}"),
                    h.policies.c.scope_id == sa.bindparam(f"b_id{i}"),
                )
                for i in range(_PATH_NODES)
            )
        )
    )
)


@functools.cache
def _update_alert(columns: tuple[str, ...]) -> _Prepared:
    """The update of these columns of one alert (``b_id``), returning the row."""
    return _Prepared(
        h.alerts.update()
        .where(h.alerts.c.id == sa.bindparam("b_id"))
        .values({name: sa.bindparam(name) for name in columns})
        .returning(*h.alerts.c)
    )


def _remediation(row: sa.Row[Any]) -> Remediation:
    return Remediation(**{f.name: getattr(row, f.name) for f in dataclasses.fields(Remediation)})


def _path(conn: sa.Connection, device_id: str) -> Any:
    """The device's organisation_id, merchant_id and store_id, with the store's timezone and
    hours as stored (a row)."""
    row = _DEVICE_PATH(conn, {"b_device": device_id}).first()
    if row is None:
        raise NotFound(f"device {device_id!r}")
    return row


def _policy_layers(conn: sa.Connection, device_id: str) -> PolicyLayers:
    path = _path(conn, device_id)
    nodes = [*_scope_ids(path), (ScopeKind.DEVICE.value, device_id)]
    params = {}
    for i, (kind, node_id) in enumerate(nodes):
        params[f"b_kind{i}"], params[f"b_id{i}"] = kind, node_id
    rows = _PATH_POLICIES(conn, params).all()
    # a policy removed keeps its row (its version counts) with no document: SQL NULL,
    # or JSON null as SQLAlchemy writes None
    by_node = {(row.scope_kind, row.scope_id): _document(row.document) for row in rows}
    version = max((int(row.version) for row in rows), default=0)
    layers = [doc for node in nodes if (doc := by_node.get(node)) is not None]
    return PolicyLayers(version, layers, str(path.store_id), str(path.timezone), str(path.hours))


def _scope_ids(path: sa.Row[Any]) -> list[tuple[str, str]]:
    """(scope kind, scope id) of each node above a device, nearest last; root as ("root", "")."""
    return [
        (ScopeKind.ROOT.value, ""),
        (ScopeKind.ORGANISATION.value, path.organisation_id),
        (ScopeKind.MERCHANT.value, path.merchant_id),
        (ScopeKind.STORE.value, path.store_id),
    ]


def _document(stored: Any) -> dict[str, Any] | None:
    """A JSON column read by the driver itself: text from SQLite, already parsed from psycopg."""
    return json.loads(stored) if isinstance(stored, str | bytes) else stored  # type: ignore[no-any-return]


def _scope_key(scope: Scope) -> tuple[str, str]:
    return scope.kind.value, scope.id or ""


_ALERTS_TREE = (
    h.alerts.join(t.devices, h.alerts.c.device_id == t.devices.c.id)
    .join(t.stores, t.devices.c.store_id == t.stores.c.id)
    .join(t.merchants, t.stores.c.merchant_id == t.merchants.c.id)
)


def notification(kind: str, alert: Alert, path: sa.Row[Any] | None, **extra: Any) -> dict[str, Any]:
    """The JSON body of a webhook notification (docs/webhooks.md#payload)."""
    body: dict[str, Any] = {"type": kind, "alert": alert.to_json()}
    if path is not None:
        body["alert"]["store_id"] = path.store_id
        body["alert"]["store_timezone"] = path.timezone
        body["merchant_id"] = path.merchant_id
        body["organisation_id"] = path.organisation_id
    body.update(extra)
    return body


def _queue(
    conn: sa.Connection,
    path: Any,
    kind: str,
    body: dict[str, Any],
    now: float,
    *,
    due: float | None = None,
) -> int:
    """Queue ``body`` for every enabled webhook of the device's organisation, merchant or the
    whole relay; how many deliveries."""
    levels = [
        sa.and_(h.webhooks.c.scope_kind == kind_, h.webhooks.c.scope_id == id_)
        for kind_, id_ in _scope_ids(path)
        if ScopeKind(kind_) in _WEBHOOK_LEVELS
    ]
    hooks = conn.execute(
        sa.select(h.webhooks.c.id).where(sa.or_(*levels), h.webhooks.c.disabled_at.is_(None))
    ).all()
    if not hooks:
        return 0
    rows = []
    for hook in hooks:
        delivery_id = _new_id("dlv")
        payload = json.dumps(
            {**body, "delivery": delivery_id, "webhook": hook.id}, ensure_ascii=False
        )
        rows.append(
            {
                "id": delivery_id,
                "webhook_id": hook.id,
                "alert_id": body["alert"]["id"] if "alert" in body else None,
                "event": kind,
                "payload": payload,
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now if due is None else max(now, due),
                "finished_at": None,
                "last_error": None,
            }
        )
    conn.execute(h.webhook_deliveries.insert(), rows)
    return len(rows)


_STORE_PATH = _Prepared(
    sa.select(
        t.merchants.c.organisation_id,
        t.stores.c.merchant_id,
        t.stores.c.id.label("store_id"),
        t.stores.c.timezone,
        t.stores.c.name.label("store_name"),
        t.merchants.c.name.label("merchant_name"),
    )
    .select_from(t.stores.join(t.merchants, t.stores.c.merchant_id == t.merchants.c.id))
    .where(t.stores.c.id == sa.bindparam("b_store"))
)

#: What a ticket's webhook notification carries of it (docs/webhooks.md#tickets): no contact
#: number (a group chat is not the place for it; the console shows it).
TICKET_FIELDS = (
    "id",
    "support_code",
    "store_id",
    "device_id",
    "channel",
    "category",
    "description",
    "status",
    "technician",
    "created_at",
    "response_due",
    "resolve_due",
)


def queue_ticket_news(
    conn: sa.Connection, ticket: Mapping[str, Any], kind: str, now: float, **extra: Any
) -> int:
    """Queue a ticket's news (``ticket.opened``, ``ticket.sla_breached``) for every enabled
    webhook of its store's organisation, merchant or the whole relay, in the caller's
    transaction; how many deliveries."""
    path = _STORE_PATH(conn, {"b_store": ticket["store_id"]}).first()
    if path is None:  # pragma: no cover - the ticket's store is a foreign key
        raise NotFound(f"store {ticket['store_id']!r}")
    body: dict[str, Any] = {
        "type": kind,
        "organisation_id": path.organisation_id,
        "merchant_id": path.merchant_id,
        "merchant_name": path.merchant_name,
        "ticket": {name: ticket[name] for name in TICKET_FIELDS},
        **extra,
    }
    body["ticket"]["store_timezone"] = path.timezone
    body["ticket"]["store_name"] = path.store_name
    return _queue(conn, path, kind, body, now)


def _held(alert_id: str, held_until: float) -> sa.ColumnElement[bool]:
    """The alert's deliveries still waiting for the store's opening (not yet tried, due then;
    a delivery being sent is leased to a sooner time)."""
    d = h.webhook_deliveries.c
    return sa.and_(
        d.alert_id == alert_id,
        d.status == "pending",
        d.attempts == 0,
        d.next_attempt_at >= held_until,
    )


def _cancel_held(conn: sa.Connection, alert: Alert, now: float) -> int:
    """The notifications of ``alert`` still held for the store's opening, cancelled because it
    resolved first (nobody need be woken for what fixed itself); how many. None are cancelled
    once anything about the alert went out or is going (an escalation at night): the receiver
    heard of it, so it hears of the recovery too."""
    if alert.held_until is None or alert.held_until <= now:
        return 0
    d = h.webhook_deliveries.c
    told = conn.execute(
        sa.select(sa.func.count())
        .select_from(h.webhook_deliveries)
        .where(d.alert_id == alert.id, sa.not_(_held(alert.id, alert.held_until)))
    ).scalar()
    if told:
        return 0
    done = conn.execute(
        h.webhook_deliveries.update()
        .where(_held(alert.id, alert.held_until))
        .values(
            status="cancelled",
            finished_at=now,
            last_error="the alert resolved before the store opened",
        )
    )
    return int(done.rowcount or 0)


def _release_held(conn: sa.Connection, alert: Alert, now: float) -> None:
    """The alert pages now after all (worse at night, or its policy changed): its held
    notifications go now too, before the news that follows them."""
    if alert.held_until is None or alert.held_until <= now:
        return
    conn.execute(
        h.webhook_deliveries.update()
        .where(_held(alert.id, alert.held_until))
        .values(next_attempt_at=now)
    )


def open_ticket_of(conn: sa.Connection, device_id: str) -> str | None:
    """The hook to issue 12's tickets: the newest ticket of the device not yet resolved or
    closed, or None (also while the relay has no ``tickets`` table)."""
    tickets = t.metadata.tables.get("tickets")
    if tickets is None:
        return None
    found = conn.execute(
        sa.select(tickets.c.id)
        .where(tickets.c.device_id == device_id, tickets.c.status.not_in(["resolved", "closed"]))
        .order_by(tickets.c.created_at.desc())
        .limit(1)
    ).scalar()
    return None if found is None else str(found)


def link_alerts_to_ticket(
    conn: sa.Connection, device_id: str, ticket_id: str, actor: str, now: float
) -> list[str]:
    """The other half of the hook, for the transaction that opens a ticket: the device's
    unresolved alerts that have no ticket get this one, each audited; their ids."""
    ids = list(
        conn.execute(
            sa.select(h.alerts.c.id).where(
                h.alerts.c.device_id == device_id,
                h.alerts.c.status != "resolved",
                h.alerts.c.ticket_id.is_(None),
            )
        ).scalars()
    )
    for alert_id in ids:
        conn.execute(h.alerts.update().where(h.alerts.c.id == alert_id).values(ticket_id=ticket_id))
        _append_in(
            conn,
            AuditEntry(
                actor, "alert.ticket", f"alert:{alert_id}", Outcome.OK, {"ticket": ticket_id}
            ),
            now,
        )
    return ids


class HealthStore:
    """Alerts, policies, webhooks and remediations on the relay's database."""

    def __init__(self, storage: SqlStorage) -> None:
        self._db = storage.database
        self._sqlite = storage.dialect == "sqlite"

    # -- alerts ------------------------------------------------------------------------------

    async def ingest_alert(self, event: AlertEvent) -> Ingested:
        """Record one delivered event once; open, update, reopen or resolve its alert, audit
        it and queue its notifications, all in one transaction (docs/alerts.md#lifecycle)."""
        details = bounded(event.details)
        if not isinstance(details, dict):  # pragma: no cover - the message's field is a map
            details = {}
        event = dataclasses.replace(event, details=details)
        return await self._db.write(lambda conn: self._ingest(conn, event), small=True)

    def _ingest(self, conn: sa.Connection, event: AlertEvent) -> Ingested:
        now = event.received_at
        seen = _SEEN(conn, {"b_device": event.device_id, "b_key": event.alert_key}).first()
        if seen is not None:
            return Ingested(duplicate=True, change=Change.NONE, alert=None)
        if event.handling == "silenced":
            return self._silenced(conn, event)
        row = _ALERT_OF_CHECK(conn, {"b_device": event.device_id, "b_check": event.check_name})
        found = row.first()
        latest = None if found is None else _alert(found)
        unresolved = latest if latest is not None and latest.is_open else None
        last_resolved = latest if unresolved is None and event.state == "firing" else None
        decision = decide(event, unresolved, last_resolved)
        alert: Alert | None = unresolved or last_resolved
        if decision.change in (Change.OPENED, Change.REOPENED) and (
            decision.change is Change.OPENED or (alert is not None and alert.ticket_id is None)
        ):
            # a ticket the merchant already opened for this till (issue 12) takes the alert
            ticket = open_ticket_of(conn, event.device_id)
            if ticket is not None:
                decision.values["ticket_id"] = ticket
        if decision.change is Change.OPENED:
            values: dict[str, Any] = {c.name: None for c in h.alerts.c}
            values.update(decision.values, id=_new_id("alr"))
            _INSERT_ALERT(conn, {**values, "details": _json(values["details"])})
            alert = _alert_from(values)
        elif decision.change is not Change.NONE:
            assert decision.target is not None
            values = dict(decision.values)
            if "details" in values:
                values["details"] = _json(values["details"])
            alert = _alert(
                _update_alert(tuple(values))(conn, {**values, "b_id": decision.target}).one()
            )
        _INSERT_EVENT(
            conn,
            {
                "device_id": event.device_id,
                "alert_key": event.alert_key,
                "alert_id": None if alert is None else alert.id,
                "state": event.state,
                "severity": event.severity,
                "observed_at": event.observed_at,
                "received_at": now,
                "handling": event.handling,
            },
        )
        queued = cancelled = 0
        if unresolved is not None and decision.change is Change.RESOLVED:
            cancelled = _cancel_held(conn, unresolved, now)
            if not cancelled:  # the receiver heard of it: what it holds goes before the recovery
                _release_held(conn, unresolved, now)
        elif unresolved is not None and decision.values.get("held_until", 0) is None:
            _release_held(conn, unresolved, now)
        if alert is not None and decision.change is not Change.NONE:
            _append_in(
                conn,
                AuditEntry(
                    f"device:{event.device_id}",
                    f"alert.{decision.change.value}",
                    f"alert:{alert.id}",
                    Outcome.OK,
                    {
                        "check": event.check_name,
                        "severity": event.severity,
                        "key": event.alert_key,
                        "agent_observed_at": event.observed_at,
                        **({"handling": event.handling} if event.handling else {}),
                        **({"cancelled_notifications": cancelled} if cancelled else {}),
                    },
                ),
                now,
            )
            # a held alert that resolved before the store opened: it and its recovery unsent
            notify = not cancelled and (
                decision.change in NOTIFIED
                or (
                    decision.change is Change.UPDATED
                    and unresolved is not None
                    and worse(unresolved.severity, event.severity)
                )
            )
            if notify:
                path = _path(conn, event.device_id)
                alert = dataclasses.replace(alert, store_id=path.store_id)
                kind = f"alert.{decision.change.value}"
                # held outside the store's hours: sent when it opens; a recovery goes now (its
                # held news was cancelled, and then it is not sent, or released just above)
                due = None if decision.change is Change.RESOLVED else alert.held_until
                queued = _queue(conn, path, kind, notification(kind, alert, path), now, due=due)
        return Ingested(duplicate=False, change=decision.change, alert=alert, deliveries=queued)

    def _silenced(self, conn: sa.Connection, event: AlertEvent) -> Ingested:
        """Inside a maintenance window: recorded and audited, no alert changes."""
        now = event.received_at
        conn.execute(
            h.alert_events.insert().values(
                device_id=event.device_id,
                alert_key=event.alert_key,
                alert_id=None,
                state=event.state,
                severity=event.severity,
                observed_at=event.observed_at,
                received_at=now,
                handling="silenced",
            )
        )
        _append_in(
            conn,
            AuditEntry(
                f"device:{event.device_id}",
                "alert.silenced",
                f"device:{event.device_id}",
                Outcome.OK,
                {
                    "check": event.check_name,
                    "severity": event.severity,
                    "key": event.alert_key,
                    "reason": event.handling_reason[:256],
                },
            ),
            now,
        )
        return Ingested(duplicate=False, change=Change.NONE, alert=None)

    async def get_alert(self, alert_id: str) -> Alert:
        query = (
            sa.select(h.alerts, t.devices.c.store_id, t.stores.c.timezone)
            .select_from(_ALERTS_TREE)
            .where(h.alerts.c.id == alert_id)
        )
        row = await self._db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise NotFound(f"alert {alert_id!r}")
        return _alert(row, row.store_id, row.timezone)

    async def list_alerts(
        self,
        scope: Scope,
        *,
        store_id: str | None = None,
        open_only: bool = False,
        limit: int = 500,
    ) -> list[Alert]:
        """Alerts of the devices ``scope`` covers, newest change first."""
        query = (
            sa.select(h.alerts, t.devices.c.store_id, t.stores.c.timezone)
            .select_from(_ALERTS_TREE)
            .where(_scope_clause(scope))
            .order_by(h.alerts.c.updated_at.desc(), h.alerts.c.id)
            .limit(limit)
        )
        if store_id is not None:
            query = query.where(t.devices.c.store_id == store_id)
        if open_only:
            query = query.where(h.alerts.c.status != "resolved")
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return [_alert(row, row.store_id, row.timezone) for row in rows]

    async def alert_events(self, alert_id: str) -> list[dict[str, Any]]:
        query = (
            h.alert_events.select()
            .where(h.alert_events.c.alert_id == alert_id)
            .order_by(h.alert_events.c.received_at, h.alert_events.c.alert_key)
        )
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return [
            {
                "key": row.alert_key,
                "state": row.state,
                "severity": row.severity,
                "agent_observed_at": row.observed_at,
                "relay_received_at": row.received_at,
            }
            for row in rows
        ]

    async def acknowledge_alert(self, alert_id: str, username: str, *, now: float) -> Alert:
        """A technician is on it: ``open`` → ``acknowledged``, audited. Conflict if it is
        resolved or acknowledged already."""

        def tx(conn: sa.Connection) -> Alert:
            done = conn.execute(
                h.alerts.update()
                .where(h.alerts.c.id == alert_id, h.alerts.c.status == "open")
                .values(status="acknowledged", acknowledged_at=now, acknowledged_by=username)
            )
            row = conn.execute(h.alerts.select().where(h.alerts.c.id == alert_id)).first()
            if row is None:
                raise NotFound(f"alert {alert_id!r}")
            if done.rowcount == 0:
                raise Conflict(f"alert {alert_id} is {row.status}")
            _append_in(
                conn,
                AuditEntry(
                    f"user:{username}",
                    "alert.acknowledge",
                    f"alert:{alert_id}",
                    Outcome.OK,
                    {"device": row.device_id, "check": row.check_name},
                ),
                now,
            )
            return _alert(row)

        return await self._db.write(tx)

    async def resolve_device_alerts(
        self, device_id: str, actor: str, reason: str, *, now: float
    ) -> list[str]:
        """Resolve the open alerts of a till taken out of service (revoked or deleted: it can't
        recover, so nobody should be paged for it), each audited ``alert.resolved`` by ``actor``
        with ``reason``; their notifications not yet sent are cancelled (readme-walk 15 M8).
        The ids resolved; none (nothing written) when it had none open."""

        def tx(conn: sa.Connection) -> list[str]:
            rows = conn.execute(
                h.alerts.select()
                .where(h.alerts.c.device_id == device_id, h.alerts.c.status != "resolved")
                .order_by(h.alerts.c.opened_at, h.alerts.c.id)
            ).all()
            d = h.webhook_deliveries.c
            for row in rows:
                conn.execute(
                    h.alerts.update()
                    .where(h.alerts.c.id == row.id)
                    .values(status="resolved", resolved_at=now, updated_at=now)
                )
                cancelled = conn.execute(
                    h.webhook_deliveries.update()
                    .where(d.alert_id == row.id, d.status == "pending", d.attempts == 0)
                    .values(status="cancelled", finished_at=now, last_error=reason)
                ).rowcount
                _append_in(
                    conn,
                    AuditEntry(
                        actor,
                        "alert.resolved",
                        f"alert:{row.id}",
                        Outcome.OK,
                        {
                            "device": device_id,
                            "check": row.check_name,
                            "severity": row.severity,
                            "reason": reason,
                            **({"cancelled_notifications": cancelled} if cancelled else {}),
                        },
                    ),
                    now,
                )
            return [str(row.id) for row in rows]

        return await self._db.write(tx)

    async def link_ticket(self, alert_id: str, ticket_id: str, actor: str, *, now: float) -> Alert:
        """Attach a ticket to the alert (the hook for issue 12's tickets), audited."""

        def tx(conn: sa.Connection) -> Alert:
            done = conn.execute(
                h.alerts.update().where(h.alerts.c.id == alert_id).values(ticket_id=ticket_id)
            )
            if done.rowcount == 0:
                raise NotFound(f"alert {alert_id!r}")
            _append_in(
                conn,
                AuditEntry(
                    actor, "alert.ticket", f"alert:{alert_id}", Outcome.OK, {"ticket": ticket_id}
                ),
                now,
            )
            return _alert(conn.execute(h.alerts.select().where(h.alerts.c.id == alert_id)).one())

        return await self._db.write(tx)

    async def escalate(self, alert_id: str, reason: str, *, now: float) -> Alert | None:
        """The alert still fails after its remediation attempts: escalated once (audited,
        notified); None if it was already escalated or is resolved."""

        def tx(conn: sa.Connection) -> Alert | None:
            done = conn.execute(
                h.alerts.update()
                .where(
                    h.alerts.c.id == alert_id,
                    h.alerts.c.status != "resolved",
                    h.alerts.c.escalated_at.is_(None),
                )
                .values(escalated_at=now, updated_at=now)
            )
            if done.rowcount == 0:
                return None
            row = conn.execute(h.alerts.select().where(h.alerts.c.id == alert_id)).one()
            _append_in(
                conn,
                AuditEntry(
                    "relay",
                    "alert.escalated",
                    f"alert:{alert_id}",
                    Outcome.OK,
                    {"device": row.device_id, "check": row.check_name, "reason": reason},
                ),
                now,
            )
            path = _path(conn, row.device_id)
            alert = _alert(row, path.store_id)
            _release_held(conn, alert, now)  # it pages now: what was held goes first
            _queue(
                conn,
                path,
                "alert.escalated",
                notification("alert.escalated", alert, path, reason=reason),
                now,
            )
            return alert

        return await self._db.write(tx)

    # -- policies ----------------------------------------------------------------------------

    async def set_policy(
        self,
        scope: Scope,
        document: Mapping[str, Any] | None,
        username: str,
        *,
        now: float,
    ) -> int:
        """Set (or with None, remove) the policy of one node of the tree, audited; its new
        version (one counter over every row, so a device's resolved version only grows)."""
        kind, node = _scope_key(scope)

        def tx(conn: sa.Connection) -> int:
            if not self._sqlite:  # one counter: writers take turns
                conn.execute(sa.text("LOCK TABLE policies IN SHARE ROW EXCLUSIVE MODE"))
            top = conn.scalar(sa.select(sa.func.max(h.policies.c.version))) or 0
            version = int(top) + 1
            values = {
                "version": version,
                # each layer carries the relay's counter (merge_layers sums them; the relay
                # then states the highest: relay/policies.py resolve)
                "document": None if document is None else {**document, "version": version},
                "updated_at": now,
                "updated_by": username,
            }
            done = conn.execute(
                h.policies.update()
                .where(h.policies.c.scope_kind == kind, h.policies.c.scope_id == node)
                .values(values)
            )
            if done.rowcount == 0:
                conn.execute(h.policies.insert().values(scope_kind=kind, scope_id=node, **values))
            _append_in(
                conn,
                AuditEntry(
                    f"user:{username}",
                    "policy.set" if document is not None else "policy.remove",
                    f"{kind}:{node}" if node else kind,
                    Outcome.OK,
                    {"version": version},
                ),
                now,
            )
            return version

        return await self._db.write(tx)

    async def get_policy(self, scope: Scope) -> tuple[int, dict[str, Any] | None] | None:
        """The policy set on exactly this node: (version, document or None if removed)."""
        kind, node = _scope_key(scope)
        query = h.policies.select().where(
            h.policies.c.scope_kind == kind, h.policies.c.scope_id == node
        )
        row = await self._db.read(lambda conn: conn.execute(query).first())
        return None if row is None else (int(row.version), row.document)

    async def policy_layers(self, device_id: str) -> PolicyLayers:
        """The policies above a device, farthest (root) first, nearest (the device) last, the
        highest version among them (0 if none) and the device's store with its time zone and
        hours (as stored, JSON): what :func:`relay.policies.resolve` merges, in one read."""
        return await self._db.read(lambda conn: _policy_layers(conn, device_id))

    async def policy_layers_many(self, device_ids: Sequence[str]) -> dict[str, PolicyLayers]:
        """:meth:`policy_layers` of each device that exists, in one read (relay/batching.py:
        a reconnect storm reads thousands at once)."""

        def tx(conn: sa.Connection) -> dict[str, PolicyLayers]:
            found = {}
            for device_id in device_ids:
                with contextlib.suppress(NotFound):
                    found[device_id] = _policy_layers(conn, device_id)
            return found

        return await self._db.read(tx)

    async def policy_devices(self, scope: Scope) -> list[str]:
        """The active devices under ``scope`` (whose resolved policy a change there moves)."""
        where = _scope_clause(scope)
        query = (
            sa.select(t.devices.c.id)
            .select_from(_TREE)
            .where(where, t.devices.c.status == "active")
        )
        return list(await self._db.read(lambda conn: conn.execute(query).scalars().all()))

    # -- webhooks ----------------------------------------------------------------------------

    async def create_webhook(
        self, scope: Scope, url: str, secret: str, username: str, *, now: float
    ) -> Webhook:
        if scope.kind not in _WEBHOOK_LEVELS:
            raise ValueError(f"webhooks belong to an organisation or a merchant, not {scope.kind}")
        hook = Webhook(
            id=_new_id("whk"),
            scope=scope,
            url=url,
            created_at=now,
            created_by=username,
            disabled_at=None,
        )
        kind, node = _scope_key(scope)

        def tx(conn: sa.Connection) -> None:
            conn.execute(
                h.webhooks.insert().values(
                    id=hook.id,
                    scope_kind=kind,
                    scope_id=node,
                    url=url,
                    secret=secret,
                    created_at=now,
                    created_by=username,
                    disabled_at=None,
                )
            )
            _append_in(
                conn,
                AuditEntry(
                    f"user:{username}",
                    "webhook.create",
                    f"webhook:{hook.id}",
                    Outcome.OK,
                    {"scope": f"{kind}:{node}", "url": url[:200]},
                ),
                now,
            )

        await self._db.write(tx)
        return hook

    async def disable_webhook(self, webhook_id: str, username: str, *, now: float) -> int:
        """The webhook sends nothing more: disabled (kept, with its history), its pending
        deliveries cancelled, audited; how many were cancelled. Idempotent."""

        def tx(conn: sa.Connection) -> int:
            done = conn.execute(
                h.webhooks.update()
                .where(h.webhooks.c.id == webhook_id, h.webhooks.c.disabled_at.is_(None))
                .values(disabled_at=now)
            )
            if not done.rowcount:
                return 0
            d = h.webhook_deliveries.c
            cancelled = conn.execute(
                h.webhook_deliveries.update()
                .where(d.webhook_id == webhook_id, d.status == "pending")
                .values(status="cancelled", finished_at=now, last_error="the webhook was removed")
            ).rowcount
            _append_in(
                conn,
                AuditEntry(
                    f"user:{username}",
                    "webhook.disable",
                    f"webhook:{webhook_id}",
                    Outcome.OK,
                    {"cancelled_deliveries": int(cancelled or 0)},
                ),
                now,
            )
            return int(cancelled or 0)

        return await self._db.write(tx)

    async def webhooks_within(self, scope: Scope) -> list[Webhook]:
        """Webhooks set on ``scope``'s node or under it (an organisation's merchants')."""
        hooks = h.webhooks
        match scope.kind:
            case ScopeKind.ROOT:
                where: sa.ColumnElement[bool] = sa.true()
            case ScopeKind.ORGANISATION:
                merchants = sa.select(t.merchants.c.id).where(
                    t.merchants.c.organisation_id == scope.id
                )
                where = sa.or_(
                    sa.and_(hooks.c.scope_kind == "organisation", hooks.c.scope_id == scope.id),
                    sa.and_(hooks.c.scope_kind == "merchant", hooks.c.scope_id.in_(merchants)),
                )
            case ScopeKind.MERCHANT:
                where = sa.and_(hooks.c.scope_kind == "merchant", hooks.c.scope_id == scope.id)
            case _:
                return []
        query = hooks.select().where(where).order_by(hooks.c.created_at, hooks.c.id)
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return [
            Webhook(
                id=row.id,
                scope=Scope(ScopeKind(row.scope_kind), row.scope_id or None),
                url=row.url,
                created_at=row.created_at,
                created_by=row.created_by,
                disabled_at=row.disabled_at,
            )
            for row in rows
        ]

    async def claim_deliveries(self, *, now: float, lease: float, limit: int) -> list[Delivery]:
        """Up to ``limit`` due pending deliveries, each leased (not due again) for ``lease``
        seconds, so that no other sender takes it meanwhile; oldest first."""
        sqlite = self._sqlite

        def tx(conn: sa.Connection) -> list[Delivery]:
            query = (
                sa.select(
                    h.webhook_deliveries.c.id,
                    h.webhook_deliveries.c.webhook_id,
                    h.webhook_deliveries.c.event,
                    h.webhook_deliveries.c.payload,
                    h.webhook_deliveries.c.attempts,
                    h.webhooks.c.url,
                    h.webhooks.c.secret,
                )
                .select_from(
                    h.webhook_deliveries.join(
                        h.webhooks, h.webhook_deliveries.c.webhook_id == h.webhooks.c.id
                    )
                )
                .where(
                    h.webhook_deliveries.c.status == "pending",
                    h.webhook_deliveries.c.next_attempt_at <= now,
                )
                .order_by(h.webhook_deliveries.c.next_attempt_at, h.webhook_deliveries.c.id)
                .limit(limit)
            )
            if not sqlite:
                query = query.with_for_update(of=h.webhook_deliveries, skip_locked=True)
            rows = conn.execute(query).all()
            if rows:
                conn.execute(
                    h.webhook_deliveries.update()
                    .where(h.webhook_deliveries.c.id.in_([row.id for row in rows]))
                    .values(next_attempt_at=now + lease)
                )
            return [
                Delivery(
                    id=row.id,
                    webhook_id=row.webhook_id,
                    url=row.url,
                    secret=row.secret,
                    event=row.event,
                    payload=row.payload,
                    attempts=row.attempts,
                )
                for row in rows
            ]

        return await self._db.write(tx)

    async def finish_delivery(
        self,
        delivery_id: str,
        *,
        attempts: int,
        error: str | None,
        now: float,
        retry_at: float | None,
    ) -> None:
        """One try's outcome: delivered (``error`` None), retried at ``retry_at``, or failed."""
        if error is None:
            values: dict[str, Any] = {"status": "delivered", "finished_at": now}
        elif retry_at is None:
            values = {"status": "failed", "finished_at": now}
        else:
            values = {"next_attempt_at": retry_at}
        update = (
            h.webhook_deliveries.update()
            .where(
                h.webhook_deliveries.c.id == delivery_id,
                h.webhook_deliveries.c.status == "pending",
            )
            .values(attempts=attempts, last_error=error, **values)
        )
        await self._db.write(lambda conn: conn.execute(update), small=True)

    async def next_delivery_due(self) -> float | None:
        """When the next pending delivery may be tried (None: nothing is pending)."""
        query = sa.select(sa.func.min(h.webhook_deliveries.c.next_attempt_at)).where(
            h.webhook_deliveries.c.status == "pending"
        )
        due = await self._db.read(lambda conn: conn.execute(query).scalar())
        return None if due is None else float(due)

    async def delivery_counts(self) -> dict[str, int]:
        """Deliveries by status: ``pending``, ``delivered``, ``failed``."""
        query = sa.select(h.webhook_deliveries.c.status, sa.func.count()).group_by(
            h.webhook_deliveries.c.status
        )
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        counts = dict.fromkeys(h.DELIVERY_STATUSES, 0)
        counts.update({row[0]: int(row[1]) for row in rows})
        return counts

    # -- remediation -------------------------------------------------------------------------

    async def attempts_since(
        self, device_id: str, check_name: str, since: float
    ) -> list[Remediation]:
        query = (
            h.remediations.select()
            .where(
                h.remediations.c.device_id == device_id,
                h.remediations.c.check_name == check_name,
                h.remediations.c.started_at >= since,
            )
            .order_by(h.remediations.c.started_at)
        )
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return [_remediation(row) for row in rows]

    async def remediations_of(self, alert_id: str) -> list[Remediation]:
        query = (
            h.remediations.select()
            .where(h.remediations.c.alert_id == alert_id)
            .order_by(h.remediations.c.started_at)
        )
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return [_remediation(row) for row in rows]

    async def start_remediation(
        self, alert: Alert, script: str, version: str, job_id: str, *, now: float
    ) -> Remediation:
        """Record an attempt (with its job) on the alert, audited."""
        attempt = Remediation(
            id=_new_id("rem"),
            alert_id=alert.id,
            device_id=alert.device_id,
            check_name=alert.check_name,
            script=script,
            version=version,
            job_id=job_id,
            status="running",
            started_at=now,
            finished_at=None,
            detail=None,
        )

        def tx(conn: sa.Connection) -> None:
            conn.execute(h.remediations.insert().values(attempt.to_json()))
            _append_in(
                conn,
                AuditEntry(
                    "relay",
                    "alert.remediation.start",
                    f"alert:{alert.id}",
                    Outcome.OK,
                    {
                        "attempt": attempt.id,
                        "device": alert.device_id,
                        "check": alert.check_name,
                        "script": script,
                        "version": version,
                        "job": job_id,
                    },
                ),
                now,
            )

        await self._db.write(tx)
        return attempt

    async def finish_remediation(
        self, attempt_id: str, status: str, detail: str | None, *, now: float
    ) -> Remediation | None:
        """How the attempt ended, audited; None if it had ended already."""

        def tx(conn: sa.Connection) -> Remediation | None:
            done = conn.execute(
                h.remediations.update()
                .where(h.remediations.c.id == attempt_id, h.remediations.c.status == "running")
                .values(status=status, finished_at=now, detail=detail)
            )
            if done.rowcount == 0:
                return None
            row = conn.execute(
                h.remediations.select().where(h.remediations.c.id == attempt_id)
            ).one()
            _append_in(
                conn,
                AuditEntry(
                    "relay",
                    "alert.remediation.finish",
                    f"alert:{row.alert_id}",
                    Outcome.OK if status == "succeeded" else Outcome.FAILED,
                    {"attempt": attempt_id, "status": status, "detail": detail, "job": row.job_id},
                ),
                now,
            )
            return _remediation(row)

        return await self._db.write(tx)
