"""Administration of the tenancy tree and of users in the relay's database (issue 15): list,
rename and delete nodes, list and change users, list enrolment tokens, page jobs and audit.

Built on :class:`~relay.storage.sql.SqlStorage`'s transactions; scope and role checks are the
handlers' (relay/handlers/admin.py). A disabled user keeps a ``!`` in front of the password hash
(the ``/etc/shadow`` convention): no password verifies against it and no token authenticates it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from posassist.relay.errors import Conflict, DeviceActive, NotFound
from posassist.relay.storage import schema as t
from posassist.relay.storage.models import (
    DeviceStatus,
    Merchant,
    Organisation,
    RetailStore,
    Scope,
    ScopeKind,
)
from posassist.relay.storage.sql import (
    _DEVICE_TREE,
    _audit,
    _enrolment,
    _job,
    _scope_clause,
    _store,
    _user,
)

if TYPE_CHECKING:
    from posassist.relay.audit import AuditRecord
    from posassist.relay.storage.models import EnrolmentToken, Job, User
    from posassist.relay.storage.sql import SqlStorage

__all__ = ["DISABLED_MARK", "AdminStore", "NotEmpty", "is_disabled"]

#: Put in front of a disabled user's password hash: nothing verifies against it.
DISABLED_MARK = "!"


def is_disabled(user: User) -> bool:
    return user.password_hash.startswith(DISABLED_MARK)


class NotEmpty(Conflict):
    """A node that still holds merchants, stores, devices, tickets or users can't be deleted;
    nothing was deleted."""

    public_reason = (
        "still in use: it holds merchants, stores, devices, tickets or users; "
        "delete or move them first"
    )
    public_reason_zh = "仍在使用中: 其下仍有商户、门店、设备、工单或用户, 请先删除或移走"

    def __init__(self, message: str, *, holds: dict[str, int]) -> None:
        super().__init__(message)
        #: What the node still holds, by kind: for the audit record.
        self.holds = holds


_TABLES = {
    ScopeKind.ORGANISATION: t.organisations,
    ScopeKind.MERCHANT: t.merchants,
    ScopeKind.STORE: t.stores,
}

#: kind → what must be empty before a node of that kind is deleted: (label, table, column).
_CHILDREN: dict[ScopeKind, list[tuple[str, sa.Table, sa.Column[Any]]]] = {
    ScopeKind.ORGANISATION: [("merchants", t.merchants, t.merchants.c.organisation_id)],
    ScopeKind.MERCHANT: [("stores", t.stores, t.stores.c.merchant_id)],
    ScopeKind.STORE: [
        ("devices", t.devices, t.devices.c.store_id),
        ("tickets", t.tickets, t.tickets.c.store_id),
    ],
}


def _nodes_clause(kind: ScopeKind, scope: Scope) -> sa.ColumnElement[bool]:
    """Nodes of ``kind`` that ``scope`` covers (over the table of ``kind`` joined upwards)."""
    match scope.kind:
        case ScopeKind.ROOT:
            return sa.true()
        case ScopeKind.ORGANISATION:
            column = {
                ScopeKind.ORGANISATION: t.organisations.c.id,
                ScopeKind.MERCHANT: t.merchants.c.organisation_id,
                ScopeKind.STORE: t.merchants.c.organisation_id,
            }[kind]
            return column == scope.id
        case ScopeKind.MERCHANT if kind is not ScopeKind.ORGANISATION:
            column = t.merchants.c.id if kind is ScopeKind.MERCHANT else t.stores.c.merchant_id
            return column == scope.id
        case ScopeKind.STORE if kind is ScopeKind.STORE:
            return t.stores.c.id == scope.id
        case _:
            return sa.false()


def _from(kind: ScopeKind) -> sa.FromClause:
    if kind is ScopeKind.STORE:
        return t.stores.join(t.merchants, t.stores.c.merchant_id == t.merchants.c.id)
    return _TABLES[kind]


class AdminStore:
    """Listing, renaming and deleting on one :class:`SqlStorage`."""

    def __init__(self, storage: SqlStorage) -> None:
        self._storage = storage

    # -- the tenancy tree ----------------------------------------------------------------------

    async def list_nodes(
        self, kind: ScopeKind, scope: Scope, *, parent: str | None = None
    ) -> list[Organisation | Merchant | RetailStore]:
        """Nodes of ``kind`` that ``scope`` covers (under ``parent`` if given), by name."""
        table = _TABLES[kind]
        query = sa.select(table).select_from(_from(kind)).where(_nodes_clause(kind, scope))
        if parent is not None and kind is ScopeKind.MERCHANT:
            query = query.where(t.merchants.c.organisation_id == parent)
        if parent is not None and kind is ScopeKind.STORE:
            query = query.where(t.stores.c.merchant_id == parent)
        query = query.order_by(table.c.name, table.c.id)
        rows = await self._storage.run_read(lambda conn: conn.execute(query).all())
        if kind is ScopeKind.ORGANISATION:
            return [Organisation(id=r.id, name=r.name, created_at=r.created_at) for r in rows]
        if kind is ScopeKind.MERCHANT:
            return [
                Merchant(
                    id=r.id, organisation_id=r.organisation_id, name=r.name, created_at=r.created_at
                )
                for r in rows
            ]
        return [_store(r) for r in rows]

    async def store_places(self, scope: Scope) -> list[tuple[RetailStore, str]]:
        """Stores ``scope`` covers with their merchant's name (the web console's fleet groups
        devices by merchant and store; a store-scoped user sees the merchant's name too)."""
        query = (
            sa.select(t.stores, t.merchants.c.name.label("merchant_name"))
            .select_from(_from(ScopeKind.STORE))
            .where(_nodes_clause(ScopeKind.STORE, scope))
            .order_by(t.merchants.c.name, t.stores.c.name, t.stores.c.id)
        )
        rows = await self._storage.run_read(lambda conn: conn.execute(query).all())
        return [(_store(r), str(r.merchant_name)) for r in rows]

    async def rename_node(self, kind: ScopeKind, node_id: str, name: str) -> None:
        table = _TABLES[kind]
        update = table.update().where(table.c.id == node_id).values(name=name)
        result = await self._storage.run_write(lambda conn: conn.execute(update))
        if result.rowcount == 0:
            raise NotFound(f"{kind} {node_id!r}")

    async def delete_node(self, kind: ScopeKind, node_id: str) -> None:
        """Delete an empty node; ``NotEmpty`` (nothing deleted) while it holds anything. A
        store's unused enrolment tokens and a merchant's SLA go with it."""
        table = _TABLES[kind]

        def tx(conn: sa.Connection) -> None:
            if conn.scalar(sa.select(sa.literal(1)).where(table.c.id == node_id)) is None:
                raise NotFound(f"{kind} {node_id!r}")
            holds: dict[str, int] = {}
            for label, child, column in _CHILDREN[kind]:
                count = conn.scalar(
                    sa.select(sa.func.count()).select_from(child).where(column == node_id)
                )
                if count:
                    holds[label] = int(count)
            users = conn.scalar(
                sa.select(sa.func.count())
                .select_from(t.users)
                .where(t.users.c.scope_kind == kind.value, t.users.c.scope_id == node_id)
            )
            if users:
                holds["users"] = int(users)
            if holds:
                raise NotEmpty(f"{kind} {node_id!r} holds {holds}", holds=holds)
            if kind is ScopeKind.STORE:
                conn.execute(
                    t.enrolment_tokens.delete().where(t.enrolment_tokens.c.store_id == node_id)
                )
            if kind is ScopeKind.MERCHANT:
                conn.execute(t.sla_policies.delete().where(t.sla_policies.c.merchant_id == node_id))
            conn.execute(table.delete().where(table.c.id == node_id))

        await self._storage.run_write(tx)

    async def delete_device(self, device_id: str, *, now: float) -> dict[str, Any]:
        """Take a revoked (or handed-over) device out of its store for good: status
        ``deleted``, no store, ``deleted_at``. The row stays, so its jobs, alerts and tickets
        keep their device and the audit log its target; the store no longer holds it.

        Returns what the audit record keeps: the store it left and the jobs kept.
        ``DeviceActive`` (nothing changed) while it is active; ``NotEmpty`` while users are
        scoped to it; NotFound if unknown or deleted.
        """

        def tx(conn: sa.Connection) -> dict[str, Any]:
            row = conn.execute(
                sa.select(t.devices.c.status, t.devices.c.store_id).where(
                    t.devices.c.id == device_id, t.devices.c.status != "deleted"
                )
            ).first()
            if row is None:
                raise NotFound(f"device {device_id!r}")
            if row.status == DeviceStatus.ACTIVE:
                raise DeviceActive(f"device {device_id!r} is active")
            users = conn.scalar(  # a user scoped to this till would be left with nothing
                sa.select(sa.func.count())
                .select_from(t.users)
                .where(t.users.c.scope_kind == "device", t.users.c.scope_id == device_id)
            )
            if users:
                raise NotEmpty(f"device {device_id!r} has users", holds={"users": int(users)})
            jobs = conn.scalar(
                sa.select(sa.func.count())
                .select_from(t.jobs)
                .where(t.jobs.c.device_id == device_id)
            )
            conn.execute(
                t.devices.update()
                .where(t.devices.c.id == device_id)
                .values(status="deleted", store_id=None, deleted_at=now)
            )
            return {"store": row.store_id, "was": row.status, "jobs_kept": int(jobs or 0)}

        return await self._storage.run_write(tx)

    # -- users ---------------------------------------------------------------------------------

    async def list_users(self) -> list[User]:
        query = t.users.select().order_by(t.users.c.username)
        rows = await self._storage.run_read(lambda conn: conn.execute(query).all())
        return [_user(r) for r in rows]

    async def rename_user(self, user_id: str, username: str) -> None:
        """``Conflict`` when the name is taken."""

        def tx(conn: sa.Connection) -> None:
            taken = conn.scalar(sa.select(t.users.c.id).where(t.users.c.username == username))
            if taken is not None and taken != user_id:
                raise Conflict(f"username {username!r} taken")
            result = conn.execute(
                t.users.update().where(t.users.c.id == user_id).values(username=username)
            )
            if result.rowcount == 0:
                raise NotFound("user")

        await self._storage.run_write(tx)

    async def delete_user(self, user_id: str) -> None:
        """Delete a user and every token of theirs."""

        def tx(conn: sa.Connection) -> None:
            conn.execute(t.bearer_tokens.delete().where(t.bearer_tokens.c.user_id == user_id))
            if conn.execute(t.users.delete().where(t.users.c.id == user_id)).rowcount == 0:
                raise NotFound("user")

        await self._storage.run_write(tx)

    async def set_disabled(self, user_id: str, disabled: bool, *, now: float) -> bool:
        """Disable (every token revoked in the same transaction) or enable a user; whether
        anything changed."""

        def tx(conn: sa.Connection) -> bool:
            stored = conn.scalar(sa.select(t.users.c.password_hash).where(t.users.c.id == user_id))
            if stored is None:
                raise NotFound("user")
            if stored.startswith(DISABLED_MARK) == disabled:
                return False
            new = DISABLED_MARK + stored if disabled else stored[len(DISABLED_MARK) :]
            conn.execute(t.users.update().where(t.users.c.id == user_id).values(password_hash=new))
            if disabled:
                conn.execute(
                    t.bearer_tokens.update()
                    .where(
                        t.bearer_tokens.c.user_id == user_id, t.bearer_tokens.c.revoked_at.is_(None)
                    )
                    .values(revoked_at=now)
                )
            return True

        return await self._storage.run_write(tx)

    # -- enrolment tokens ----------------------------------------------------------------------

    async def list_enrolments(
        self, scope: Scope, *, store_id: str | None = None
    ) -> list[EnrolmentToken]:
        tree = t.enrolment_tokens.join(
            t.stores, t.enrolment_tokens.c.store_id == t.stores.c.id
        ).join(t.merchants, t.stores.c.merchant_id == t.merchants.c.id)
        query = (
            sa.select(t.enrolment_tokens)
            .select_from(tree)
            .where(_nodes_clause(ScopeKind.STORE, scope))
            .order_by(t.enrolment_tokens.c.created_at.desc(), t.enrolment_tokens.c.id)
        )
        if store_id is not None:
            query = query.where(t.enrolment_tokens.c.store_id == store_id)
        rows = await self._storage.run_read(lambda conn: conn.execute(query).all())
        return [_enrolment(r) for r in rows]

    async def enrolment_store(self, enrolment_id: str) -> str:
        query = sa.select(t.enrolment_tokens.c.store_id).where(
            t.enrolment_tokens.c.id == enrolment_id
        )
        store_id = await self._storage.run_read(lambda conn: conn.scalar(query))
        if store_id is None:
            raise NotFound("enrolment")
        return str(store_id)

    # -- history -------------------------------------------------------------------------------

    async def jobs_page(
        self,
        scope: Scope,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        device_id: str | None = None,
    ) -> tuple[list[Job], tuple[float, str] | None]:
        """Jobs on devices ``scope`` covers, newest first; the key of the next page, if any."""
        query = (
            sa.select(t.jobs)
            .select_from(t.jobs.join(_DEVICE_TREE, t.jobs.c.device_id == t.devices.c.id))
            .where(_scope_clause(scope))
            .order_by(t.jobs.c.created_at.desc(), t.jobs.c.id.desc())
            .limit(limit + 1)
        )
        if device_id is not None:
            query = query.where(t.jobs.c.device_id == device_id)
        if before is not None:
            at, job_id = before
            query = query.where(
                sa.or_(
                    t.jobs.c.created_at < at,
                    sa.and_(t.jobs.c.created_at == at, t.jobs.c.id < job_id),
                )
            )
        rows = await self._storage.run_read(lambda conn: conn.execute(query).all())
        jobs = [_job(r) for r in rows[:limit]]
        more = len(rows) > limit
        return jobs, (jobs[-1].created_at, jobs[-1].id) if more else None

    async def enrolment_creators(self, since: float) -> dict[str, str]:
        """Who created each enrolment token since ``since`` (epoch s): token id → the audit
        actor of its ``enrolment.create`` record (tokens keep no creator of their own). A scan of
        the audit records since then: the web console's token list asks for its oldest token's."""
        query = sa.select(t.audit.c.actor, t.audit.c.detail).where(
            t.audit.c.action == "enrolment.create",
            t.audit.c.outcome == "ok",
            t.audit.c.at >= since,
        )
        rows = await self._storage.run_read(lambda conn: conn.execute(query).all())
        made: dict[str, str] = {}
        for actor, detail in rows:
            token = detail.get("enrolment") if isinstance(detail, dict) else None
            if isinstance(token, str):
                made[token] = actor
        return made

    async def audit_page(
        self, *, limit: int, before: int | None = None, target: str | None = None
    ) -> tuple[list[AuditRecord], int | None]:
        """Audit records newest first (``seq < before``); the ``before`` of the next page."""
        query = t.audit.select().order_by(t.audit.c.seq.desc()).limit(limit + 1)
        if before is not None:
            query = query.where(t.audit.c.seq < before)
        if target is not None:
            query = query.where(t.audit.c.target == target)
        rows = await self._storage.run_read(lambda conn: conn.execute(query).all())
        records = [_audit(r) for r in rows[:limit]]
        return records, records[-1].seq if len(rows) > limit else None
