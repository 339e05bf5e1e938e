"""The one storage implementation: SQLAlchemy Core on SQLite (sqlite3) or PostgreSQL (asyncpg).

:class:`SqlStorage` satisfies every Protocol in :mod:`relay.storage.interfaces`. Each operation
is one synchronous function run as one transaction by a :class:`~relay.storage.engine.Database`.
Writes run in ``BEGIN IMMEDIATE`` transactions on SQLite (one writer at a time, waiting up to the
busy timeout) and take row locks where ordering matters on PostgreSQL; all driver errors pass
through :func:`relay.storage.engine.map_db_errors`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import logging
import re
import secrets
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

from posassist.relay.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditRecord,
    Outcome,
    chain_hash,
    normalise_detail,
)
from posassist.relay.errors import (
    Conflict,
    EnrolmentAlreadyUsed,
    EnrolmentTokenExpired,
    EnrolmentTokenRevoked,
    EnrolmentTokenUnknown,
    EnrolmentTokenUsed,
    EnrolmentWrongRelay,
    NotFound,
    TokenExpired,
    TokenRevoked,
    TokenUnknown,
)
from posassist.relay.storage import schema as t
from posassist.relay.storage.engine import DEFAULT_BUSY_TIMEOUT, SqliteDatabase, open_database
from posassist.relay.storage.models import (
    ChainHead,
    Device,
    DeviceStatus,
    EnrolmentToken,
    Job,
    JobStatus,
    Merchant,
    Organisation,
    RetailStore,
    Role,
    Scope,
    ScopeKind,
    TenantPath,
    User,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence

    from alembic.config import Config

    from posassist.relay.storage.engine import Database

__all__ = ["SqlStorage", "open_storage"]

T = TypeVar("T")
log = logging.getLogger("posassist.relay")
# Alembic says ten INFO lines on every start and admin command, a change or not: one line of
# ours says when the schema changed instead (README walk); its warnings still show
logging.getLogger("alembic").setLevel(logging.WARNING)
MIGRATIONS = "posassist.relay.storage:migrations"
#: Where Alembic records the schema version (its default name).
_VERSION_TABLE = "alembic_version"
_TOKEN_BYTES = 32


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _alembic_config(connection: sa.Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["connection"] = connection
    return config


def _upgrade_head(connection: sa.Connection) -> None:
    from alembic import command

    before = _current_revision(connection)
    command.upgrade(_alembic_config(connection), "head")
    after = _current_revision(connection)
    if after != before:
        log.info("database schema upgraded from %s to %s", before or "empty", after)


def _current_revision(connection: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest migration shipped with this code."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


#: A migration file's name starts with its revision, and revisions are numbered in order
#: (migrations/versions/0001_initial.py …); tests/relay/test_idle_imports.py checks that the
#: newest name is Alembic's head.
_REVISION_FILE = re.compile(r"^(\d{4})_\w+\.py$")


def shipped_head() -> str | None:
    """The newest migration shipped, from the file names alone: a relay whose database is
    already there starts without importing Alembic (and Mako) at all."""
    versions = Path(__file__).with_name("migrations") / "versions"
    found = [m.group(1) for p in versions.iterdir() if (m := _REVISION_FILE.match(p.name))]
    return max(found, default=None)


def _at_revision(connection: sa.Connection, revision: str | None) -> bool:
    """Whether the database records ``revision`` in Alembic's version table (read without
    Alembic: one row, one column, ``version_num``)."""
    if revision is None or not sa.inspect(connection).has_table(_VERSION_TABLE):
        return False
    rows = connection.execute(sa.text(f"SELECT version_num FROM {_VERSION_TABLE}")).all()
    return [row[0] for row in rows] == [revision]


#: A deleted device (status ``deleted``, no store: ``DELETE /v1/devices/{id}``) is kept for its
#: history but is no device any more: every lookup by id or key answers as for an unknown one.
_NOT_DELETED = t.devices.c.status != "deleted"


def _device(row: sa.Row[Any]) -> Device:
    facts = row.facts
    if isinstance(facts, str):  # read through a prepared statement (_GET_DEVICE): the JSON text
        facts = json.loads(facts)
    return Device(
        id=row.id,
        store_id=row.store_id,
        public_key=bytes(row.public_key),
        status=DeviceStatus(row.status),
        enrolled_at=row.enrolled_at,
        revoked_at=row.revoked_at,
        last_seen=row.last_seen,
        agent_version=row.agent_version,
        facts=facts,
        handed_over_at=row.handed_over_at,
    )


def _user(row: sa.Row[Any]) -> User:
    return User(
        id=row.id,
        username=row.username,
        password_hash=row.password_hash,
        role=Role(row.role),
        scope=Scope(ScopeKind(row.scope_kind), row.scope_id),
        failed_logins=row.failed_logins,
        locked_until=row.locked_until,
        created_at=row.created_at,
    )


def _enrolment(row: sa.Row[Any]) -> EnrolmentToken:
    return EnrolmentToken(
        id=row.id,
        store_id=row.store_id,
        relay_id=row.relay_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        used_at=row.used_at,
        used_by_device=row.used_by_device,
        revoked_at=row.revoked_at,
    )


def _job(row: sa.Row[Any]) -> Job:
    return Job(
        id=row.id,
        device_id=row.device_id,
        kind=row.kind,
        status=JobStatus(row.status),
        requested_by=row.requested_by,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
        script=row.script,
        version=row.version,
    )


def _audit(row: sa.Row[Any]) -> AuditRecord:
    return AuditRecord(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        detail=row.detail,
        prev_hash=bytes(row.prev_hash),
        hash=bytes(row.hash),
    )


# devices ⋈ stores ⋈ merchants: the tenancy path of every device.
_DEVICE_TREE = t.devices.join(t.stores, t.devices.c.store_id == t.stores.c.id).join(
    t.merchants, t.stores.c.merchant_id == t.merchants.c.id
)


def _scope_clause(
    scope: Scope,
    store_id: sa.ColumnElement[Any] = t.devices.c.store_id,
    device_id: sa.ColumnElement[Any] = t.devices.c.id,
) -> sa.ColumnElement[bool]:
    """A WHERE clause over ``_DEVICE_TREE`` selecting the devices ``scope`` covers; over another
    join with stores and merchants (tickets, alerts) given its store and device columns."""
    match scope.kind:
        case ScopeKind.ROOT:
            return sa.true()
        case ScopeKind.ORGANISATION:
            return t.merchants.c.organisation_id == scope.id
        case ScopeKind.MERCHANT:
            return t.stores.c.merchant_id == scope.id
        case ScopeKind.STORE:
            return store_id == scope.id
        case ScopeKind.DEVICE:
            return device_id == scope.id


_SCOPE_TABLES: dict[ScopeKind, sa.Table] = {
    ScopeKind.ORGANISATION: t.organisations,
    ScopeKind.MERCHANT: t.merchants,
    ScopeKind.STORE: t.stores,
    ScopeKind.DEVICE: t.devices,
}

#: kind → (parent kind, table of this kind, column naming the parent); organisations sit at root.
_PARENTS = {
    ScopeKind.DEVICE: (ScopeKind.STORE, t.devices, t.devices.c.store_id),
    ScopeKind.STORE: (ScopeKind.MERCHANT, t.stores, t.stores.c.merchant_id),
    ScopeKind.MERCHANT: (ScopeKind.ORGANISATION, t.merchants, t.merchants.c.organisation_id),
    ScopeKind.ORGANISATION: (ScopeKind.ROOT, t.organisations, t.organisations.c.id),
}


class SqlStorage:
    """The relay's database on SQLite or PostgreSQL; see :mod:`relay.storage.interfaces`.

    Each method builds one synchronous function over a ``Connection`` and hands it to the
    :class:`~relay.storage.engine.Database` as one transaction (one thread hop on SQLite).
    """

    def __init__(self, database: Database) -> None:
        self._db = database
        self._sqlite = database.dialect == "sqlite"
        # Devices that may have ``unknown`` jobs, so that an agent's sign-in (asked about its
        # unknown jobs every time) costs no database read when it has none: those found by one
        # query on first use, and every device a job of which this process is about to make
        # unknown (added before the write commits, so a lookup after the commit sees it).
        self._unknown_found: set[str] | None = None
        self._unknown_made: set[str] = set()

    @classmethod
    def open(
        cls,
        url: str | sa.URL,
        *,
        schema: str | None = None,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        pool_size: int = 5,
        sync: str = "normal",
    ) -> Self:
        """A storage object for ``url``; nothing connects until first use. Call :meth:`migrate`."""
        return cls(
            open_database(
                url, schema=schema, busy_timeout=busy_timeout, pool_size=pool_size, sync=sync
            )
        )

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._db.dialect

    @property
    def database(self) -> Database:
        """What runs the transactions (durability settings, for tests and tools)."""
        return self._db

    async def close(self) -> None:
        await self._db.close()

    # -- transactions --------------------------------------------------------------------------

    async def run_read(self, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work`` in a read transaction: for tools and tests that need raw SQL."""
        return await self._db.read(work)

    async def run_write(self, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work`` in a write transaction: for tools and tests that need raw SQL."""
        return await self._db.write(work)

    async def run_schema_write(self, work: Callable[[sa.Connection], T]) -> T:
        """Run a migration step (``work``) in one transaction; on SQLite with its foreign keys
        off and all of them checked before the commit, since a batch migration rebuilds tables
        that others point at (0008)."""
        if isinstance(self._db, SqliteDatabase):
            return await self._db.write_schema(work)
        return await self._db.write(work)

    # -- migrations ----------------------------------------------------------------------------

    async def migrate(self) -> None:
        """Upgrade the schema to the newest migration; a no-op when already there.

        Safe when several relay nodes start at once: PostgreSQL takes an advisory lock for the
        schema, SQLite the write lock.
        """
        sqlite = self._sqlite
        head = shipped_head()
        if await self._db.read(lambda conn: _at_revision(conn, head)):
            return  # nothing pending: Alembic stays unimported (docs/notes/16-status.md)

        def tx(conn: sa.Connection) -> None:
            if not sqlite:
                conn.execute(
                    sa.text(
                        "SELECT pg_advisory_xact_lock(hashtext('posassist.migrate.' "
                        "|| current_schema()))"
                    )
                )
            _upgrade_head(conn)

        await self.run_schema_write(tx)

    async def current_revision(self) -> str | None:
        """The schema version the database is at (None when never migrated)."""
        return await self._db.read(_current_revision)

    async def missing_tables(self) -> list[str]:
        """The posassist tables this database lacks, Alembic's version table first: all of them
        when it was never migrated. Reads only, so a tool pointed at the wrong database (``audit
        verify``) can refuse it without creating anything there."""
        wanted = [_VERSION_TABLE, *t.metadata.tables]

        def tx(conn: sa.Connection) -> list[str]:
            present = set(sa.inspect(conn).get_table_names())
            return [name for name in wanted if name not in present]

        return await self._db.read(tx)

    # -- tenancy -------------------------------------------------------------------------------

    async def create_organisation(self, name: str, *, now: float) -> Organisation:
        org = Organisation(id=_new_id("org"), name=name, created_at=now)
        await self._db.write(lambda conn: conn.execute(t.organisations.insert(), _row(org)))
        return org

    async def create_merchant(self, organisation_id: str, name: str, *, now: float) -> Merchant:
        merchant = Merchant(
            id=_new_id("mer"), organisation_id=organisation_id, name=name, created_at=now
        )

        def tx(conn: sa.Connection) -> None:
            _require(conn, t.organisations, organisation_id)
            conn.execute(t.merchants.insert(), _row(merchant))

        await self._db.write(tx)
        return merchant

    async def create_store(self, merchant_id: str, name: str, *, now: float) -> RetailStore:
        store = RetailStore(id=_new_id("sto"), merchant_id=merchant_id, name=name, created_at=now)

        def tx(conn: sa.Connection) -> None:
            _require(conn, t.merchants, merchant_id)
            conn.execute(t.stores.insert(), {**_row(store), "hours": json.dumps(store.hours)})

        await self._db.write(tx)
        return store

    async def get_store(self, store_id: str) -> RetailStore:
        query = t.stores.select().where(t.stores.c.id == store_id)
        row = await self._db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise NotFound(f"store {store_id!r}")
        return _store(row)

    async def update_store(
        self,
        store_id: str,
        *,
        now: float,
        timezone: str | None = None,
        hours: Mapping[str, Any] | None = None,
    ) -> RetailStore:
        """Set a store's time zone and/or opening hours (checked by the caller); the new row."""
        values: dict[str, Any] = {}
        if timezone is not None:
            values["timezone"] = timezone
        if hours is not None:
            values["hours"] = json.dumps(dict(hours), sort_keys=True)

        def tx(conn: sa.Connection) -> sa.Row[Any]:
            if values:
                conn.execute(t.stores.update().where(t.stores.c.id == store_id).values(values))
            row = conn.execute(t.stores.select().where(t.stores.c.id == store_id)).first()
            if row is None:
                raise NotFound(f"store {store_id!r}")
            return row

        return _store(await self._db.write(tx))

    async def scope_exists(self, scope: Scope) -> bool:
        if scope.kind is ScopeKind.ROOT:
            return True
        table = _SCOPE_TABLES[scope.kind]
        query = sa.select(sa.literal(1)).where(table.c.id == scope.id)
        return await self._db.read(lambda conn: conn.scalar(query)) is not None

    async def device_path(self, device_id: str) -> TenantPath:
        query = (
            sa.select(t.merchants.c.organisation_id, t.stores.c.merchant_id, t.devices.c.store_id)
            .select_from(_DEVICE_TREE)
            .where(t.devices.c.id == device_id)
        )
        row = await self._db.read(lambda conn: conn.execute(query).first(), small=True)
        if row is None:
            raise NotFound(f"device {device_id!r}")
        return TenantPath(
            organisation_id=row.organisation_id,
            merchant_id=row.merchant_id,
            store_id=row.store_id,
            device_id=device_id,
        )

    async def scope_ancestors(self, scope: Scope) -> list[Scope]:
        """``scope`` and every node above it, root first; NotFound if the node doesn't exist."""

        def tx(conn: sa.Connection) -> list[Scope]:
            chain = [scope]
            kind, node = scope.kind, scope.id
            while kind is not ScopeKind.ROOT:
                parent_kind, table, column = _PARENTS[kind]
                parent = conn.scalar(sa.select(column).where(table.c.id == node))
                if parent is None:
                    raise NotFound(f"{kind} {node!r}")
                if parent_kind is not ScopeKind.ROOT:
                    chain.append(Scope(parent_kind, parent))
                kind, node = parent_kind, parent
            chain.append(Scope.root())
            return chain[::-1]

        return await self._db.read(tx, small=True)

    async def device_in_scope(self, device_id: str, scope: Scope) -> bool:
        """Whether ``scope`` covers the device; False also when there is no such device."""
        try:
            path = await self.device_path(device_id)
        except NotFound:
            return False
        return path.within(scope)

    # -- devices -------------------------------------------------------------------------------

    async def get_device(self, device_id: str) -> Device:
        # on every routed request (consoles.py checks the device is active): prepared
        params = {"b_id": device_id}
        row = await self._db.read(lambda conn: _GET_DEVICE(conn, params).first(), small=True)
        if row is None:
            raise NotFound(f"device {device_id!r}")
        return _device(row)

    async def get_devices(self, device_ids: Sequence[str]) -> dict[str, Device]:
        """The devices of ``device_ids`` that exist, by id, in one read (relay/batching.py)."""
        query = t.devices.select().where(t.devices.c.id.in_(list(device_ids)), _NOT_DELETED)
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return {row.id: _device(row) for row in rows}

    async def find_device_by_key(self, public_key: bytes) -> Device | None:
        query = t.devices.select().where(t.devices.c.public_key == public_key, _NOT_DELETED)
        row = await self._db.read(lambda conn: conn.execute(query).first())
        return None if row is None else _device(row)

    async def list_devices(self, scope: Scope) -> list[Device]:
        query = (
            sa.select(t.devices)
            .select_from(_DEVICE_TREE)
            .where(_scope_clause(scope))
            .order_by(t.devices.c.enrolled_at, t.devices.c.id)
        )
        # A store's or a device's devices are few; a bigger scope's may be thousands.
        small = scope.kind in (ScopeKind.STORE, ScopeKind.DEVICE)
        return await self._db.read(
            lambda conn: [_device(row) for row in conn.execute(query)], small=small
        )

    async def revoke_device(self, device_id: str, *, now: float) -> Device:
        """Mark the device revoked (idempotent: a second call keeps the first ``revoked_at``)."""
        return await self._leave_active(device_id, DeviceStatus.REVOKED, revoked_at=now)

    async def hand_over_device(self, device_id: str, *, now: float) -> Device:
        """Mark an active device handed over to another provider (idempotent: a second call
        keeps the first ``handed_over_at``; a revoked device stays revoked)."""
        return await self._leave_active(device_id, DeviceStatus.HANDED_OVER, handed_over_at=now)

    async def _leave_active(self, device_id: str, status: DeviceStatus, **stamp: float) -> Device:
        """Move an active device to ``status`` with its time column (``stamp``); a device that is
        no longer active keeps its status and first time. NotFound for an unknown id."""

        def tx(conn: sa.Connection) -> sa.Row[Any] | None:
            conn.execute(
                t.devices.update()
                .where(t.devices.c.id == device_id, t.devices.c.status == DeviceStatus.ACTIVE)
                .values(status=status.value, **stamp)
            )
            return conn.execute(
                t.devices.select().where(t.devices.c.id == device_id, _NOT_DELETED)
            ).first()

        row = await self._db.write(tx)
        if row is None:
            raise NotFound(f"device {device_id!r}")
        return _device(row)

    async def record_presence(
        self,
        device_id: str,
        *,
        now: float,
        agent_version: str | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> None:
        values: dict[str, Any] = {"last_seen": now}
        if agent_version is not None:
            values["agent_version"] = agent_version
        if facts is not None:
            values["facts"] = dict(facts)
        update = t.devices.update().where(t.devices.c.id == device_id).values(values)
        result = await self._db.write(lambda conn: conn.execute(update))
        if result.rowcount == 0:
            raise NotFound(f"device {device_id!r}")

    async def record_presences(
        self, seen: Mapping[str, tuple[float, str | None, Mapping[str, Any] | None]]
    ) -> None:
        """Many devices' last seen time (and agent version and facts, when known) in one
        transaction; devices that no longer exist are skipped."""
        if not seen:
            return
        # executemany: one statement per shape (which columns are known), however many devices.
        shapes: dict[tuple[bool, bool], list[dict[str, Any]]] = {}
        for device_id, (at, version, facts) in seen.items():
            row: dict[str, Any] = {"b_id": device_id, "last_seen": at}
            if version is not None:
                row["agent_version"] = version
            if facts is not None:
                row["facts"] = dict(facts)
            shapes.setdefault((version is not None, facts is not None), []).append(row)

        def tx(conn: sa.Connection) -> None:
            for (version, facts), rows in shapes.items():
                conn.execute(_seen(version=version, facts=facts), rows)

        await self._db.write(tx)

    # -- users ---------------------------------------------------------------------------------

    async def create_user(
        self, username: str, password_hash: str, role: Role, scope: Scope, *, now: float
    ) -> User:
        """Add a user; ``Conflict`` when the username is taken, ``NotFound`` for a bad scope."""
        user = User(
            id=_new_id("usr"),
            username=username,
            password_hash=password_hash,
            role=Role(role),
            scope=scope,
            failed_logins=0,
            locked_until=None,
            created_at=now,
        )

        def tx(conn: sa.Connection) -> None:
            if scope.kind is not ScopeKind.ROOT:
                assert scope.id is not None  # Scope.__post_init__
                _require(conn, _SCOPE_TABLES[scope.kind], scope.id)
            conn.execute(
                t.users.insert().values(
                    id=user.id,
                    username=username,
                    password_hash=password_hash,
                    role=user.role.value,
                    scope_kind=scope.kind.value,
                    scope_id=scope.id,
                    failed_logins=0,
                    locked_until=None,
                    created_at=now,
                )
            )

        await self._db.write(tx)
        return user

    async def _get_user_where(self, clause: sa.ColumnElement[bool]) -> User:
        query = t.users.select().where(clause)
        row = await self._db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise NotFound("user")
        return _user(row)

    async def get_user(self, username: str) -> User:
        return await self._get_user_where(t.users.c.username == username)

    async def get_user_by_id(self, user_id: str) -> User:
        return await self._get_user_where(t.users.c.id == user_id)

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        update = t.users.update().where(t.users.c.id == user_id).values(password_hash=password_hash)
        result = await self._db.write(lambda conn: conn.execute(update))
        if result.rowcount == 0:
            raise NotFound("user")

    async def record_login_failure(
        self, user_id: str, *, now: float, max_failures: int, lockout_timeout: float
    ) -> User:
        """Count a failed sign-in; the ``max_failures``-th locks the user for ``lockout_timeout``.

        Locking resets the count, so after the lockout the user has ``max_failures`` tries again.
        The increment is one UPDATE, so concurrent failures are all counted.
        """

        def tx(conn: sa.Connection) -> sa.Row[Any]:
            failures = conn.scalar(
                t.users.update()
                .where(t.users.c.id == user_id)
                .values(failed_logins=t.users.c.failed_logins + 1)
                .returning(t.users.c.failed_logins)
            )
            if failures is None:
                raise NotFound("user")
            if failures >= max_failures:
                conn.execute(
                    t.users.update()
                    .where(t.users.c.id == user_id)
                    .values(failed_logins=0, locked_until=now + lockout_timeout)
                )
            return conn.execute(t.users.select().where(t.users.c.id == user_id)).one()

        return _user(await self._db.write(tx))

    async def record_login_success(self, user_id: str) -> None:
        update = (
            t.users.update()
            .where(t.users.c.id == user_id)
            .values(failed_logins=0, locked_until=None)
        )
        await self._db.write(lambda conn: conn.execute(update))

    # -- bearer tokens -------------------------------------------------------------------------

    async def issue_token(self, user_id: str, *, now: float, ttl: float) -> str:
        """A fresh bearer token for the user, valid for ``ttl`` seconds; only its hash is kept."""
        token = secrets.token_urlsafe(_TOKEN_BYTES)

        def tx(conn: sa.Connection) -> None:
            _require(conn, t.users, user_id)
            conn.execute(
                t.bearer_tokens.insert().values(
                    token_hash=_digest(token),
                    user_id=user_id,
                    created_at=now,
                    expires_at=now + ttl,
                    revoked_at=None,
                )
            )

        await self._db.write(tx)
        return token

    async def authenticate_token(self, token: str, *, now: float) -> User:
        """The token's user; raises ``TokenUnknown``, ``TokenRevoked`` or ``TokenExpired``."""
        return (await self.authenticate_token_until(token, now=now))[0]

    async def authenticate_token_until(self, token: str, *, now: float) -> tuple[User, float]:
        """The token's user and when the token expires; errors as :meth:`authenticate_token`."""
        query = (
            sa.select(t.users, t.bearer_tokens.c.expires_at, t.bearer_tokens.c.revoked_at)
            .select_from(t.bearer_tokens.join(t.users))
            .where(t.bearer_tokens.c.token_hash == _digest(token))
        )
        row = await self._db.read(lambda conn: conn.execute(query).first(), small=True)
        if row is None:
            raise TokenUnknown("no such token")
        if row.revoked_at is not None:
            raise TokenRevoked(f"token of {row.username} revoked at {row.revoked_at}")
        if row.password_hash.startswith("!"):  # disabled (relay/storage/admin.py DISABLED_MARK)
            raise TokenRevoked(f"token of {row.username}: user disabled")
        if now >= row.expires_at:
            raise TokenExpired(f"token of {row.username} expired at {row.expires_at}")
        return _user(row), float(row.expires_at)

    async def revoke_token(self, token: str, *, now: float) -> None:
        """Revoke one token (sign-out); unknown or already revoked tokens are left alone."""
        update = (
            t.bearer_tokens.update()
            .where(
                t.bearer_tokens.c.token_hash == _digest(token),
                t.bearer_tokens.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        await self._db.write(lambda conn: conn.execute(update))

    async def revoked_tokens(self, token_hashes: Collection[bytes]) -> dict[bytes, str]:
        """Which of these tokens (by SHA-256, as a running relay knows its consoles' tokens) are
        revoked or gone, each with its user's name ("" if the row is gone): how a relay learns
        of a sign-out done elsewhere (``posassist-relay user password``, another relay)."""
        wanted = list(token_hashes)
        ended: dict[bytes, str] = {}
        for start in range(0, len(wanted), 500):  # within SQLite's bound-variable limit
            ended.update(await self._revoked_tokens(wanted[start : start + 500]))
        return ended

    async def _revoked_tokens(self, wanted: list[bytes]) -> dict[bytes, str]:
        query = (
            sa.select(
                t.bearer_tokens.c.token_hash, t.bearer_tokens.c.revoked_at, t.users.c.username
            )
            .select_from(t.bearer_tokens.join(t.users))
            .where(t.bearer_tokens.c.token_hash.in_(wanted))
        )
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        found = {bytes(row.token_hash): row for row in rows}
        ended: dict[bytes, str] = {}
        for key in wanted:
            row = found.get(key)
            if row is None:
                ended[key] = ""
            elif row.revoked_at is not None:
                ended[key] = str(row.username)
        return ended

    async def revoke_user_tokens(self, user_id: str, *, now: float, keep: str | None = None) -> int:
        """Revoke every live token of the user but ``keep`` (the one a password change came
        with: its session stays); returns how many."""
        update = (
            t.bearer_tokens.update()
            .where(
                t.bearer_tokens.c.user_id == user_id,
                t.bearer_tokens.c.revoked_at.is_(None),
                t.bearer_tokens.c.expires_at > now,
            )
            .values(revoked_at=now)
        )
        if keep is not None:
            update = update.where(t.bearer_tokens.c.token_hash != _digest(keep))
        result = await self._db.write(lambda conn: conn.execute(update))
        return result.rowcount

    # -- enrolment -----------------------------------------------------------------------------

    async def create_enrolment(
        self, store_id: str, relay_id: str, *, now: float, ttl: float
    ) -> tuple[EnrolmentToken, str]:
        """A one-time token for enrolling one device in ``store_id`` on relay ``relay_id``.

        Returns the record and the secret (shown once; only its SHA-256 is stored).
        """
        secret = secrets.token_urlsafe(_TOKEN_BYTES)
        record = EnrolmentToken(
            id=_new_id("enr"),
            store_id=store_id,
            relay_id=relay_id,
            created_at=now,
            expires_at=now + ttl,
        )

        def tx(conn: sa.Connection) -> None:
            _require(conn, t.stores, store_id)
            conn.execute(
                t.enrolment_tokens.insert().values(token_hash=_digest(secret), **_row(record))
            )

        await self._db.write(tx)
        return record, secret

    async def revoke_enrolment(self, enrolment_id: str, *, now: float) -> EnrolmentToken:
        """Revoke an unused token; ``Conflict`` if it was already used."""
        table = t.enrolment_tokens
        select = table.select().where(table.c.id == enrolment_id)

        def tx(conn: sa.Connection) -> sa.Row[Any]:
            row = conn.execute(select).first()
            if row is None:
                raise NotFound(f"enrolment token {enrolment_id!r}")
            if row.used_at is not None:
                raise EnrolmentAlreadyUsed(f"enrolment token {enrolment_id!r} already used")
            if row.revoked_at is None:
                conn.execute(
                    table.update().where(table.c.id == enrolment_id).values(revoked_at=now)
                )
                row = conn.execute(select).one()
            return row

        return _enrolment(await self._db.write(tx))

    async def consume_enrolment(
        self,
        secret: str,
        *,
        relay_id: str,
        public_key: bytes,
        now: float,
        agent_version: str | None = None,
    ) -> Device:
        """Use an enrolment token to bind ``public_key`` to a new device in the token's store.

        Atomic: of two concurrent uses of one token exactly one succeeds, the other gets
        ``EnrolmentTokenUsed`` (the token row is locked for the transaction). Also raises
        ``EnrolmentTokenUnknown``, ``EnrolmentWrongRelay``, ``EnrolmentTokenRevoked``,
        ``EnrolmentTokenExpired``, and ``Conflict`` when the key is already enrolled.
        """
        table = t.enrolment_tokens

        def tx(conn: sa.Connection) -> Device:
            row = conn.execute(
                table.select().where(table.c.token_hash == _digest(secret)).with_for_update()
            ).first()
            if row is None:
                raise EnrolmentTokenUnknown("no such enrolment token")
            if row.relay_id != relay_id:
                raise EnrolmentWrongRelay(f"token {row.id} is for relay {row.relay_id!r}")
            if row.revoked_at is not None:
                raise EnrolmentTokenRevoked(f"token {row.id} revoked at {row.revoked_at}")
            if row.used_at is not None:
                raise EnrolmentTokenUsed(f"token {row.id} used by {row.used_by_device}")
            if now >= row.expires_at:
                raise EnrolmentTokenExpired(f"token {row.id} expired at {row.expires_at}")
            device = Device(
                id=_new_id("dev"),
                store_id=row.store_id,
                public_key=bytes(public_key),
                status=DeviceStatus.ACTIVE,
                enrolled_at=now,
                agent_version=agent_version,
            )
            conn.execute(
                t.devices.insert().values(
                    id=device.id,
                    store_id=device.store_id,
                    public_key=device.public_key,
                    status=device.status.value,
                    enrolled_at=now,
                    agent_version=agent_version,
                    facts={},
                )
            )
            # The guard on used_at makes the claim safe even without the row lock.
            claimed = conn.execute(
                table.update()
                .where(table.c.id == row.id, table.c.used_at.is_(None))
                .values(used_at=now, used_by_device=device.id)
            )
            if claimed.rowcount != 1:
                raise EnrolmentTokenUsed(f"token {row.id} used concurrently")
            return device

        return await self._db.write(tx)

    # -- jobs ----------------------------------------------------------------------------------

    async def create_job(
        self,
        device_id: str,
        kind: str,
        requested_by: str,
        *,
        now: float,
        audit: AuditEntry | None = None,
        script: str | None = None,
        version: str | None = None,
    ) -> Job:
        """A pending job; with ``audit``, its audit record commits in the same transaction.
        ``script`` and ``version`` name the script a ``script.run`` job runs.

        ``NotFound`` if there is no such device (the jobs table's foreign key says so).
        """
        job = Job(
            id=_new_id("job"),
            device_id=device_id,
            kind=kind,
            status=JobStatus.PENDING,
            requested_by=requested_by,
            created_at=now,
            script=script,
            version=version,
        )
        entry = (
            None
            if audit is None
            else dataclasses.replace(audit, detail={"job": job.id, **dict(audit.detail or {})})
        )
        row = {**_row(job), "status": job.status.value}

        def tx(conn: sa.Connection) -> None:
            _INSERT_JOB(conn, row)  # the device's existence: the foreign key checks it
            if entry is not None:
                _append_in(conn, entry, now)

        try:
            await self._db.write(tx, small=True)
        except Conflict as exc:  # the only constraint an insert of a fresh id can break
            raise NotFound(f"devices {device_id!r}") from exc
        return job

    async def create_jobs(
        self,
        requests: Sequence[tuple[str, AuditEntry]],
        kind: str,
        requested_by: str,
        *,
        now: float,
        script: str | None = None,
        version: str | None = None,
    ) -> list[Job]:
        """One pending job per ``(device id, audit entry)``, all with their audit records in one
        transaction (a store-wide request, relay/handlers/fanout.py): one commit and one move of
        the chain head instead of one of each per device. The records are chained in the order
        given, each naming its job as :meth:`create_job`'s does.

        ``NotFound`` if any device does not exist; then nothing is written. ``script`` and
        ``version``, if given, name the script every one of the jobs runs.
        """
        jobs = [
            Job(
                id=_new_id("job"),
                device_id=device_id,
                kind=kind,
                status=JobStatus.PENDING,
                requested_by=requested_by,
                created_at=now,
                script=script,
                version=version,
            )
            for device_id, _entry in requests
        ]
        rows = [{**_row(job), "status": job.status.value} for job in jobs]
        entries = [
            dataclasses.replace(entry, detail={"job": job.id, **dict(entry.detail or {})})
            for job, (_device, entry) in zip(jobs, requests, strict=True)
        ]

        def tx(conn: sa.Connection) -> None:
            if rows:
                _INSERT_JOB.many(conn, rows)
            _append_many_in(conn, entries, now)

        try:
            await self._db.write(tx, small=len(rows) <= MAX_SMALL_BATCH)
        except Conflict as exc:
            raise NotFound("one of the devices") from exc
        return jobs

    async def finish_jobs(
        self,
        ends: Sequence[tuple[str, JobStatus, str | None, AuditEntry]],
        *,
        now: float,
        ended_at: Sequence[float] | None = None,
    ) -> int:
        """End many jobs, each ``(job id, status, error, audit entry)``, in one transaction with
        their audit records (chained in the order given, at ``now``). Each job's
        ``finished_at`` is its ``ended_at`` entry (when its end was known), else ``now``. A job
        that is no longer pending or running keeps its status and gets no record, as with
        :meth:`finish_job`. Returns how many jobs ended here. ``unknown`` is not an end this
        takes (it needs the reconciling bookkeeping of :meth:`finish_job`)."""
        if ended_at is not None and len(ended_at) != len(ends):
            raise ValueError("one ended_at per end")
        for _job, status, _error, _entry in ends:
            if not JobStatus(status).finished or status is JobStatus.UNKNOWN:
                raise ValueError(f"{status} is not an end finish_jobs takes")
        for _job, _status, _error, entry in ends:
            normalise_detail(entry.detail or {})  # a ValueError here, before any transaction
        params: list[dict[str, Any]] = [
            {
                "b_id": job_id,
                "status": JobStatus(status).value,
                "finished_at": now if ended_at is None else ended_at[i],
                "error": error,
            }
            for i, (job_id, status, error, _entry) in enumerate(ends)
        ]

        def tx(conn: sa.Connection) -> int:
            if not params:
                return 0
            open_ids = _open_jobs(conn, [p["b_id"] for p in params])
            chosen = [p for p in params if p["b_id"] in open_ids]
            if chosen:
                _FINISH_JOB_QUIETLY.many(conn, chosen)
            _append_many_in(conn, [e for (j, _s, _r, e) in ends if j in open_ids], now)
            return len(chosen)

        return await self._db.write(tx, small=len(params) <= MAX_SMALL_BATCH)

    async def get_job(self, job_id: str) -> Job:
        query = t.jobs.select().where(t.jobs.c.id == job_id)
        row = await self._db.read(lambda conn: conn.execute(query).first())
        if row is None:
            raise NotFound(f"job {job_id!r}")
        return _job(row)

    async def _transition(
        self,
        job_id: str,
        update: _Prepared,
        values: dict[str, Any],
        *,
        audit: AuditEntry | None = None,
        now: float = 0.0,
    ) -> Job:
        params = {"b_id": job_id, **values}

        def tx(conn: sa.Connection) -> Any:
            row = update(conn, params).first()
            if row is not None and row.status == JobStatus.UNKNOWN.value:
                self._unknown_made.add(row.device_id)  # before the commit (see __init__)
            if row is not None and audit is not None:
                _append_in(conn, audit, now)
            return row

        row = await self._db.write(tx, small=True)
        if row is None:
            current = await self.get_job(job_id)  # raises NotFound
            raise Conflict(f"job {job_id} is {current.status}")
        return _job(row)

    async def start_job(self, job_id: str, *, now: float) -> Job:
        """pending → running; ``Conflict`` from any other state."""
        return await self._transition(
            job_id, _START_JOB, {"status": JobStatus.RUNNING.value, "started_at": now}
        )

    async def finish_job(
        self,
        job_id: str,
        status: JobStatus,
        *,
        now: float,
        error: str | None = None,
        audit: AuditEntry | None = None,
    ) -> Job:
        """pending|running → a finished status; ``Conflict`` if already finished.

        With ``audit``, its record commits in the same transaction as the new status.
        """
        if not JobStatus(status).finished:
            raise ValueError(f"{status} is not a finished status")
        return await self._transition(
            job_id,
            _FINISH_JOB,
            {"status": JobStatus(status).value, "finished_at": now, "error": error},
            audit=audit,
            now=now,
        )

    async def reconcile_job(
        self,
        job_id: str,
        status: JobStatus,
        *,
        now: float,
        error: str | None = None,
        audit: AuditEntry | None = None,
    ) -> Job:
        """unknown → what really happened, once the agent has said (docs/protocol.md#requests).

        ``Conflict`` if the job is not ``unknown`` (already reconciled, or never lost); with
        ``audit``, its record commits in the same transaction as the new status.
        """
        status = JobStatus(status)
        if not status.finished or status is JobStatus.UNKNOWN:
            raise ValueError(f"{status} is not an outcome a job can be reconciled to")
        return await self._transition(
            job_id,
            _RECONCILE_JOB,
            {"status": status.value, "finished_at": now, "error": error},
            audit=audit,
            now=now,
        )

    async def unknown_jobs(self, device_id: str, *, limit: int) -> list[Job]:
        """The device's jobs in ``unknown``, newest first, at most ``limit``."""
        if self._unknown_found is None:
            having = sa.select(t.jobs.c.device_id).where(t.jobs.c.status == JobStatus.UNKNOWN.value)
            rows = await self._db.read(lambda conn: conn.execute(having.distinct()).all())
            self._unknown_found = {row.device_id for row in rows}
        if device_id not in self._unknown_found and device_id not in self._unknown_made:
            return []
        query = (
            t.jobs.select()
            .where(t.jobs.c.device_id == device_id, t.jobs.c.status == JobStatus.UNKNOWN.value)
            .order_by(t.jobs.c.created_at.desc(), t.jobs.c.id)
            .limit(limit)
        )
        rows = await self._db.read(lambda conn: conn.execute(query).all())
        return [_job(row) for row in rows]

    async def mark_unfinished_jobs_unknown(
        self, kinds: Collection[str], reason: str, *, now: float
    ) -> list[Job]:
        """After a restart: every unfinished job of ``kinds`` (scripts, which may have run on
        the till) becomes ``unknown``, each with a ``<kind>.finished`` audit record in the same
        transaction, so the agent's report can reconcile it (docs/protocol.md#requests)."""
        unfinished = [JobStatus.PENDING.value, JobStatus.RUNNING.value]
        select = (
            t.jobs.select()
            .where(t.jobs.c.status.in_(unfinished), t.jobs.c.kind.in_(sorted(kinds)))
            .order_by(t.jobs.c.created_at, t.jobs.c.id)
        )

        def tx(conn: sa.Connection) -> list[Job]:
            marked = []
            for row in conn.execute(select).all():
                self._unknown_made.add(row.device_id)  # before the commit (see __init__)
                update = (
                    t.jobs.update()
                    .where(t.jobs.c.id == row.id, t.jobs.c.status.in_(unfinished))
                    .values(status=JobStatus.UNKNOWN.value, finished_at=now, error=reason)
                    .returning(*t.jobs.c)
                )
                job = conn.execute(update).first()
                if job is None:  # pragma: no cover - finished between the select and here
                    continue
                entry = AuditEntry(
                    f"user:{job.requested_by}",
                    f"{job.kind}.finished",
                    f"device:{job.device_id}",
                    Outcome.UNKNOWN,
                    {"job": job.id, "status": JobStatus.UNKNOWN.value, "error": reason},
                )
                _append_in(conn, entry, now)
                marked.append(_job(job))
            return marked

        return await self._db.write(tx)

    async def mark_running_jobs_failed(self, reason: str, *, now: float) -> int:
        """After a restart: fail every unfinished job, returning how many.

        Pending jobs are included: their request lived in the dead process's memory and will
        never be forwarded.
        """
        update = (
            t.jobs.update()
            .where(t.jobs.c.status.in_([JobStatus.PENDING.value, JobStatus.RUNNING.value]))
            .values(status=JobStatus.FAILED.value, finished_at=now, error=reason)
        )
        result = await self._db.write(lambda conn: conn.execute(update))
        return result.rowcount

    # -- audit ---------------------------------------------------------------------------------

    async def append(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        outcome: Outcome,
        now: float,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Append one record to the audit chain and return it.

        Appends are serialised on the chain-head row (FOR UPDATE on PostgreSQL; the SQLite write
        lock), so two concurrent appends can never chain from the same predecessor.

        Raises:
            ValueError: ``detail`` is not JSON-compatible.
        """
        entry = AuditEntry(actor, action, target, outcome, detail)
        normalise_detail(detail or {})  # a ValueError here, before any transaction
        return await self._db.write(lambda conn: _append_in(conn, entry, now), small=True)

    async def head(self) -> ChainHead:
        row = await self._db.read(lambda conn: conn.execute(_HEAD).first())
        if row is None:  # only if someone deleted the row by hand
            return ChainHead(seq=0, hash=GENESIS_HASH)
        return ChainHead(seq=row.seq, hash=bytes(row.hash))

    async def extent(self) -> tuple[ChainHead | None, int]:
        """The chain head (None when its row is gone) and the highest seq stored (0 if none),
        read in one statement so both come from one snapshot, even next to a live relay."""

        def read(conn: sa.Connection) -> tuple[ChainHead | None, int]:
            row = conn.execute(_EXTENT).one()
            head = None if row.seq is None else ChainHead(seq=row.seq, hash=bytes(row.hash))
            return head, row.last or 0

        return await self._db.read(read)

    async def actions_after(
        self, seq: int, actions: Collection[str], *, limit: int = 1000
    ) -> tuple[int, list[AuditRecord]]:
        """Records after ``seq`` whose action is one of ``actions`` and whose outcome is ``ok``,
        and the seq to ask after next.

        How a relay follows what other processes did (an operator revoking a device from the
        command line): a range scan of the records added since it last asked, by primary key.
        Only what was done counts: a refused ``device.revoke`` (another tenant's device) is
        audited under the same action and must not act (attack finding F0).
        """
        head = sa.select(sa.func.max(t.audit.c.seq))
        query = (
            t.audit.select()
            .where(
                t.audit.c.seq > seq,
                t.audit.c.action.in_(list(actions)),
                t.audit.c.outcome == Outcome.OK.value,
            )
            .order_by(t.audit.c.seq)
            .limit(limit)
        )

        def read(conn: sa.Connection) -> tuple[int, list[AuditRecord]]:
            newest = conn.execute(head).scalar() or 0
            rows = conn.execute(query.where(t.audit.c.seq <= newest)).all()
            if len(rows) == limit:  # more to come: carry on from the last one read
                newest = rows[-1].seq
            return newest, [_audit(row) for row in rows]

        return await self._db.read(read)

    async def records(
        self, *, start_seq: int = 1, stop_seq: int | None = None, batch_size: int = 1000
    ) -> AsyncIterator[AuditRecord]:
        """Records with ``start_seq <= seq <= stop_seq`` in order, ``batch_size`` per query."""
        next_seq = start_seq
        while True:
            query = (
                t.audit.select()
                .where(t.audit.c.seq >= next_seq)
                .order_by(t.audit.c.seq)
                .limit(batch_size)
            )
            if stop_seq is not None:
                query = query.where(t.audit.c.seq <= stop_seq)
            rows = await self._db.read(_all_rows(query))
            for row in rows:
                yield _audit(row)
            if len(rows) < batch_size:
                return
            next_seq = rows[-1].seq + 1


def _literal(status: JobStatus) -> sa.ColumnElement[str]:
    """A status written into the SQL text (a prepared statement's only parameters are ours)."""
    return sa.literal_column(f"'{status.value}'")


class _Prepared:
    """A Core statement compiled once per dialect and run through ``exec_driver_sql``.

    For the request path only: it skips SQLAlchemy's per-execution compile-cache lookup and
    parameter processing (about 40 µs a statement here), so parameters must already be what the
    driver takes: JSON as text (see :func:`_json`), bytes, numbers and strings. On SQLite it
    goes straight to the sqlite3 cursor of the connection's transaction (:class:`_SqliteRows`):
    ``exec_driver_sql``'s own bookkeeping (events, result metadata) was still about three
    quarters of a routed request's two job transactions (docs/notes/16perf-status.md).
    """

    def __init__(self, statement: sa.ClauseElement, suffix: str = "") -> None:
        self.statement = statement
        #: SQL both dialects spell alike, appended to the compiled statement.
        self.suffix = suffix
        self._compiled: dict[str, tuple[str, tuple[str, ...]]] = {}

    def _for(self, conn: sa.Connection) -> tuple[str, tuple[str, ...]]:
        compiled = self._compiled.get(conn.dialect.name)
        if compiled is None:
            c = self.statement.compile(dialect=conn.dialect)
            assert isinstance(c, SQLCompiler)
            assert c.positiontup is not None  # both drivers take positional parameters
            compiled = (c.string + self.suffix, tuple(c.positiontup))
            self._compiled[conn.dialect.name] = compiled
        return compiled

    def __call__(self, conn: sa.Connection, params: Mapping[str, Any]) -> _Rows:
        sql, names = self._for(conn)
        values = tuple(params[name] for name in names)
        if conn.dialect.name == "sqlite":
            return _SqliteRows(conn, sql, values)
        return conn.exec_driver_sql(sql, values)

    def many(self, conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """The statement once per row of ``rows`` (at least one), as one ``executemany``."""
        sql, names = self._for(conn)
        values = [tuple(row[name] for name in names) for row in rows]
        if conn.dialect.name == "sqlite":
            _SqliteRows(conn, sql, values, many=True)
        else:
            conn.exec_driver_sql(sql, values)


class _Rows(Protocol):
    """What :class:`_Prepared` statements give: ``sa.CursorResult``'s few methods used here."""

    @property
    def rowcount(self) -> int: ...
    def first(self) -> Any: ...
    def one(self) -> Any: ...
    def all(self) -> Sequence[Any]: ...
    def scalar(self) -> Any: ...


class _SqliteRows:
    """A statement run on the sqlite3 connection under ``conn``'s transaction, its rows read
    at once as named tuples (attribute access like ``sa.Row``). Driver errors are raised as
    SQLAlchemy's, so :func:`~posassist.relay.storage.engine.map_db_errors` maps them as ever."""

    __slots__ = ("_rows", "_type", "rowcount")

    def __init__(self, conn: sa.Connection, sql: str, values: Any, *, many: bool = False) -> None:
        raw = conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        try:
            cursor = raw.executemany(sql, values) if many else raw.execute(sql, values)
            description = cursor.description
            self._rows: list[Any] = cursor.fetchall() if description else []
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc
        self.rowcount = cursor.rowcount
        self._type = None if description is None else _row_type(tuple(d[0] for d in description))

    def first(self) -> Any:
        if not self._rows:
            return None
        assert self._type is not None
        return self._type._make(self._rows[0])

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise (
                sa.exc.NoResultFound("expected one row")
                if not self._rows
                else (sa.exc.MultipleResultsFound("expected one row"))
            )
        return self.first()

    def all(self) -> list[Any]:
        make = self._type._make if self._type is not None else tuple
        return [make(row) for row in self._rows]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None


@functools.lru_cache(maxsize=64)
def _row_type(names: tuple[str, ...]) -> Any:
    """A named tuple class for one statement's columns (made once per column list)."""
    return collections.namedtuple("Row", names, rename=True)


# Statements on the request path, built once (building a statement costs more than running it).
_INSERT_JOB = _Prepared(t.jobs.insert().values({c.name: sa.bindparam(c.name) for c in t.jobs.c}))
_INSERT_AUDIT = _Prepared(
    t.audit.insert().values({c.name: sa.bindparam(c.name) for c in t.audit.c})
)
# The same, inserting nothing when the seq is taken (SQLite >= 3.24 and PostgreSQL alike): a row
# past the head is found by the append that meets it, without a query on every append.
_INSERT_AUDIT_IF_FREE = _Prepared(_INSERT_AUDIT.statement, suffix=" ON CONFLICT (seq) DO NOTHING")
_HEAD = sa.select(t.audit_head.c.seq, t.audit_head.c.hash).where(
    t.audit_head.c.id == sa.literal_column("1")
)
_HEAD_FOR_UPDATE = _Prepared(_HEAD.with_for_update())
_LAST_SEQ = sa.select(sa.func.max(t.audit.c.seq))
_PAST_HEAD = _Prepared(_LAST_SEQ.where(t.audit.c.seq > sa.bindparam("b_seq")))
_EXTENT = sa.select(
    _HEAD.with_only_columns(t.audit_head.c.seq).scalar_subquery().label("seq"),
    _HEAD.with_only_columns(t.audit_head.c.hash).scalar_subquery().label("hash"),
    _LAST_SEQ.scalar_subquery().label("last"),
)
_MOVE_HEAD = _Prepared(
    t.audit_head.update()
    .where(t.audit_head.c.id == sa.literal_column("1"))
    .values(seq=sa.bindparam("b_seq"), hash=sa.bindparam("b_hash"))
)
_GET_DEVICE = _Prepared(
    t.devices.select().where(
        t.devices.c.id == sa.bindparam("b_id"),
        t.devices.c.status != sa.literal_column("'deleted'"),  # _NOT_DELETED, as SQL text
    )
)
_START_JOB = _Prepared(
    t.jobs.update()
    .where(t.jobs.c.id == sa.bindparam("b_id"), t.jobs.c.status == _literal(JobStatus.PENDING))
    .values(status=sa.bindparam("status"), started_at=sa.bindparam("started_at"))
    .returning(*t.jobs.c)
)
_FINISH_JOB = _Prepared(
    t.jobs.update()
    .where(
        t.jobs.c.id == sa.bindparam("b_id"),
        sa.or_(
            t.jobs.c.status == _literal(JobStatus.PENDING),
            t.jobs.c.status == _literal(JobStatus.RUNNING),
        ),
    )
    .values(
        status=sa.bindparam("status"),
        finished_at=sa.bindparam("finished_at"),
        error=sa.bindparam("error"),
    )
    .returning(*t.jobs.c)
)

# The same end without RETURNING, for many jobs at once (finish_jobs): the jobs still open are
# read first, in the same transaction.
_FINISH_JOB_QUIETLY = _Prepared(
    t.jobs.update()
    .where(t.jobs.c.id == sa.bindparam("b_id"))
    .values(
        status=sa.bindparam("status"),
        finished_at=sa.bindparam("finished_at"),
        error=sa.bindparam("error"),
    )
)
#: Rows written by one executemany at most (both drivers take it whole; bounded all the same).
MAX_SMALL_BATCH = 64


def _open_jobs(conn: sa.Connection, job_ids: Sequence[str]) -> set[str]:
    """Which of ``job_ids`` are still pending or running (their rows locked on PostgreSQL)."""
    query = (
        sa.select(t.jobs.c.id)
        .where(
            t.jobs.c.id.in_(job_ids),
            t.jobs.c.status.in_([JobStatus.PENDING.value, JobStatus.RUNNING.value]),
        )
        .with_for_update()
    )
    return set(conn.execute(query).scalars())


_RECONCILE_JOB = _Prepared(
    t.jobs.update()
    .where(t.jobs.c.id == sa.bindparam("b_id"), t.jobs.c.status == _literal(JobStatus.UNKNOWN))
    .values(
        status=sa.bindparam("status"),
        finished_at=sa.bindparam("finished_at"),
        error=sa.bindparam("error"),
    )
    .returning(*t.jobs.c)
)


@functools.cache
def _seen(*, version: bool, facts: bool) -> sa.Update:
    """The presence update for rows that carry ``agent_version`` and/or ``facts``."""
    columns = ["last_seen", *(["agent_version"] if version else []), *(["facts"] if facts else [])]
    return (
        t.devices.update()
        .where(t.devices.c.id == sa.bindparam("b_id"))
        .values({name: sa.bindparam(name) for name in columns})
    )


#: How the JSON columns are written: what SQLAlchemy's JSON type does by default, so rows
#: written by a prepared statement read back through the Core table like any other.
_json = json.dumps


def _store(row: sa.Row[Any]) -> RetailStore:
    return RetailStore(
        id=row.id,
        merchant_id=row.merchant_id,
        name=row.name,
        created_at=row.created_at,
        timezone=row.timezone,
        hours=json.loads(row.hours),
    )


def _row(record: Any) -> dict[str, Any]:
    """A flat model dataclass as column values (shallow: cheaper than ``dataclasses.asdict``)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def _all_rows(query: sa.Select[Any]) -> Callable[[sa.Connection], list[sa.Row[Any]]]:
    return lambda conn: list(conn.execute(query).all())


def _require(conn: sa.Connection, table: sa.Table, row_id: str) -> None:
    found = conn.scalar(sa.select(sa.literal(1)).where(table.c.id == row_id))
    if found is None:
        raise NotFound(f"{table.name} {row_id!r}")


def _append_in(conn: sa.Connection, entry: AuditEntry, now: float) -> AuditRecord:
    """Append ``entry`` inside the caller's write transaction (it then commits with it).

    Rows past the head were not written by a relay (the head moves in the transaction that
    inserts): someone wrote them into the database. The relay keeps working rather than failing
    every audited operation on the taken seq: the append that meets such a row (its seq is
    taken) puts the record after the last stored row, chained from the head (the last record
    the relay wrote), and names the stray rows, so ``audit verify`` reports them at their seq
    (docs/relay.md#audit-checkpoints). Rows further on, past a gap, are met when the chain gets
    there; ``audit verify`` reports them at once.
    """
    body = normalise_detail(entry.detail or {})
    head = _HEAD_FOR_UPDATE(conn, {}).first()
    if head is None:  # deleted by hand: rebuilt from the last row, and the record says so
        head = _rebuild_head(conn)
        body = {**body, "head_rebuilt": True}
    prev_hash = bytes(head.hash)
    record = _chained(entry, body, head.seq + 1, prev_hash, now)
    if _INSERT_AUDIT_IF_FREE(conn, {**_row(record), "detail": _json(body)}).rowcount != 1:
        stray = _PAST_HEAD(conn, {"b_seq": head.seq}).scalar()
        assert stray is not None  # the insert met a row past the head, so there is one
        log.error(
            "audit rows %d..%d past the chain head %d: not written by a relay",
            head.seq + 1,
            stray,
            head.seq,
        )
        body = {**body, "stray_records": [head.seq + 1, stray]}
        record = _chained(entry, body, stray + 1, prev_hash, now)
        _INSERT_AUDIT(conn, {**_row(record), "detail": _json(body)})
    _MOVE_HEAD(conn, {"b_seq": record.seq, "b_hash": record.hash})
    return record


def _append_many_in(conn: sa.Connection, entries: Sequence[AuditEntry], now: float) -> None:
    """Append ``entries`` in order inside the caller's write transaction: the head is read (and
    locked) once, the records are chained here and inserted by one ``executemany``, and the head
    moves once. With rows past the head (not written by a relay) each goes through
    :func:`_append_in`, which records them."""
    if len(entries) <= 1:
        for entry in entries:
            _append_in(conn, entry, now)
        return
    head = _HEAD_FOR_UPDATE(conn, {}).first()
    if head is None or _PAST_HEAD(conn, {"b_seq": head.seq}).scalar() is not None:
        for entry in entries:
            _append_in(conn, entry, now)
        return
    seq, prev_hash = head.seq, bytes(head.hash)
    rows = []
    for entry in entries:
        body = normalise_detail(entry.detail or {})
        record = _chained(entry, body, seq + 1, prev_hash, now)
        rows.append({**_row(record), "detail": _json(body)})
        seq, prev_hash = record.seq, record.hash
    _INSERT_AUDIT.many(conn, rows)
    _MOVE_HEAD(conn, {"b_seq": seq, "b_hash": prev_hash})


def _chained(
    entry: AuditEntry, body: dict[str, Any], seq: int, prev_hash: bytes, now: float
) -> AuditRecord:
    record = AuditRecord(
        seq=seq,
        at=float(now),
        actor=entry.actor,
        action=entry.action,
        target=entry.target,
        outcome=Outcome(entry.outcome).value,
        detail=body,
        prev_hash=prev_hash,
    )
    return dataclasses.replace(record, hash=chain_hash(prev_hash, record))


def _rebuild_head(conn: sa.Connection) -> Any:
    """Put back a deleted ``audit_head`` row at the last stored record (or the genesis)."""
    log.error("the audit_head row is gone: rebuilt from the last audit row")
    last = conn.execute(
        sa.select(t.audit.c.seq, t.audit.c.hash).order_by(t.audit.c.seq.desc()).limit(1)
    ).first()
    seq, hash_ = (0, GENESIS_HASH) if last is None else (last.seq, bytes(last.hash))
    conn.execute(t.audit_head.insert().values(id=1, seq=seq, hash=hash_))
    return _HEAD_FOR_UPDATE(conn, {}).one()


def open_storage(
    url: str | sa.URL,
    *,
    schema: str | None = None,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    pool_size: int = 5,
    sync: str = "normal",
) -> SqlStorage:
    """Shorthand for :meth:`SqlStorage.open`."""
    return SqlStorage.open(
        url, schema=schema, busy_timeout=busy_timeout, pool_size=pool_size, sync=sync
    )
