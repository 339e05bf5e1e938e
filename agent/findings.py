"""Findings: turn a diagnostics report's readings into coded findings that say what is wrong and
what to do (docs/findings.md). Pure: no I/O, no clock; ``now`` is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from posassist.client.advice import ADVICE, THIS_PLATFORM, Advice, Severity, script_for
from posassist.client.units import ago, mb, span

if TYPE_CHECKING:
    from posassist.agent.profile import PosProfile

__all__ = [
    "ADVICE",
    "SCHEMA",
    "Advice",
    "Finding",
    "Severity",
    "annotate",
    "evaluate",
    "finding",
    "same_zone",
    "section_status",
]

#: The ``schema`` value of an annotated report (docs/findings.md#json); bump on any breaking change.
SCHEMA = "posassist.diag/1"


@dataclass(frozen=True)
class Finding:
    """One coded finding: what is wrong, the evidence, and what to do (docs/findings.md)."""

    code: str
    severity: Severity
    section: str
    subject: str
    detail: Dict[str, str]
    evidence: Dict[str, Any] = field(default_factory=dict)

    @property
    def advice(self) -> Advice:
        return ADVICE[self.code]

    def to_dict(self, platform: str = THIS_PLATFORM) -> Dict[str, Any]:
        """The finding as JSON-ready data (docs/findings.md#json); keys are stable. ``script`` is
        the one that runs on ``platform`` (the till's), or None when the catalog has none."""
        a = self.advice
        script = script_for(a, platform)
        return {
            "code": self.code,
            "severity": self.severity.value,
            "section": self.section,
            "subject": self.subject,
            "title": {"zh": a.title_zh, "en": a.title_en},
            "detail": dict(self.detail),
            "cashier": {"zh": a.cashier_zh, "en": a.cashier_en},
            "technician": {"zh": a.tech_zh, "en": a.tech_en},
            "script": {"id": script[0], "risk": script[1]} if script else None,
            "ref": a.ref,
            "evidence": dict(self.evidence),
        }


class _Safe(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return "?"


_CJK = re.compile("[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")


def _clip(value: Any, limit: int = 160) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _half(text: str, which: int) -> str:
    """A reading's own bilingual words ("未安装 CUPS / CUPS is not installed") split so each
    language's sentence gets its half; anything else as it is."""
    zh, sep, en = text.partition(" / ")
    if sep and _CJK.search(zh) and not _CJK.search(en):
        return (zh, en)[which].strip()
    return text


def _finding(
    code: str,
    where: str,
    subject: str = "",
    evidence: Optional[Dict[str, Any]] = None,
    severity: Optional[Severity] = None,
    **words: Any,
) -> Finding:
    a = ADVICE[code]
    clipped = {k: _clip(v) for k, v in words.items()}
    zh = _Safe({k: _half(v, 0) for k, v in clipped.items()})
    en = _Safe({k: _half(v, 1) for k, v in clipped.items()})
    detail = {"zh": a.detail_zh.format_map(zh), "en": a.detail_en.format_map(en)}
    return Finding(code, severity or a.severity, where, subject, detail, dict(evidence or {}))


def finding(
    code: str,
    where: str,
    subject: str = "",
    evidence: Optional[Dict[str, Any]] = None,
    severity: Optional[Severity] = None,
    **words: Any,
) -> Finding:
    """One finding of ``code`` with its detail words filled in: what the health checks
    (agent/checks/rules.py) build their alerts from, so an alert says what the report says."""
    return _finding(code, where, subject, evidence, severity, **words)


# --- human units for detail text ----------------------------------------------------------------


# --- thresholds (reference §5) ------------------------------------------------------------------

DISK_WARN_PERCENT = 90.0
DISK_WARN_FREE = 2 * 1024**3
DISK_CRIT_PERCENT = 98.0
MEMORY_WARN_FRACTION = 0.10
CLOCK_WARN_S = 60.0
CLOCK_FAULT_S = 3600.0
TLS_WARN_DAYS = 14.0
JOB_STUCK_S = 300.0
#: before 2020-01-01 the till's clock is wrong, not the world (a reset CMOS clock, §5.3 #19)
PLAUSIBLE_SINCE = 1577836800.0
_LOCKED = re.compile(r"SQLITE_BUSY|database is locked", re.IGNORECASE)
_CORRUPT = re.compile(r"SQLITE_CORRUPT|database disk image is malformed", re.IGNORECASE)


def _num(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _dicts(value: Any) -> Iterator[Dict[str, Any]]:
    """The dict rows of a list; anything else in it is garbage and raises (→ unreadable)."""
    if value is None:
        return
    if not isinstance(value, list):
        raise TypeError("expected a list")
    for row in value:
        if not isinstance(row, dict):
            raise TypeError("expected a map in the list")
        yield row


# --- one evaluator per section ------------------------------------------------------------------

_PRINTER_FLAGS = (
    "unrecoverable_error",
    "cover_open",
    "paper_out",
    "cutter_error",
    "recoverable_error",
    "auto_recoverable_error",
    "waiting_online_recovery",
    "paper_near_end",
)
_UNREACHABLE = ("no_reply", "unplugged", "not_found", "timeout")


def _printers(data: Dict[str, Any], now: float) -> List[Finding]:
    out: List[Finding] = []
    if data.get("printers") == [] and data.get("note"):  # nothing configured: nothing checked
        out.append(_finding("printer.not_configured", "printers", "", {}))
    for p in _dicts(data.get("printers")):
        name = str(p.get("name") or p.get("target") or "?")
        target = str(p.get("target") or "")
        outcome = p.get("outcome")
        ev: Dict[str, Any] = {"target": target, "outcome": outcome}
        if p.get("replies"):
            ev["replies"] = p["replies"]  # the status bytes, hex, by DLE EOT n
        if p.get("cached"):
            ev["age_s"] = p.get("age_s")
        sec = "printers"
        if outcome == "skipped":
            out.append(
                _finding(
                    "printer.skipped_sale_open", sec, name, ev, name=name, why=p.get("detail", "")
                )
            )
        elif outcome in ("no_reply", "timeout") and isinstance(p.get("resolved"), dict):
            resolved = p["resolved"]  # enumerated by its USB identity, yet silent (§5 #14)
            ev["resolved"] = resolved
            out.append(
                _finding(
                    "printer.usb_wedged",
                    sec,
                    name,
                    ev,
                    name=name,
                    device=resolved.get("device"),
                    usb=resolved.get("usb_id"),
                )
            )
        elif outcome in _UNREACHABLE:
            why = p.get("detail") or outcome
            out.append(
                _finding("printer.unreachable", sec, name, ev, name=name, target=target, why=why)
            )
        elif outcome == "held":
            holders = ", ".join(
                f"{h.get('name')}({h.get('pid')})" for h in _dicts(p.get("held_by"))
            )
            ev["held_by"] = p.get("held_by")
            out.append(
                _finding("printer.port_held", sec, name, ev, name=name, holders=holders or "?")
            )
        elif outcome == "ambiguous":
            out.append(
                _finding("printer.usb_ambiguous", sec, name, ev, name=name, why=p.get("detail"))
            )
        elif outcome == "permission_denied":
            out.append(_finding("printer.permission_denied", sec, name, ev, name=name))
        elif outcome in ("ok", "partial"):
            status = p.get("status") or {}
            if not isinstance(status, dict):
                raise TypeError("printer status is not a map")
            problems = p.get("problems") or []
            flags = [f for f in _PRINTER_FLAGS if status.get(f) or f in problems]
            if "paper_out" in flags and "paper_near_end" in flags:
                # out of paper supersedes near end: the cashier is told one thing (readme-walk F24)
                flags.remove("paper_near_end")
            for flag in flags:
                code = (
                    "printer.waiting_recovery"
                    if flag == "waiting_online_recovery"
                    else ("printer." + flag)
                )
                out.append(_finding(code, sec, name, ev, name=name))
            offline = status.get("online") is False or "offline" in problems
            if offline and not flags:
                out.append(_finding("printer.offline", sec, name, ev, name=name))
            if outcome == "partial":
                out.append(
                    _finding(
                        "printer.unreadable",
                        sec,
                        name,
                        ev,
                        name=name,
                        why="some status requests got no valid reply",
                    )
                )
        else:  # garbage, error, or an outcome this agent does not know
            out.append(
                _finding(
                    "printer.unreadable", sec, name, ev, name=name, why=p.get("detail") or outcome
                )
            )
        if p.get("renumbered"):
            resolved = p.get("resolved") or {}
            ev = dict(ev, configured=p.get("configured"), resolved=resolved)
            usb = f"{resolved.get('usb_id')}" + (
                f":{resolved['serial_number']}" if resolved.get("serial_number") else ""
            )
            out.append(
                _finding(
                    "printer.port_renumbered",
                    sec,
                    name,
                    ev,
                    name=name,
                    usb=usb,
                    new=resolved.get("device"),
                    old=p.get("configured"),
                )
            )
    return out


USB_DISCONNECTS = 3  # in 24 h, per USB port
#: Windows time zone ids of the zones our stores use, and their IANA names (CLDR windowsZones).
WINDOWS_ZONES = {
    "China Standard Time": "Asia/Shanghai",
    "Taipei Standard Time": "Asia/Taipei",
    "Singapore Standard Time": "Asia/Singapore",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul",
    "UTC": "Etc/UTC",
}
#: IANA aliases that are the same zone for a till.
_ALIASES = {
    "Asia/Chongqing": "Asia/Shanghai",
    "Asia/Harbin": "Asia/Shanghai",
    "PRC": "Asia/Shanghai",
    "UTC": "Etc/UTC",
    "Etc/UCT": "Etc/UTC",
}
#: KB3140245: 0x200 TLS 1.1, 0x800 TLS 1.2 in WinHttp\DefaultSecureProtocols.
TLS12_BIT = 0x800


def _canonical(zone: str) -> str:
    zone = WINDOWS_ZONES.get(zone, zone)
    return _ALIASES.get(zone, zone)


def same_zone(actual: str, expected: str) -> bool:
    """Whether two zone names (IANA or Windows ids) name the same zone for a till."""
    return _canonical(actual.strip()) == _canonical(expected.strip())


def _host(data: Dict[str, Any], now: float) -> List[Finding]:
    out: List[Finding] = []
    ev: Dict[str, Any]
    sec = "host"
    actual, expected = data.get("time_zone"), data.get("expected_time_zone")
    if isinstance(actual, str) and isinstance(expected, str) and expected:
        if not same_zone(actual, expected):
            ev = {"time_zone": actual, "expected": expected}
            out.append(
                _finding("host.time_zone_wrong", sec, "", ev, actual=actual, expected=expected)
            )
    for port, count in sorted((data.get("usb_disconnects") or {}).items()):
        if (_num(count) or 0) >= USB_DISCONNECTS:
            out.append(
                _finding(
                    "host.usb_disconnects", sec, str(port), {"count": count}, port=port, count=count
                )
            )
    proxy = data.get("winhttp_proxy")
    if isinstance(proxy, dict) and not proxy.get("direct") and proxy.get("server"):
        out.append(
            _finding("host.winhttp_proxy", sec, "", {"proxy": proxy}, server=proxy.get("server"))
        )
    if data.get("windows_release") == "7":
        value = data.get("winhttp_secure_protocols")
        if not isinstance(value, int) or not value & TLS12_BIT:
            shown = "(not set)" if value is None else hex(value) if isinstance(value, int) else "?"
            out.append(_finding("host.winhttp_no_tls12", sec, "", {"value": value}, value=shown))
    root = data.get("script_root")
    if isinstance(root, dict) and root.get("enrolled") is True and root.get("pinned") is False:
        out.append(_finding("host.no_trust_root", sec, "", {"script_root": root}))
    for dev in _dicts(data.get("device_problems")):
        ev = {"instance_id": dev.get("instance_id"), "problem": dev.get("problem")}
        out.append(
            _finding(
                "host.device_driver_failed",
                sec,
                str(dev.get("instance_id")),
                ev,
                name=dev.get("name"),
                problem=dev.get("problem"),
            )
        )
    return out


def _print_queue(data: Dict[str, Any], now: float) -> List[Finding]:
    out: List[Finding] = []
    ev: Dict[str, Any]
    sec = "print_queue"
    if data.get("system") == "none":
        return [_finding("queue.no_spooler", sec, "", {"system": "none"})]
    if data.get("scheduler_running") is False:
        out.append(_finding("queue.cups_stopped", sec, "", {"scheduler_running": False}))
    spooler = data.get("spooler")
    if isinstance(spooler, str) and spooler != "running":
        out.append(
            _finding("queue.spooler_stopped", sec, "Spooler", {"spooler": spooler}, state=spooler)
        )
    stale = [
        f for f in _dicts(data.get("spool_files")) if (_num(f.get("age_s")) or 0) >= JOB_STUCK_S
    ]
    if stale:
        longest = max(_num(f.get("age_s")) or 0.0 for f in stale)
        out.append(
            _finding(
                "queue.spool_files_stuck",
                sec,
                "spool",
                {"files": stale[:10]},
                count=len(stale),
                age=span(longest),
            )
        )
    for p in _dicts(data.get("printers")):
        name = str(p.get("name") or "?")
        reasons = [str(r) for r in p.get("reasons") or []]
        ev = {"state": p.get("state"), "reasons": reasons}
        if p.get("state") == "disabled":
            why = (" (" + reasons[0] + ")") if reasons else ""
            out.append(_finding("queue.disabled", sec, name, ev, name=name, why=why))
        elif p.get("state") == "offline":
            out.append(_finding("queue.offline", sec, name, ev, name=name))
    by_queue: Dict[str, List[Dict[str, Any]]] = {}
    for job in _dicts(data.get("jobs")):
        by_queue.setdefault(str(job.get("queue") or "?"), []).append(job)
    for queue, jobs in list(by_queue.items()):
        # a queue is stuck when its oldest job waits for minutes; the jobs behind it wait too
        times = [t for t in (_num(j.get("submitted_at")) for j in jobs) if t is not None]
        old = bool(times) and now - min(times) >= JOB_STUCK_S
        if not old and not any(j.get("stuck") for j in jobs):
            del by_queue[queue]
    for queue, jobs in by_queue.items():
        times = [t for t in (_num(j.get("submitted_at")) for j in jobs) if t is not None]
        oldest = min(times) if times else None
        ev = {
            "queue": queue,
            "jobs": [str(j.get("id")) for j in jobs][:20],
            "oldest_submitted_at": oldest,
            "oldest_age_s": None if oldest is None else round(now - oldest, 1),
        }
        age = ago(oldest, now) if oldest is not None else "(time unknown)"
        out.append(_finding("queue.jobs_stuck", sec, queue, ev, count=len(jobs), age=age))
    return out


def _serial(data: Dict[str, Any], now: float) -> List[Finding]:
    out: List[Finding] = []
    ev: Dict[str, Any]
    for port in _dicts(data.get("ports")):
        held = list(_dicts(port.get("held_by")))
        if len(held) > 1:  # on Linux a second open succeeds silently and steals bytes (§0.1)
            holders = ", ".join(f"{h.get('name')}({h.get('pid')})" for h in held)
            device = str(port.get("device"))
            ev = {"device": device, "usb_id": port.get("usb_id"), "held_by": held}
            out.append(
                _finding("serial.port_shared", "serial", device, ev, device=device, holders=holders)
            )
    return out + _probers(data)


_PROBERS = ("ModemManager", "brltty")


def _probers(data: Dict[str, Any]) -> List[Finding]:
    out: List[Finding] = []
    probers = data.get("probers") or {}
    seen = set()
    for tty, row in sorted((probers.get("ports") or {}).items()):
        seen.add(tty)
        who = ", ".join(str(p) for p in row.get("probers") or [])
        ev = {"tty": tty, "probers": row.get("probers"), "lines": row.get("lines")}
        out.append(
            _finding(
                "serial.prober_interference",
                "serial",
                tty,
                ev,
                tty=tty,
                probers=who,
                count=row.get("count"),
            )
        )
    for port in _dicts(data.get("ports")):
        tty = str(port.get("device") or "").rsplit("/", 1)[-1]
        held = [h for h in _dicts(port.get("held_by")) if h.get("name") in _PROBERS]
        if held and tty not in seen:
            ev = {"tty": tty, "held_by": held}
            who = ", ".join(str(h.get("name")) for h in held)
            out.append(
                _finding(
                    "serial.prober_interference",
                    "serial",
                    tty,
                    ev,
                    tty=tty,
                    probers=who,
                    count="now",
                )
            )
    return out


def _network(data: Dict[str, Any], now: float) -> List[Finding]:
    out: List[Finding] = []
    ev: Dict[str, Any]
    sec = "network"
    nics = [n for n in _dicts(data.get("interfaces")) if not n.get("loopback")]
    if nics and not any(n.get("up") for n in nics):
        ev = {"interfaces": [n.get("name") for n in nics]}
        out.append(_finding("network.link_down", sec, "", ev))
    for nic in nics:
        if nic.get("up") and nic.get("apipa"):
            addrs = [a.get("address") for a in _dicts(nic.get("addresses"))]
            apipa = next((a for a in addrs if str(a).startswith("169.254.")), "169.254.x.x")
            ev = {"interface": nic.get("name"), "addresses": addrs}
            out.append(
                _finding(
                    "network.no_dhcp",
                    sec,
                    str(nic.get("name")),
                    ev,
                    name=nic.get("name"),
                    address=apipa,
                )
            )
    relay = data.get("relay")
    if relay is not None:
        if not isinstance(relay, dict):
            raise TypeError("relay is not a map")
        host, port = relay.get("host"), relay.get("port")
        dns, tcp, tls = relay.get("dns") or {}, relay.get("tcp"), relay.get("tls")
        if dns.get("ok") is False:
            out.append(
                _finding(
                    "network.dns_failed",
                    sec,
                    str(host),
                    {"dns": dns},
                    host=host,
                    why=dns.get("error"),
                )
            )
        elif isinstance(tcp, dict) and tcp.get("ok") is False:
            out.append(
                _finding(
                    "network.relay_unreachable",
                    sec,
                    str(host),
                    {"tcp": tcp},
                    host=host,
                    port=port,
                    why=tcp.get("error"),
                )
            )
        if isinstance(tls, dict):
            out.extend(_tls(tls, str(host), now))
    for gw in _dicts(data.get("payment_gateways")):
        host = f"{gw.get('host')}:{gw.get('port')}"
        dns, tcp, tls = gw.get("dns") or {}, gw.get("tcp") or {}, gw.get("tls") or {}
        failed = next((part for part in (dns, tcp, tls) if part.get("ok") is False), None)
        if failed is not None:
            out.append(
                _finding(
                    "gateway.unreachable",
                    sec,
                    host,
                    {"gateway": gw},
                    host=host,
                    why=failed.get("error"),
                )
            )
            continue
        after = _num(tls.get("not_after"))
        if after is not None and after - now < TLS_WARN_DAYS * 86400:
            code = "gateway.tls_expired" if after <= now else "gateway.tls_expiring"
            ev = {"gateway": gw, "days_left": round((after - now) / 86400, 1)}
            out.append(_finding(code, sec, host, ev, host=host, when=ago(after, now)))
    clock = data.get("clock")
    if isinstance(clock, dict):
        offset = _num(clock.get("offset_s"))
        if offset is not None and abs(offset) > CLOCK_WARN_S:
            sev = Severity.FAULT if abs(offset) > CLOCK_FAULT_S else None
            direction = "behind" if offset > 0 else "ahead"
            out.append(
                _finding(
                    "clock.offset",
                    sec,
                    "",
                    {"clock": clock},
                    severity=sev,
                    offset=f"{span(offset)} ({direction})",
                )
            )
    return out


def _tls(tls: Dict[str, Any], host: str, now: float) -> List[Finding]:
    if tls.get("ok") is False:
        return [
            _finding(
                "tls.handshake_failed",
                "network",
                host,
                {"tls": tls},
                host=host,
                why=tls.get("error"),
            )
        ]
    after = _num(tls.get("not_after"))
    if after is None:
        return []
    ev = {"tls": tls, "days_left": round((after - now) / 86400, 1)}
    if after <= now:
        return [_finding("tls.expired", "network", host, ev, host=host, when=ago(after, now))]
    if after - now < TLS_WARN_DAYS * 86400:
        return [_finding("tls.expiring", "network", host, ev, host=host, when=ago(after, now))]
    return []


#: Antivirus and Windows Update processes that hog tills at peak hours (§5 #31).
_BUSY_NAMES = ("msmpeng.exe", "tiworker.exe", "trustedinstaller.exe", "wuauclt.exe",
               "usocoreworker.exe", "mrt.exe")  # fmt: skip
#: Average share of one CPU since the process started that counts as hogging.
BUSY_SHARE = 25.0


def _system(data: Dict[str, Any], now: float) -> List[Finding]:
    out: List[Finding] = []
    ev: Dict[str, Any]
    sec = "system"
    for disk in _dicts(data.get("disks")):
        percent, free = _num(disk.get("percent")), _num(disk.get("free"))
        if percent is None or free is None:
            continue  # an unreadable mount (its error is in the raw data)
        mount = str(disk.get("mount"))
        ev = {"mount": mount, "free": free, "percent": percent, "total": disk.get("total")}
        words: Dict[str, Any] = {"mount": mount, "free": mb(free), "percent": f"{percent:.0f}"}
        if percent >= DISK_CRIT_PERCENT:
            out.append(_finding("disk.full", sec, mount, ev, **words))
        elif percent >= DISK_WARN_PERCENT or free < DISK_WARN_FREE:
            out.append(_finding("disk.low", sec, mount, ev, **words))
    for proc in _dicts((data.get("processes") or {}).get("top_by_memory")):
        if str(proc.get("name") or "").lower() not in _BUSY_NAMES:
            continue
        cpu, started = _num(proc.get("cpu_seconds")), _num(proc.get("create_time"))
        if cpu is None or started is None or now - started < 600:
            continue
        share = 100.0 * cpu / (now - started)
        if share >= BUSY_SHARE:
            ev = {
                "name": proc.get("name"),
                "pid": proc.get("pid"),
                "cpu_seconds": cpu,
                "create_time": started,
            }
            out.append(
                _finding(
                    "system.update_or_av_busy",
                    sec,
                    str(proc.get("pid")),
                    ev,
                    name=proc.get("name"),
                    pid=proc.get("pid"),
                    share=f"{share:.0f}",
                )
            )
    mem = data.get("memory") or {}
    total, avail = _num(mem.get("total")), _num(mem.get("available"))
    if total and avail is not None and avail < total * MEMORY_WARN_FRACTION:
        ev = {"available": avail, "total": total, "top_by_memory": _top(data)}
        out.append(_finding("memory.low", sec, "", ev, available=mb(avail), total=mb(total)))
    return out


def _top(data: Dict[str, Any]) -> List[Any]:
    procs = data.get("processes") or {}
    top = procs.get("top_by_memory") if isinstance(procs, dict) else None
    return [{"name": p.get("name"), "pid": p.get("pid"), "rss": p.get("rss")} for p in _dicts(top)][
        :5
    ]


def _pos(data: Dict[str, Any], now: float, profile: Optional[PosProfile]) -> List[Finding]:
    out: List[Finding] = []
    ev: Dict[str, Any]
    sec = "pos"
    procs = list(_dicts(data.get("processes")))
    names = ", ".join(profile.process_names) if profile is not None else ""
    if data.get("running") is False:
        out.append(_finding("pos.not_running", sec, "", {"running": False}, names=names or "?"))
    if len(procs) > 1:
        pids = ", ".join(str(p.get("pid")) for p in procs)
        ev = {"processes": procs}
        out.append(_finding("pos.duplicate_instances", sec, "", ev, count=len(procs), pids=pids))
    for proc in procs:
        grew = _growth(proc.get("rss_history"))
        if grew is not None:
            first, last, seconds = grew
            ev = {
                "pid": proc.get("pid"),
                "name": proc.get("name"),
                "rss_history": proc.get("rss_history"),
            }
            out.append(
                _finding(
                    "pos.memory_growing",
                    sec,
                    str(proc.get("pid")),
                    ev,
                    name=proc.get("name"),
                    pid=proc.get("pid"),
                    first=mb(first),
                    last=mb(last),
                    span=span(seconds),
                )
            )
    services = data.get("services") or {}
    for name, state in sorted(services.items()):
        if state not in ("running", "active"):
            out.append(
                _finding(
                    "pos.service_stopped", sec, str(name), {"state": state}, name=name, state=state
                )
            )
    database = data.get("database") or {}
    if database.get("up") is False:
        what = ", ".join(f"{k}={v}" for k, v in (database.get("service") or {}).items())
        out.append(
            _finding(
                "pos.database_down", sec, "", {"database": database}, what=what or "process missing"
            )
        )
    dbfile = database.get("file")
    if isinstance(dbfile, dict):
        path = str(dbfile.get("path"))
        if not dbfile.get("ok"):
            out.append(
                _finding(
                    "pos.database_unreadable",
                    sec,
                    path,
                    {"file": dbfile},
                    path=path,
                    why=dbfile.get("error"),
                )
            )
        else:
            check = dbfile.get("quick_check")
            if isinstance(check, dict) and check.get("copy_error"):  # not checked: not corrupt
                out.append(
                    _finding(
                        "pos.database_unreadable",
                        sec,
                        path,
                        {"quick_check": check},
                        path=path,
                        why="copy for PRAGMA quick_check failed: " + _clip(check["copy_error"]),
                    )
                )
            elif isinstance(check, dict) and check.get("ok") is False:
                sample = "; ".join(check.get("result") or [str(check.get("error"))])
                out.append(
                    _finding(
                        "pos.database_corrupt",
                        sec,
                        path,
                        {"quick_check": check},
                        sample="PRAGMA quick_check on a copy: " + sample,
                    )
                )
            cap = (profile.database_size_cap_gb if profile is not None else 0) * 1024**3
            size = _num(dbfile.get("size")) or 0
            if cap and size >= 0.9 * cap:
                out.append(
                    _finding(
                        "pos.database_near_cap",
                        sec,
                        path,
                        {"size": size, "cap": cap},
                        path=path,
                        size=mb(size),
                        cap=mb(cap),
                    )
                )
            held = list(_dicts(dbfile.get("holders")))
            if len(held) > 1:  # two processes on one SQLite file: "database is locked" (§5 #27)
                holders = ", ".join(
                    f"{h.get('name')}({h.get('pid')})"
                    + (f" [{'; '.join(map(str, h['locks']))}]" if h.get("locks") else "")
                    for h in held
                )
                out.append(
                    _finding(
                        "pos.database_held",
                        sec,
                        path,
                        {"holders": held},
                        path=path,
                        holders=holders,
                    )
                )
    for log in _dicts(data.get("logs")):
        path = str(log.get("path"))
        if not log.get("ok"):
            out.append(
                _finding(
                    "pos.log_unreadable", sec, path, {"path": path}, path=path, why=log.get("error")
                )
            )
            continue
        recent = [str(line) for line in log.get("recent_errors") or []]
        locked = [line for line in recent if _LOCKED.search(line)]
        corrupt = [line for line in recent if _CORRUPT.search(line)]
        ev = {"path": path, "lines": (corrupt or locked or recent)[-3:]}
        if corrupt:
            out.append(_finding("pos.database_corrupt", sec, path, ev, sample=corrupt[-1]))
        if locked:
            out.append(
                _finding("pos.database_locked", sec, path, ev, count=len(locked), sample=locked[-1])
            )
        count = _num(log.get("error_count")) or 0
        if count and not locked and not corrupt:
            out.append(
                _finding(
                    "pos.log_errors",
                    sec,
                    path,
                    ev,
                    path=path,
                    count=int(count),
                    sample=recent[-1] if recent else "",
                )
            )
    for disk in _dicts(data.get("disk")):
        path = str(disk.get("path"))
        if not disk.get("ok"):
            out.append(
                _finding(
                    "pos.data_path_unreadable",
                    sec,
                    path,
                    {"path": path},
                    path=path,
                    why=disk.get("error"),
                )
            )
        elif disk.get("low"):
            free = (_num(disk.get("free_mb")) or 0) * 1024**2
            ev = {"path": path, "free_mb": disk.get("free_mb")}
            out.append(_finding("pos.data_disk_low", sec, path, ev, path=path, free=mb(free)))
    if data.get("sale_open"):
        why = data["sale_open"]
        out.append(_finding("pos.sale_open", sec, "", {"sale_open": why}, why=why))
    return out


def _peripheral(row: Dict[str, Any], sec: str) -> Optional[Finding]:
    """The finding of a device that could not be listened to, or None when it was."""
    name, target = str(row.get("name") or "?"), str(row.get("target") or "")
    ev = {"target": target, "outcome": row.get("outcome")}
    outcome = row.get("outcome")
    if outcome == "ok":
        return None
    if outcome == "skipped":
        return _finding(
            "peripheral.skipped_sale_open", sec, name, ev, name=name, why=row.get("detail")
        )
    if outcome == "held":
        return _finding("peripheral.port_held", sec, name, ev, name=name, target=target)
    return _finding(
        "peripheral.unreachable",
        sec,
        name,
        ev,
        name=name,
        target=target,
        why=row.get("detail") or outcome,
    )


def _scale(data: Dict[str, Any], now: float) -> List[Finding]:
    out: List[Finding] = []
    for row in _dicts(data.get("scales")):
        problem = _peripheral(row, "scale")
        if problem is not None:
            out.append(problem)
            continue
        name = str(row.get("name") or "?")
        frames, bad = int(_num(row.get("frames")) or 0), int(_num(row.get("bad_checksum")) or 0)
        size = int(_num(row.get("bytes")) or 0)
        ev = {
            k: row.get(k)
            for k in (
                "target",
                "protocol",
                "bytes",
                "frames",
                "bad_checksum",
                "motion",
                "out_of_range",
                "sample",
                "listen_s",
            )
        }
        if size == 0:
            out.append(
                _finding("scale.no_data", "scale", name, ev, name=name, seconds=row.get("listen_s"))
            )
        elif frames == 0 and bad == 0:
            out.append(
                _finding(
                    "scale.unreadable",
                    "scale",
                    name,
                    ev,
                    name=name,
                    bytes=size,
                    protocol=row.get("protocol"),
                )
            )
        else:
            if bad:
                sev = Severity.FAULT if bad >= frames else None
                out.append(
                    _finding(
                        "scale.bad_checksum",
                        "scale",
                        name,
                        ev,
                        severity=sev,
                        name=name,
                        bad=bad,
                        good=frames,
                    )
                )
            if frames >= 3 and _num(row.get("motion")) == frames:
                out.append(
                    _finding("scale.motion_stuck", "scale", name, ev, name=name, frames=frames)
                )
            if _num(row.get("out_of_range")):
                out.append(_finding("scale.overload", "scale", name, ev, name=name))
    return out


def _scanner(data: Dict[str, Any], now: float) -> List[Finding]:
    out: List[Finding] = []
    for row in _dicts(data.get("scanners")):
        problem = _peripheral(row, "scanner")
        if problem is not None:
            out.append(problem)
        elif not _num(row.get("bytes")):
            name = str(row.get("name") or "?")
            ev = {"target": row.get("target"), "bytes": 0, "listen_s": row.get("listen_s")}
            out.append(
                _finding(
                    "scanner.silent", "scanner", name, ev, name=name, seconds=row.get("listen_s")
                )
            )
    return out


#: A leak (§5 #30): at least this many samples, growing by this much in total and by this factor,
#: and rising at nearly every step (a process that grows, then frees, is not leaking).
GROWTH_SAMPLES = 4
GROWTH_MIN_BYTES = 64 * 1024**2
GROWTH_FACTOR = 1.3


def _growth(history: Any) -> Optional[Tuple[float, float, float]]:
    """``(first rss, last rss, seconds)`` when the samples show steady growth, else None."""
    if not isinstance(history, list) or len(history) < GROWTH_SAMPLES:
        return None
    points = [(_num(p[0]), _num(p[1])) for p in history if isinstance(p, list) and len(p) == 2]
    values = [(t, r) for t, r in points if t is not None and r is not None]
    if len(values) < GROWTH_SAMPLES:
        return None
    rss = [r for _, r in values]
    rising = sum(1 for a, b in zip(rss, rss[1:]) if b >= a)
    first, last = rss[0], rss[-1]
    if rising < 0.75 * (len(rss) - 1) or last - first < GROWTH_MIN_BYTES:
        return None
    if last < first * GROWTH_FACTOR:
        return None
    return first, last, values[-1][0] - values[0][0]


_Evaluator = Callable[[Dict[str, Any], float], List[Finding]]
_EVALUATORS: Dict[str, _Evaluator] = {
    "printers": _printers,
    "print_queue": _print_queue,
    "serial": _serial,
    "network": _network,
    "system": _system,
    "host": _host,
    "scale": _scale,
    "scanner": _scanner,
}


def _section(
    name: str, section: Any, profile: Optional[PosProfile], now: float, profile_error: str = ""
) -> Tuple[List[Finding], bool]:
    """Findings of one section and whether its data could be read.

    ``profile_error``: why the POS profile named in settings.json did not load. The pos section
    that failed for want of a profile then says that, never "settings.json names no POS profile"
    (it does name one; readme-walk F23).
    """
    if not isinstance(section, dict):
        return [
            _finding("collector.unreadable", name, name, {}, section=name, why="not a section")
        ], False
    if not section.get("ok"):
        error = section.get("error")
        error = error if isinstance(error, dict) else {"message": str(error)}
        if name == "pos" and profile is None and profile_error:
            return [_finding("pos.profile_invalid", name, "", {}, why=profile_error)], True
        if name == "pos" and profile is None:
            return [_finding("pos.not_configured", name, "", {"error": error})], True
        # the collector's own words; its exception's class name only if it gave none (F8)
        why = str(error.get("message") or error.get("type") or "error")
        return [
            _finding("collector.unreadable", name, name, {"error": error}, section=name, why=why)
        ], False
    data = section.get("data")
    if not isinstance(data, dict) or not data:
        return [
            _finding(
                "collector.unreadable", name, name, {}, section=name, why="empty or truncated reply"
            )
        ], False
    try:
        found = _pos(data, now, profile) if name == "pos" else []
        evaluator = _EVALUATORS.get(name)
        found += evaluator(data, now) if evaluator else []
        garbled = list(_dicts(data.get("unreadable")))  # tool output the collector can't parse
        for part in garbled:
            why = f"{part.get('source')} said {part.get('sample')!r}"
            found.append(
                _finding(
                    "collector.unreadable",
                    name,
                    str(part.get("source")),
                    {"unreadable": part},
                    section=name,
                    why=why,
                )
            )
        return found, not garbled
    except (TypeError, KeyError, AttributeError, ValueError) as exc:  # garbage in the data
        return [
            _finding(
                "collector.unreadable",
                name,
                name,
                {},
                section=name,
                why=f"malformed data ({type(exc).__name__})",
            )
        ], False


def _sections(report: Mapping[str, Any]) -> Mapping[str, Any]:
    sections = report["sections"] if "sections" in report else report
    return sections if isinstance(sections, Mapping) else {}


def _profile_error(report: Mapping[str, Any], profile: Optional[PosProfile]) -> Tuple[str, bool]:
    """Why the POS profile did not load ("" if it did, or none was named), and whether the pos
    section reports that itself (it failed for want of the profile) rather than the report."""
    error = str(report.get("profile_error") or "")
    pos = _sections(report).get("pos")
    in_section = bool(error) and profile is None and isinstance(pos, dict) and not pos.get("ok")
    return error, in_section


def evaluate(report: Mapping[str, Any], profile: Optional[PosProfile], now: float) -> List[Finding]:
    """The findings of a diagnostics report, most severe first.

    Args:
        report: ``{"sections": {name: section}, "profile_error"?: str}`` (or the sections alone).
        profile: the POS profile the report was collected with, if any.
        now: the current time (epoch seconds) that ages and expiries are measured against.

    Returns:
        The findings; a section that is missing, failed or malformed gives an "unreadable" one.
    """
    findings: List[Finding] = []
    if now < PLAUSIBLE_SINCE:
        findings.append(
            _finding("clock.implausible", "system", "", {"now": now}, when=f"{now:.0f} (epoch)")
        )
    profile_error, in_section = _profile_error(report, profile)
    if profile_error and not in_section:
        findings.append(_finding("pos.profile_invalid", "pos", "", {}, why=profile_error))
    for name, section in _sections(report).items():
        findings.extend(_section(str(name), section, profile, now, profile_error)[0])
    findings.sort(key=lambda f: -f.severity.rank)  # stable: report order within a severity
    return findings


def section_status(findings: List[Finding], readable: bool = True) -> str:
    """A section's status from its findings: ``ok``, a severity, or ``unreadable``."""
    if not readable:
        return "unreadable"
    worst = max((f.severity for f in findings), key=lambda s: s.rank, default=None)
    return "ok" if worst is None else worst.value


def annotate(
    report: Dict[str, Any],
    profile: Optional[PosProfile],
    now: float,
    platform: str = THIS_PLATFORM,
    fold: bool = False,
) -> Dict[str, Any]:
    """Add ``status`` and ``findings`` to each section of ``report`` (in place) and return it;
    each finding's fixing script is one that runs on ``platform`` (the till's).

    The raw ``ok``/``data``/``error`` of each section stay as they were (docs/findings.md#json).
    Report-wide findings (an implausible clock, a POS profile that did not load) go to
    ``report["findings"]``; with ``fold`` (a ``diag.report``, which carries sections only) they
    join the section they name instead — ``system`` or ``pos`` — so they are never lost.
    """
    sections = report.get("sections", report)
    if not isinstance(sections, dict):  # garbage: nothing to annotate, and never a crash
        sections = {}
    profile_error, in_section = _profile_error(report, profile)
    for name, section in list(sections.items()):
        found, readable = _section(str(name), section, profile, now, profile_error)
        if not isinstance(section, dict):
            section = sections[name] = {"ok": False, "data": None}
        found.sort(key=lambda f: -f.severity.rank)
        section["status"] = section_status(found, readable)
        section["findings"] = [f.to_dict(platform) for f in found]
    extra = []
    report_wide = "" if in_section else profile_error
    if now < PLAUSIBLE_SINCE or report_wide:
        extra = [
            f.to_dict(platform)
            for f in evaluate({"sections": {}, "profile_error": report_wide}, profile, now)
        ]
    if fold:
        for finding in extra:
            name = finding["section"] if finding["section"] in sections else None
            name = name or next(iter(sections), None)
            if name is None:
                continue
            section = sections[name]
            section["findings"] = sorted(
                [*section["findings"], finding], key=lambda f: -Severity(f["severity"]).rank
            )
            section["status"] = _worse(section["status"], finding["severity"])
        extra = []
    if "sections" in report:
        report["schema"] = SCHEMA
        report["findings"] = extra  # report-wide findings (clock, profile); the rest per section
    return report


def _worse(status: str, severity: str) -> str:
    """A section's status once a finding of ``severity`` joins it."""
    order = ["ok", "info", "warning", "unreadable", "fault", "critical"]
    return max(status, severity, key=lambda s: order.index(s) if s in order else 0)
