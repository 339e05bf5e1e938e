"""The health-check policy: one validator with clear errors, safe defaults, nearest-wins merge."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from posassist.protocol import Codec, PolicyUpdated
from posassist.protocol.health_policy import (
    CHECKS,
    MAX_WINDOWS,
    PolicyError,
    default_policy,
    merge_layers,
    parse_policy,
)

GOOD: dict[str, Any] = {
    "version": 3,
    "outside_hours": "downgrade",
    "checks": {
        "disk": {
            "enabled": True,
            "interval": 120,
            "fail_after": 2,
            "clear_after": 4,
            "clear_hold": 30.5,
            "severity": "critical",
            "outside_hours": "page",
            "thresholds": {"free_pct": 5, "free_mb": 512.5},
        },
        "printer": {"enabled": False},
        "pos_log": {"thresholds": {"matches": 3.0}},
    },
    "maintenance_windows": [
        {"start": 1000, "end": 2000, "checks": ["printer"], "reason": "new printer / 换打印机"},
        {"days": [5, 6, 5], "from": "22:00", "to": "02:30"},
        {"days": [0], "from": "09:00", "to": "24:00", "checks": []},
    ],
    "remediation": {
        "print_queue": {"script": "clear-print-queue", "version": "1.0.0", "max_attempts": 2}
    },
}


def test_a_good_document_parses_with_the_rest_defaulted() -> None:
    policy = parse_policy(GOOD)
    assert policy.version == 3
    assert set(policy.checks) == set(CHECKS)
    disk = policy.checks["disk"]
    assert (disk.interval, disk.fail_after, disk.clear_after, disk.clear_hold) == (120, 2, 4, 30.5)
    assert (disk.severity, disk.outside_hours) == ("critical", "page")
    assert disk.threshold("free_pct") == 5.0
    assert disk.threshold("clear_margin_pct") == 5.0  # default
    assert policy.checks["printer"].enabled is False
    assert policy.checks["pos_log"].threshold("matches") == 3
    assert type(policy.checks["pos_log"].threshold("matches")) is int
    cpu = policy.checks["cpu"]
    assert cpu.enabled
    assert cpu.interval == 15.0
    assert cpu.severity is None
    assert cpu.outside_hours == "downgrade"  # the document's top-level default
    fix = policy.remediation["print_queue"]
    assert (fix.script, fix.version, fix.max_attempts, fix.window) == (
        "clear-print-queue",
        "1.0.0",
        2,
        3600.0,
    )
    assert policy.maintenance_windows[1].days == (5, 6)
    assert policy.document is GOOD


def test_the_defaults_are_safe_and_complete() -> None:
    policy = default_policy()
    assert policy.version == 0
    assert policy.outside_hours == "hold"
    assert all(check.enabled for check in policy.checks.values())
    assert all(check.clear_after > 1 and check.clear_hold > 0 for check in policy.checks.values())
    assert policy.maintenance_windows == ()
    assert policy.remediation == {}


def test_maintenance_windows_absolute_and_weekly() -> None:
    policy = parse_policy(GOOD)
    absolute, overnight, monday = policy.maintenance_windows
    assert policy.silencing_window("printer", 1500) is absolute
    assert policy.silencing_window("printer", 2000) is None  # end is exclusive
    assert policy.silencing_window("disk", 1500) is None  # not one of its checks
    # weekly windows need the store's local (weekday, minute); without it they are closed
    assert policy.silencing_window("disk", 5000) is None
    assert overnight.covers(0, (5, 22 * 60))  # Saturday 22:00
    assert overnight.covers(0, (0, 2 * 60 + 29))  # Monday 02:29, after Sunday's night
    assert not overnight.covers(0, (0, 2 * 60 + 30))
    assert not overnight.covers(0, (4, 23 * 60))  # Friday night
    assert not overnight.covers(0, (5, 21 * 60 + 59))
    assert monday.covers(0, (0, 23 * 60 + 59))
    assert not monday.covers(0, (1, 10 * 60))
    assert not monday.covers(0, (0, 8 * 60))
    assert policy.silencing_window("cpu", 0, (0, 600)) is monday


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


_DELETE = object()

BAD: list[tuple[str, Any, str]] = [
    ("version", -1, "version: must be between 0"),
    ("version", 1.5, "version: must be a whole number"),
    ("version", True, "version: must be a number"),
    ("version", "3", "version: must be a number"),
    ("outside_hours", "sleep", "outside_hours: must be one of hold, downgrade, page"),
    ("checks", [], "checks: must be a map"),
    ("checks.fan", {}, "checks: unknown check 'fan'"),
    ("checks.disk", "on", "checks.disk: must be a map"),
    ("checks.disk.colour", 1, "checks.disk: unknown key 'colour'"),
    ("checks.disk.enabled", "yes", "checks.disk.enabled: must be true or false"),
    ("checks.disk.interval", 1, "checks.disk.interval: must be between 5 and 86400, not 1"),
    ("checks.disk.interval", math.nan, "checks.disk.interval: must be a number"),
    ("checks.disk.interval", math.inf, "checks.disk.interval: must be a number"),
    ("checks.disk.fail_after", 0, "checks.disk.fail_after: must be between 1 and 100"),
    ("checks.disk.clear_after", 2.5, "checks.disk.clear_after: must be a whole number"),
    ("checks.disk.clear_hold", -1, "checks.disk.clear_hold: must be between 0"),
    ("checks.disk.severity", "fatal", "checks.disk.severity: must be one of info"),
    ("checks.disk.outside_hours", 1, "checks.disk.outside_hours: must be one of"),
    ("checks.disk.thresholds", [], "checks.disk.thresholds: must be a map"),
    ("checks.disk.thresholds.free_pct", 100, "checks.disk.thresholds.free_pct: must be between"),
    ("checks.disk.thresholds.inodes", 1, "checks.disk.thresholds: unknown threshold 'inodes'"),
    ("checks.printer.thresholds", {"x": 1}, "unknown threshold 'x' (none)"),
    ("maintenance_windows", {}, "maintenance_windows: must be a list of at most 32"),
    ("maintenance_windows", [{"start": 1, "end": 2}] * 33, "must be a list of at most 32"),
    ("maintenance_windows.0", 5, "maintenance_windows[0]: must be a map"),
    ("maintenance_windows.0.end", 1000, "maintenance_windows[0]: end must be after start"),
    ("maintenance_windows.0.end", _DELETE, "maintenance_windows[0].end: must be a number"),
    ("maintenance_windows.0.days", [1], "give either start and end"),
    ("maintenance_windows.0.checks", "printer", "[0].checks: must be a list of check names"),
    ("maintenance_windows.0.checks", ["fan"], "maintenance_windows[0].checks[0]: unknown check"),
    ("maintenance_windows.0.reason", "a\x1b[2Jb", "[0].reason: must be text of at most 256"),
    ("maintenance_windows.0.reason", "x" * 257, "[0].reason: must be text of at most 256"),
    ("maintenance_windows.1.days", [7], "maintenance_windows[1].days: must list weekdays"),
    ("maintenance_windows.1.days", [], "maintenance_windows[1].days: must list weekdays"),
    ("maintenance_windows.1.days", "mon", "maintenance_windows[1].days: must list weekdays"),
    ("maintenance_windows.1.days", [True], "maintenance_windows[1].days: must list weekdays"),
    ("maintenance_windows.1.from", "25:00", 'maintenance_windows[1].from: must be a time "HH:MM"'),
    ("maintenance_windows.1.to", 230, 'maintenance_windows[1].to: must be a time "HH:MM"'),
    ("maintenance_windows.1.to", "22:00", "from and to must differ"),
    ("maintenance_windows.1.from", "24:00", "from must be before 24:00"),
    ("maintenance_windows.2", {"days": [1]}, "maintenance_windows[2].from: must be a time"),
    ("maintenance_windows.2", {}, "give either start and end"),
    ("remediation", [], "remediation: must be a map"),
    ("remediation.fan", {}, "remediation: unknown check 'fan'"),
    ("remediation.print_queue.script", "Clear Queue", "remediation.print_queue.script: must be"),
    ("remediation.print_queue.version", "1.0", "remediation.print_queue.version: must be"),
    ("remediation.print_queue.max_attempts", 11, "max_attempts: must be between 1 and 10"),
    ("remediation.print_queue.window", 1, "remediation.print_queue.window: must be between 60"),
    ("remediation.print_queue.colour", 1, "remediation.print_queue: unknown key 'colour'"),
    ("colour", "blue", "unknown key 'colour' (allowed: checks, maintenance_windows"),
]


@pytest.mark.parametrize(
    ("path", "value", "said"),
    BAD,
    ids=[f"{p}={'<deleted>' if v is _DELETE else repr(v)[:20]}" for p, v, _ in BAD],
)
def test_a_bad_value_is_refused_naming_the_field(path: str, value: Any, said: str) -> None:
    doc = _with(path, value)
    before = copy.deepcopy(doc)
    with pytest.raises(PolicyError) as caught:
        parse_policy(doc)
    assert said in str(caught.value)
    assert PolicyError.http_status == 400
    assert doc == before  # the validator changes nothing it is given


def test_a_document_that_is_not_a_map_is_refused() -> None:
    with pytest.raises(PolicyError, match="must be a map"):
        parse_policy(["version", 1])


def test_layers_merge_nearest_wins() -> None:
    org: dict[str, Any] = {
        "version": 2,
        "outside_hours": "hold",
        "checks": {"disk": {"interval": 600, "thresholds": {"free_pct": 20, "free_mb": 100}}},
        "maintenance_windows": [{"days": [6], "from": "01:00", "to": "03:00"}],
        "remediation": {
            "print_queue": {"script": "clear-print-queue", "version": "1.0.0", "max_attempts": 1}
        },
    }
    store = {
        "version": 5,
        "checks": {"disk": {"thresholds": {"free_pct": 8}}, "cpu": {"enabled": False}},
        "maintenance_windows": [{"start": 10, "end": 20}],
    }
    device = {
        "outside_hours": "page",
        "remediation": {
            "print_queue": {"script": "clear-print-queue", "version": "1.1.0", "max_attempts": 3}
        },
    }
    merged = merge_layers([org, {}, store, device])
    policy = parse_policy(merged)
    assert policy.version == 7
    assert policy.outside_hours == "page"
    assert policy.checks["disk"].interval == 600
    assert dict(policy.checks["disk"].thresholds) == {
        "free_pct": 8.0,
        "free_mb": 100.0,
        "clear_margin_pct": 5.0,
    }
    assert not policy.checks["cpu"].enabled
    assert policy.remediation["print_queue"].version == "1.1.0"
    assert len(policy.maintenance_windows) == 2
    assert org["checks"]["disk"]["thresholds"] == {"free_pct": 20, "free_mb": 100}  # untouched
    assert merge_layers([]) == {"version": 0}


def test_a_bad_layer_is_named_in_the_error() -> None:
    with pytest.raises(PolicyError, match=r"layer 1: checks.disk.interval: must be between"):
        merge_layers([{}, {"checks": {"disk": {"interval": 0}}}])


def test_too_many_windows_across_layers_are_refused() -> None:
    layer = {"maintenance_windows": [{"start": 1, "end": 2}] * MAX_WINDOWS}
    with pytest.raises(PolicyError, match="at most 32 windows"):
        merge_layers([layer, {"maintenance_windows": [{"start": 1, "end": 2}]}])


def test_policy_updated_carries_any_map_and_the_agent_validates() -> None:
    codec = Codec()
    good = PolicyUpdated(version=3, policy=GOOD, hours={})
    decoded_good = codec.decode(codec.encode(good))
    assert isinstance(decoded_good, PolicyUpdated)
    assert parse_policy(decoded_good.policy).maintenance_windows == (
        parse_policy(GOOD).maintenance_windows
    )  # arrays decode as tuples: accepted like lists
    bad_policy = {"checks": {"disk": {"interval": -5}}}  # the decoder lets it through …
    message = PolicyUpdated(version=4, policy=bad_policy, hours={"timezone": "Asia/Shanghai"})
    decoded = codec.decode(codec.encode(message))
    assert decoded == message
    assert isinstance(decoded, PolicyUpdated)
    with pytest.raises(PolicyError):  # … and the validator refuses it
        parse_policy(decoded.policy)
