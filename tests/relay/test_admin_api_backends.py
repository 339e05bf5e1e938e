"""Admin API routes that read or change storage, over a real relay on SQLite AND PostgreSQL:
``POST /v1/audit/verify`` (the web page's verifier over the API) and device deletion (a store
that ever had a till can be emptied and deleted, its jobs and audit chain kept)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from tests.relay.conftest import PG_URL, _pg_admin
from tests.relay.harness import start_relay
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
