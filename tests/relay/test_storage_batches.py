"""Many jobs and their audit records in one transaction (``create_jobs`` / ``finish_jobs``, used
by a store-wide request), on SQLite and PostgreSQL: the chain stays verifiable and ordered."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import TYPE_CHECKING

import pytest

from posassist.relay.audit import AuditEntry, Outcome, verify_store
from posassist.relay.errors import NotFound
from posassist.relay.storage import JobStatus, Scope, ScopeKind, SqlStorage, open_storage
from posassist.relay.storage.engine import SqliteDatabase
from tests.relay.test_audit import append_n, tamper
from tests.relay.test_storage import NOW, enrol, make_tree

if TYPE_CHECKING:
    from pathlib import Path


def _asked(device: str, i: int) -> tuple[str, AuditEntry]:
    return device, AuditEntry("user:tech", "diag.request", f"device:{device}", Outcome.OK, {"i": i})


def _ended(job_id: str, device: str) -> AuditEntry:
    return AuditEntry(
        "user:tech", "diag.request.finished", f"device:{device}", Outcome.OK, {"job": job_id}
    )


async def _devices(storage: SqlStorage, n: int) -> list[str]:
    _, _, store = await make_tree(storage)
    return [(await enrol(storage, store.id, bytes([i]) * 32)).id for i in range(n)]


async def test_jobs_and_their_records_are_written_together_in_order(storage: SqlStorage) -> None:
    devices = await _devices(storage, 3)
    await append_n(storage, 2)  # records before: the batch chains on from them
    jobs = await storage.create_jobs(
        [_asked(d, i) for i, d in enumerate(devices)], "diag.request", "tech", now=NOW
    )
    assert [j.device_id for j in jobs] == devices
    assert len({j.id for j in jobs}) == 3
    for job in jobs:
        stored = await storage.get_job(job.id)
        assert (stored.status, stored.kind, stored.requested_by) == (
            JobStatus.PENDING,
            "diag.request",
            "tech",
        )
    ended = await storage.finish_jobs(
        [
            (jobs[0].id, JobStatus.SUCCEEDED, None, _ended(jobs[0].id, devices[0])),
            (jobs[1].id, JobStatus.FAILED, "offline: gone", _ended(jobs[1].id, devices[1])),
        ],
        now=NOW + 1,
        ended_at=[NOW + 0.25, NOW + 0.5],
    )
    assert ended == 2
    succeeded = await storage.get_job(jobs[0].id)
    assert (succeeded.status, succeeded.finished_at) == (JobStatus.SUCCEEDED, NOW + 0.25)
    failed = await storage.get_job(jobs[1].id)
    assert (failed.status, failed.error, failed.finished_at) == (
        JobStatus.FAILED,
        "offline: gone",
        NOW + 0.5,
    )
    assert (await storage.get_job(jobs[2].id)).status is JobStatus.PENDING
    records = [r async for r in storage.records()]
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6, 7]
    assert [(r.action, r.detail) for r in records[2:]] == [
        ("diag.request", {"job": jobs[0].id, "i": 0}),
        ("diag.request", {"job": jobs[1].id, "i": 1}),
        ("diag.request", {"job": jobs[2].id, "i": 2}),
        ("diag.request.finished", {"job": jobs[0].id}),
        ("diag.request.finished", {"job": jobs[1].id}),
    ]
    assert (await storage.head()).seq == 7
    result = await verify_store(storage)
    assert result.ok, result.describe()
    # and single appends chain on after a batch
    await append_n(storage, 1, start=9)
    assert (await verify_store(storage)).ok


async def test_a_job_already_ended_keeps_its_end_and_gets_no_second_record(
    storage: SqlStorage,
) -> None:
    (device,) = await _devices(storage, 1)
    (job,) = await storage.create_jobs([_asked(device, 0)], "diag.request", "tech", now=NOW)
    await storage.finish_job(job.id, JobStatus.FAILED, now=NOW + 1, error="timeout: late")
    before = [r async for r in storage.records()]
    ended = await storage.finish_jobs(
        [(job.id, JobStatus.SUCCEEDED, None, _ended(job.id, device))], now=NOW + 2
    )
    assert ended == 0
    stored = await storage.get_job(job.id)
    assert (stored.status, stored.error) == (JobStatus.FAILED, "timeout: late")
    assert [r async for r in storage.records()] == before


async def test_a_missing_device_writes_nothing_at_all(storage: SqlStorage) -> None:
    (device,) = await _devices(storage, 1)
    with pytest.raises(NotFound):
        await storage.create_jobs(
            [_asked(device, 0), _asked("dev_gone", 1)], "diag.request", "tech", now=NOW
        )
    assert [r async for r in storage.records()] == []
    assert (await storage.head()).seq == 0


async def test_unknown_and_unfinished_are_not_ends_it_takes(storage: SqlStorage) -> None:
    (device,) = await _devices(storage, 1)
    (job,) = await storage.create_jobs([_asked(device, 0)], "diag.request", "tech", now=NOW)
    for status in (JobStatus.UNKNOWN, JobStatus.RUNNING):
        with pytest.raises(ValueError, match="not an end"):
            await storage.finish_jobs([(job.id, status, None, _ended(job.id, device))], now=NOW + 1)
    bad = AuditEntry("u", "a", "t", Outcome.OK, {"x": float("nan")})
    with pytest.raises(ValueError):  # NaN is not JSON
        await storage.finish_jobs([(job.id, JobStatus.SUCCEEDED, None, bad)], now=NOW + 1)
    assert (await storage.get_job(job.id)).status is JobStatus.PENDING
    assert await storage.finish_jobs([], now=NOW) == 0
    with pytest.raises(ValueError, match="one ended_at"):
        await storage.finish_jobs(
            [(job.id, JobStatus.SUCCEEDED, None, _ended(job.id, device))], now=NOW, ended_at=[]
        )


async def test_a_stray_row_past_the_head_is_recorded_by_a_batch_as_by_one_append(
    storage: SqlStorage,
) -> None:
    devices = await _devices(storage, 2)
    await append_n(storage, 3)
    head = await storage.head()
    await tamper(
        storage,
        "INSERT INTO audit (seq, at, actor, action, target, outcome, detail, prev_hash, hash) "
        "VALUES (4, 1.0, 'mallory', 'x', 'y', 'ok', '{}', :h, :h)",
        h=b"\x05" * 32,
    )
    jobs = await storage.create_jobs(
        [_asked(d, i) for i, d in enumerate(devices)], "diag.request", "tech", now=NOW
    )
    records = [r async for r in storage.records()]
    first, second = records[-2:]
    assert first.seq == 5  # after the stray row, not on top of it
    assert first.prev_hash == head.hash
    assert first.detail == {"job": jobs[0].id, "i": 0, "stray_records": [4, 4]}
    assert second.seq == 6
    assert second.prev_hash == first.hash
    result = await verify_store(storage)
    assert (result.ok, result.first_bad_seq) == (False, 4)  # as after one append


async def test_sqlite_small_reads_run_on_the_loop_and_never_wait_for_a_writer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.db"
    storage = open_storage(f"sqlite:///{path}", busy_timeout=5)
    database = storage.database
    assert isinstance(database, SqliteDatabase)
    try:
        await storage.migrate()
        _, _, store = await make_tree(storage)
        device = await enrol(storage, store.id)
        before = database.inline_reads
        # an operator command holds the write lock with a change not yet committed
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("UPDATE devices SET agent_version = 'uncommitted'")
        try:
            found = await asyncio.wait_for(storage.get_device(device.id), 1)
            path_of = await asyncio.wait_for(storage.device_path(device.id), 1)
            listed = await storage.list_devices(Scope(ScopeKind.STORE, store.id))
            ancestors = await storage.scope_ancestors(Scope(ScopeKind.STORE, store.id))
        finally:
            raw.execute("ROLLBACK")
            raw.close()
        assert found.agent_version == "0.1"  # what was committed, not the writer's change
        assert path_of.store_id == store.id
        assert [d.id for d in listed] == [device.id]
        assert ancestors[-1] == Scope(ScopeKind.STORE, store.id)
        assert database.inline_reads == before + 4
        with pytest.raises(NotFound):
            await storage.get_device("dev_nothing")
        await storage.list_devices(Scope.root())  # a whole tenancy: on a reader thread
        assert database.inline_reads == before + 5
    finally:
        await storage.close()


async def test_prepared_statements_on_sqlite_read_what_sqlalchemy_reads(tmp_path: Path) -> None:
    # _Prepared goes straight to the sqlite3 cursor on SQLite (relay/storage/sql.py): the rows,
    # counts and errors must be the ones exec_driver_sql gives, or the request path would differ.
    import sqlalchemy as sa

    from posassist.relay.storage import sql

    storage = open_storage(f"sqlite:///{tmp_path / 'relay.db'}")
    try:
        await storage.migrate()
        devices = await _devices(storage, 2)
        jobs = await storage.create_jobs(
            [_asked(d, i) for i, d in enumerate(devices)], "diag.request", "tech", now=NOW
        )
        raw = storage._db._engine.connect()  # type: ignore[attr-defined]
        try:
            with raw.begin():
                head = sql._HEAD_FOR_UPDATE(raw, {})
                sql_text, _ = sql._HEAD_FOR_UPDATE._for(raw)
                reference = raw.exec_driver_sql(sql_text, ()).all()
                assert [tuple(r) for r in head.all()] == [tuple(r) for r in reference]
                assert (head.first().seq, head.first().hash) == (
                    reference[0].seq,
                    reference[0].hash,
                )
                assert head.one() == head.first()
                assert head.scalar() == reference[0][0]
                assert sql._PAST_HEAD(raw, {"b_seq": reference[0].seq}).scalar() is None
                finished = sql._FINISH_JOB(
                    raw,
                    {"b_id": jobs[0].id, "status": "succeeded", "finished_at": NOW, "error": None},
                ).first()
                assert (finished.id, finished.status, finished.device_id) == (
                    jobs[0].id,
                    "succeeded",
                    devices[0],
                )
                again = sql._FINISH_JOB(
                    raw,
                    {"b_id": jobs[0].id, "status": "failed", "finished_at": NOW, "error": "x"},
                )
                assert again.first() is None
                assert again.all() == []
                with pytest.raises(sa.exc.NoResultFound):
                    again.one()
                job_row = {
                    "id": jobs[1].id,  # taken: the driver's error comes as SQLAlchemy's
                    "device_id": devices[1],
                    "kind": "diag.request",
                    "status": "pending",
                    "requested_by": "tech",
                    "created_at": NOW,
                    "started_at": None,
                    "finished_at": None,
                    "error": None,
                }
                with pytest.raises(sa.exc.IntegrityError):
                    sql._INSERT_JOB(raw, job_row)
                with pytest.raises(sa.exc.IntegrityError):
                    sql._INSERT_JOB.many(raw, [job_row])
                assert raw.in_transaction()  # the caller's transaction, still open
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        finally:
            raw.close()
        # rolled back with the caller's transaction: the job is still pending
        assert (await storage.get_job(jobs[0].id)).status is JobStatus.PENDING
    finally:
        await storage.close()
