"""The health checks' rules: each a pure ``evaluate(samples, policy, now) -> Verdict``.

``samples`` are ``(time, data)`` pairs, oldest first, newest last, as the samplers took them
(agent/checks/samplers.py); a rule that needs a trend (sustained CPU, restarts, memory growth)
reads several. Words and codes come from the findings (agent/findings.py, docs/findings.md), so
an alert says what a diagnostics report says. Python 3.8; no I/O, no clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from posassist.agent.findings import Finding, finding
from posassist.agent.findings import evaluate as findings_of
from posassist.client.advice import Severity
from posassist.client.units import ago, mb, span

from .state import RANK, Verdict

if TYPE_CHECKING:
    from posassist.protocol.health_policy import CheckPolicy

__all__ = ["RULES", "Sample", "evaluate"]

Sample = Tuple[float, Dict[str, Any]]
UNKNOWN = Verdict("unknown")
PASS = Verdict("pass")
_SEVERITY = {
    Severity.INFO: "info",
    Severity.WARNING: "warning",
    Severity.FAULT: "critical",
    Severity.CRITICAL: "critical",
}


def _verdict(found: Sequence[Finding], policy: CheckPolicy) -> Verdict:
    """Fail with the worst finding's words, or pass when there is none."""
    if not found:
        return PASS
    found = sorted(found, key=lambda f: -f.severity.rank)
    worst = found[0]
    severity = policy.severity or max((_SEVERITY[f.severity] for f in found), key=RANK.__getitem__)
    words = f"{worst.detail['zh']} / {worst.detail['en']}"
    if len(found) > 1:
        words += f" (+{len(found) - 1})"
    codes = tuple(dict.fromkeys(f.code for f in found))
    evidence = {
        "findings": [
            {"code": f.code, "subject": f.subject, "detail": f.detail, "evidence": f.evidence}
            for f in found[:5]
        ]
    }
    return Verdict("fail", severity, codes, words[:1024], evidence)


def _section_findings(name: str, data: Dict[str, Any], now: float) -> List[Finding]:
    return findings_of({"sections": {name: {"ok": True, "data": data}}}, None, now)


def _latest(samples: Sequence[Sample]) -> Optional[Dict[str, Any]]:
    return samples[-1][1] if samples else None


# --- printer ------------------------------------------------------------------------------------

#: What the till-safety rules made us skip: nothing can be said, nothing changes.
_PRINTER_UNKNOWN = {"printer.skipped_sale_open", "printer.port_held", "printer.port_renumbered"}


def printer(samples: Sequence[Sample], policy: CheckPolicy, now: float) -> Verdict:
    """Paper near end or out, cover open, offline, an error, unreachable (docs/findings.md)."""
    data = _latest(samples)
    if not data or not data.get("printers"):
        return UNKNOWN  # no printer configured, or not sampled yet
    found = _section_findings("printers", data, now)
    failing = [f for f in found if f.code.startswith("printer.") and f.code not in _PRINTER_UNKNOWN]
    if failing:
        return _verdict(failing, policy)
    if any(f.code in ("printer.skipped_sale_open", "printer.port_held") for f in found):
        return UNKNOWN  # never probed during a sale nor on a port the POS holds
    return PASS


# --- POS process and service --------------------------------------------------------------------


def _restarts(samples: Sequence[Sample], now: float) -> int:
    """Times the POS came back (a new process) within the last hour of samples."""
    count = 0
    previous: Optional[Set[Tuple[Any, Any]]] = None
    for t, data in samples:
        if now - t > 3600:
            continue
        current = {(p.get("pid"), p.get("started")) for p in data.get("processes") or []}
        if previous is not None and current and not current <= previous:
            count += 1
        previous = current
    return count


def pos_process(samples: Sequence[Sample], policy: CheckPolicy, now: float) -> Verdict:
    """The POS process runs, its services run, and it has not restarted too often."""
    data = _latest(samples)
    if not data or not data.get("configured"):
        return UNKNOWN
    found: List[Finding] = []
    names = ", ".join(data.get("names") or ()) or "?"
    if not data.get("running"):
        found.append(finding("pos.not_running", "pos", "", {"running": False}, names=names))
    for name, state in sorted((data.get("services") or {}).items()):
        if state not in ("running", "active"):
            ev = {"state": state}
            found.append(finding("pos.service_stopped", "pos", name, ev, name=name, state=state))
    restarts = _restarts(samples, now)
    if restarts >= policy.threshold("restarts_per_hour"):
        ev = {"restarts": restarts}
        found.append(finding("pos.restarting", "pos", "", ev, names=names, count=restarts))
    return _verdict(found, policy)


# --- disk on the POS data volume ----------------------------------------------------------------


def disk(samples: Sequence[Sample], policy: CheckPolicy, now: float) -> Verdict:
    """Free space on the POS data volume: fail under either threshold, pass only above it by
    ``clear_margin_pct`` (between the two, ``hold``: a value wobbling at the line is one alert)."""
    data = _latest(samples)
    volumes = (data or {}).get("volumes") or []
    if not volumes:
        return UNKNOWN
    free_pct, free_mb = policy.threshold("free_pct"), policy.threshold("free_mb")
    margin = policy.threshold("clear_margin_pct")
    found: List[Finding] = []
    hold = False
    for v in volumes:
        path, total, free = str(v.get("path")), v.get("total") or 0, v.get("free")
        if not isinstance(free, (int, float)) or not total:
            found.append(
                finding("pos.data_path_unreadable", "pos", path, {}, path=path, why=v.get("error"))
            )
            continue
        pct = 100.0 * free / total
        ev = {"path": path, "free": free, "total": total, "free_pct": round(pct, 1)}
        if pct < free_pct or free < free_mb * 1024**2:
            full = pct < free_pct / 4
            code = "disk.full" if full else ("pos.data_disk_low" if v.get("pos") else "disk.low")
            words: Dict[str, Any] = {
                "mount": path,
                "path": path,
                "free": mb(free),
                "percent": f"{100 - pct:.0f}",
            }
            found.append(finding(code, "system", path, ev, **words))
        elif pct < free_pct + margin or free < free_mb * 1024**2 * (1 + margin / 100):
            hold = True
    if not found and hold:
        return Verdict("hold")
    return _verdict(found, policy)


# --- memory -------------------------------------------------------------------------------------


def memory(samples: Sequence[Sample], policy: CheckPolicy, now: float) -> Verdict:
    """Available memory, and a POS process growing steadily faster than the threshold."""
    data = _latest(samples)
    if not data:
        return UNKNOWN
    found: List[Finding] = []
    avail, total = data.get("available"), data.get("total")
    if isinstance(avail, (int, float)) and avail < policy.threshold("available_mb") * 1024**2:
        ev = {"available": avail, "total": total}
        found.append(finding("memory.low", "system", "", ev, available=mb(avail), total=mb(total)))
    history: Dict[Tuple[Any, Any], List[Tuple[float, float]]] = {}
    for t, sample in samples:
        for p in sample.get("pos") or []:
            if isinstance(p.get("rss"), (int, float)):
                history.setdefault((p.get("pid"), p.get("started")), []).append((t, p["rss"]))
    limit = policy.threshold("pos_growth_mb_per_hour") * 1024**2
    for (pid, _), points in history.items():
        if len(points) < 4 or points[-1][0] - points[0][0] < 300:
            continue  # too few samples, or too short a span, to call it a trend
        rss = [r for _, r in points]
        rising = sum(1 for a, b in zip(rss, rss[1:]) if b >= a)
        seconds = points[-1][0] - points[0][0]
        rate = (rss[-1] - rss[0]) * 3600.0 / seconds
        if rising >= 0.75 * (len(rss) - 1) and rate >= limit:
            name = next(
                (p.get("name") for p in data.get("pos") or [] if p.get("pid") == pid), "POS"
            )
            ev = {"pid": pid, "rss_history": [[round(t, 1), r] for t, r in points[-12:]]}
            words: Dict[str, Any] = {
                "first": mb(rss[0]),
                "last": mb(rss[-1]),
                "span": span(seconds),
            }
            found.append(
                finding("pos.memory_growing", "pos", str(pid), ev, name=name, pid=pid, **words)
            )
    return _verdict(found, policy)


# --- CPU ----------------------------------------------------------------------------------------


def cpu(samples: Sequence[Sample], policy: CheckPolicy, now: float) -> Verdict:
    """CPU at or above ``percent`` in every sample of the last ``sustained_s`` seconds, and the
    samples reach back that far (one busy moment is not an alert)."""
    sustained, limit = policy.threshold("sustained_s"), policy.threshold("percent")
    recent = [(t, d) for t, d in samples if now - t <= sustained]
    values = [d.get("percent") for _, d in recent]
    if not recent or not all(isinstance(v, (int, float)) for v in values):
        return UNKNOWN
    covered = now - recent[0][0] >= sustained - policy.interval
    if covered and all(v >= limit for v in values):  # type: ignore[operator]
        top = recent[-1][1].get("top") or "?"
        ev = {"percent": values[-5:], "top": top}
        words: Dict[str, Any] = {
            "percent": f"{limit:.0f}",
            "span": span(now - recent[0][0]),
            "top": top,
        }
        return _verdict([finding("system.cpu_sustained", "system", "", ev, **words)], policy)
    if values[-1] >= limit:  # type: ignore[operator]
        return Verdict("hold")  # busy, not yet for long enough
    return PASS


# --- clock --------------------------------------------------------------------------------------


def clock(samples: Sequence[Sample], policy: CheckPolicy, now: float) -> Verdict:
    """The till's clock against the relay's (heartbeat round trips, docs/protocol.md#liveness)."""
    data = _latest(samples)
    offset = (data or {}).get("offset_s")
    if not isinstance(offset, (int, float)):
        return UNKNOWN
    if abs(offset) <= policy.threshold("drift_s"):
        return PASS
    direction = "behind" if offset > 0 else "ahead"
    ev = {"offset_s": offset, "rtt_s": (data or {}).get("rtt_s")}
    found = finding("clock.offset", "network", "", ev, offset=f"{span(offset)} ({direction})")
    return _verdict([found], policy)


# --- relay reachability -------------------------------------------------------------------------


def relay(samples: Sequence[Sample], policy: CheckPolicy, now: float) -> Verdict:
    """Not connected to the relay for ``unreachable_s``: raised while offline, delivered (with
    its own time) once the relay is back, then resolved."""
    data = _latest(samples)
    if not data:
        return UNKNOWN
    if data.get("connected"):
        return PASS
    since = data.get("since")
    if not isinstance(since, (int, float)) or now - since < policy.threshold("unreachable_s"):
        return Verdict("hold")
    ev = {"since": since, "error": data.get("error")}
    words: Dict[str, Any] = {
        "host": data.get("host"),
        "port": data.get("port"),
        "why": data.get("error"),
    }
    found = finding("network.relay_unreachable", "network", str(data.get("host")), ev, **words)
    return _verdict([found], policy)


# --- TLS certificate expiry ---------------------------------------------------------------------


def tls_cert(samples: Sequence[Sample], policy: CheckPolicy, now: float) -> Verdict:
    """The relay's (and the payment gateways') certificates expire in more than
    ``expiry_days``."""
    data = _latest(samples)
    certs = (data or {}).get("certificates") or []
    if not certs:
        return UNKNOWN
    found: List[Finding] = []
    days = policy.threshold("expiry_days")
    for cert in certs:
        host, after = str(cert.get("host")), cert.get("not_after")
        if not isinstance(after, (int, float)):
            continue
        left = (after - now) / 86400.0
        if left < days:
            prefix = "gateway.tls_" if cert.get("kind") == "gateway" else "tls."
            code = prefix + ("expired" if left <= 0 else "expiring")
            when = ago(after, now)
            ev = {"host": host, "not_after": after, "days_left": round(left, 1)}
            found.append(finding(code, "network", host, ev, host=host, when=when))
    return _verdict(found, policy)


# --- POS log patterns ---------------------------------------------------------------------------

_DB_CODES = ("pos.database_locked", "pos.database_corrupt")


def _new_lines(samples: Sequence[Sample]) -> Dict[str, List[str]]:
    """Per log, the matching lines of the newest sample that the one before did not show."""
    if not samples:
        return {}
    before: Dict[str, Set[str]] = {}
    if len(samples) > 1:
        for log in samples[-2][1].get("logs") or []:
            before[str(log.get("path"))] = set(log.get("recent_errors") or [])
    out = {}
    for log in samples[-1][1].get("logs") or []:
        path = str(log.get("path"))
        out[path] = [
            line for line in log.get("recent_errors") or [] if line not in before.get(path, ())
        ]
    return out


def pos_log(samples: Sequence[Sample], policy: CheckPolicy, now: float) -> Verdict:
    """At least ``matches`` new lines matching the POS profile's error patterns since the last
    sample (database locked or corrupt lines belong to the ``database`` check)."""
    data = _latest(samples)
    if not data or not data.get("configured"):
        return UNKNOWN
    fresh = _new_lines(samples)
    logs = []
    for log in data.get("logs") or []:
        if log.get("ok"):
            new = fresh.get(str(log.get("path"))) or []
            logs.append(dict(log, recent_errors=new, error_count=len(new)))
        else:
            logs.append(log)
    found = [
        f
        for f in _section_findings("pos", {"logs": logs, "running": True}, now)
        if f.code in ("pos.log_errors", "pos.log_unreadable")
    ]
    errors = [f for f in found if f.code == "pos.log_errors"]
    count = sum(int(f.evidence.get("count", 0) or 0) for f in errors) or sum(
        len(v) for v in fresh.values()
    )
    if errors and count < policy.threshold("matches"):
        found = [f for f in found if f.code != "pos.log_errors"]
    return _verdict(found, policy)


# --- the POS database ---------------------------------------------------------------------------


def database(samples: Sequence[Sample], policy: CheckPolicy, now: float) -> Verdict:
    """The POS database's service and processes are up, its file is readable and held by one
    process, and its log shows no new "database is locked" or corruption."""
    data = _latest(samples)
    if not data or not data.get("configured") or not data.get("database"):
        return UNKNOWN
    pos = {"database": data["database"], "running": True}
    found = [
        f
        for f in _section_findings("pos", pos, now)
        if f.code in ("pos.database_down", "pos.database_held", "pos.database_unreadable")
    ]
    fresh = _new_lines(samples)
    logs = [{"path": p, "ok": True, "recent_errors": lines} for p, lines in fresh.items() if lines]
    found += [
        f
        for f in _section_findings("pos", {"logs": logs, "running": True}, now)
        if f.code in _DB_CODES
    ]
    return _verdict(found, policy)


# --- print queue --------------------------------------------------------------------------------


def print_queue(samples: Sequence[Sample], policy: CheckPolicy, now: float) -> Verdict:
    """The spooler runs, no queue is paused, disabled or offline, and no job waits longer than
    ``stuck_s`` nor more than ``max_jobs`` jobs in one queue."""
    data = _latest(samples)
    if not data:
        return UNKNOWN
    found = [
        f
        for f in _section_findings("print_queue", dict(data, jobs=[]), now)
        if f.code.startswith("queue.") and f.severity is not Severity.INFO  # notes don't page
    ]
    by_queue: Dict[str, List[Dict[str, Any]]] = {}
    for job in data.get("jobs") or []:
        by_queue.setdefault(str(job.get("queue") or "?"), []).append(job)
    for queue, jobs in by_queue.items():
        times = [j["submitted_at"] for j in jobs if isinstance(j.get("submitted_at"), (int, float))]
        oldest = min(times) if times else None
        old = oldest is not None and now - oldest >= policy.threshold("stuck_s")
        if old or len(jobs) >= policy.threshold("max_jobs") or any(j.get("stuck") for j in jobs):
            ev = {
                "queue": queue,
                "jobs": [str(j.get("id")) for j in jobs][:20],
                "oldest_age_s": None if oldest is None else round(now - oldest, 1),
            }
            age = span(now - oldest) if oldest is not None else "(time unknown)"
            found.append(
                finding("queue.jobs_stuck", "print_queue", queue, ev, count=len(jobs), age=age)
            )
    return _verdict(found, policy)


Rule = Callable[[Sequence[Sample], "CheckPolicy", float], Verdict]
#: The rule of every check in protocol/health_policy.py CHECKS.
RULES: Mapping[str, Rule] = {
    "printer": printer,
    "pos_process": pos_process,
    "disk": disk,
    "memory": memory,
    "cpu": cpu,
    "clock": clock,
    "relay": relay,
    "tls_cert": tls_cert,
    "pos_log": pos_log,
    "database": database,
    "print_queue": print_queue,
}


def evaluate(name: str, samples: Sequence[Sample], policy: CheckPolicy, now: float) -> Verdict:
    """Run check ``name``'s rule; garbage in a sample is ``unknown``, never an exception."""
    try:
        return RULES[name](samples, policy, now)
    except (TypeError, KeyError, AttributeError, ValueError):
        return UNKNOWN
