"""The data layer on SQLite and PostgreSQL: migrations, tenancy, users, tokens, enrolment, jobs."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from posassist.relay.errors import (
    Conflict,
    EnrolmentTokenExpired,
    EnrolmentTokenRevoked,
    EnrolmentTokenUnknown,
    EnrolmentTokenUsed,
    EnrolmentWrongRelay,
    NotFound,
    StorageUnavailable,
    TokenExpired,
    TokenRevoked,
    TokenUnknown,
)
from posassist.relay.storage import (
    Device,
    DeviceStatus,
    DeviceStore,
    EnrolmentStore,
    JobStatus,
    JobStore,
    Role,
    Scope,
    ScopeKind,
    SqlStorage,
    TenancyStore,
    TokenStore,
    UserStore,
    head_revision,
    normalise_url,
    open_storage,
    schema,
)
from posassist.relay.storage.engine import SqliteDatabase
from posassist.relay.storage.schema import metadata
from tests.relay.harness import wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from posassist.relay.storage.interfaces import AuditLog

NOW = 1_700_000_000.0
KEY = bytes(range(32))


async def make_tree(storage: SqlStorage):
    org = await storage.create_organisation("好吃面馆集团", now=NOW)
    merchant = await storage.create_merchant(org.id, "Noodle Co", now=NOW)
    store = await storage.create_store(merchant.id, "Till street", now=NOW)
    return org, merchant, store


async def enrol(storage: SqlStorage, store_id: str, key: bytes = KEY):
    _, secret = await storage.create_enrolment(store_id, "relay-1", now=NOW, ttl=600)
    return await storage.consume_enrolment(
        secret, relay_id="relay-1", public_key=key, now=NOW + 1, agent_version="0.1"
    )


# -- engine and migrations ----------------------------------------------------------------------


def test_sqlite_storage_satisfies_every_interface():
    storage: SqlStorage = open_storage("sqlite:///:memory:")
    interfaces: list[object] = [storage]
    tenancy: TenancyStore = storage
    devices: DeviceStore = storage
    users: UserStore = storage
    tokens: TokenStore = storage
    enrolment: EnrolmentStore = storage
    jobs: JobStore = storage
    audit: AuditLog = storage
    assert all(x is storage for x in (tenancy, devices, users, tokens, enrolment, jobs, audit))
    assert interfaces


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///x.db", "sqlite+pysqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+pysqlite"),
        ("postgresql://u@127.0.0.1/db", "postgresql+asyncpg"),
        ("postgresql+psycopg://u@127.0.0.1/db", "postgresql+asyncpg"),
        ("postgres://u@127.0.0.1/db", "postgresql+asyncpg"),
    ],
)
def test_url_picks_the_driver(url, driver):
    assert normalise_url(url).drivername == driver


def test_unsupported_url_is_refused():
    with pytest.raises(ValueError, match="unsupported"):
        normalise_url("mysql://u@127.0.0.1/db")


async def test_migrations_run_from_empty_and_are_idempotent(open_more):
    storage = await open_more()
    assert await storage.current_revision() is None
    await storage.migrate()
    assert await storage.current_revision() == head_revision() == "0010"
    org = await storage.create_organisation("o", now=NOW)
    await storage.migrate()  # again: a no-op that keeps the data
    assert await storage.current_revision() == "0010"
    assert await storage.scope_exists(Scope(ScopeKind.ORGANISATION, org.id))
    assert (await storage.head()).seq == 0


async def test_0006_keeps_queued_deliveries_and_its_downgrade_keeps_cancelled_ones(open_more):
    """Held notifications (0006): a delivery queued before the upgrade survives it (no alert
    named), ``cancelled`` is allowed after; downgraded, cancelled ones read as failed."""
    from alembic import command

    from posassist.relay.storage.sql import _alembic_config

    storage = await open_more()
    await storage.run_write(lambda conn: command.upgrade(_alembic_config(conn), "0005"))
    org = await storage.create_organisation("o", now=NOW)
    hook = "INSERT INTO webhooks (id, scope_kind, scope_id, url, secret, created_at, created_by)"

    def queue(conn: sa.Connection) -> None:
        conn.execute(
            sa.text(hook + " VALUES ('wh_1', 'organisation', :org, 'https://x', 's', 1, 'a')"),
            {"org": org.id},
        )
        conn.execute(
            sa.text(
                "INSERT INTO webhook_deliveries (id, webhook_id, event, payload, status, "
                "attempts, created_at, next_attempt_at) "
                "VALUES ('d1', 'wh_1', 'alert.opened', '{}', 'pending', 0, 1, 1)"
            )
        )

    await storage.run_write(queue)
    await storage.migrate()
    rows = "SELECT id, alert_id, status FROM webhook_deliveries ORDER BY id"
    read = await storage.run_read(lambda conn: [tuple(r) for r in conn.execute(sa.text(rows))])
    assert read == [("d1", None, "pending")]
    await storage.run_write(
        lambda conn: conn.execute(sa.text("UPDATE webhook_deliveries SET status = 'cancelled'"))
    )
    await storage.run_schema_write(lambda conn: command.downgrade(_alembic_config(conn), "0005"))
    read = await storage.run_read(
        lambda conn: [tuple(r) for r in conn.execute(sa.text(rows.replace("alert_id, ", "")))]
    )
    assert read == [("d1", "failed")]
    assert await storage.current_revision() == "0005"


async def test_0007_keeps_open_tickets_with_a_running_clock_and_downgrades(open_more):
    """The SLA pause (0007): a ticket open before the upgrade keeps everything it had, its
    resolution clock running (nothing paused); the downgrade drops only the pause columns."""
    from alembic import command

    from posassist.relay.storage.sql import _alembic_config

    storage = await open_more()
    await storage.run_write(lambda conn: command.upgrade(_alembic_config(conn), "0006"))
    org = await storage.create_organisation("o", now=NOW)
    merchant = await storage.create_merchant(org.id, "m", now=NOW)
    store = await storage.create_store(merchant.id, "s", now=NOW)
    insert = sa.text(
        "INSERT INTO tickets (id, support_code, store_id, channel, category, description, "
        "contact, language, diagnostics, status, opened_by, created_at, updated_at, "
        "clock_started_at, resolve_due, version) VALUES ('tkt_1', 'AAAA-BBBB', :store, 'agent', "
        "'printer', 'paper', '', 'zh-CN', '{}', 'waiting_merchant', 'device:d', 1, 2, 1, 500, 3)"
    )
    await storage.run_write(lambda conn: conn.execute(insert, {"store": store.id}))
    await storage.migrate()
    rows = "SELECT id, status, resolve_due, version, sla_paused_at, sla_paused_seconds FROM tickets"
    read = await storage.run_read(lambda conn: [tuple(r) for r in conn.execute(sa.text(rows))])
    assert read == [("tkt_1", "waiting_merchant", 500.0, 3, None, 0.0)]
    await storage.run_schema_write(lambda conn: command.downgrade(_alembic_config(conn), "0006"))
    short = rows.replace(", sla_paused_at, sla_paused_seconds", "")
    read = await storage.run_read(lambda conn: [tuple(r) for r in conn.execute(sa.text(short))])
    assert read == [("tkt_1", "waiting_merchant", 500.0, 3)]
    assert await storage.current_revision() == "0006"


async def test_0008_lets_a_job_end_cancelled_and_its_downgrade_reads_it_as_failed(open_more):
    """A cancelled run (0008, docs/protocol.md#cancel): jobs from before the upgrade keep their
    status, ``cancelled`` is allowed after (nothing else new is), and downgraded, a cancelled
    job reads as failed."""
    from alembic import command

    from posassist.relay.storage.sql import _alembic_config

    storage = await open_more()
    await storage.run_write(lambda conn: command.upgrade(_alembic_config(conn), "0007"))
    _, _, store = await make_tree(storage)
    device = await enrol(storage, store.id)
    old = await storage.create_job(device.id, "script.run", "tech", now=NOW)
    await storage.finish_job(old.id, JobStatus.FAILED, now=NOW, error="failed: x")
    job = await storage.create_job(device.id, "script.run", "tech", now=NOW)
    with pytest.raises(Conflict, match="ck_jobs_status"):  # before 0008 the database refuses it
        await storage.run_write(
            lambda conn: conn.execute(
                sa.text("UPDATE jobs SET status = 'cancelled' WHERE id = :id"), {"id": job.id}
            )
        )
    await storage.migrate()
    assert (await storage.get_job(old.id)).status is JobStatus.FAILED
    ended = await storage.finish_job(job.id, JobStatus.CANCELLED, now=NOW + 1, error="cancelled")
    assert ended.status is JobStatus.CANCELLED
    assert (await storage.get_job(job.id)).status is JobStatus.CANCELLED
    with pytest.raises(Conflict, match="ck_jobs_status"):
        await storage.run_write(
            lambda conn: conn.execute(sa.text("UPDATE jobs SET status = 'bogus'"))
        )
    await storage.run_schema_write(lambda conn: command.downgrade(_alembic_config(conn), "0007"))
    assert (await storage.get_job(job.id)).status is JobStatus.FAILED
    assert await storage.current_revision() == "0007"


async def test_concurrent_migrations_from_two_nodes(open_more):
    first, second = await open_more(), await open_more()
    await asyncio.gather(first.migrate(), second.migrate())
    assert await first.current_revision() == await second.current_revision() == "0010"


async def test_migrated_schema_matches_the_metadata(storage):
    def diff(conn: sa.Connection) -> list[object]:
        differences: list[object] = compare_metadata(MigrationContext.configure(conn), metadata)
        return differences

    assert await storage.run_read(diff) == []


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path):
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        await storage.migrate()

        def pragmas(conn: sa.Connection) -> list[object]:
            names = ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            return [conn.exec_driver_sql(f"PRAGMA {name}").scalar() for name in names]

        # synchronous 1 = NORMAL (the default): commits survive a killed process, and the
        # checkpointer below puts them on disk within a second.
        assert await storage.run_write(pragmas) == ["wal", 1, 10_000, 1]
        assert await storage.run_read(pragmas) == ["wal", 1, 10_000, 1]
    finally:
        await storage.close()
    with sqlite3.connect(tmp_path / "r.db") as raw:  # WAL is persistent in the file
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_sqlite_full_sync_fsyncs_every_commit(tmp_path: Path):
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}", sync="full")
    try:
        await storage.migrate()
        synchronous = await storage.run_read(
            lambda conn: conn.exec_driver_sql("PRAGMA synchronous").scalar()
        )
        assert synchronous == 2  # FULL
        before = time.monotonic()
        await storage.create_organisation("o", now=NOW)
        assert isinstance(storage.database, SqliteDatabase)
        assert storage.database.synced_at >= before  # on disk when the call returns
    finally:
        await storage.close()


def test_sqlite_sync_mode_must_be_known(tmp_path: Path):
    with pytest.raises(ValueError, match="sync must be one of normal, full, not 'off'"):
        open_storage(f"sqlite:///{tmp_path / 'r.db'}", sync="off")
    assert not (tmp_path / "r.db").exists()


async def test_sqlite_normal_sync_checkpoints_writes_to_disk_soon(tmp_path: Path):
    path = tmp_path / "r.db"
    storage = open_storage(f"sqlite:///{path}")
    database = storage.database
    assert isinstance(database, SqliteDatabase)
    database.sync_interval = 0.05
    try:
        await storage.migrate()
        wal = path.with_name("r.db-wal")
        before = time.monotonic()
        await storage.create_organisation("o", now=NOW)
        await wait_until(lambda: database.synced_at >= before, timeout=5)
        # The checkpoint copied the log into the database file: a reader that ignores the
        # log (immutable=1 skips WAL and locks) sees the organisation.
        uri = f"file:{path}?immutable=1"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as raw:
            assert raw.execute("SELECT name FROM organisations").fetchall() == [("o",)]
        assert wal.exists()
    finally:
        await storage.close()


async def test_sqlite_close_checkpoints_what_is_not_yet_on_disk(tmp_path: Path):
    path = tmp_path / "r.db"
    storage = open_storage(f"sqlite:///{path}")
    assert isinstance(storage.database, SqliteDatabase)
    storage.database.sync_interval = 3600  # the timer would never fire in this test
    await storage.migrate()
    await storage.create_organisation("o", now=NOW)
    await storage.close()
    uri = f"file:{path}?immutable=1"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as raw:
        assert raw.execute("SELECT name FROM organisations").fetchall() == [("o",)]


async def test_sqlite_small_writes_run_on_the_loop_and_wait_for_another_writer_on_a_thread(
    tmp_path: Path,
):
    path = tmp_path / "r.db"
    storage = open_storage(f"sqlite:///{path}", busy_timeout=5)
    database = storage.database
    assert isinstance(database, SqliteDatabase)
    try:
        await storage.migrate()
        _, _, store = await make_tree(storage)
        device = await enrol(storage, store.id)
        threads_before = database.thread_writes
        job = await storage.create_job(device.id, "diag.request", "usr_a", now=NOW)
        await storage.finish_job(job.id, JobStatus.SUCCEEDED, now=NOW + 1)
        assert (database.inline_writes, database.thread_writes) == (2, threads_before)

        # An operator command holds the write lock: the small write does not fail or spin on
        # the loop; it waits on the writer thread and lands once the lock is released.
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        pending = asyncio.ensure_future(
            storage.create_job(device.id, "diag.request", "usr_a", now=NOW + 2)
        )
        await asyncio.sleep(0.3)
        assert not pending.done()  # the loop is free meanwhile: this line runs
        raw.execute("ROLLBACK")
        raw.close()
        second = await asyncio.wait_for(pending, 5)
        assert database.thread_writes == threads_before + 1
        assert (await storage.get_job(second.id)).status is JobStatus.PENDING
        # and the next small write is back on the loop
        await storage.finish_job(second.id, JobStatus.FAILED, now=NOW + 3, error="x")
        assert database.inline_writes == 3
    finally:
        await storage.close()


async def test_sqlite_small_write_locked_too_long_is_storage_unavailable(tmp_path: Path):
    path = tmp_path / "r.db"
    storage = open_storage(f"sqlite:///{path}", busy_timeout=0.2)
    try:
        await storage.migrate()
        _, _, store = await make_tree(storage)
        device = await enrol(storage, store.id)
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageUnavailable):
                await storage.create_job(device.id, "diag.request", "usr_a", now=NOW)
        finally:
            raw.execute("ROLLBACK")
            raw.close()
        assert [j async for j in _jobs(storage)] == []  # nothing half-written
        await storage.create_job(device.id, "diag.request", "usr_a", now=NOW)  # recovers
        assert len([j async for j in _jobs(storage)]) == 1
    finally:
        await storage.close()


async def _jobs(storage: SqlStorage) -> AsyncIterator[str]:
    query = sa.select(schema.jobs.c.id)
    for job_id in await storage.run_read(lambda conn: conn.execute(query).scalars().all()):
        yield job_id


async def test_sqlite_write_lock_held_too_long_is_storage_unavailable(tmp_path: Path):
    path = tmp_path / "r.db"
    storage = open_storage(f"sqlite:///{path}", busy_timeout=0.2)
    try:
        await storage.migrate()
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageUnavailable) as info:
                await storage.create_organisation("o", now=NOW)
            assert info.value.public_reason == "service temporarily unavailable"
        finally:
            raw.execute("ROLLBACK")
            raw.close()
        await storage.create_organisation("o", now=NOW)  # and it recovers
    finally:
        await storage.close()


async def test_unreachable_postgresql_is_storage_unavailable():
    storage = open_storage("postgresql://postgres@127.0.0.1:1/test", busy_timeout=2)
    try:
        with pytest.raises(StorageUnavailable):
            await storage.migrate()
    finally:
        await storage.close()


# -- tenancy and devices -------------------------------------------------------------------------


async def test_tenancy_tree_and_device_path(storage):
    org, merchant, store = await make_tree(storage)
    device = await enrol(storage, store.id)
    path = await storage.device_path(device.id)
    assert (path.organisation_id, path.merchant_id, path.store_id) == (
        org.id,
        merchant.id,
        store.id,
    )
    assert (await storage.get_store(store.id)).name == "Till street"


async def test_children_of_missing_parents_are_refused(storage):
    with pytest.raises(NotFound):
        await storage.create_merchant("org_missing", "m", now=NOW)
    with pytest.raises(NotFound):
        await storage.create_store("mer_missing", "s", now=NOW)
    with pytest.raises(NotFound):
        await storage.create_enrolment("sto_missing", "relay-1", now=NOW, ttl=60)


async def test_scope_covers_only_its_subtree(storage):
    org, merchant, store = await make_tree(storage)
    other_store = await storage.create_store(merchant.id, "other", now=NOW)
    other_org, _, far_store = await make_tree(storage)
    mine = await enrol(storage, store.id, key=b"a" * 32)
    sibling = await enrol(storage, other_store.id, key=b"b" * 32)
    far = await enrol(storage, far_store.id, key=b"c" * 32)

    def ids(devices: list[Device]) -> set[str]:
        return {d.id for d in devices}

    assert ids(await storage.list_devices(Scope.root())) == {mine.id, sibling.id, far.id}
    assert ids(await storage.list_devices(Scope(ScopeKind.ORGANISATION, org.id))) == {
        mine.id,
        sibling.id,
    }
    assert ids(await storage.list_devices(Scope(ScopeKind.MERCHANT, merchant.id))) == {
        mine.id,
        sibling.id,
    }
    assert ids(await storage.list_devices(Scope(ScopeKind.STORE, store.id))) == {mine.id}
    assert ids(await storage.list_devices(Scope(ScopeKind.DEVICE, far.id))) == {far.id}
    assert await storage.device_in_scope(mine.id, Scope(ScopeKind.STORE, store.id))
    assert not await storage.device_in_scope(far.id, Scope(ScopeKind.ORGANISATION, org.id))
    assert await storage.device_in_scope(far.id, Scope(ScopeKind.ORGANISATION, other_org.id))
    assert not await storage.device_in_scope("dev_missing", Scope.root())


def test_scope_root_has_no_id_and_others_need_one():
    with pytest.raises(ValueError):
        Scope(ScopeKind.ROOT, "x")
    with pytest.raises(ValueError):
        Scope(ScopeKind.STORE)


async def test_device_presence_and_revocation(storage):
    _, _, store = await make_tree(storage)
    device = await enrol(storage, store.id)
    assert device.status is DeviceStatus.ACTIVE
    await storage.record_presence(
        device.id, now=NOW + 5, agent_version="0.2", facts={"os": "Windows 7", "printers": 2}
    )
    seen = await storage.get_device(device.id)
    assert (seen.last_seen, seen.agent_version, seen.facts) == (
        NOW + 5,
        "0.2",
        {"os": "Windows 7", "printers": 2},
    )
    assert (await storage.find_device_by_key(KEY)) == seen
    assert await storage.find_device_by_key(b"x" * 32) is None
    revoked = await storage.revoke_device(device.id, now=NOW + 10)
    assert (revoked.status, revoked.revoked_at) == (DeviceStatus.REVOKED, NOW + 10)
    again = await storage.revoke_device(device.id, now=NOW + 20)
    assert again.revoked_at == NOW + 10
    with pytest.raises(NotFound):
        await storage.revoke_device("dev_missing", now=NOW)
    with pytest.raises(NotFound):
        await storage.record_presence("dev_missing", now=NOW)


async def test_devices_and_their_policy_layers_are_read_many_at_once(storage):
    # what a reconnect storm's batched sign-ins read (relay/batching.py): only devices that
    # exist, each as get_device / policy_layers give it, a revoked one as revoked
    from posassist.relay.storage.health import HealthStore

    org, _, store = await make_tree(storage)
    first = await enrol(storage, store.id)
    second = await enrol(storage, store.id, key=bytes(range(1, 33)))
    await storage.revoke_device(second.id, now=NOW + 2)
    found = await storage.get_devices([first.id, second.id, "dev_missing", first.id])
    assert found == {
        first.id: await storage.get_device(first.id),
        second.id: await storage.get_device(second.id),
    }
    assert found[second.id].status is DeviceStatus.REVOKED
    assert await storage.get_devices([]) == {}
    health = HealthStore(storage)
    await health.set_policy(
        Scope(ScopeKind.ORGANISATION, org.id), {"checks": {}}, "admin", now=NOW + 3
    )
    layers = await health.policy_layers_many([first.id, "dev_missing", second.id])
    assert layers == {
        first.id: await health.policy_layers(first.id),
        second.id: await health.policy_layers(second.id),
    }
    assert layers[first.id].version >= 1


# -- users and bearer tokens --------------------------------------------------------------------


async def test_users_are_unique_and_scoped_to_existing_nodes(storage):
    _, merchant, _ = await make_tree(storage)
    scope = Scope(ScopeKind.MERCHANT, merchant.id)
    user = await storage.create_user("alice", "$scrypt$x", Role.TECHNICIAN, scope, now=NOW)
    assert (await storage.get_user("alice")) == user
    assert (await storage.get_user_by_id(user.id)).scope == scope
    with pytest.raises(Conflict):
        await storage.create_user("alice", "$scrypt$y", Role.VIEWER, Scope.root(), now=NOW)
    with pytest.raises(NotFound):
        await storage.create_user(
            "bob", "h", Role.TECHNICIAN, Scope(ScopeKind.STORE, "sto_missing"), now=NOW
        )
    with pytest.raises(NotFound):
        await storage.get_user("nobody")
    await storage.set_password_hash(user.id, "$scrypt$new")
    assert (await storage.get_user("alice")).password_hash == "$scrypt$new"


async def test_repeated_login_failures_lock_the_user_out(storage):
    user = await storage.create_user("alice", "h", Role.ADMIN, Scope.root(), now=NOW)
    for i in range(19):
        user = await storage.record_login_failure(
            user.id, now=NOW + i, max_failures=20, lockout_timeout=900
        )
        assert not user.is_locked(NOW + i)
    assert user.failed_logins == 19
    user = await storage.record_login_failure(
        user.id, now=NOW + 19, max_failures=20, lockout_timeout=900
    )
    assert user.locked_until == NOW + 19 + 900
    assert user.is_locked(NOW + 100)
    assert not user.is_locked(NOW + 19 + 900)
    await storage.record_login_success(user.id)
    user = await storage.get_user("alice")
    assert (user.failed_logins, user.locked_until) == (0, None)


async def test_concurrent_login_failures_are_all_counted(storage):
    user = await storage.create_user("alice", "h", Role.ADMIN, Scope.root(), now=NOW)
    await asyncio.gather(
        *(
            storage.record_login_failure(user.id, now=NOW, max_failures=100, lockout_timeout=60)
            for _ in range(10)
        )
    )
    assert (await storage.get_user("alice")).failed_logins == 10


async def test_bearer_token_lifecycle(storage):
    user = await storage.create_user("alice", "h", Role.ADMIN, Scope.root(), now=NOW)
    token = await storage.issue_token(user.id, now=NOW, ttl=3600)
    assert (await storage.authenticate_token(token, now=NOW + 10)).id == user.id
    with pytest.raises(TokenExpired):
        await storage.authenticate_token(token, now=NOW + 3600)
    with pytest.raises(TokenUnknown):
        await storage.authenticate_token(token + "x", now=NOW)
    await storage.revoke_token(token, now=NOW + 20)
    with pytest.raises(TokenRevoked):
        await storage.authenticate_token(token, now=NOW + 30)


async def test_bearer_tokens_are_stored_only_as_hashes(storage):
    user = await storage.create_user("alice", "h", Role.ADMIN, Scope.root(), now=NOW)
    token = await storage.issue_token(user.id, now=NOW, ttl=60)
    rows = await storage.run_read(
        lambda conn: conn.exec_driver_sql("SELECT token_hash FROM bearer_tokens").all()
    )
    assert len(rows) == 1
    assert token.encode() not in bytes(rows[0][0])
    assert len(rows[0][0]) == 32


async def test_revoking_all_user_tokens(storage):
    user = await storage.create_user("alice", "h", Role.ADMIN, Scope.root(), now=NOW)
    tokens = [await storage.issue_token(user.id, now=NOW, ttl=60) for _ in range(3)]
    assert await storage.revoke_user_tokens(user.id, now=NOW + 1) == 3
    for token in tokens:
        with pytest.raises(TokenRevoked):
            await storage.authenticate_token(token, now=NOW + 2)


# -- enrolment ----------------------------------------------------------------------------------


async def test_enrolment_binds_the_key_to_a_device_in_the_store(storage):
    _, _, store = await make_tree(storage)
    record, secret = await storage.create_enrolment(store.id, "relay-1", now=NOW, ttl=600)
    device = await storage.consume_enrolment(secret, relay_id="relay-1", public_key=KEY, now=NOW)
    assert (device.store_id, device.public_key) == (store.id, KEY)
    assert record.expires_at == NOW + 600


async def test_enrolment_token_used_twice_is_refused(storage):
    _, _, store = await make_tree(storage)
    _, secret = await storage.create_enrolment(store.id, "relay-1", now=NOW, ttl=600)
    await storage.consume_enrolment(secret, relay_id="relay-1", public_key=KEY, now=NOW)
    with pytest.raises(EnrolmentTokenUsed) as info:
        await storage.consume_enrolment(secret, relay_id="relay-1", public_key=b"z" * 32, now=NOW)
    assert info.value.public_reason == "enrolment token already used"
    assert len(await storage.list_devices(Scope.root())) == 1


async def test_enrolment_token_used_concurrently_enrols_exactly_one_device(storage, open_more):
    other = await open_more()
    _, _, store = await make_tree(storage)
    _, secret = await storage.create_enrolment(store.id, "relay-1", now=NOW, ttl=600)
    results = await asyncio.gather(
        *(
            node.consume_enrolment(secret, relay_id="relay-1", public_key=bytes([i]) * 32, now=NOW)
            for i, node in enumerate([storage, other] * 4)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, EnrolmentTokenUsed) for r in results if isinstance(r, BaseException))
    assert len(await storage.list_devices(Scope.root())) == 1


@pytest.mark.parametrize(
    ("relay_id", "now", "error"),
    [
        ("relay-2", NOW, EnrolmentWrongRelay),
        ("relay-1", NOW + 600, EnrolmentTokenExpired),
    ],
)
async def test_enrolment_token_refusals(storage, relay_id, now, error):
    _, _, store = await make_tree(storage)
    _, secret = await storage.create_enrolment(store.id, "relay-1", now=NOW, ttl=600)
    with pytest.raises(error):
        await storage.consume_enrolment(secret, relay_id=relay_id, public_key=KEY, now=now)
    assert await storage.list_devices(Scope.root()) == []
    # the refusal consumed nothing: the token still works where and when it should
    await storage.consume_enrolment(secret, relay_id="relay-1", public_key=KEY, now=NOW)


async def test_unknown_and_revoked_enrolment_tokens_are_refused(storage):
    _, _, store = await make_tree(storage)
    record, secret = await storage.create_enrolment(store.id, "relay-1", now=NOW, ttl=600)
    with pytest.raises(EnrolmentTokenUnknown):
        await storage.consume_enrolment("nope", relay_id="relay-1", public_key=KEY, now=NOW)
    revoked = await storage.revoke_enrolment(record.id, now=NOW + 1)
    assert revoked.revoked_at == NOW + 1
    with pytest.raises(EnrolmentTokenRevoked):
        await storage.consume_enrolment(secret, relay_id="relay-1", public_key=KEY, now=NOW + 2)
    assert await storage.list_devices(Scope.root()) == []


async def test_used_enrolment_token_cannot_be_revoked(storage):
    _, _, store = await make_tree(storage)
    record, secret = await storage.create_enrolment(store.id, "relay-1", now=NOW, ttl=600)
    await storage.consume_enrolment(secret, relay_id="relay-1", public_key=KEY, now=NOW)
    with pytest.raises(Conflict):
        await storage.revoke_enrolment(record.id, now=NOW)


async def test_enrolling_an_already_enrolled_key_is_a_conflict(storage):
    _, _, store = await make_tree(storage)
    await enrol(storage, store.id)
    _, secret = await storage.create_enrolment(store.id, "relay-1", now=NOW, ttl=600)
    with pytest.raises(Conflict):
        await storage.consume_enrolment(secret, relay_id="relay-1", public_key=KEY, now=NOW)
    # the token was not burnt by the failed attempt
    await storage.consume_enrolment(secret, relay_id="relay-1", public_key=b"n" * 32, now=NOW)


# -- jobs -----------------------------------------------------------------------------------------


async def test_job_lifecycle(storage):
    _, _, store = await make_tree(storage)
    device = await enrol(storage, store.id)
    job = await storage.create_job(device.id, "script:clear-spooler", "usr_alice", now=NOW)
    assert job.status is JobStatus.PENDING
    running = await storage.start_job(job.id, now=NOW + 1)
    assert (running.status, running.started_at) == (JobStatus.RUNNING, NOW + 1)
    with pytest.raises(Conflict):
        await storage.start_job(job.id, now=NOW + 2)
    done = await storage.finish_job(job.id, JobStatus.SUCCEEDED, now=NOW + 3)
    assert (done.status, done.finished_at, done.error) == (JobStatus.SUCCEEDED, NOW + 3, None)
    with pytest.raises(Conflict):
        await storage.finish_job(job.id, JobStatus.FAILED, now=NOW + 4)
    with pytest.raises(ValueError):
        await storage.finish_job(job.id, JobStatus.RUNNING, now=NOW + 4)
    with pytest.raises(NotFound):
        await storage.get_job("job_missing")
    with pytest.raises(NotFound):
        await storage.start_job("job_missing", now=NOW)
    with pytest.raises(NotFound):
        await storage.create_job("dev_missing", "x", "usr_alice", now=NOW)


async def test_restart_marks_unfinished_jobs_failed(storage):
    _, _, store = await make_tree(storage)
    device = await enrol(storage, store.id)
    running = await storage.create_job(device.id, "diag", "usr_a", now=NOW)
    await storage.start_job(running.id, now=NOW)
    pending = await storage.create_job(device.id, "diag", "usr_a", now=NOW)
    done = await storage.create_job(device.id, "diag", "usr_a", now=NOW)
    await storage.finish_job(done.id, JobStatus.TIMED_OUT, now=NOW + 1, error="timeout")

    assert await storage.mark_running_jobs_failed("relay restarted", now=NOW + 60) == 2
    for job_id in (running.id, pending.id):
        job = await storage.get_job(job_id)
        assert (job.status, job.error, job.finished_at) == (
            JobStatus.FAILED,
            "relay restarted",
            NOW + 60,
        )
    assert (await storage.get_job(done.id)).status is JobStatus.TIMED_OUT
    assert await storage.mark_running_jobs_failed("again", now=NOW + 61) == 0


async def test_restart_marks_unfinished_script_jobs_unknown_audited(storage):
    from posassist.relay.audit import verify_store

    _, _, store = await make_tree(storage)
    device = await enrol(storage, store.id)
    script = await storage.create_job(device.id, "script.run", "usr_a", now=NOW)
    await storage.start_job(script.id, now=NOW)
    restore = await storage.create_job(device.id, "script.restore", "usr_a", now=NOW + 1)
    diag = await storage.create_job(device.id, "diag.request", "usr_a", now=NOW)
    done = await storage.create_job(device.id, "script.run", "usr_a", now=NOW)
    await storage.finish_job(done.id, JobStatus.SUCCEEDED, now=NOW + 1)

    kinds = {"script.run", "script.restore"}
    marked = await storage.mark_unfinished_jobs_unknown(kinds, "relay_restarted", now=NOW + 60)
    assert [job.id for job in marked] == [script.id, restore.id]
    for job in marked:
        assert (job.status, job.error, job.finished_at) == (
            JobStatus.UNKNOWN,
            "relay_restarted",
            NOW + 60,
        )
    assert (await storage.get_job(diag.id)).status is JobStatus.PENDING  # not a script
    assert (await storage.get_job(done.id)).status is JobStatus.SUCCEEDED
    records = [r async for r in storage.records()]
    ends = [(r.action, str(r.outcome), r.detail["job"], r.actor) for r in records[-2:]]
    assert ends == [
        ("script.run.finished", "unknown", script.id, "user:usr_a"),
        ("script.restore.finished", "unknown", restore.id, "user:usr_a"),
    ]
    assert await storage.mark_unfinished_jobs_unknown(kinds, "again", now=NOW + 61) == []
    assert (await verify_store(storage)).ok


async def test_an_unknown_job_is_reconciled_once_to_a_real_outcome(storage):
    from posassist.relay.audit import AuditEntry, Outcome, verify_store

    _, _, store = await make_tree(storage)
    device = await enrol(storage, store.id)
    other = await enrol(storage, store.id, key=b"o" * 32)
    lost = [await storage.create_job(device.id, "script.run", "li", now=NOW + i) for i in range(3)]
    for job in lost:
        await storage.finish_job(job.id, JobStatus.UNKNOWN, now=NOW + 5, error="outcome unknown")
    done = await storage.create_job(device.id, "script.run", "li", now=NOW + 9)
    await storage.finish_job(done.id, JobStatus.FAILED, now=NOW + 10)
    elsewhere = await storage.create_job(other.id, "script.run", "li", now=NOW)
    await storage.finish_job(elsewhere.id, JobStatus.UNKNOWN, now=NOW + 1)

    # newest first, bounded, this device only, unknown only
    assert [j.id for j in await storage.unknown_jobs(device.id, limit=2)] == [
        lost[2].id,
        lost[1].id,
    ]
    assert len(await storage.unknown_jobs(device.id, limit=10)) == 3

    entry = AuditEntry("device:d", "script.run.reconciled", "device:d", Outcome.OK, {"x": 1})
    job = await storage.reconcile_job(lost[0].id, JobStatus.SUCCEEDED, now=NOW + 20, audit=entry)
    assert (job.status, job.finished_at, job.error) == (JobStatus.SUCCEEDED, NOW + 20, None)
    before = (await storage.head()).seq
    with pytest.raises(Conflict):  # only once, and the second record is not written
        await storage.reconcile_job(lost[0].id, JobStatus.FAILED, now=NOW + 21, audit=entry)
    with pytest.raises(Conflict):  # a job that was never lost keeps its outcome
        await storage.reconcile_job(done.id, JobStatus.SUCCEEDED, now=NOW + 21, audit=entry)
    assert (await storage.head()).seq == before
    for status in (JobStatus.UNKNOWN, JobStatus.RUNNING):
        with pytest.raises(ValueError):
            await storage.reconcile_job(lost[1].id, status, now=NOW + 21)
    with pytest.raises(NotFound):
        await storage.reconcile_job("job_missing", JobStatus.FAILED, now=NOW)
    assert [j.id for j in await storage.unknown_jobs(device.id, limit=10)] == [
        lost[2].id,
        lost[1].id,
    ]
    # a restart does not touch them: they ended, only how is unknown
    assert await storage.mark_running_jobs_failed("relay restarted", now=NOW + 30) == 0
    assert (await verify_store(storage)).ok


async def test_job_and_its_audit_record_commit_together(storage):
    from posassist.relay.audit import AuditEntry, Outcome, verify_store

    _, _, store = await make_tree(storage)
    device = await enrol(storage, store.id)
    entry = AuditEntry("user:li", "diag.request", f"device:{device.id}", Outcome.OK, {"x": 1})
    job = await storage.create_job(device.id, "diag.request", "li", now=NOW, audit=entry)
    done = AuditEntry("user:li", "diag.request.finished", f"device:{device.id}", Outcome.OK)
    await storage.finish_job(job.id, JobStatus.SUCCEEDED, now=NOW + 1, audit=done)
    records = [r async for r in storage.records()]
    assert [(r.action, r.detail) for r in records[-2:]] == [
        ("diag.request", {"job": job.id, "x": 1}),
        ("diag.request.finished", {}),
    ]
    assert (await verify_store(storage)).ok
    # a job that can't be created (unknown device) leaves no audit record behind
    before = (await storage.head()).seq
    with pytest.raises(NotFound):
        await storage.create_job("dev_missing", "diag.request", "li", now=NOW, audit=entry)
    assert (await storage.head()).seq == before
    # finishing twice is refused, and the second audit record is not written either
    with pytest.raises(Conflict):
        await storage.finish_job(job.id, JobStatus.FAILED, now=NOW + 2, audit=done)
    assert (await storage.head()).seq == before


async def test_presence_is_written_in_batches(storage):
    _, _, store = await make_tree(storage)
    first = await enrol(storage, store.id)
    await storage.record_presences({})  # nothing to write is fine
    facts = {"hostname": "TILL-01", "printers": ({"name": "收银", "model": None},), "bits": 64}
    await storage.record_presences(
        {
            first.id: (NOW + 5, "posassist-agent/1", facts),
            "dev_gone": (NOW + 5, None, {"hostname": "x"}),
        }
    )
    device = await storage.get_device(first.id)
    assert (device.last_seen, device.agent_version) == (NOW + 5, "posassist-agent/1")
    # stored as JSON: arrays come back as lists
    assert device.facts == {
        "hostname": "TILL-01",
        "printers": [{"name": "收银", "model": None}],
        "bits": 64,
    }
    await storage.record_presences({first.id: (NOW + 9, None, None)})  # kept when unknown
    device = await storage.get_device(first.id)
    assert (device.last_seen, device.agent_version) == (NOW + 9, "posassist-agent/1")
    assert device.facts["hostname"] == "TILL-01"
    await storage.record_presences({first.id: (NOW + 10, None, {"hostname": "TILL-02"})})
    assert (await storage.get_device(first.id)).facts == {"hostname": "TILL-02"}  # replaced


async def test_unknown_jobs_asked_before_and_after_a_job_becomes_unknown(storage):
    """The sign-in lookup skips the database for devices with no unknown job; one that gets one
    later, through any path, is found at once (relay/storage/sql.py keeps that set)."""
    _, _, store = await make_tree(storage)
    device = await enrol(storage, store.id)
    other = await enrol(storage, store.id, key=b"u" * 32)
    assert await storage.unknown_jobs(device.id, limit=10) == []  # the set is loaded here
    lost = await storage.create_job(device.id, "script.run", "li", now=NOW)
    await storage.finish_job(lost.id, JobStatus.UNKNOWN, now=NOW + 1)
    assert [job.id for job in await storage.unknown_jobs(device.id, limit=10)] == [lost.id]
    marked = await storage.create_job(other.id, "script.run", "li", now=NOW)
    await storage.mark_unfinished_jobs_unknown({"script.run"}, "relay_restarted", now=NOW + 2)
    assert [job.id for job in await storage.unknown_jobs(other.id, limit=10)] == [marked.id]
    await storage.reconcile_job(lost.id, JobStatus.SUCCEEDED, now=NOW + 3)
    assert await storage.unknown_jobs(device.id, limit=10) == []


async def test_a_device_is_handed_over_once_and_keeps_the_first_time(storage):
    _, _, store = await make_tree(storage)
    device = await enrol(storage, store.id)
    assert (device.status, device.handed_over_at) == (DeviceStatus.ACTIVE, None)
    moved = await storage.hand_over_device(device.id, now=NOW + 5)
    assert (moved.status, moved.handed_over_at) == (DeviceStatus.HANDED_OVER, NOW + 5)
    again = await storage.hand_over_device(device.id, now=NOW + 9)
    assert again.handed_over_at == NOW + 5
    assert (await storage.get_device(device.id)).status is DeviceStatus.HANDED_OVER
    # revoking it later changes nothing: it is refused already, and keeps why
    assert (await storage.revoke_device(device.id, now=NOW + 10)).status is DeviceStatus.HANDED_OVER
    with pytest.raises(NotFound):
        await storage.hand_over_device("dev_nobody", now=NOW)


async def test_a_revoked_device_is_never_handed_over(storage):
    _, _, store = await make_tree(storage)
    device = await enrol(storage, store.id)
    await storage.revoke_device(device.id, now=NOW + 1)
    kept = await storage.hand_over_device(device.id, now=NOW + 2)
    assert (kept.status, kept.handed_over_at) == (DeviceStatus.REVOKED, None)


async def test_0009_keeps_devices_and_downgrades_a_handed_over_one_to_revoked(open_more):
    """Handed over (0009): devices enrolled before keep everything and stay active; the
    downgrade turns a handed-over device into a revoked one (still refused), same time."""
    from alembic import command

    from posassist.relay.storage.sql import _alembic_config

    storage = await open_more()
    await storage.run_write(lambda conn: command.upgrade(_alembic_config(conn), "0008"))
    _, _, store = await make_tree(storage)
    kept = await enrol(storage, store.id)
    moved = await enrol(storage, store.id, key=bytes(range(1, 33)))
    with pytest.raises(Conflict):  # 0008 has no such status
        await storage.run_write(
            lambda conn: conn.execute(
                sa.text("UPDATE devices SET status = 'handed_over' WHERE id = :id"),
                {"id": moved.id},
            )
        )
    await storage.migrate()
    assert (await storage.get_device(kept.id)).status is DeviceStatus.ACTIVE
    await storage.hand_over_device(moved.id, now=NOW + 7)
    await storage.run_schema_write(lambda conn: command.downgrade(_alembic_config(conn), "0008"))
    rows = "SELECT id, status, revoked_at FROM devices ORDER BY enrolled_at, id"
    read = await storage.run_read(
        lambda conn: {r[0]: tuple(r[1:]) for r in conn.execute(sa.text(rows))}
    )
    assert read == {kept.id: ("active", None), moved.id: ("revoked", NOW + 7)}
    assert await storage.current_revision() == "0008"


async def test_0010_keeps_devices_and_its_downgrade_refuses_to_drop_a_deleted_one(open_more):
    """Deleted devices (0010): devices enrolled before keep their store and status; a deleted
    one has no store, which 0009 can't hold: the downgrade is refused and changes nothing."""
    from alembic import command

    from posassist.relay.storage.admin import AdminStore
    from posassist.relay.storage.sql import _alembic_config

    storage = await open_more()
    await storage.run_write(lambda conn: command.upgrade(_alembic_config(conn), "0009"))
    _, _, store = await make_tree(storage)
    kept = await enrol(storage, store.id)
    gone = await enrol(storage, store.id, key=bytes(range(1, 33)))
    await storage.migrate()
    assert (await storage.get_device(kept.id)).store_id == store.id
    await storage.revoke_device(gone.id, now=NOW + 1)
    await AdminStore(storage).delete_device(gone.id, now=NOW + 2)
    with pytest.raises(NotFound):
        await storage.get_device(gone.id)
    with pytest.raises(Exception, match="deleted devices have no store"):
        await storage.run_schema_write(
            lambda conn: command.downgrade(_alembic_config(conn), "0009")
        )
    assert await storage.current_revision() == "0010"
    rows = "SELECT id, status, store_id FROM devices ORDER BY enrolled_at, id"
    read = await storage.run_read(
        lambda conn: {r[0]: tuple(r[1:]) for r in conn.execute(sa.text(rows))}
    )
    assert read == {kept.id: ("active", store.id), gone.id: ("deleted", None)}
