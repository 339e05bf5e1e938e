"""Databases by URL, and the one place driver errors are mapped.

Every storage operation is one synchronous function over a SQLAlchemy ``Connection``, run as one
transaction by a :class:`Database`:

- :class:`SqliteDatabase` (``sqlite:///path``) runs it on a thread of its own: one writer thread
  (SQLite has one writer at a time anyway; a second in-process writer would only meet the lock
  and SQLite's busy handler, which sleeps in steps of milliseconds) and a few reader threads (WAL
  lets reads run beside the writer). One thread hop per transaction, not one per statement.
  Connections get WAL, foreign keys, a busy timeout (for other processes, such as the operator
  commands) and explicit ``BEGIN`` (``BEGIN IMMEDIATE`` for writes).
- Durability (:data:`SYNC_MODES`): with ``"full"`` every commit waits for the disk (fsync), so a
  committed audit record survives power loss; with ``"normal"`` (the default) a commit survives
  the relay process being killed at once, and a background checkpoint puts the log on disk within
  :data:`SYNC_INTERVAL` seconds, so power loss or a kernel crash can lose at most the last second
  of records, never corrupt or reorder them (SQLite's WAL with ``synchronous = NORMAL``). A
  commit's fsync on a busy virtual disk takes 0.3-5 ms, which is the whole round-trip budget.
- :class:`PostgresDatabase` (``postgresql://``) runs it on an asyncpg connection through
  ``AsyncConnection.run_sync``: the same function, each statement awaited on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc
import sqlalchemy.pool

from posassist.relay.errors import Conflict, StorageError, StorageUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "SYNC_MODES",
    "Database",
    "PostgresDatabase",
    "SqliteDatabase",
    "map_db_errors",
    "normalise_url",
    "open_database",
]

T = TypeVar("T")
log = logging.getLogger("posassist.relay")

#: Seconds a SQLite writer waits for another process's lock, and a PostgreSQL lock wait.
DEFAULT_BUSY_TIMEOUT = 10.0
#: SQLite reader threads (reads run beside the one writer in WAL mode).
SQLITE_READERS = 2
#: SQLite durability: "full" fsyncs every commit; "normal" fsyncs at checkpoints (see above).
SYNC_MODES = ("normal", "full")
#: Seconds, at most, between a commit and its checkpoint to disk with ``sync = "normal"``.
SYNC_INTERVAL = 1.0


def normalise_url(url: str | sa.URL) -> sa.URL:
    """Parse ``url`` and pick the driver: SQLite → the standard library's sqlite3 (run on this
    module's threads), PostgreSQL → asyncpg. ``sqlite+aiosqlite://`` is accepted as SQLite.

    Raises:
        ValueError: not a SQLite or PostgreSQL URL.
    """
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database URL scheme: {backend!r}")


class Database(Protocol):
    """Runs storage transactions; see the module docstring."""

    @property
    def dialect(self) -> str: ...

    async def read(self, work: Callable[[sa.Connection], T], *, small: bool = False) -> T:
        """Run ``work`` in a read transaction and return its result. ``small``: a few indexed
        rows on the request path (a token, a scope), which a database may read without leaving
        the event loop."""
        ...

    async def write(self, work: Callable[[sa.Connection], T], *, small: bool = False) -> T:
        """Run ``work`` in a write transaction (committed when it returns, rolled back when it
        raises) and return its result. ``small``: a few rows on the request path (a job and
        its audit record), which a database may run without leaving the event loop."""
        ...

    async def close(self) -> None: ...


class SqliteDatabase:
    """SQLite through the standard library's sqlite3, on threads owned by this object."""

    dialect = "sqlite"

    def __init__(
        self,
        url: sa.URL,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        sync: str = "normal",
        sync_interval: float = SYNC_INTERVAL,
    ) -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"sync must be one of {', '.join(SYNC_MODES)}, not {sync!r}")
        self.sync = sync
        self.sync_interval = sync_interval
        #: time.monotonic() of the newest write that reached the disk (checkpointed or fsynced).
        self.synced_at = 0.0
        self._dirty_since: float | None = None
        self._sync_handle: asyncio.TimerHandle | None = None
        in_memory = url.database in (None, "", ":memory:")
        # An in-memory database lives in one connection, so one thread does everything there.
        # Otherwise: the writer thread, the reader threads, and the loop's own writer and reader
        # (an exhausted pool would block the event loop itself).
        pool: dict[str, Any] = (
            {"poolclass": sqlalchemy.pool.StaticPool}
            if in_memory
            else {"pool_size": SQLITE_READERS + 3, "max_overflow": 0}
        )
        if not in_memory:
            create_private_file(str(url.database))
        self._engine = sa.create_engine(url, connect_args={"check_same_thread": False}, **pool)
        _configure_sqlite(self._engine, busy_timeout, sync)
        self._in_memory = in_memory
        self._path = str(url.database)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sa.Connection] = []
        #: The event loop's own connection for small writes (see :meth:`write`).
        self._inline: sa.Connection | None = None
        #: The event loop's own connection for small reads (see :meth:`read`).
        self._inline_reader: sa.Connection | None = None
        self.inline_writes = self.thread_writes = self.inline_reads = 0
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="posassist-db-write")
        self._readers = (
            self._writer
            if in_memory
            else ThreadPoolExecutor(SQLITE_READERS, thread_name_prefix="posassist-db-read")
        )

    def _run(self, work: Callable[[sa.Connection], T], begin: str) -> T:
        # Each of our threads keeps its connection (no pool checkout, reset and return per
        # transaction); one that fails is closed, and the thread's next transaction reconnects.
        conn: sa.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._engine.connect().execution_options(**{SQLITE_BEGIN: begin})
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        try:
            with conn.begin():
                return work(conn)
        except BaseException:
            if conn.invalidated or not conn.in_transaction():
                self._local.conn = None
                with self._lock:
                    self._connections.remove(conn)
                conn.close()
            raise

    async def read(self, work: Callable[[sa.Connection], T], *, small: bool = False) -> T:
        """A ``small`` read runs on the event loop itself, as a small write does: in WAL mode a
        reader never waits for the writer, and an indexed lookup (about 0.1 ms) costs less than
        the hop to a reader thread and back, which on a busy machine waits for the thread to be
        scheduled (several hops per request were most of a store-wide request's time, issue 16).
        If the database is busy anyway (a checkpoint, recovery), it goes to a reader thread."""
        loop = asyncio.get_running_loop()
        with map_db_errors():
            if small and not self._in_memory:
                try:
                    return self._read_inline(work)
                except _Locked:
                    pass
            return await loop.run_in_executor(
                self._readers, functools.partial(self._run, work, "DEFERRED")
            )

    def _read_inline(self, work: Callable[[sa.Connection], T]) -> T:
        conn = self._inline_reader
        if conn is None:
            conn = self._engine.connect().execution_options(**{SQLITE_BEGIN: "DEFERRED"})
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute("PRAGMA busy_timeout = 0")  # never wait on the loop
            self._inline_reader = conn
        try:
            with conn.begin():
                result = work(conn)
        except sqlalchemy.exc.OperationalError as exc:
            self._drop_inline_reader(conn)
            if "locked" in str(exc.orig) or "busy" in str(exc.orig):
                raise _Locked from exc
            raise
        except BaseException:
            if conn.invalidated:  # else the transaction ended with the block: reusable
                self._drop_inline_reader(conn)
            raise
        self.inline_reads += 1
        return result

    def _drop_inline_reader(self, conn: sa.Connection) -> None:
        self._inline_reader = None
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
            conn.close()

    async def write(self, work: Callable[[sa.Connection], T], *, small: bool = False) -> T:
        """With ``sync = "normal"``, a ``small`` write runs on the event loop itself: its commit
        only hands a few pages to the OS (about 0.2 ms here), less than the hop to the writer
        thread and back (0.5-0.7 ms on these VMs). It never waits there: if another connection
        (an operator command, the writer thread) holds the lock, it goes to the writer thread,
        which waits up to the busy timeout. Big writes (presence of thousands of devices) and
        every write with ``sync = "full"`` (an fsync) always go to the writer thread."""
        loop = asyncio.get_running_loop()
        result: T
        with map_db_errors():
            if small and self.sync == "normal" and not self._in_memory:
                try:
                    result = self._run_inline(work)
                except _Locked:
                    result = await self._run_thread(loop, work)
            else:
                result = await self._run_thread(loop, work)
        if self.sync == "full" or self._in_memory:
            self.synced_at = time.monotonic()
        elif self._dirty_since is None:
            self._dirty_since = time.monotonic()
            self._sync_handle = loop.call_later(self.sync_interval, self._checkpoint_soon, loop)
        return result

    async def _run_thread(
        self, loop: asyncio.AbstractEventLoop, work: Callable[[sa.Connection], T]
    ) -> T:
        # IMMEDIATE: take the write lock at BEGIN. A deferred transaction that reads and
        # then writes can fail with SQLITE_BUSY at once in WAL mode, ignoring busy_timeout.
        self.thread_writes += 1
        return await loop.run_in_executor(
            self._writer, functools.partial(self._run, work, "IMMEDIATE")
        )

    async def write_schema(self, work: Callable[[sa.Connection], T]) -> T:
        """Run a migration: a write transaction with foreign keys switched off, the way SQLite
        documents changing a table others point at (rebuilt in batch mode: a new table, rows
        copied, the old one dropped). Every foreign key is checked before the commit; a broken
        one rolls it all back (Conflict)."""
        loop = asyncio.get_running_loop()
        with map_db_errors():
            return await loop.run_in_executor(
                self._writer, functools.partial(self._run_schema, work)
            )

    def _run_schema(self, work: Callable[[sa.Connection], T]) -> T:
        conn = self._engine.connect().execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        try:
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute("PRAGMA foreign_keys = OFF")  # a no-op inside a transaction: before it
            with conn.begin():
                result = work(conn)
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                if broken is not None:
                    raise sqlalchemy.exc.IntegrityError(
                        "PRAGMA foreign_key_check", None, Exception(f"broken reference {broken}")
                    )
            return result
        finally:
            conn.invalidate()  # never reused with foreign keys off
            conn.close()

    def _run_inline(self, work: Callable[[sa.Connection], T]) -> T:
        conn = self._inline
        if conn is None:
            conn = self._engine.connect().execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            raw = conn.connection.driver_connection
            assert raw is not None
            # Never wait for a lock on the loop, and never checkpoint there (the checkpointer
            # below does, on a thread).
            raw.execute("PRAGMA busy_timeout = 0")
            raw.execute("PRAGMA wal_autocheckpoint = 0")
            self._inline = conn
        try:
            transaction = conn.begin()  # BEGIN IMMEDIATE: the write lock, or "locked" at once
        except sqlalchemy.exc.OperationalError as exc:
            if "locked" in str(exc.orig) or "busy" in str(exc.orig):
                raise _Locked from exc
            raise
        try:
            with transaction:
                result = work(conn)
        except BaseException:
            if conn.invalidated or not conn.in_transaction():
                self._inline = None
                conn.close()
            raise
        self.inline_writes += 1
        return result

    def _checkpoint_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        # PASSIVE: fsync the log and copy what it can into the database file without waiting
        # for (or blocking) readers and the writer; on a reader thread, off the writer's path.
        self._sync_handle = None
        dirty, self._dirty_since = self._dirty_since, None
        started = time.monotonic()
        future = loop.run_in_executor(self._readers, self._checkpoint)
        future.add_done_callback(functools.partial(self._checkpointed, dirty, started))

    def _checkpoint(self) -> None:
        # Its own short connection, outside any transaction (a checkpoint can't run inside one,
        # and the threads' connections are busy or in use by the pool).
        with contextlib.closing(sqlite3.connect(self._path, isolation_level=None)) as raw:
            raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _checkpointed(
        self, dirty: float | None, started: float, future: asyncio.Future[None]
    ) -> None:
        if future.cancelled() or future.exception() is not None:
            log.error(
                "SQLite checkpoint failed: %r", None if future.cancelled() else future.exception()
            )
            if self._dirty_since is None:  # try again with the next write
                self._dirty_since = dirty
            return
        self.synced_at = max(self.synced_at, started)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._sync_handle is not None:
            self._sync_handle.cancel()
            self._sync_handle = None
        # Let queued transactions finish, checkpoint, then close, on a worker thread.
        await loop.run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        try:
            if self._dirty_since is not None and not self._in_memory:
                try:
                    self._checkpoint()
                except sqlite3.Error as exc:  # still in the log, safe from a crash; logged
                    log.error("SQLite checkpoint at close failed: %s", exc)
                else:
                    self._dirty_since = None
                    self.synced_at = time.monotonic()
        finally:
            for conn in self._connections:  # the threads are gone; nothing else uses them
                conn.close()
            self._connections.clear()
            if self._inline is not None:
                self._inline.close()
                self._inline = None
            if self._inline_reader is not None:
                self._inline_reader.close()
                self._inline_reader = None
            self._engine.dispose()


class _Locked(StorageUnavailable):
    """Another connection holds SQLite's write lock (an inline write then goes to a thread)."""


class PostgresDatabase:
    """PostgreSQL through asyncpg; each transaction's function runs under ``run_sync``."""

    dialect = "postgresql"

    def __init__(
        self,
        url: sa.URL,
        *,
        schema: str | None = None,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        pool_size: int = 5,
    ) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        from .schema_health import add_postgresql_options

        add_postgresql_options()
        settings = {"lock_timeout": str(int(busy_timeout * 1000))}
        if schema is not None:
            settings["search_path"] = schema
        self._engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            pool_pre_ping=True,
            connect_args={"server_settings": settings, "timeout": busy_timeout},
        )

    async def _run(self, work: Callable[[sa.Connection], T]) -> T:
        with map_db_errors():
            async with self._engine.connect() as conn, conn.begin():
                return await conn.run_sync(work)

    async def read(self, work: Callable[[sa.Connection], T], *, small: bool = False) -> T:
        return await self._run(work)  # asyncpg: every statement is awaited on the loop

    async def write(self, work: Callable[[sa.Connection], T], *, small: bool = False) -> T:
        return await self._run(work)

    async def close(self) -> None:
        await self._engine.dispose()


def open_database(
    url: str | sa.URL,
    *,
    schema: str | None = None,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    pool_size: int = 5,
    sync: str = "normal",
) -> Database:
    """The :class:`Database` for ``url``; nothing connects until first use.

    Args:
        url: a SQLite or PostgreSQL URL (see :func:`normalise_url`).
        schema: PostgreSQL only: the schema to work in (set as ``search_path``).
        busy_timeout: SQLite lock wait / PostgreSQL lock wait, in seconds.
        pool_size: PostgreSQL connections kept open.
        sync: SQLite durability, one of :data:`SYNC_MODES` (PostgreSQL follows the server's
            ``synchronous_commit``).
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        if schema is not None:
            raise ValueError("schema is only supported on PostgreSQL")
        return SqliteDatabase(parsed, busy_timeout=busy_timeout, sync=sync)
    return PostgresDatabase(parsed, schema=schema, busy_timeout=busy_timeout, pool_size=pool_size)


# Execution option read by the SQLite "begin" hook: "IMMEDIATE" takes the write lock up front.
SQLITE_BEGIN = "posassist_sqlite_begin"


def _configure_sqlite(engine: sa.Engine, busy_timeout: float, sync: str) -> None:
    @sa.event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (the sqlite3 module's legacy transaction handling
        # skips it before SELECT and DDL); see SQLAlchemy's "sqlite_enabling_transactions".
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        _use_wal(cursor, busy_timeout)
        cursor.execute(f"PRAGMA synchronous = {sync.upper()}")  # one of SYNC_MODES
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _use_wal(cursor: sqlite3.Cursor, busy_timeout: float) -> None:
    """Switch a database to WAL (it stays so, in the file). Switching needs the database to
    itself, and SQLite answers "locked" at once instead of waiting for the busy timeout, so a
    second relay or operator command opening a new database at the same moment waits here."""
    deadline = time.monotonic() + busy_timeout
    while cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


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


def create_private_file(path: str) -> None:
    """Create the database file ``path`` empty and 0600 if it does not exist yet.

    SQLite would create it 0644 (less the umask); its ``-wal`` and ``-shm`` files take the
    database file's mode, so they are private too. An existing file is left as it is, and a
    ``file:`` URI (a read-only open) is not created.
    """
    if path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
