"""The health-check policy document (docs/protocol.md#health-policy): its schema, the one validator
and safe defaults. Pure, Python 3.8: the relay's API and the agent both validate with it.

A document names only what it changes; everything else takes :data:`DEFAULTS`. The relay keeps one
document per organisation, merchant, store and device and sends the agent their merge
(:func:`merge_layers`, nearest wins) in ``policy.updated``. The agent applies a document only if
:func:`parse_policy` accepts it, and otherwise keeps its last good policy.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import EXIT_USAGE, PosAssistError

__all__ = [
    "CHECKS",
    "DEFAULTS",
    "MAX_WINDOWS",
    "OUTSIDE_HOURS",
    "SEVERITIES",
    "CheckPolicy",
    "HealthPolicy",
    "MaintenanceWindow",
    "PolicyError",
    "Remediation",
    "default_policy",
    "merge_layers",
    "parse_policy",
]

SEVERITIES = ("info", "warning", "critical")
#: What an alert raised outside the store's business hours does: ``hold`` it until the store
#: opens, ``downgrade`` it one severity step (critical → warning → info), or ``page`` as usual.
OUTSIDE_HOURS = ("hold", "downgrade", "page")
#: Maintenance windows one document (or one merge) may hold.
MAX_WINDOWS = 32
MAX_VERSION = 2**53
_SCRIPT_ID = re.compile(r"\A[a-z0-9][a-z0-9-]{1,63}\Z")
_SCRIPT_VERSION = re.compile(r"\A\d{1,4}\.\d{1,4}\.\d{1,4}\Z")
_HHMM = re.compile(r"\A(?:([01]\d|2[0-3]):([0-5]\d)|24:00)\Z")
#: A decoded frame holds tuples where a JSON document holds lists: both are accepted.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class PolicyError(PosAssistError):
    """A policy document that breaks docs/protocol.md#health-policy: the relay's API refuses it
    with 400, and an agent that receives one keeps its last good policy. The message names the
    field and the rule; it may quote the document's own keys, never anything else."""

    close_code = 1008
    http_status = 400
    exit_code = EXIT_USAGE
    public_reason = "invalid health-check policy"
    public_reason_zh = "健康检查策略无效"


# --- the checks and their thresholds -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Threshold:
    default: float
    lo: float
    hi: float
    #: whether it must be a whole number
    integer: bool = False


@dataclasses.dataclass(frozen=True)
class _CheckSpec:
    interval: float
    severity: str
    thresholds: Tuple[Tuple[str, _Threshold], ...] = ()


#: Every check the agent runs, with its default interval (seconds), default severity and the
#: thresholds it reads (docs/protocol.md#health-policy says what each means).
CHECKS: Dict[str, _CheckSpec] = {
    "printer": _CheckSpec(30.0, "critical"),
    "pos_process": _CheckSpec(
        30.0, "critical", (("restarts_per_hour", _Threshold(3, 1, 1000, integer=True)),)
    ),
    "disk": _CheckSpec(
        300.0,
        "warning",
        (
            ("free_pct", _Threshold(10.0, 0.0, 99.0)),
            ("free_mb", _Threshold(1024.0, 0.0, 10_000_000.0)),
            ("clear_margin_pct", _Threshold(5.0, 0.0, 50.0)),
        ),
    ),
    "memory": _CheckSpec(
        60.0,
        "warning",
        (
            ("available_mb", _Threshold(256.0, 0.0, 1_000_000.0)),
            ("pos_growth_mb_per_hour", _Threshold(100.0, 1.0, 1_000_000.0)),
        ),
    ),
    "cpu": _CheckSpec(
        15.0,
        "warning",
        (
            ("percent", _Threshold(90.0, 1.0, 100.0)),
            ("sustained_s", _Threshold(300.0, 10.0, 86400.0)),
        ),
    ),
    "clock": _CheckSpec(600.0, "warning", (("drift_s", _Threshold(120.0, 1.0, 86400.0)),)),
    "relay": _CheckSpec(60.0, "warning", (("unreachable_s", _Threshold(600.0, 30.0, 604800.0)),)),
    "tls_cert": _CheckSpec(3600.0, "warning", (("expiry_days", _Threshold(14.0, 1.0, 365.0)),)),
    "pos_log": _CheckSpec(60.0, "warning", (("matches", _Threshold(1, 1, 10000, integer=True)),)),
    "database": _CheckSpec(120.0, "critical"),
    "print_queue": _CheckSpec(
        60.0,
        "warning",
        (
            ("stuck_s", _Threshold(300.0, 30.0, 86400.0)),
            ("max_jobs", _Threshold(10, 1, 10000, integer=True)),
        ),
    ),
}

_CHECK_KEYS = frozenset(
    {
        "enabled",
        "interval",
        "fail_after",
        "clear_after",
        "clear_hold",
        "severity",
        "outside_hours",
        "thresholds",
    }
)
_TOP_KEYS = frozenset({"version", "outside_hours", "checks", "maintenance_windows", "remediation"})
_WINDOW_KEYS = frozenset({"start", "end", "days", "from", "to", "checks", "reason"})
_REMEDIATION_KEYS = frozenset({"script", "version", "max_attempts", "window"})


# --- the validated policy ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CheckPolicy:
    """How one check runs and when its alert fires and clears.

    The alert fires after ``fail_after`` failing samples in a row, and resolves only after
    ``clear_after`` passing samples in a row *and* ``clear_hold`` seconds without a failure:
    that hysteresis makes a printer flapping every 5 s one alert, not fifty.
    """

    name: str
    enabled: bool
    interval: float
    fail_after: int
    clear_after: int
    clear_hold: float
    #: None: the check's own severity per finding (a printer out of paper is critical, near its
    #: end a warning); else every alert of this check has this severity.
    severity: Optional[str]
    outside_hours: str
    thresholds: Mapping[str, float]

    def threshold(self, name: str) -> float:
        """A threshold of this check (KeyError for a name the check does not read)."""
        return self.thresholds[name]


@dataclasses.dataclass(frozen=True)
class MaintenanceWindow:
    """Alerts of ``checks`` (empty: all) inside the window are silenced and recorded.

    Either absolute (``start``/``end``, Unix seconds) or weekly (``days``, 0 = Monday … 6, and
    ``from``/``to`` as "HH:MM" in the store's time zone; ``to`` before ``from`` runs past midnight).
    """

    checks: Tuple[str, ...]
    reason: str
    start: Optional[float] = None
    end: Optional[float] = None
    days: Tuple[int, ...] = ()
    from_minute: int = 0
    to_minute: int = 0

    def applies_to(self, check: str) -> bool:
        return not self.checks or check in self.checks

    def covers(self, t: float, local: Optional[Tuple[int, int]] = None) -> bool:
        """Whether the window is open at epoch ``t``; a weekly window needs ``local``: the
        (weekday, minute of the day) of ``t`` in the store's time zone, else it is not open."""
        if self.start is not None and self.end is not None:
            return self.start <= t < self.end
        if local is None:
            return False
        weekday, minute = local
        if self.from_minute < self.to_minute:
            return weekday in self.days and self.from_minute <= minute < self.to_minute
        # past midnight: the evening of a listed day, or the morning after it
        return (weekday in self.days and minute >= self.from_minute) or (
            (weekday - 1) % 7 in self.days and minute < self.to_minute
        )


@dataclasses.dataclass(frozen=True)
class Remediation:
    """A failing check's vetted script (its manifest must allow unattended runs), tried at most
    ``max_attempts`` times per ``window`` seconds; then the alert escalates."""

    script: str
    version: str
    max_attempts: int
    window: float


@dataclasses.dataclass(frozen=True)
class HealthPolicy:
    """A validated, complete policy: every check present, defaults filled in."""

    version: int
    outside_hours: str
    checks: Mapping[str, CheckPolicy]
    maintenance_windows: Tuple[MaintenanceWindow, ...]
    remediation: Mapping[str, Remediation]
    #: The document it came from (the JSON form), as given.
    document: Mapping[str, Any]

    def silencing_window(
        self, check: str, t: float, local: Optional[Tuple[int, int]] = None
    ) -> Optional[MaintenanceWindow]:
        """The maintenance window that silences ``check`` at ``t``, or None."""
        for window in self.maintenance_windows:
            if window.applies_to(check) and window.covers(t, local):
                return window
        return None


# --- the validator -------------------------------------------------------------------------------


def _where(path: str, problem: str) -> PolicyError:
    return PolicyError(f"{path}: {problem}" if path else problem)


def _keys(value: Any, allowed: frozenset, path: str) -> Mapping[str, Any]:  # type: ignore[type-arg]
    if type(value) is not dict:
        raise _where(path, "must be a map")
    unknown = sorted(str(k)[:40] for k in value if k not in allowed)
    if unknown:
        raise _where(path, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    return value


def _number(value: Any, path: str, lo: float, hi: float, *, integer: bool = False) -> float:
    kind = type(value)
    if kind is bool or kind not in (int, float) or (kind is float and not math.isfinite(value)):
        raise _where(path, "must be a number")
    if integer and kind is float and not value.is_integer():
        raise _where(path, "must be a whole number")
    if not lo <= value <= hi:
        raise _where(path, f"must be between {lo:g} and {hi:g}, not {value:g}")
    return int(value) if integer else float(value)


def _choice(value: Any, path: str, choices: Tuple[str, ...]) -> str:
    if type(value) is not str or value not in choices:
        raise _where(path, f"must be one of {', '.join(choices)}")
    return value


def _text(value: Any, path: str, max_len: int) -> str:
    if type(value) is not str or len(value) > max_len or _CONTROL.search(value):
        raise _where(path, f"must be text of at most {max_len} characters, no control characters")
    return value


def _check_names(value: Any, path: str) -> Tuple[str, ...]:
    if type(value) not in (list, tuple) or len(value) > len(CHECKS):
        raise _where(path, "must be a list of check names")
    for i, name in enumerate(value):
        if name not in CHECKS:
            raise _where(f"{path}[{i}]", f"unknown check (known: {', '.join(CHECKS)})")
    return tuple(value)


def _minute(value: Any, path: str) -> int:
    match = _HHMM.match(value) if type(value) is str else None
    if match is None:
        raise _where(path, 'must be a time "HH:MM" (00:00 to 24:00)')
    if match.group(1) is None:
        return 24 * 60
    return int(match.group(1)) * 60 + int(match.group(2))


def _window(value: Any, path: str) -> MaintenanceWindow:
    doc = _keys(value, _WINDOW_KEYS, path)
    checks = _check_names(doc.get("checks", []), f"{path}.checks")
    reason = _text(doc.get("reason", ""), f"{path}.reason", 256)
    absolute = "start" in doc or "end" in doc
    weekly = "days" in doc or "from" in doc or "to" in doc
    if absolute == weekly:
        raise _where(path, "give either start and end (epoch seconds) or days, from and to")
    if absolute:
        start = _number(doc.get("start"), f"{path}.start", 0, MAX_VERSION)
        end = _number(doc.get("end"), f"{path}.end", 0, MAX_VERSION)
        if end <= start:
            raise _where(path, "end must be after start")
        return MaintenanceWindow(checks=checks, reason=reason, start=start, end=end)
    days: Any = doc.get("days")
    if (
        type(days) not in (list, tuple)
        or not 1 <= len(days) <= 7
        or any(type(d) is not int or not 0 <= d <= 6 for d in days)
    ):
        raise _where(f"{path}.days", "must list weekdays 0 (Monday) to 6 (Sunday)")
    from_minute = _minute(doc.get("from"), f"{path}.from")
    to_minute = _minute(doc.get("to"), f"{path}.to")
    if from_minute == to_minute or from_minute == 24 * 60:
        raise _where(path, "from and to must differ, and from must be before 24:00")
    return MaintenanceWindow(
        checks=checks,
        reason=reason,
        days=tuple(sorted(set(days))),
        from_minute=from_minute,
        to_minute=to_minute,
    )


def _check(name: str, value: Any, default_outside: str) -> CheckPolicy:
    path = f"checks.{name}"
    doc = _keys(value, _CHECK_KEYS, path)
    spec = CHECKS[name]
    enabled = doc.get("enabled", True)
    if type(enabled) is not bool:
        raise _where(f"{path}.enabled", "must be true or false")
    severity = doc.get("severity")
    thresholds_doc = doc.get("thresholds", {})
    known = dict(spec.thresholds)
    if type(thresholds_doc) is not dict:
        raise _where(f"{path}.thresholds", "must be a map")
    for key in thresholds_doc:
        if key not in known:
            names = ", ".join(known) or "none"
            raise _where(f"{path}.thresholds", f"unknown threshold {str(key)[:40]!r} ({names})")
    thresholds = {
        key: _number(
            thresholds_doc.get(key, t.default),
            f"{path}.thresholds.{key}",
            t.lo,
            t.hi,
            integer=t.integer,
        )
        for key, t in spec.thresholds
    }
    return CheckPolicy(
        name=name,
        enabled=enabled,
        interval=_number(doc.get("interval", spec.interval), f"{path}.interval", 5, 86400),
        fail_after=int(
            _number(doc.get("fail_after", 1), f"{path}.fail_after", 1, 100, integer=True)
        ),
        clear_after=int(
            _number(doc.get("clear_after", 3), f"{path}.clear_after", 1, 100, integer=True)
        ),
        clear_hold=_number(doc.get("clear_hold", 120), f"{path}.clear_hold", 0, 86400),
        severity=None if severity is None else _choice(severity, f"{path}.severity", SEVERITIES),
        outside_hours=_choice(
            doc.get("outside_hours", default_outside), f"{path}.outside_hours", OUTSIDE_HOURS
        ),
        thresholds=thresholds,
    )


def _remediation(name: str, value: Any) -> Remediation:
    path = f"remediation.{name}"
    doc = _keys(value, _REMEDIATION_KEYS, path)
    script, version = doc.get("script"), doc.get("version")
    if type(script) is not str or not _SCRIPT_ID.match(script):
        raise _where(f"{path}.script", "must be a script id (a-z, 0-9 and -, 2-64 characters)")
    if type(version) is not str or not _SCRIPT_VERSION.match(version):
        raise _where(f"{path}.version", 'must be a script version such as "1.0.0"')
    return Remediation(
        script=script,
        version=version,
        max_attempts=int(
            _number(doc.get("max_attempts", 1), f"{path}.max_attempts", 1, 10, integer=True)
        ),
        window=_number(doc.get("window", 3600), f"{path}.window", 60, 7 * 86400),
    )


def parse_policy(document: Any) -> HealthPolicy:
    """The policy a document describes, every omitted value taken from :data:`DEFAULTS`.

    Raises PolicyError naming the first bad field: an unknown key or check, a value of the wrong
    type or out of range, a maintenance window that ends before it starts.
    """
    doc = _keys(document, _TOP_KEYS, "")
    version = int(_number(doc.get("version", 0), "version", 0, MAX_VERSION, integer=True))
    outside = _choice(doc.get("outside_hours", "hold"), "outside_hours", OUTSIDE_HOURS)
    checks_doc = doc.get("checks", {})
    if type(checks_doc) is not dict:
        raise _where("checks", "must be a map")
    for name in checks_doc:
        if name not in CHECKS:
            raise _where("checks", f"unknown check {str(name)[:40]!r} (known: {', '.join(CHECKS)})")
    checks = {name: _check(name, checks_doc.get(name, {}), outside) for name in CHECKS}
    windows_doc = doc.get("maintenance_windows", [])
    if type(windows_doc) not in (list, tuple) or len(windows_doc) > MAX_WINDOWS:
        raise _where("maintenance_windows", f"must be a list of at most {MAX_WINDOWS} windows")
    windows = tuple(_window(w, f"maintenance_windows[{i}]") for i, w in enumerate(windows_doc))
    remediation_doc = doc.get("remediation", {})
    if type(remediation_doc) is not dict:
        raise _where("remediation", "must be a map")
    remediation = {}
    for name, value in remediation_doc.items():
        if name not in CHECKS:
            raise _where("remediation", f"unknown check {str(name)[:40]!r}")
        remediation[name] = _remediation(name, value)
    return HealthPolicy(
        version=version,
        outside_hours=outside,
        checks=checks,
        maintenance_windows=windows,
        remediation=remediation,
        document=doc,
    )


#: The document an agent that has never been online runs: every check on, conservative
#: thresholds, alerts outside hours held (docs/protocol.md#health-policy).
DEFAULTS: Mapping[str, Any] = {"version": 0}


def default_policy() -> HealthPolicy:
    """The safe local policy: :data:`DEFAULTS` parsed."""
    return parse_policy(dict(DEFAULTS))


def merge_layers(layers: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """One document from the layers organisation → merchant → store → device (farthest first).

    Nearest wins, key by key: a check's settings and thresholds, a remediation, ``outside_hours``.
    Maintenance windows add up (an organisation's night plus a store's own), at most
    :data:`MAX_WINDOWS`. The merged ``version`` is the sum of the layers' versions, so it grows
    whenever any layer does. Each layer must pass :func:`parse_policy`; so does the result.
    """
    merged: Dict[str, Any] = {"version": 0}
    checks: Dict[str, Dict[str, Any]] = {}
    remediation: Dict[str, Any] = {}
    windows: List[Any] = []
    for i, layer in enumerate(layers):
        try:
            parse_policy(layer)
        except PolicyError as exc:
            raise PolicyError(f"layer {i}: {exc}") from None
        merged["version"] += layer.get("version", 0)
        if "outside_hours" in layer:
            merged["outside_hours"] = layer["outside_hours"]
        for name, check in layer.get("checks", {}).items():
            into = checks.setdefault(name, {})
            for key, value in check.items():
                if key == "thresholds":
                    into.setdefault("thresholds", {}).update(value)
                else:
                    into[key] = value
        remediation.update(layer.get("remediation", {}))
        windows.extend(layer.get("maintenance_windows", []))
    if checks:
        merged["checks"] = checks
    if remediation:
        merged["remediation"] = remediation
    if windows:
        merged["maintenance_windows"] = windows
    parse_policy(merged)
    return merged
