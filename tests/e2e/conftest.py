"""Fixtures shared by the end-to-end tests: a fresh PostgreSQL database per test."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import asyncpg
import pytest

from tests.relay.conftest import PG_URL

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def _pg_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {PG_URL} is required and unreachable: {exc}")


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped afterwards."""
    name = f"posassist_e2e_{secrets.token_hex(4)}"
    admin = await _pg_admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str:
    """'' for SQLite in the data directory, or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return ""
    return str(request.getfixturevalue("pg_database"))
