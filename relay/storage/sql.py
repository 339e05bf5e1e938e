"""The one storage implementation: SQLAlchemy Core over aiosqlite or asyncpg.

:class:`SqlStorage` satisfies every Protocol in :mod:`relay.storage.interfaces`. Writes run in
``BEGIN IMMEDIATE`` transactions on SQLite (one writer at a time, waiting up to the busy timeout)
and take row locks where ordering matters on PostgreSQL; all driver errors pass through
:func:`relay.storage.engine.map_db_errors`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import secrets
from typing import TYPE_CHECKING, Any, Self

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from relay.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditRecord,
    Outcome,
    chain_hash,
    normalise_detail,
)
from relay.errors import (
    Conflict,
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
from relay.storage import schema as t
from relay.storage.engine import (
    DEFAULT_BUSY_TIMEOUT,
    SQLITE_BEGIN,
    create_engine,
    map_db_errors,
)
from relay.storage.models import (
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
    from collections.abc import AsyncIterator, Mapping

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["SqlStorage", "open_storage"]

MIGRATIONS = "relay.storage:migrations"
_TOKEN_BYTES = 32


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["connection"] = connection
    return config


def _upgrade_head(connection: sa.Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


def _current_revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest migration shipped with this code."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _device(row: sa.Row[Any]) -> Device:
    return Device(
        id=row.id,
        store_id=row.store_id,
        public_key=bytes(row.public_key),
        status=DeviceStatus(row.status),
        enrolled_at=row.enrolled_at,
        revoked_at=row.revoked_at,
        last_seen=row.last_seen,
        agent_version=row.agent_version,
        facts=row.facts,
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


def _scope_clause(scope: Scope) -> sa.ColumnElement[bool]:
    """A WHERE clause over ``_DEVICE_TREE`` selecting the devices ``scope`` covers."""
    match scope.kind:
        case ScopeKind.ROOT:
            return sa.true()
        case ScopeKind.ORGANISATION:
            return t.merchants.c.organisation_id == scope.id
        case ScopeKind.MERCHANT:
            return t.stores.c.merchant_id == scope.id
        case ScopeKind.STORE:
            return t.devices.c.store_id == scope.id
        case ScopeKind.DEVICE:
            return t.devices.c.id == scope.id


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
    """The relay's database on SQLite or PostgreSQL; see :mod:`relay.storage.interfaces`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"

    @classmethod
    def open(
        cls,
        url: str | sa.URL,
        *,
        schema: str | None = None,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        pool_size: int = 5,
    ) -> Self:
        """A storage object for ``url``; nothing connects until first use. Call :meth:`migrate`."""
        return cls(
            create_engine(url, schema=schema, busy_timeout=busy_timeout, pool_size=pool_size)
        )

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        await self._engine.dispose()

    # -- transactions --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        with map_db_errors():
            async with self._engine.connect() as conn, conn.begin():
                yield conn

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        with map_db_errors():
            async with self._engine.connect() as conn:
                if self._sqlite:
                    # Take the write lock at BEGIN: a deferred transaction that reads and then
                    # writes can fail with SQLITE_BUSY at once in WAL mode, ignoring busy_timeout.
                    conn = await conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
                async with conn.begin():
                    yield conn

    # -- migrations ----------------------------------------------------------------------------

    async def migrate(self) -> None:
        """Upgrade the schema to the newest migration; a no-op when already there.

        Safe when several relay nodes start at once: PostgreSQL takes an advisory lock for the
        schema, SQLite the write lock.
        """
        async with self._write() as conn:
            if not self._sqlite:
                await conn.execute(
                    sa.text(
                        "SELECT pg_advisory_xact_lock(hashtext('posassist.migrate.' "
                        "|| current_schema()))"
                    )
                )
            await conn.run_sync(_upgrade_head)

    async def current_revision(self) -> str | None:
        """The schema version the database is at (None when never migrated)."""
        async with self._read() as conn:
            return await conn.run_sync(_current_revision)

    # -- tenancy -------------------------------------------------------------------------------

    async def create_organisation(self, name: str, *, now: float) -> Organisation:
        org = Organisation(id=_new_id("org"), name=name, created_at=now)
        async with self._write() as conn:
            await conn.execute(t.organisations.insert().values(dataclasses.asdict(org)))
        return org

    async def create_merchant(self, organisation_id: str, name: str, *, now: float) -> Merchant:
        merchant = Merchant(
            id=_new_id("mer"), organisation_id=organisation_id, name=name, created_at=now
        )
        async with self._write() as conn:
            await self._require(conn, t.organisations, organisation_id)
            await conn.execute(t.merchants.insert().values(dataclasses.asdict(merchant)))
        return merchant

    async def create_store(self, merchant_id: str, name: str, *, now: float) -> RetailStore:
        store = RetailStore(id=_new_id("sto"), merchant_id=merchant_id, name=name, created_at=now)
        async with self._write() as conn:
            await self._require(conn, t.merchants, merchant_id)
            await conn.execute(t.stores.insert().values(dataclasses.asdict(store)))
        return store

    @staticmethod
    async def _require(conn: AsyncConnection, table: sa.Table, row_id: str) -> None:
        found = await conn.scalar(sa.select(sa.literal(1)).where(table.c.id == row_id))
        if found is None:
            raise NotFound(f"{table.name} {row_id!r}")

    async def get_store(self, store_id: str) -> RetailStore:
        async with self._read() as conn:
            row = (await conn.execute(t.stores.select().where(t.stores.c.id == store_id))).first()
        if row is None:
            raise NotFound(f"store {store_id!r}")
        return RetailStore(
            id=row.id, merchant_id=row.merchant_id, name=row.name, created_at=row.created_at
        )

    async def scope_exists(self, scope: Scope) -> bool:
        if scope.kind is ScopeKind.ROOT:
            return True
        table = _SCOPE_TABLES[scope.kind]
        async with self._read() as conn:
            found = await conn.scalar(sa.select(sa.literal(1)).where(table.c.id == scope.id))
        return found is not None

    async def device_path(self, device_id: str) -> TenantPath:
        query = (
            sa.select(t.merchants.c.organisation_id, t.stores.c.merchant_id, t.devices.c.store_id)
            .select_from(_DEVICE_TREE)
            .where(t.devices.c.id == device_id)
        )
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
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
        chain = [scope]
        async with self._read() as conn:
            kind, node = scope.kind, scope.id
            while kind is not ScopeKind.ROOT:
                parent_kind, table, column = _PARENTS[kind]
                parent = await conn.scalar(sa.select(column).where(table.c.id == node))
                if parent is None:
                    raise NotFound(f"{kind} {node!r}")
                if parent_kind is not ScopeKind.ROOT:
                    chain.append(Scope(parent_kind, parent))
                kind, node = parent_kind, parent
        chain.append(Scope.root())
        return chain[::-1]

    async def device_in_scope(self, device_id: str, scope: Scope) -> bool:
        """Whether ``scope`` covers the device; False also when there is no such device."""
        try:
            path = await self.device_path(device_id)
        except NotFound:
            return False
        return path.within(scope)

    # -- devices -------------------------------------------------------------------------------

    async def get_device(self, device_id: str) -> Device:
        async with self._read() as conn:
            row = (
                await conn.execute(t.devices.select().where(t.devices.c.id == device_id))
            ).first()
        if row is None:
            raise NotFound(f"device {device_id!r}")
        return _device(row)

    async def find_device_by_key(self, public_key: bytes) -> Device | None:
        query = t.devices.select().where(t.devices.c.public_key == public_key)
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _device(row)

    async def list_devices(self, scope: Scope) -> list[Device]:
        query = (
            sa.select(t.devices)
            .select_from(_DEVICE_TREE)
            .where(_scope_clause(scope))
            .order_by(t.devices.c.enrolled_at, t.devices.c.id)
        )
        async with self._read() as conn:
            return [_device(row) for row in await conn.execute(query)]

    async def revoke_device(self, device_id: str, *, now: float) -> Device:
        """Mark the device revoked (idempotent: a second call keeps the first ``revoked_at``)."""
        async with self._write() as conn:
            await conn.execute(
                t.devices.update()
                .where(t.devices.c.id == device_id, t.devices.c.status == DeviceStatus.ACTIVE)
                .values(status=DeviceStatus.REVOKED.value, revoked_at=now)
            )
            row = (
                await conn.execute(t.devices.select().where(t.devices.c.id == device_id))
            ).first()
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
        async with self._write() as conn:
            result = await conn.execute(
                t.devices.update().where(t.devices.c.id == device_id).values(values)
            )
        if result.rowcount == 0:
            raise NotFound(f"device {device_id!r}")

    async def record_presences(
        self, seen: Mapping[str, tuple[float, str | None, Mapping[str, Any] | None]]
    ) -> None:
        """Many devices' last seen time (and agent version and facts, when known) in one
        transaction; devices that no longer exist are skipped."""
        if not seen:
            return
        async with self._write() as conn:
            for device_id, (now, agent_version, facts) in seen.items():
                values: dict[str, Any] = {"last_seen": now}
                if agent_version is not None:
                    values["agent_version"] = agent_version
                if facts is not None:
                    values["facts"] = dict(facts)
                await conn.execute(
                    t.devices.update().where(t.devices.c.id == device_id).values(values)
                )

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
        async with self._write() as conn:
            if scope.kind is not ScopeKind.ROOT:
                assert scope.id is not None  # Scope.__post_init__
                await self._require(conn, _SCOPE_TABLES[scope.kind], scope.id)
            await conn.execute(
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
        return user

    async def _get_user_where(self, clause: sa.ColumnElement[bool]) -> User:
        async with self._read() as conn:
            row = (await conn.execute(t.users.select().where(clause))).first()
        if row is None:
            raise NotFound("user")
        return _user(row)

    async def get_user(self, username: str) -> User:
        return await self._get_user_where(t.users.c.username == username)

    async def get_user_by_id(self, user_id: str) -> User:
        return await self._get_user_where(t.users.c.id == user_id)

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        async with self._write() as conn:
            result = await conn.execute(
                t.users.update().where(t.users.c.id == user_id).values(password_hash=password_hash)
            )
        if result.rowcount == 0:
            raise NotFound("user")

    async def record_login_failure(
        self, user_id: str, *, now: float, max_failures: int, lockout_timeout: float
    ) -> User:
        """Count a failed sign-in; the ``max_failures``-th locks the user for ``lockout_timeout``.

        Locking resets the count, so after the lockout the user has ``max_failures`` tries again.
        The increment is one UPDATE, so concurrent failures are all counted.
        """
        async with self._write() as conn:
            failures = await conn.scalar(
                t.users.update()
                .where(t.users.c.id == user_id)
                .values(failed_logins=t.users.c.failed_logins + 1)
                .returning(t.users.c.failed_logins)
            )
            if failures is None:
                raise NotFound("user")
            if failures >= max_failures:
                await conn.execute(
                    t.users.update()
                    .where(t.users.c.id == user_id)
                    .values(failed_logins=0, locked_until=now + lockout_timeout)
                )
            row = (await conn.execute(t.users.select().where(t.users.c.id == user_id))).one()
        return _user(row)

    async def record_login_success(self, user_id: str) -> None:
        async with self._write() as conn:
            await conn.execute(
                t.users.update()
                .where(t.users.c.id == user_id)
                .values(failed_logins=0, locked_until=None)
            )

    # -- bearer tokens -------------------------------------------------------------------------

    async def issue_token(self, user_id: str, *, now: float, ttl: float) -> str:
        """A fresh bearer token for the user, valid for ``ttl`` seconds; only its hash is kept."""
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        async with self._write() as conn:
            await self._require(conn, t.users, user_id)
            await conn.execute(
                t.bearer_tokens.insert().values(
                    token_hash=_digest(token),
                    user_id=user_id,
                    created_at=now,
                    expires_at=now + ttl,
                    revoked_at=None,
                )
            )
        return token

    async def authenticate_token(self, token: str, *, now: float) -> User:
        """The token's user; raises ``TokenUnknown``, ``TokenRevoked`` or ``TokenExpired``."""
        query = (
            sa.select(t.users, t.bearer_tokens.c.expires_at, t.bearer_tokens.c.revoked_at)
            .select_from(t.bearer_tokens.join(t.users))
            .where(t.bearer_tokens.c.token_hash == _digest(token))
        )
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise TokenUnknown("no such token")
        if row.revoked_at is not None:
            raise TokenRevoked(f"token of {row.username} revoked at {row.revoked_at}")
        if now >= row.expires_at:
            raise TokenExpired(f"token of {row.username} expired at {row.expires_at}")
        return _user(row)

    async def revoke_token(self, token: str, *, now: float) -> None:
        """Revoke one token (sign-out); unknown or already revoked tokens are left alone."""
        async with self._write() as conn:
            await conn.execute(
                t.bearer_tokens.update()
                .where(
                    t.bearer_tokens.c.token_hash == _digest(token),
                    t.bearer_tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )

    async def revoke_user_tokens(self, user_id: str, *, now: float) -> int:
        """Revoke every live token of the user; returns how many."""
        async with self._write() as conn:
            result = await conn.execute(
                t.bearer_tokens.update()
                .where(
                    t.bearer_tokens.c.user_id == user_id,
                    t.bearer_tokens.c.revoked_at.is_(None),
                    t.bearer_tokens.c.expires_at > now,
                )
                .values(revoked_at=now)
            )
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
        async with self._write() as conn:
            await self._require(conn, t.stores, store_id)
            await conn.execute(
                t.enrolment_tokens.insert().values(
                    token_hash=_digest(secret), **dataclasses.asdict(record)
                )
            )
        return record, secret

    async def revoke_enrolment(self, enrolment_id: str, *, now: float) -> EnrolmentToken:
        """Revoke an unused token; ``Conflict`` if it was already used."""
        table = t.enrolment_tokens
        async with self._write() as conn:
            row = (await conn.execute(table.select().where(table.c.id == enrolment_id))).first()
            if row is None:
                raise NotFound(f"enrolment token {enrolment_id!r}")
            if row.used_at is not None:
                raise Conflict(f"enrolment token {enrolment_id!r} already used")
            if row.revoked_at is None:
                await conn.execute(
                    table.update().where(table.c.id == enrolment_id).values(revoked_at=now)
                )
                row = (await conn.execute(table.select().where(table.c.id == enrolment_id))).one()
        return _enrolment(row)

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
        async with self._write() as conn:
            row = (
                await conn.execute(
                    table.select().where(table.c.token_hash == _digest(secret)).with_for_update()
                )
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
            await conn.execute(
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
            claimed = await conn.execute(
                table.update()
                .where(table.c.id == row.id, table.c.used_at.is_(None))
                .values(used_at=now, used_by_device=device.id)
            )
            if claimed.rowcount != 1:
                raise EnrolmentTokenUsed(f"token {row.id} used concurrently")
        return device

    # -- jobs ----------------------------------------------------------------------------------

    async def create_job(
        self,
        device_id: str,
        kind: str,
        requested_by: str,
        *,
        now: float,
        audit: AuditEntry | None = None,
    ) -> Job:
        """A pending job; with ``audit``, its audit record commits in the same transaction."""
        job = Job(
            id=_new_id("job"),
            device_id=device_id,
            kind=kind,
            status=JobStatus.PENDING,
            requested_by=requested_by,
            created_at=now,
        )
        async with self._write() as conn:
            await self._require(conn, t.devices, device_id)
            await conn.execute(
                t.jobs.insert().values({**dataclasses.asdict(job), "status": job.status.value})
            )
            if audit is not None:
                entry = dataclasses.replace(
                    audit, detail={"job": job.id, **dict(audit.detail or {})}
                )
                await self._append_in(conn, entry, now)
        return job

    async def get_job(self, job_id: str) -> Job:
        async with self._read() as conn:
            row = (await conn.execute(t.jobs.select().where(t.jobs.c.id == job_id))).first()
        if row is None:
            raise NotFound(f"job {job_id!r}")
        return _job(row)

    async def _transition(
        self,
        job_id: str,
        allowed: tuple[JobStatus, ...],
        values: dict[str, Any],
        *,
        audit: AuditEntry | None = None,
        now: float = 0.0,
    ) -> Job:
        async with self._write() as conn:
            row = (
                await conn.execute(
                    t.jobs.update()
                    .where(t.jobs.c.id == job_id, t.jobs.c.status.in_([s.value for s in allowed]))
                    .values(values)
                    .returning(*t.jobs.c)
                )
            ).first()
            if row is not None and audit is not None:
                await self._append_in(conn, audit, now)
        if row is None:
            current = await self.get_job(job_id)  # raises NotFound
            raise Conflict(f"job {job_id} is {current.status}")
        return _job(row)

    async def start_job(self, job_id: str, *, now: float) -> Job:
        """pending → running; ``Conflict`` from any other state."""
        return await self._transition(
            job_id, (JobStatus.PENDING,), {"status": JobStatus.RUNNING.value, "started_at": now}
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
            (JobStatus.PENDING, JobStatus.RUNNING),
            {"status": JobStatus(status).value, "finished_at": now, "error": error},
            audit=audit,
            now=now,
        )

    async def mark_running_jobs_failed(self, reason: str, *, now: float) -> int:
        """After a restart: fail every unfinished job, returning how many.

        Pending jobs are included: their request lived in the dead process's memory and will
        never be forwarded.
        """
        async with self._write() as conn:
            result = await conn.execute(
                t.jobs.update()
                .where(t.jobs.c.status.in_([JobStatus.PENDING.value, JobStatus.RUNNING.value]))
                .values(status=JobStatus.FAILED.value, finished_at=now, error=reason)
            )
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
        async with self._write() as conn:
            return await self._append_in(
                conn, AuditEntry(actor, action, target, outcome, detail), now
            )

    async def _append_in(self, conn: AsyncConnection, entry: AuditEntry, now: float) -> AuditRecord:
        """Append ``entry`` inside the caller's write transaction (it then commits with it)."""
        body = normalise_detail(entry.detail or {})
        head = (
            await conn.execute(
                sa.select(t.audit_head.c.seq, t.audit_head.c.hash)
                .where(t.audit_head.c.id == 1)
                .with_for_update()
            )
        ).one()
        prev_hash = bytes(head.hash)
        record = AuditRecord(
            seq=head.seq + 1,
            at=float(now),
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
            outcome=Outcome(entry.outcome).value,
            detail=body,
            prev_hash=prev_hash,
        )
        record = dataclasses.replace(record, hash=chain_hash(prev_hash, record))
        await conn.execute(t.audit.insert().values(dataclasses.asdict(record)))
        await conn.execute(
            t.audit_head.update()
            .where(t.audit_head.c.id == 1)
            .values(seq=record.seq, hash=record.hash)
        )
        return record

    async def head(self) -> ChainHead:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    sa.select(t.audit_head.c.seq, t.audit_head.c.hash).where(t.audit_head.c.id == 1)
                )
            ).first()
        if row is None:  # only if someone deleted the row by hand
            return ChainHead(seq=0, hash=GENESIS_HASH)
        return ChainHead(seq=row.seq, hash=bytes(row.hash))

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
            async with self._read() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                yield _audit(row)
            if len(rows) < batch_size:
                return
            next_seq = rows[-1].seq + 1


def open_storage(
    url: str | sa.URL,
    *,
    schema: str | None = None,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    pool_size: int = 5,
) -> SqlStorage:
    """Shorthand for :meth:`SqlStorage.open`."""
    return SqlStorage.open(url, schema=schema, busy_timeout=busy_timeout, pool_size=pool_size)
