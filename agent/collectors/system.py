"""System collector: OS and version, uptime, CPU, memory, disks and the top processes (psutil).

Pure parts (:func:`parse_os_release`, :func:`top_processes`) are tested on captured text and rows;
:func:`collect` does the psutil calls, tolerating AccessDenied and NoSuchProcess (reference §6).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional

if TYPE_CHECKING:
    from posassist.agent.diagnostics import DiagContext

__all__ = ["PROCESS_ATTRS", "collect", "parse_os_release", "process_rows", "top_processes"]

#: One process_iter pass with these attrs; never ``open_files`` (slow on Windows, §6.2).
PROCESS_ATTRS = ["pid", "name", "username", "memory_info", "cpu_times", "create_time", "status"]


def parse_os_release(text: str) -> Dict[str, str]:
    """Read ``/etc/os-release`` (KEY=value lines, values optionally quoted).

    Args:
        text: the file's contents.

    Returns:
        The keys and unquoted values; malformed lines are skipped.
    """
    out: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key.strip()] = value
    return out


def top_processes(rows: Iterable[Dict[str, Any]], limit: int = 10) -> List[Dict[str, Any]]:
    """The ``limit`` processes using the most memory, from process_iter ``info`` dicts.

    Values psutil was refused (AccessDenied → ``ad_value`` None) stay None; a row without a pid is
    skipped.

    Args:
        rows: ``{"pid", "name", "username", "rss", "cpu_seconds", "create_time", "status"}`` dicts.
        limit: how many to keep.

    Returns:
        The rows, largest resident memory first.
    """
    kept = [r for r in rows if isinstance(r.get("pid"), int)]
    kept.sort(key=lambda r: (-(r.get("rss") or 0), r["pid"]))
    return kept[:limit]


def _row(info: Dict[str, Any]) -> Dict[str, Any]:
    mem = info.get("memory_info")
    cpu = info.get("cpu_times")
    return {
        "pid": info.get("pid"),
        "name": info.get("name"),
        "username": info.get("username"),
        "rss": getattr(mem, "rss", None),
        "cpu_seconds": (round(float(cpu.user) + float(cpu.system), 2) if cpu is not None else None),
        "create_time": info.get("create_time"),
        "status": info.get("status"),
    }


def process_rows(process_iter: Optional[Callable[..., Iterable[Any]]] = None) -> Dict[str, Any]:
    """Walk the processes once, counting those that vanish or refuse us instead of failing.

    Args:
        process_iter: ``psutil.process_iter`` or a stand-in with its signature.

    Returns:
        ``{"rows": [...], "count": n, "vanished": n, "access_denied": n}``.
    """
    import psutil  # type: ignore[import-untyped]  # not needed at agent idle

    walk = process_iter or psutil.process_iter
    rows: List[Dict[str, Any]] = []
    vanished = denied = 0
    for proc in walk(PROCESS_ATTRS, ad_value=None):
        try:
            info = getattr(proc, "info", None)
            if info is None:  # a bare Process rather than a process_iter entry
                info = proc.as_dict(PROCESS_ATTRS, ad_value=None)
            rows.append(_row(info))
            denied += any(info.get(a) is None for a in ("name", "username", "memory_info"))
        except psutil.NoSuchProcess:  # exited during the walk (ZombieProcess is a subclass)
            vanished += 1
        except psutil.AccessDenied:  # a call outside attrs, or an old psutil
            denied += 1
    return {"rows": rows, "count": len(rows), "vanished": vanished, "access_denied": denied}


def _disks(psutil: Any) -> List[Dict[str, Any]]:
    disks = []
    for part in psutil.disk_partitions(all=False):
        if "cdrom" in part.opts or not part.fstype:
            continue  # an optical drive without media raises; skip it (§6.2)
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError as exc:
            disks.append({"mount": part.mountpoint, "error": exc.strerror or str(exc)})
            continue
        disks.append(
            {
                "mount": part.mountpoint,
                "fstype": part.fstype,
                "total": usage.total,
                "free": usage.free,
                "percent": usage.percent,
            }
        )
    return disks


def collect(ctx: Optional[DiagContext] = None, top: int = 10) -> Dict[str, Any]:
    """OS, uptime, CPU, memory, disks and the top processes by memory."""
    import psutil

    os_info: Dict[str, Any] = {
        "system": platform.system(),
        "release": platform.release(),
        "version": platform.version(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "bits": 64 if sys.maxsize > 2**32 else 32,
    }
    if sys.platform.startswith("linux"):
        try:
            with open("/etc/os-release", encoding="utf-8") as f:
                release = parse_os_release(f.read())
            os_info["distribution"] = release.get("PRETTY_NAME", "")
        except OSError:
            pass
    boot = psutil.boot_time()
    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    load = None
    if hasattr(os, "getloadavg"):
        load = [round(x, 2) for x in os.getloadavg()]
    procs = process_rows()
    return {
        "os": os_info,
        "hostname": platform.node(),
        "boot_time": boot,
        "uptime_s": round(time.time() - boot, 1),
        "cpu": {
            "logical": psutil.cpu_count(),
            "physical": psutil.cpu_count(logical=False),
            # interval=None is non-blocking; a first call's 0.0 is meaningless, so report load too
            "load_avg": load,
        },
        "memory": {"total": memory.total, "available": memory.available, "percent": memory.percent},
        "swap": {"total": swap.total, "used": swap.used, "percent": swap.percent},
        "disks": _disks(psutil),
        "processes": {
            "count": procs["count"],
            "vanished_during_walk": procs["vanished"],
            "access_denied": procs["access_denied"],
            "top_by_memory": top_processes(procs["rows"], top),
        },
    }
