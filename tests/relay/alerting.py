"""What the alert tests share: a real relay on SQLite and on PostgreSQL (``relay`` fixture),
and an agent's alert events."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import pytest

from posassist.protocol import messages as m
from tests.relay.conftest import PG_URL, _pg_admin
from tests.relay.harness import Agent, Relay, start_relay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture(params=["sqlite", "postgresql"])
async def relay(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Relay]:
    schema = None
    # the tests' receivers listen on 127.0.0.1
    overrides: dict[str, object] = {"webhook_allow_private": True}
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
        yield relay
    finally:
        await relay.server.close()
        if schema is not None:
            admin = await _pg_admin()
            try:
                await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            finally:
                await admin.close()


def raised(
    request_id: int,
    key: str,
    *,
    check: str = "printer",
    state: str = "firing",
    severity: str = "critical",
    observed_at: float = 1_700_000_000.0,
    device_id: str = "dev_x",
    summary: str = "paper out / 缺纸",
) -> m.AlertRaised:
    return m.AlertRaised(
        id=request_id,
        device_id=device_id,
        alert_key=key,
        check_name=check,
        severity=severity,
        state=state,
        summary=summary,
        observed_at=observed_at,
        details={"finding": "printer.paper_out"},
    )


async def send_event(agent: Agent, event: m.AlertRaised) -> m.Message:
    """Send one event; the relay's answer to it (a ``policy.updated`` on the way is skipped)."""
    await agent.reply(event)
    while True:
        for answer in await agent.next():
            if not isinstance(answer, m.PolicyUpdated):
                return answer
