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
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

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
    return {"system": "windows-spooler", "printers": printers, "jobs": jobs}


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
    printers = parse_lpstat_printers(run_tool([lpstat, "-p"], timeout, env))
    jobs = parse_lpstat_jobs(run_tool([lpstat, "-o"], timeout, env))
    return {"system": "cups", "printers": printers, "jobs": jobs}


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
        return windows_queue(printers, jobs)
    tool = lpstat or next((p for p in LPSTAT_PATHS if os.path.exists(p)), None)
    if tool is None:
        raise CollectorError("CUPS is not installed (no lpstat)")
    return cups_queue(tool)
