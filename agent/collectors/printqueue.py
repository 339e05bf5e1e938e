"""Print-queue collector: paused/disabled printers and stuck jobs.

Linux: CUPS ``lpstat`` (argv, absolute path). Windows: ``wmic`` list output of Win32_Printer and
Win32_PrintJob (Get-PrintJob needs Windows 8+; tills run 7). Both parsers are pure.
"""

from __future__ import annotations

import calendar
import os
import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from posassist.agent.errors import CollectorError, CollectorTimeout

if TYPE_CHECKING:
    from posassist.agent.diagnostics import DiagContext

__all__ = [
    "LPSTAT_PATHS",
    "collect",
    "parse_lpstat_jobs",
    "parse_lpstat_printers",
    "parse_lpstat_time",
    "parse_wmic_list",
    "parse_wmic_time",
    "run_tool",
    "spool_files",
    "unparsed",
    "windows_queue",
]

LPSTAT_PATHS = ("/usr/bin/lpstat", "/usr/local/bin/lpstat", "/bin/lpstat")

_PRINTER_LINE = re.compile(
    r"^printer (?P<name>\S+) (?:(?:is|now) (?P<state>idle|printing \S+|processing)|"
    r"(?P<disabled>disabled))(?:\.|\s|$)(?P<rest>.*)$"
)
_JOB_LINE = re.compile(r"^(?P<id>\S+-\d+)\s+(?P<user>\S+)\s+(?P<size>\d+)\s+(?P<when>.+?)\s*$")


def parse_lpstat_printers(text: str) -> List[Dict[str, Any]]:
    """Parse ``lpstat -p`` (``LC_ALL=C``): each printer's state and the reason lines under it.

    Args:
        text: the command's standard output.

    Returns:
        ``{"name", "state" (idle/printing/disabled), "enabled", "reasons"}`` per printer.
    """
    printers: List[Dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _PRINTER_LINE.match(line)
        if match:
            state = "disabled" if match.group("disabled") else match.group("state").split()[0]
            if state == "processing":
                state = "printing"
            printers.append(
                {
                    "name": match.group("name"),
                    "state": state,
                    "enabled": state != "disabled",
                    "reasons": [],
                }
            )
        elif line[:1].isspace() and printers:
            reason = line.strip()
            if reason and not reason.startswith(("Description:", "Alerts:", "Location:")):
                printers[-1]["reasons"].append(reason[:300])
    return printers


#: ``lpstat -o`` dates: CUPS's ``%c`` under LC_ALL=C, and the en_US form some builds print.
_LPSTAT_FORMATS = ("%a %b %d %H:%M:%S %Y", "%a %d %b %Y %I:%M:%S %p", "%a %d %b %Y %H:%M:%S")
_WMIC_TIME = re.compile(r"^(\d{14})(?:\.(\d{1,6}))?([+-]\d{1,4})?$")


def parse_lpstat_time(text: str) -> Optional[float]:
    """Epoch seconds of an ``lpstat -o`` date (the till's local time; a zone name is ignored)."""
    words = text.split()
    for candidate in (" ".join(words), " ".join(words[:-1])):  # with or without "CST"
        for fmt in _LPSTAT_FORMATS:
            try:
                return time.mktime(time.strptime(candidate, fmt))
            except (ValueError, OverflowError):
                continue
    return None


def parse_wmic_time(text: str) -> Optional[float]:
    """Epoch seconds of a WMI CIM_DATETIME (``20261125115802.123000+480``, offset in minutes)."""
    match = _WMIC_TIME.match(text.strip())
    if not match:
        return None
    try:
        moment = time.strptime(match.group(1), "%Y%m%d%H%M%S")
    except ValueError:
        return None
    fraction = float("0." + match.group(2)) if match.group(2) else 0.0
    offset_min = int(match.group(3) or 0)
    return calendar.timegm(moment) + fraction - offset_min * 60


def parse_lpstat_jobs(text: str) -> List[Dict[str, Any]]:
    """Parse ``lpstat -o`` lines ``queue-123  user  1024  <date>`` into jobs.

    Returns:
        ``{"id", "queue", "user", "size", "submitted"}`` per job (submitted as printed).
    """
    jobs = []
    for line in text.splitlines():
        match = _JOB_LINE.match(line.strip())
        if match:
            job_id = match.group("id")
            jobs.append(
                {
                    "id": job_id,
                    "queue": job_id.rsplit("-", 1)[0],
                    "user": match.group("user"),
                    "size": int(match.group("size")),
                    "submitted": match.group("when"),
                    "submitted_at": parse_lpstat_time(match.group("when")),
                }
            )
    return jobs


def parse_wmic_list(text: str) -> List[Dict[str, str]]:
    """Parse ``wmic … get A,B /format:list``: ``Key=Value`` lines, records split by blank lines.

    wmic writes UTF-16 with CR CR LF line ends; pass the decoded text, stray CRs are ignored.
    """
    records: List[Dict[str, str]] = []
    current: Dict[str, str] = {}
    for raw in text.replace("\r", "").split("\n"):
        line = raw.strip()
        if not line:
            if current:
                records.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key.strip()] = value.strip()
    if current:
        records.append(current)
    return records


# Win32_PrinterStatus / Win32_PrintJob.StatusMask words that mean "stuck" (Microsoft docs ⚠)
_JOB_TROUBLE = ("error", "offline", "paperout", "blocked", "user intervention", "deleting")


def windows_queue(printers_text: str, jobs_text: str) -> Dict[str, Any]:
    """Combine wmic printer and job listings into the same shape as the CUPS report."""
    printers = []
    for rec in parse_wmic_list(printers_text):
        offline = rec.get("WorkOffline", "").upper() == "TRUE"
        printers.append(
            {
                "name": rec.get("Name", ""),
                "state": "offline" if offline else (rec.get("PrinterStatus") or "unknown"),
                "enabled": not offline,
                "default": rec.get("Default", "").upper() == "TRUE",
                "reasons": [],
            }
        )
    jobs = []
    for rec in parse_wmic_list(jobs_text):
        name = rec.get("Name", "")  # "PrinterName, 12"
        queue, _, _ = name.rpartition(",")
        status = rec.get("Status", "") or rec.get("JobStatus", "")
        jobs.append(
            {
                "id": rec.get("JobId", ""),
                "queue": queue.strip() or name,
                "document": rec.get("Document", ""),
                "status": status,
                "submitted": rec.get("TimeSubmitted", ""),
                "submitted_at": parse_wmic_time(rec.get("TimeSubmitted", "")),
                "stuck": any(word in status.lower() for word in _JOB_TROUBLE),
            }
        )
    out: Dict[str, Any] = {"system": "windows-spooler", "printers": printers, "jobs": jobs}
    unreadable = unparsed(
        {"wmic printer": (printers_text, printers), "wmic printjob": (jobs_text, jobs)}
    )
    if unreadable:
        out["unreadable"] = unreadable
    return out


def run_tool(argv: Sequence[str], timeout: float, env: Optional[Dict[str, str]] = None) -> str:
    """Run a read-only tool by absolute path (no shell) and return its stdout.

    Raises:
        CollectorTimeout: it ran longer than ``timeout`` (it is killed).
        CollectorError: it could not start or exited non-zero.
    """
    if not os.path.isabs(argv[0]):
        raise CollectorError(f"{argv[0]}: tools are run by absolute path only")
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            timeout=timeout,
            check=False,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise CollectorTimeout(f"{os.path.basename(argv[0])} timed out after {timeout} s") from None
    except OSError as exc:
        raise CollectorError(f"{argv[0]}: {exc.strerror or exc}") from None
    if done.returncode != 0 and not done.stdout:
        err = done.stderr.decode("utf-8", "replace").strip()[:300]
        raise CollectorError(f"{os.path.basename(argv[0])} exited {done.returncode}: {err}")
    return done.stdout.decode("utf-8", "replace")


def cups_queue(lpstat: str, timeout: float = 3.0) -> Dict[str, Any]:
    """Printers and jobs from CUPS, through ``lpstat -p`` and ``lpstat -o``."""
    env = dict(os.environ, LC_ALL="C", LANG="C")  # the parser reads the English messages
    try:
        scheduler = run_tool([lpstat, "-r"], timeout, env)
    except CollectorError:  # lpstat -r exits 1 when the scheduler is down, saying so
        scheduler = "scheduler is not running"
    if "not running" in scheduler:  # §5 #1: nothing prints; -p and -o would only fail
        return {"system": "cups", "scheduler_running": False, "printers": [], "jobs": []}
    printers_text = run_tool([lpstat, "-p"], timeout, env)
    jobs_text = run_tool([lpstat, "-o"], timeout, env)
    printers = parse_lpstat_printers(printers_text)
    jobs = parse_lpstat_jobs(jobs_text)
    out: Dict[str, Any] = {
        "system": "cups",
        "scheduler_running": True,
        "printers": printers,
        "jobs": jobs,
    }
    unreadable = unparsed({"lpstat -p": (printers_text, printers), "lpstat -o": (jobs_text, jobs)})
    if unreadable:
        out["unreadable"] = unreadable
    return out


def unparsed(outputs: Dict[str, Any]) -> List[Dict[str, str]]:
    """Tool outputs that had text but gave nothing parseable: garbage is "unreadable", not "ok"."""
    return [
        {"source": source, "sample": text.strip()[:200]}
        for source, (text, parsed) in outputs.items()
        if text.strip() and not parsed and not any(m in text for m in _NOTHING)
    ]


#: What the tools say when there is simply nothing to list.
_NOTHING = ("No Instance(s) Available", "No destinations added")


def spool_files(entries: Sequence[Tuple[str, float, int]], now: float) -> List[Dict[str, Any]]:
    """The ``.SPL``/``.SHD`` files in the spool folder, oldest first, with their age (§5 #1).

    Args:
        entries: ``(name, mtime, size)`` of the folder's files.
        now: the current time.
    """
    rows: List[Dict[str, Any]] = [
        {"name": name, "age_s": round(now - mtime, 1), "size": size}
        for name, mtime, size in entries
        if name.upper().endswith((".SPL", ".SHD"))
    ]
    rows.sort(key=lambda r: -r["age_s"])
    return rows[:50]


def _spool_folder() -> List[Dict[str, Any]]:  # pragma: no cover - Windows only
    """The spool folder's files: DefaultSpoolDirectory from the registry, else the default."""
    import importlib

    winreg: Any = importlib.import_module("winreg")

    folder = os.path.join(
        os.environ.get("SystemRoot", r"C:\Windows"), "System32", "spool", "PRINTERS"
    )
    try:
        key = winreg.OpenKey(
            winreg.HKEY_LOCAL_MACHINE, r"SYSTEM\CurrentControlSet\Control\Print\Printers"
        )
        with key:
            folder = str(winreg.QueryValueEx(key, "DefaultSpoolDirectory")[0]) or folder
    except OSError:
        pass
    entries = []
    try:
        for entry in os.scandir(folder):
            st = entry.stat(follow_symlinks=False)
            entries.append((entry.name, st.st_mtime, st.st_size))
    except OSError:
        return []
    return spool_files(entries, time.time())


def _spooler_state() -> str:  # pragma: no cover - Windows only
    """The Print Spooler service's state (psutil), e.g. ``running`` or ``stopped`` (§5 #1)."""
    import psutil  # type: ignore[import-untyped]

    try:
        return str(psutil.win_service_get("Spooler").status())
    except (psutil.Error, OSError) as exc:
        return "unknown: " + type(exc).__name__


def collect(ctx: Optional[DiagContext] = None, lpstat: Optional[str] = None) -> Dict[str, Any]:
    """The print queue of this till, or a typed failure when there is no spooler to ask."""
    if sys.platform == "win32":  # pragma: no cover - Windows only
        root = os.environ.get("SystemRoot", r"C:\Windows")
        wmic = os.path.join(root, "System32", "wbem", "WMIC.exe")
        printers = run_tool(
            [wmic, "printer", "get", "Name,WorkOffline,PrinterStatus,Default", "/format:list"], 4.0
        )
        jobs = run_tool(
            [wmic, "printjob", "get", "Document,JobId,Name,Status,TimeSubmitted", "/format:list"],
            4.0,
        )
        queue = windows_queue(printers, jobs)
        queue["spooler"] = _spooler_state()
        queue["spool_files"] = _spool_folder()
        return queue
    tool = lpstat or next((p for p in LPSTAT_PATHS if os.path.exists(p)), None)
    if tool is None:  # no spooler: normal where the printers are reached directly (TCP, serial)
        return {"system": "none", "printers": [], "jobs": []}
    return cups_queue(tool)
