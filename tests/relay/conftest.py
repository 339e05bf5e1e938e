"""Storage fixtures: a freshly migrated database on SQLite (tmp_path) and on PostgreSQL.

PostgreSQL tests fail, never skip, when the server is unreachable. Each test gets its own schema
(dropped afterwards), so concurrent runs don't see each other's rows.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import asyncpg
import pytest

from posassist.relay.storage import SqlStorage, open_storage

if TYPE_CHECKING:
    from pathlib import Path

PG_URL = os.environ.get("POSASSIST_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

BACKENDS = ["sqlite", "postgresql"]

#: Opens another SqlStorage (its own engine and connections) on the test's database.
OpenStorage = Callable[[], Awaitable[SqlStorage]]


async def _pg_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {PG_URL} is required for these tests and unreachable: {exc}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def open_more(backend: str, tmp_path: Path) -> AsyncIterator[OpenStorage]:
    """A factory for storages on one fresh, empty database (not migrated)."""
    opened: list[SqlStorage] = []
    schema: str | None = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'relay.db'}"
    else:
        url = PG_URL
        schema = f"t_{secrets.token_hex(6)}"
        admin = await _pg_admin()
        try:
            await admin.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await admin.close()

    async def open_one() -> SqlStorage:
        storage = open_storage(url, schema=schema)
        opened.append(storage)
        return storage

    try:
        yield open_one
    finally:
        for storage in opened:
            await storage.close()
        if schema is not None:
            admin = await _pg_admin()
            try:
                await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            finally:
                await admin.close()


@pytest.fixture
async def storage(open_more: OpenStorage) -> SqlStorage:
    """A migrated, empty storage on the backend under test."""
    storage = await open_more()
    await storage.migrate()
    return storage
