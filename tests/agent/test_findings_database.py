"""The POS database file (§5 #27): who holds it and with which lock, from real processes holding a
real SQLite file; and the bad paths a profile may name (a folder, a symlink loop, unreadable)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from posassist.agent.collectors.pos import database_file, parse_proc_locks
from posassist.agent.findings import evaluate

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")

HOLD = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute(sys.argv[2])
if sys.argv[2] == "BEGIN":
    db.execute("SELECT count(*) FROM sales").fetchall()  # a read transaction: SHARED lock
print("ready", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def holders() -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def hold(path: Path, statement: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path), statement],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"  # blocks until it holds its lock
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.communicate(timeout=10)  # reaps it and closes its pipes


def _db(tmp_path: Path) -> Path:
    path = tmp_path / "pos.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, total INTEGER)")
        db.execute("INSERT INTO sales (total) VALUES (1200)")
    db.close()
    return path


def _report(file: dict[str, Any]) -> dict[str, Any]:
    data = {"running": True, "processes": [], "database": {"up": True, "file": file}}
    return {"sections": {"pos": {"ok": True, "data": data}}}


def test_two_processes_on_the_pos_database_are_named_with_their_locks(tmp_path, holders) -> None:
    path = _db(tmp_path)
    writer = holders(path, "BEGIN IMMEDIATE")  # RESERVED: a POSIX write lock
    reader = holders(path, "BEGIN")
    file = database_file(str(path))
    assert file["ok"] is True
    assert file["sqlite"] is True
    by_pid = {h["pid"]: h for h in file["holders"]}
    assert set(by_pid) == {writer.pid, reader.pid}
    assert any("POSIX WRITE on pos.db" == lock for lock in by_pid[writer.pid]["locks"])
    assert any("POSIX READ on pos.db" == lock for lock in by_pid[reader.pid]["locks"])
    (finding,) = evaluate(_report(file), None, time.time())
    assert finding.code == "pos.database_held"
    assert f"({writer.pid}) [POSIX WRITE on pos.db" in finding.detail["en"]
    assert "never delete -wal/-shm/-journal" in finding.advice.tech_en
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"  # untouched


def test_one_holder_is_normal_and_gives_no_finding(tmp_path, holders) -> None:
    path = _db(tmp_path)
    holders(path, "BEGIN")
    file = database_file(str(path))
    assert len(file["holders"]) == 1
    assert evaluate(_report(file), None, time.time()) == []


def test_bad_database_paths_are_reported_not_raised(tmp_path) -> None:
    folder = tmp_path / "db-folder"
    folder.mkdir()
    loop = tmp_path / "loop.db"
    os.symlink(loop, loop)
    cases = {
        str(folder): "is a folder, not a database file",
        str(loop): "symlink loop",
        str(tmp_path / "missing.db"): "not found",
        "/dev/null": "not a regular file",
    }
    if os.geteuid() != 0:  # root reads anything
        locked = _db(tmp_path)
        locked.chmod(0)
        cases[str(locked)] = "cannot read: Permission denied"
    for path, why in cases.items():
        file = database_file(path)
        assert file == {"path": path, "ok": False, "error": why}
        (finding,) = evaluate(_report(file), None, time.time())
        assert finding.code == "pos.database_unreadable"
        assert why in finding.detail["en"]


def test_proc_locks_lines_parse_and_waiters_are_skipped() -> None:
    text = (
        "1: POSIX  ADVISORY  WRITE 4100 08:01:1234567 1073741825 1073741825\n"
        "1: -> POSIX  ADVISORY  WRITE 5230 08:01:1234567 1073741824 1073741824\n"
        "2: FLOCK  ADVISORY  READ 880 fe:00:42 0 EOF\n"
        "garbage line\n"
    )
    assert parse_proc_locks(text) == [
        {"kind": "POSIX", "access": "WRITE", "pid": 4100, "dev": (8, 1), "inode": 1234567},
        {"kind": "FLOCK", "access": "READ", "pid": 880, "dev": (254, 0), "inode": 42},
    ]


def test_a_corrupt_database_is_found_on_a_copy_while_the_pos_is_stopped(tmp_path) -> None:
    path = _db(tmp_path)
    with sqlite3.connect(path) as db:  # a second page of rows, then spoil it
        db.execute("CREATE TABLE lines (id INTEGER PRIMARY KEY, text TEXT)")
        db.executemany("INSERT INTO lines (text) VALUES (?)", [("x" * 200,)] * 200)
    db.close()
    good = database_file(str(path))
    assert good["quick_check"] == {"ok": True, "result": ["ok"]}
    raw = bytearray(path.read_bytes())
    page = 4096  # the default page size: spoil the b-tree header of every page after the first
    for start in range(page, len(raw), page):
        raw[start : start + 8] = b"\xff" * 8
    path.write_bytes(bytes(raw))
    before = path.read_bytes()
    file = database_file(str(path))
    assert file["quick_check"]["ok"] is False
    assert path.read_bytes() == before  # only a copy was opened
    (finding,) = evaluate(_report(file), None, time.time())
    assert finding.code == "pos.database_corrupt"
    assert "quick_check on a copy" in finding.detail["en"]


def test_no_check_while_the_pos_holds_the_database(tmp_path, holders) -> None:
    path = _db(tmp_path)
    holders(path, "BEGIN")
    assert "quick_check" not in database_file(str(path))


def test_a_database_near_its_size_cap(tmp_path) -> None:
    from posassist.agent.profile import parse_profile

    mdf = tmp_path / "POS.mdf"
    with open(mdf, "wb") as f:  # sparse: 9.5 GB that take no disk
        f.truncate(int(9.5 * 1024**3))
    profile = parse_profile(f'name = "x"\n[database]\npath = "{mdf}"\nsize_cap_gb = 10\n', tmp_path)
    file = database_file(str(mdf))
    assert file["sqlite"] is False
    (finding,) = evaluate(_report(file), profile, time.time())
    assert finding.code == "pos.database_near_cap"
    assert "9.5 GB of its 10.0 GB cap" in finding.detail["en"]


def test_a_copy_that_cannot_be_made_is_unreadable_never_corrupt(tmp_path: Path) -> None:
    """attack 14 F1/F2: a -wal linked to /dev/zero was copied until the disk filled, and any
    failed copy was reported as CRITICAL "database corrupt" (a technician might then restore a
    backup and lose the day's sales); now only SQLite's own verdict says corrupt."""
    path = _db(tmp_path)
    wal = tmp_path / (path.name + "-wal")
    wal.symlink_to("/dev/zero")
    file = database_file(str(path))
    check = file["quick_check"]
    assert check["ok"] is None
    assert "not a regular file" in check["copy_error"]
    codes = [f.code for f in evaluate(_report(file), None, time.time())]
    assert codes == ["pos.database_unreadable"], codes
    assert (tmp_path / path.name).exists()  # the original and its link are left as they were
    assert wal.is_symlink()


def test_the_copy_takes_each_file_at_its_measured_size(tmp_path: Path) -> None:
    from posassist.agent.collectors.pos import _copy_at_most

    source = tmp_path / "grows"
    source.write_bytes(b"x" * 5000)
    _copy_at_most(str(source), str(tmp_path / "copy"), 4096)
    assert (tmp_path / "copy").read_bytes() == b"x" * 4096  # a file grown since: cut at its size
