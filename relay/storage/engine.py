"""Database engines by URL, SQLite connection settings, and the one place driver errors are mapped.

``sqlite+aiosqlite:///path`` gets WAL, foreign keys, a busy timeout and explicit ``BEGIN``
(``BEGIN IMMEDIATE`` for writes); ``postgresql://`` and ``postgresql+asyncpg://`` use asyncpg.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from relay.errors import Conflict, StorageError, StorageUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["DEFAULT_BUSY_TIMEOUT", "create_engine", "map_db_errors", "normalise_url"]

#: Seconds a SQLite writer waits for the lock, and a PostgreSQL statement may run.
DEFAULT_BUSY_TIMEOUT = 10.0

# Execution option read by the SQLite "begin" hook: "IMMEDIATE" takes the write lock up front.
SQLITE_BEGIN = "posassist_sqlite_begin"


def normalise_url(url: str | sa.URL) -> sa.URL:
    """Parse ``url`` and pick the async driver: plain ``postgresql://`` → asyncpg, etc.

    Raises:
        ValueError: not a SQLite or PostgreSQL URL.
    """
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database URL scheme: {backend!r}")


def _configure_sqlite(engine: AsyncEngine, busy_timeout: float) -> None:
    @sa.event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (the sqlite3 module's legacy transaction handling
        # skips it before SELECT and DDL); see SQLAlchemy's "sqlite_enabling_transactions".
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed audit record survives power loss, not only a crashed process.
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def create_engine(
    url: str | sa.URL,
    *,
    schema: str | None = None,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    pool_size: int = 5,
) -> AsyncEngine:
    """An async engine for ``url``.

    Args:
        url: a SQLite or PostgreSQL URL (see :func:`normalise_url`).
        schema: PostgreSQL only: the schema to work in (set as ``search_path``).
        busy_timeout: SQLite lock wait / PostgreSQL lock wait, in seconds.
        pool_size: connections kept open.
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        if schema is not None:
            raise ValueError("schema is only supported on PostgreSQL")
        in_memory = parsed.database in (None, "", ":memory:")  # one shared connection
        engine = create_async_engine(parsed, **({} if in_memory else {"pool_size": pool_size}))
        _configure_sqlite(engine, busy_timeout)
        return engine
    settings = {"lock_timeout": str(int(busy_timeout * 1000))}
    if schema is not None:
        settings["search_path"] = schema
    return create_async_engine(
        parsed,
        pool_size=pool_size,
        pool_pre_ping=True,
        connect_args={"server_settings": settings, "timeout": busy_timeout},
    )


def _is_unavailable(exc: sqlalchemy.exc.DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    if isinstance(exc, sqlalchemy.exc.InterfaceError):
        return True
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError) or "sqlite" in type(orig).__module__:
        text = str(orig).lower()
        return "locked" in text or "busy" in text or "unable to open" in text
    # asyncpg SQLSTATE classes: 08 connection exception, 53 insufficient resources,
    # 57 operator intervention (shutdown, query cancelled), 55P03 lock not available.
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or ""
    return sqlstate[:2] in ("08", "53", "57") or sqlstate == "55P03"


@contextlib.contextmanager
def map_db_errors() -> Iterator[None]:
    """Turn driver and SQLAlchemy exceptions into :mod:`relay.errors` (cf. httpx's mapping).

    The original is chained as ``__cause__`` for our logs; nothing of it reaches a peer.
    """
    try:
        yield
    except StorageError:
        raise
    except sqlalchemy.exc.IntegrityError as exc:
        raise Conflict(str(exc.orig)) from exc
    except sqlalchemy.exc.DBAPIError as exc:
        if _is_unavailable(exc):
            raise StorageUnavailable(str(exc.orig)) from exc
        raise StorageError(str(exc.orig)) from exc
    except sqlalchemy.exc.TimeoutError as exc:  # pool checkout timed out
        raise StorageUnavailable("connection pool exhausted") from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(str(exc)) from exc
    except (OSError, TimeoutError) as exc:  # asyncpg connect: refused, unreachable, timed out
        raise StorageUnavailable(f"{type(exc).__name__}: {exc}") from exc
