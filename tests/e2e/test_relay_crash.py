"""The relay killed with SIGKILL mid-request and restarted, on SQLite and on PostgreSQL.

Afterwards the database is intact, the audit chain verifies, and the job in flight is marked
failed (not lost, not left "pending" forever). Also: a tampered audit chain fails verification.
"""

from __future__ import annotations

import signal
import sqlite3
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from posassist.relay.storage import Job, JobStatus, SqlStorage, open_storage, schema
from tests.e2e.cli import (
    admin_token,
    diag_in_flight,
    enrol_over_http,
    invite,
    ok,
    provision,
    py,
    start_relay,
    stop,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.mark.slow
async def test_relay_killed_mid_request_restarts_intact_and_fails_the_job(
    tmp_path: Path, database: str
) -> None:
    data = tmp_path / "relay"
    store = provision(data, database)
    extra = ("--database", database) if database else ()
    proc, url = start_relay(data, *extra)
    try:
        # enrol a device whose agent will accept a request and never answer
        device_id, key = await enrol_over_http(url, invite(data, store, url, database))
        async with diag_in_flight(url, device_id, key, await admin_token(url)):
            proc.send_signal(signal.SIGKILL)  # mid-request: the job is pending in the database
            assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        stop(proc)

    if not database:
        with sqlite3.connect(data / "relay.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    proc, url = start_relay(data, *extra)
    try:
        where = ("--database", database) if database else ("--data", str(data))
        verify = py("relay", "audit", "verify", *where)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "intact" in verify.stdout
        storage = open_storage(database or f"sqlite:///{data / 'relay.db'}")
        try:
            jobs = [j async for j in _all_jobs(storage)]
            assert [(j.status, j.error) for j in jobs] == [(JobStatus.FAILED, "relay restarted")]
            actions = [r.action async for r in storage.records()]
            assert "diag.request" in actions
            assert actions[-1] == "jobs.recover"
        finally:
            await storage.close()
    finally:
        stop(proc)


async def _all_jobs(storage: SqlStorage) -> AsyncIterator[Job]:
    query = sa.select(schema.jobs.c.id)
    ids = await storage.run_read(lambda conn: conn.execute(query).scalars().all())
    for job_id in ids:
        yield await storage.get_job(job_id)


def test_audit_verify_names_the_first_tampered_record(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    provision(data)
    assert "intact" in ok(py("relay", "audit", "verify", "--data", str(data)))
    with sqlite3.connect(data / "relay.db") as db:
        db.execute("UPDATE audit SET action = 'nothing.to.see' WHERE seq = 2")
    broken = py("relay", "audit", "verify", "--data", str(data))
    assert broken.returncode == 1
    assert "broken at seq 2" in broken.stdout


def test_audit_verify_notices_a_deleted_record(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    provision(data)
    with sqlite3.connect(data / "relay.db") as db:
        db.execute("DELETE FROM audit WHERE seq = 3")
    broken = py("relay", "audit", "verify", "--data", str(data))
    assert broken.returncode == 1
    assert "broken at seq" in broken.stdout


async def test_relay_killed_mid_script_leaves_it_unknown_until_the_agent_reports(
    tmp_path: Path,
) -> None:
    # docs/protocol.md#request-lifetime-relay: a script in flight when the relay died may have
    # run; after the restart its job is unknown (audited), and the agent's own report, asked for
    # when it reconnects, ends it with what really happened.
    from websockets.asyncio.client import connect

    from posassist.protocol import messages as m
    from tests.relay.harness import agent_handshake, console_handshake, recv, send

    data = tmp_path / "relay"
    store = provision(data)
    proc, url = start_relay(data)
    try:
        device_id, key = await enrol_over_http(url, invite(data, store, url))
        token = await admin_token(url)
        async with connect(url + "/v1/agent") as agent_ws, connect(url + "/v1/console") as c_ws:
            agent, _ = await agent_handshake(agent_ws, device_id, key)
            console, _ = await console_handshake(c_ws, token)
            console.send(m.ScriptRunRequest(id=1, device_id=device_id, script="s", version="1"))
            await send(c_ws, console)
            (request,) = await recv(agent_ws, agent)
            assert isinstance(request, m.ScriptRunRequest)
            job_id = request.job_id
            assert job_id is not None
            proc.send_signal(signal.SIGKILL)  # the script is running on the till
            assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        stop(proc)

    proc, url = start_relay(data)
    try:
        storage = open_storage(f"sqlite:///{data / 'relay.db'}")
        try:
            job = await storage.get_job(job_id)
            assert job.status is JobStatus.UNKNOWN
            assert (job.error or "").startswith("relay_restarted")
        finally:
            await storage.close()
        async with connect(url + "/v1/agent") as agent_ws:
            agent, _ = await agent_handshake(agent_ws, device_id, key)
            (query,) = await recv(agent_ws, agent)
            assert isinstance(query, m.JobQuery)
            assert query.job_ids == (job_id,)
            result = {
                "job_id": job_id,
                "status": "succeeded",
                "exit_code": 0,
                "finished_at": 5.0,
                "backup_id": None,
                "detail": "",
            }
            agent.send(m.JobResults(id=query.id, results=(result,)))
            agent.send(m.Heartbeat(seq=1, sent_at=1.0))
            await send(agent_ws, agent)
            # frames are handled in order: the ack comes once the job is reconciled
            (ack,) = await recv(agent_ws, agent)
            assert isinstance(ack, m.HeartbeatAck)
    finally:
        stop(proc)
    verify = py("relay", "audit", "verify", "--data", str(data))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    storage = open_storage(f"sqlite:///{data / 'relay.db'}")
    try:
        job = await storage.get_job(job_id)
        assert (job.status, job.error) == (JobStatus.SUCCEEDED, None)
        ends = [
            (r.action, str(r.outcome))
            async for r in storage.records()
            if r.detail.get("job") == job_id
        ]
        assert ends == [
            ("script.run", "ok"),
            ("script.run.finished", "unknown"),
            ("script.run.reconciled", "ok"),
        ]
    finally:
        await storage.close()
