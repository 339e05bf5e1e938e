"""Admin API routes that read or change storage, over a real relay on SQLite AND PostgreSQL:
``POST /v1/audit/verify`` (the web page's verifier over the API) and device deletion (a store
that ever had a till can be emptied and deleted, its jobs and audit chain kept)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from websockets.asyncio.client import connect

from posassist.protocol import messages as m
from tests.relay.conftest import PG_URL, _pg_admin
from tests.relay.harness import agent_handshake, start_relay
from tests.relay.test_admin_api import add_other_tenant, audit, call

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests.relay.harness import Relay


@pytest.fixture(params=["sqlite", "postgresql"])
async def relay(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Relay]:
    schema = None
    overrides: dict[str, object] = {}
    if request.param == "postgresql":
        schema = f"t_{secrets.token_hex(6)}"
        admin = await _pg_admin()
        try:
            await admin.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await admin.close()
        overrides.update(database_url=PG_URL, database_schema=schema)
    relay = await start_relay(tmp_path, **overrides)
    try:
        await add_other_tenant(relay)
        yield relay
    finally:
        await relay.server.close()
        if schema is not None:
            admin = await _pg_admin()
            try:
                await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            finally:
                await admin.close()


async def tamper(relay: Relay, statement: str) -> None:
    """Edit the database behind the relay's back, as someone with the database could."""

    def tx(conn: sa.Connection) -> None:
        conn.execute(sa.text(statement))

    await relay.state.storage.run_write(tx)


# --- POST /v1/audit/verify -----------------------------------------------------------------------


async def test_audit_verify_over_the_api_says_an_intact_chain_is_intact(relay: Relay) -> None:
    status, body = await call(relay, "POST", "/v1/audit/verify", "admin", {})
    assert status == 200, body
    assert body["ok"] is True
    assert body["records"] >= 1
    assert body["last_seq"] == body["records"]
    assert "first_bad" not in body
    (record,) = [r for r in await audit(relay) if r[1] == "audit.verify"]
    assert record[:4] == ("user:admin", "audit.verify", "ok", "audit")
    assert record[4]["via"] == "api"


async def test_audit_verify_over_the_api_names_the_first_tampered_record(relay: Relay) -> None:
    await tamper(relay, "UPDATE audit SET actor = 'mallory' WHERE seq = 3")
    status, body = await call(relay, "POST", "/v1/audit/verify", "admin", {})
    assert status == 200, body
    assert body["ok"] is False
    assert body["first_bad"] == 3
    assert body["records"] == 2
    assert body["reason"] == "hash does not match the record's contents"
    records = [r for r in await audit(relay) if r[1] == "audit.verify"]
    assert [r[2] for r in records] == ["failed"]
    assert records[0][4]["first_bad"] == 3


@pytest.mark.parametrize(
    ("user", "status"),
    [("tech", 403), ("viewer", 403), ("org.admin", 404), ("other.admin", 404)],
)
async def test_audit_verify_is_refused_to_all_but_an_admin_at_the_root_and_audited(
    relay: Relay, user: str, status: int
) -> None:
    before = await audit(relay)
    answer, body = await call(relay, "POST", "/v1/audit/verify", user, {})
    assert answer == status, body
    assert "ok" not in body  # no verdict, not even "intact"
    new = (await audit(relay))[len(before) :]
    assert [r[:4] for r in new] == [(f"user:{user}", "audit.verify", "refused", "audit")]


# --- DELETE /v1/devices/{id} ---------------------------------------------------------------------


async def _jobs_of(relay: Relay, device_id: str) -> list[tuple[str, str]]:
    query = sa.text("SELECT id, status FROM jobs WHERE device_id = :d ORDER BY id")
    return await relay.state.storage.run_read(
        lambda conn: [tuple(r) for r in conn.execute(query, {"d": device_id})]
    )


async def test_an_active_device_is_not_deleted_revoke_first(relay: Relay) -> None:
    device_id, _ = await relay.enrol()
    before = await audit(relay)
    status, body = await call(relay, "DELETE", f"/v1/devices/{device_id}", "admin")
    assert (status, body["error"]) == (409, "DeviceActive")
    assert "revoke" in body["message"]
    assert "注销" in body["message_zh"]
    device = await relay.state.storage.get_device(device_id)  # untouched, still in its store
    assert (device.status.value, device.store_id) == ("active", relay.store)
    new = (await audit(relay))[len(before) :]
    assert [r[:4] for r in new] == [
        ("user:admin", "device.delete", "refused", f"device:{device_id}")
    ]
    assert new[0][4] == {"reason": "active"}


async def test_a_revoked_device_is_deleted_its_jobs_kept_then_its_store_can_go(
    relay: Relay,
) -> None:
    from posassist.relay.audit import AuditEntry, Outcome

    storage = relay.state.storage
    store = relay.other_store  # Harbour: no users scoped to it
    device_id, key = await relay.enrol(await relay.invite(store))
    job = await storage.create_job(
        device_id,
        "diag",
        "tech",
        now=relay.clock(),
        audit=AuditEntry("user:tech", "diag.request", f"device:{device_id}", Outcome.OK),
    )
    status, body = await call(relay, "DELETE", f"/v1/stores/{store}", "admin")
    assert (status, body["error"]) == (409, "NotEmpty")  # the till is still in it
    status, _ = await call(relay, "POST", f"/v1/devices/{device_id}/revoke", "org.admin", {})
    assert status == 200
    status, _ = await call(relay, "GET", f"/v1/jobs?device_id={device_id}", "org.admin")
    assert status == 200  # in scope: its place in the tree is now cached
    status, body = await call(relay, "DELETE", f"/v1/devices/{device_id}", "org.admin")
    assert (status, body) == (200, {"id": device_id, "deleted": True, "jobs_kept": 1})
    status, _ = await call(relay, "GET", f"/v1/jobs?device_id={device_id}", "org.admin")
    assert status == 404  # it left the tree: the cached place went with it
    # gone from every list and lookup; a second delete is 404 like an unknown id
    status, listed = await call(relay, "GET", "/v1/devices", "admin")
    assert device_id not in [d["id"] for d in listed["devices"]]
    status, body = await call(relay, "DELETE", f"/v1/devices/{device_id}", "org.admin")
    assert status == 404
    # its job is kept, and its history in the audit log
    assert await _jobs_of(relay, device_id) == [(job.id, "pending")]
    deleted = [r for r in await audit(relay) if r[1] == "device.delete" and r[2] == "ok"]
    assert deleted[0][4] == {"store": store, "was": "revoked", "jobs_kept": 1}
    # its key is refused like an unknown device's
    async with connect(relay.ws + "/v1/agent") as ws:
        _, refused = await agent_handshake(ws, device_id, key)
    assert isinstance(refused, m.AuthRefused)
    # the store that had the till can now be deleted, and the chain still verifies
    status, body = await call(relay, "DELETE", f"/v1/stores/{store}", "org.admin")
    assert (status, body) == (200, {"id": store, "deleted": True})
    status, body = await call(relay, "POST", "/v1/audit/verify", "admin", {})
    assert (status, body["ok"]) == (200, True), body


@pytest.mark.parametrize(("user", "status"), [("other.admin", 404), ("tech", 403)])
async def test_deleting_another_tenants_device_or_as_a_technician_is_refused_and_audited(
    relay: Relay, user: str, status: int
) -> None:
    device_id, _ = await relay.enrol()
    await relay.state.storage.revoke_device(device_id, now=relay.clock())
    before = await audit(relay)
    answer, body = await call(relay, "DELETE", f"/v1/devices/{device_id}", user)
    assert answer == status, body
    if status == 404:  # the same answer as an id that does not exist
        _, unknown = await call(relay, "DELETE", "/v1/devices/dev_nosuch", user)
        assert body["error"] == unknown["error"]
    device = await relay.state.storage.get_device(device_id)  # nothing changed
    assert (device.status.value, device.store_id) == ("revoked", relay.store)
    new = (await audit(relay))[len(before) :]
    assert new[0][:4] == (f"user:{user}", "device.delete", "refused", f"device:{device_id}")


async def test_a_device_a_user_is_scoped_to_is_not_deleted(relay: Relay) -> None:
    from posassist.relay.storage import Role, Scope, ScopeKind

    device_id, _ = await relay.enrol()
    await relay.state.storage.revoke_device(device_id, now=relay.clock())
    await relay.state.storage.create_user(
        "till.viewer", "x", Role.VIEWER, Scope(ScopeKind.DEVICE, device_id), now=relay.clock()
    )
    status, body = await call(relay, "DELETE", f"/v1/devices/{device_id}", "admin")
    assert (status, body["error"]) == (409, "NotEmpty")
    device = await relay.state.storage.get_device(device_id)
    assert (device.status.value, device.store_id) == ("revoked", relay.store)
    refused = [r for r in await audit(relay) if r[1] == "device.delete"]
    assert refused[-1][2:] == (
        "refused",
        f"device:{device_id}",
        {"reason": "not empty", "users": 1},
    )
