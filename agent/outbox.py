"""The agent's durable outbox: alert events committed to SQLite (WAL) before they are sent.

Delivered at least once: an event leaves the outbox only when the relay acknowledges its
``alert_key`` (``alert.ack``), so a relay down for hours or an agent killed mid-send loses
nothing; the relay de-duplicates by the key. Bounded: past ``max_events`` the oldest event of
the lowest severity goes first, and the running total of dropped events rides along with every
event sent (``details.outbox_dropped``). Stdlib only; blocking, so the agent calls it from its
one database thread (:class:`posassist.agent.checks.monitor.HealthMonitor`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional

from posassist.client.files import private_dir

from .errors import OutboxError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["DEFAULT_MAX_EVENTS", "Outbox", "QueuedEvent"]

#: Events kept at most; an alert event is about 1 KB, so this is a few MB on disk at worst.
DEFAULT_MAX_EVENTS = 5000
#: The order events are dropped in when the outbox is full: lowest first, then oldest.
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_key TEXT NOT NULL UNIQUE,
    rank INTEGER NOT NULL,
    body TEXT NOT NULL,
    queued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_drop_order ON events (rank, seq);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class QueuedEvent(NamedTuple):
    """One event waiting for the relay's acknowledgement."""

    seq: int
    alert_key: str
    #: the fields of ``alert.raised`` but ``id`` and ``device_id`` (the session's)
    event: Dict[str, Any]
    queued_at: float
    attempts: int


class Outbox:
    """A bounded queue of alert events on disk. Every method commits before it returns."""

    def __init__(self, path: Path, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.path = path
        self.max_events = max_events
        private_dir(path.parent)
        try:
            # 0600 from the first byte (SQLite gives its -wal and -shm the same mode): alert
            # details name the till's processes and files
            os.close(os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(str(path), 0o600)
        except OSError as exc:
            raise OutboxError(f"cannot open the outbox {path}: {exc.strerror}") from None
        try:
            # isolation_level=None: we say BEGIN IMMEDIATE ourselves, so each change is one
            # transaction committed to the WAL before the method returns.
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a committed event survives power loss
            self._db.execute("PRAGMA busy_timeout=5000")
            # a few KB of events: a 128 KB page cache, not the 2 MB default (agent RSS budget)
            self._db.execute("PRAGMA cache_size=-128")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open the outbox {path}: {exc}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, statements: Any) -> Any:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = statements(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox {self.path}: {exc}") from None

    def put(self, alert_key: str, event: Dict[str, Any], now: float) -> bool:
        """Queue ``event`` under ``alert_key``; False if that key is queued already (a repeat).

        At the size limit the oldest event of the lowest severity is dropped to make room, or
        this one if every queued event is more severe; each drop adds one to :meth:`dropped`.
        """
        rank = SEVERITY_RANK.get(str(event.get("severity")), 0)
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":"))

        def put(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM events WHERE alert_key = ?", (alert_key,)).fetchone():
                return False
            (count,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
            dropped = 0
            while count - dropped >= self.max_events:
                victim = db.execute(
                    "SELECT seq, rank FROM events ORDER BY rank, seq LIMIT 1"
                ).fetchone()
                if victim[1] > rank:  # everything queued matters more than this event
                    _add_dropped(db, 1)
                    return False
                db.execute("DELETE FROM events WHERE seq = ?", (victim[0],))
                dropped += 1
            if dropped:
                _add_dropped(db, dropped)
            db.execute(
                "INSERT INTO events (alert_key, rank, body, queued_at) VALUES (?, ?, ?, ?)",
                (alert_key, rank, body, now),
            )
            return True

        return bool(self._write(put))

    def pending(self, limit: int = 32) -> List[QueuedEvent]:
        """The oldest ``limit`` events not yet acknowledged, in the order they were queued."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, alert_key, body, queued_at, attempts FROM events"
                    " ORDER BY seq LIMIT ?",
                    (limit,),
                ).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox {self.path}: {exc}") from None
        return [QueuedEvent(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]

    def attempted(self, alert_key: str) -> None:
        """Count one more send of ``alert_key`` (what a technician sees when it arrives late)."""
        self._write(
            lambda db: db.execute(
                "UPDATE events SET attempts = attempts + 1 WHERE alert_key = ?", (alert_key,)
            )
        )

    def ack(self, alert_key: str) -> bool:
        """The relay has ``alert_key``: forget it. False if it was not queued."""
        return bool(
            self._write(
                lambda db: (
                    db.execute("DELETE FROM events WHERE alert_key = ?", (alert_key,)).rowcount
                )
            )
        )

    def discard(self, alert_key: str) -> bool:
        """Drop ``alert_key`` unsent (it can't be sent): counted in :meth:`dropped`."""

        def discard(db: sqlite3.Connection) -> bool:
            gone = db.execute("DELETE FROM events WHERE alert_key = ?", (alert_key,)).rowcount
            if gone:
                _add_dropped(db, gone)
            return bool(gone)

        return bool(self._write(discard))

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
        return int(count)

    def dropped(self) -> int:
        """How many events the size limit dropped since this outbox was made (never reset)."""
        return int(self.get_meta("dropped") or 0)

    def get_meta(self, name: str) -> Optional[str]:
        """A small value kept with the outbox (the last good policy, check states)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        self._write(
            lambda db: db.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
        )


def _add_dropped(db: sqlite3.Connection, n: int) -> None:
    db.execute(
        "INSERT INTO meta (name, value) VALUES ('dropped', ?)"
        " ON CONFLICT(name) DO UPDATE SET value = CAST(value AS INTEGER) + ?",
        (str(n), n),
    )
