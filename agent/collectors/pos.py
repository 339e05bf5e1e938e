"""POS application collector, driven by a POS profile: processes and services up, restarts, recent
errors in its logs (redacted), database service, disk space for its data, and "is a sale open".
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

from posassist.agent.errors import CollectorError, LogReadError
from posassist.agent.logtail import read_tail
from posassist.agent.redact import Redactor

if TYPE_CHECKING:
    from posassist.agent.diagnostics import DiagContext
    from posassist.agent.profile import PosProfile

__all__ = [
    "collect",
    "database_file",
    "find_processes",
    "match_errors",
    "parse_proc_locks",
    "parse_systemctl_is_active",
    "sale_open",
    "service_states",
]

#: systemctl, by absolute path only (never a shell, never PATH lookup)
SYSTEMCTL_PATHS = ("/usr/bin/systemctl", "/bin/systemctl")


def match_errors(
    lines: Sequence[str], patterns: Sequence[str], limit: int
) -> Tuple[int, List[str]]:
    """Count the log lines matching any of ``patterns`` and keep the newest ``limit`` of them.

    Args:
        lines: redacted log lines, oldest first.
        patterns: regular expressions from the profile.
        limit: how many matching lines to keep.

    Returns:
        ``(count, newest matching lines, oldest first)``.
    """
    if not patterns:
        return 0, []
    combined = re.compile("|".join(f"(?:{p})" for p in patterns))
    hits = [line for line in lines if combined.search(line)]
    return len(hits), [line[:500] for line in hits[-limit:]]


def find_processes(
    rows: Iterable[Tuple[int, Optional[str], Optional[float]]], names: Sequence[str]
) -> List[Dict[str, Any]]:
    """Processes whose name matches one of ``names`` (case-insensitive, as Windows names are).

    Args:
        rows: ``(pid, name, create_time)`` of every process; name None when access was denied.
        names: the executable names in the profile.

    Returns:
        ``{"pid", "name", "started"}`` for each match, oldest first.
    """
    wanted = {n.lower() for n in names}
    found = [
        {"pid": pid, "name": name, "started": created}
        for pid, name, created in rows
        if name is not None and name.lower() in wanted
    ]
    found.sort(key=lambda p: (p["started"] or 0.0, p["pid"]))
    return found


def parse_systemctl_is_active(text: str, units: Sequence[str]) -> Dict[str, str]:
    """Map ``systemctl is-active U1 U2 …`` output (one state per line, in order) to the units."""
    states = [line.strip() for line in text.splitlines() if line.strip()]
    return {unit: (states[i] if i < len(states) else "unknown") for i, unit in enumerate(units)}


def _process_table() -> List[Tuple[int, Optional[str], Optional[float]]]:
    import psutil  # type: ignore[import-untyped]

    rows = []
    for proc in psutil.process_iter(["pid", "name", "create_time"], ad_value=None):
        try:
            info = proc.info
        except psutil.Error:  # vanished or refused: not one of ours to judge
            continue
        rows.append((info["pid"], info["name"], info["create_time"]))
    return rows


def service_states(names: Sequence[str], timeout: float = 3.0) -> Dict[str, str]:
    """State of each service: psutil on Windows, ``systemctl is-active`` (argv) on Linux."""
    if not names:
        return {}
    if sys.platform == "win32":  # pragma: no cover - Windows only
        import psutil

        out = {}
        for name in names:
            try:
                out[name] = psutil.win_service_get(name).status()
            except psutil.NoSuchProcess:
                out[name] = "not_installed"
            except (psutil.Error, OSError) as exc:  # as_dict/status can raise oddly (§6.2)
                out[name] = "error: " + type(exc).__name__
        return out
    systemctl = next((p for p in SYSTEMCTL_PATHS if os.path.exists(p)), None)
    if systemctl is None:
        return {name: "unknown (no systemctl)" for name in names}
    try:
        done = subprocess.run(
            [systemctl, "is-active", "--", *names],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {name: "unknown (systemctl timed out)" for name in names}
    return parse_systemctl_is_active(done.stdout, names)


def sale_open(
    profile: Optional[PosProfile],
    rows: Optional[Iterable[Tuple[int, Optional[str], Optional[float]]]] = None,
) -> Optional[str]:
    """Why a sale looks open (the profile's file exists, or its process runs), else None.

    Fails closed: a marker file that cannot be checked (permission, a symlink loop…) is "cannot
    tell", which counts as open — no probe and no class-B/C script runs mid-sale by mistake.
    """
    if profile is None:
        return None
    if profile.sale_open_file:
        try:
            os.stat(profile.sale_open_file)
            return "file " + profile.sale_open_file
        except (FileNotFoundError, NotADirectoryError):
            pass  # no marker: no sale by the file
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            return f"unknown: file {profile.sale_open_file} could not be checked ({why})"
    if profile.sale_open_process:
        table = rows if rows is not None else _process_table()
        if find_processes(table, [profile.sale_open_process]):
            return "process " + profile.sale_open_process
    return None


def _logs(profile: PosProfile) -> List[Dict[str, Any]]:
    redactor = Redactor(profile.redact_patterns)
    out: List[Dict[str, Any]] = []
    for path in profile.log_paths:
        try:
            tail = read_tail(path, profile.log_max_bytes, redactor)
        except LogReadError as exc:
            out.append({"path": path, "ok": False, "error": str(exc)})
            continue
        count, recent = match_errors(tail.lines, profile.error_patterns, profile.log_max_lines)
        try:
            modified: Optional[float] = os.path.getmtime(path)
        except OSError:
            modified = None
        out.append(
            {
                "path": path,
                "ok": True,
                "size": tail.file_size,
                "bytes_read": tail.bytes_read,
                "truncated": tail.truncated,
                "modified": modified,
                "gb18030_lines": tail.gb18030_lines,
                "error_count": count,
                "recent_errors": recent,
            }
        )
    return out


_LOCK_LINE = re.compile(
    r"^\d+:\s+(?:->\s+)?(?P<kind>POSIX|FLOCK|OFDLCK|LEASE|DELEG)\s+(?P<mode>\S+)\s+"
    r"(?P<access>READ|WRITE|RW|NONE|UNLCK)\s+(?P<pid>-?\d+)\s+"
    r"(?P<major>[0-9a-f]+):(?P<minor>[0-9a-f]+):(?P<inode>\d+)\s"
)


def parse_proc_locks(text: str) -> List[Dict[str, Any]]:
    """Parse Linux ``/proc/locks``: one dict per lock held (waiters, ``->`` lines, are skipped).

    Returns:
        ``{"kind": "POSIX"…, "access": "READ"/"WRITE", "pid", "dev": (major, minor), "inode"}``.
    """
    out = []
    for line in text.splitlines():
        match = _LOCK_LINE.match(line.strip())
        if not match or "->" in line.split(match.group("kind"))[0]:
            continue
        out.append(
            {
                "kind": match.group("kind"),
                "access": match.group("access"),
                "pid": int(match.group("pid")),
                "dev": (int(match.group("major"), 16), int(match.group("minor"), 16)),
                "inode": int(match.group("inode")),
            }
        )
    return out


_DB_SUFFIXES = ("", "-wal", "-shm", "-journal")


def database_file(path: str, proc_root: str = "/proc") -> Dict[str, Any]:
    """Who holds the POS's database file (and its -wal/-shm/-journal), with which lock (§5 #27).

    Never writes, never opens the database as a database: reads its 16-byte header only. A path
    that is missing, a directory, a symlink loop or unreadable gives ``ok: False`` and why.
    """
    out: Dict[str, Any] = {"path": path}
    try:
        st = os.stat(path)
    except OSError as exc:
        why = {
            errno.ELOOP: "symlink loop",
            errno.ENOENT: "not found",
            errno.EACCES: "permission denied",
            errno.ENOTDIR: "a parent is not a folder",
        }.get(exc.errno or 0, exc.strerror or type(exc).__name__)
        return dict(out, ok=False, error=why)
    if stat.S_ISDIR(st.st_mode):
        return dict(out, ok=False, error="is a folder, not a database file")
    if not stat.S_ISREG(st.st_mode):
        return dict(out, ok=False, error="not a regular file")
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as exc:
        return dict(out, ok=False, error="cannot read: " + (exc.strerror or type(exc).__name__))
    out.update(ok=True, size=st.st_size, sqlite=header == b"SQLite format 3\x00")
    if not sys.platform.startswith("linux"):  # Windows: handle.exe needs admin (§6.4)
        out["holders"] = None
        return out
    from posassist.agent.collectors.serialports import find_holders

    try:
        with open(os.path.join(proc_root, "locks"), encoding="ascii", errors="replace") as f:
            locks = parse_proc_locks(f.read())
    except OSError:
        locks = []
    holders: Dict[int, Dict[str, Any]] = {}
    for suffix in _DB_SUFFIXES:
        name = path + suffix
        try:
            fst = os.stat(name)
        except OSError:
            continue
        dev = (os.major(fst.st_dev), os.minor(fst.st_dev))
        for holder in find_holders(os.path.realpath(name)):
            row = holders.setdefault(
                holder.pid, {"pid": holder.pid, "name": holder.name, "files": [], "locks": []}
            )
            row["files"].append(os.path.basename(name))
        for lock in locks:
            if lock["inode"] == fst.st_ino and lock["dev"] == dev and lock["pid"] in holders:
                text = f"{lock['kind']} {lock['access']} on {os.path.basename(name)}"
                holders[lock["pid"]]["locks"].append(text)
    out["holders"] = [holders[pid] for pid in sorted(holders)]
    if out["sqlite"] and not holders:  # the POS is stopped: check a copy (never the file itself)
        out["quick_check"] = quick_check_copy(path)
    return out


#: Largest database the agent copies for a check (time and disk on a till).
MAX_CHECK_BYTES = 256 * 1024 * 1024


def quick_check_copy(path: str, max_bytes: int = MAX_CHECK_BYTES) -> Dict[str, Any]:
    """``PRAGMA quick_check`` on a copy of a SQLite file with its -wal and -shm (§5 #28).

    Only while nobody holds the file (the POS is stopped): a copy taken mid-write could look
    corrupt. The copy lives in a private temp folder and is removed; the original is only read.
    Only regular files are copied, each at most the size it had when measured (a ``-wal`` that
    is a link to ``/dev/zero`` or grows meanwhile cannot fill the disk). ``ok`` is False only
    when SQLite itself says the copy is damaged; a copy that could not be made is
    ``"copy_error"`` (the database could not be checked — not that it is corrupt).
    """
    import sqlite3
    import tempfile

    sizes: Dict[str, int] = {}
    for suffix in ("", "-wal", "-shm"):
        try:
            info = os.stat(path + suffix)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return {"ok": None, "copy_error": f"{path + suffix}: {exc.strerror or exc}"}
        if not stat.S_ISREG(info.st_mode):
            return {"ok": None, "copy_error": f"{path + suffix}: not a regular file"}
        sizes[suffix] = info.st_size
    size = sum(sizes.values())
    if size > max_bytes:
        return {
            "ok": None,
            "skipped": f"{size // 1048576} MB is over the {max_bytes // 1048576} MB limit",
        }
    with tempfile.TemporaryDirectory(prefix="posassist-check-") as folder:
        copy = os.path.join(folder, "pos.db")
        try:
            for suffix, length in sizes.items():
                _copy_at_most(path + suffix, copy + suffix, length)
        except OSError as exc:
            return {"ok": None, "copy_error": f"{type(exc).__name__}: {exc}"[:300]}
        try:
            db = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
            try:
                rows = [str(r[0]) for r in db.execute("PRAGMA quick_check(20)").fetchall()]
            finally:
                db.close()
        except sqlite3.Error as exc:  # "file is not a database", "malformed": SQLite's verdict
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": rows == ["ok"], "result": rows[:20]}


def _copy_at_most(source: str, target: str, length: int) -> None:
    """Copy ``length`` bytes of ``source`` (its size when measured), no more."""
    left = length
    with open(source, "rb") as src, open(target, "wb") as dst:
        while left > 0:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                break
            dst.write(chunk)
            left -= len(chunk)


def _memory(ctx: DiagContext, procs: List[Dict[str, Any]], now: float) -> None:
    """Add each POS process's resident memory now and its history across reports (§5 #30)."""
    import psutil

    for proc in procs:
        try:
            rss = int(psutil.Process(proc["pid"]).memory_info().rss)
        except psutil.Error:  # gone, or refused (§6.3)
            continue
        proc["rss"] = rss
        history = ctx.memory.add(proc["pid"], proc["started"] or 0.0, now, rss)
        proc["rss_history"] = [[round(t, 1), r] for t, r in history]


def _disk(paths: Sequence[str], min_free_mb: int) -> List[Dict[str, Any]]:
    out = []
    for path in paths:
        try:
            usage = shutil.disk_usage(path)
        except OSError as exc:
            out.append({"path": path, "ok": False, "error": exc.strerror or str(exc)})
            continue
        free_mb = usage.free // (1024 * 1024)
        out.append(
            {
                "path": path,
                "ok": True,
                "free_mb": free_mb,
                "total_mb": usage.total // (1024 * 1024),
                "low": free_mb < min_free_mb,
            }
        )
    return out


def collect(ctx: DiagContext) -> Dict[str, Any]:
    """The POS application as the profile describes it."""
    profile = ctx.profile
    if profile is None:
        raise CollectorError(
            ctx.profile_error
            or "未配置收银软件档案 (settings.json) / no POS profile configured (settings.json)"
        )
    rows = _process_table()
    now = time.time()
    running = find_processes(rows, profile.process_names)
    _memory(ctx, running, now)
    db_procs = find_processes(rows, profile.database_processes)
    services = service_states(list(profile.service_names))
    db_service = service_states([profile.database_service]) if profile.database_service else {}
    return {
        "profile": profile.name,
        "display_name": profile.display_name,
        "running": bool(running),
        "processes": running,
        # more than one instance is a classic cause of "database is locked" (§5.4 #27)
        "instances": len(running),
        "newest_start_age_s": round(now - running[-1]["started"], 1)
        if running and running[-1]["started"]
        else None,
        "services": services,
        "database": {
            "service": db_service,
            "processes": db_procs,
            "up": (not db_service or all(s in ("running", "active") for s in db_service.values()))
            and (not profile.database_processes or bool(db_procs)),
            "file": database_file(profile.database_path) if profile.database_path else None,
        },
        "logs": _logs(profile),
        "disk": _disk(profile.data_paths, profile.min_free_mb),
        "sale_open": sale_open(profile, rows),
    }
