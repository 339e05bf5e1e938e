"""Fixtures shared by the end-to-end tests: a fresh PostgreSQL database per test."""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import asyncpg
import pytest

from tests.relay.conftest import PG_URL

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


async def _pg_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {PG_URL} is required and unreachable: {exc}")


#: Drops the tests' databases one after another, beside the tests that follow: a DROP DATABASE
#: waits for a checkpoint of the whole server, which on a server busy with other tests' writes
#: took 6-30 s of each test's teardown.
_DROPPER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-drop")


def _drop(name: str) -> None:
    async def drop() -> None:
        admin = await _pg_admin()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(drop())


@pytest.fixture(scope="session")
def _databases_dropped() -> Iterator[list[Future[None]]]:
    """The drops under way; all are done (or the session fails) before the session ends."""
    drops: list[Future[None]] = []
    yield drops
    for done in drops:
        done.result(timeout=300)


@pytest.fixture
async def pg_database(_databases_dropped: list[Future[None]]) -> AsyncIterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test (by the time the
    session ends: the drop runs beside the next tests)."""
    name = f"posassist_e2e_{secrets.token_hex(4)}"
    admin = await _pg_admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.close()
        _databases_dropped.append(_DROPPER.submit(_drop, name))


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str:
    """'' for SQLite in the data directory, or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return ""
    return str(request.getfixturevalue("pg_database"))
