"""Findings: fixture reports (reference §5 failures) give the coded findings a technician needs,
and garbage, truncated or empty readings give "unreadable", never a crash or a false "ok"."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posassist.agent.findings import (
    ADVICE,
    SCHEMA,
    Severity,
    annotate,
    evaluate,
    section_status,
)
from posassist.agent.profile import load_profile

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "findings"
NOW = 1_796_000_000.0  # 2026-11-29 23:33 UTC
CATALOG = Path(__file__).resolve().parents[2] / "catalog"


def _load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _codes(report: dict[str, Any], profile: Any = None) -> dict[str, Any]:
    return {f.code: f for f in evaluate(report, profile, NOW)}


def test_every_advice_has_both_languages_and_a_known_script() -> None:
    han = re.compile(r"[\u4e00-\u9fff]")
    for code, a in ADVICE.items():
        assert re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", code), code
        for zh in (a.title_zh, a.cashier_zh, a.tech_zh, a.detail_zh):
            assert han.search(zh), (code, zh)
        for en in (a.title_en, a.cashier_en, a.tech_en, a.detail_en):
            assert en, code
            assert not han.search(en), (code, en)
        if a.script:
            assert a.risk in ("A", "B", "C"), code
            manifest = CATALOG / a.script / "manifest.json"
            if manifest.exists():  # scripts still to write are listed in findings-status.md
                assert json.loads(manifest.read_text())["risk"] == a.risk, code


def test_stuck_jobs_report_their_age_and_a_disabled_queue_its_reason() -> None:
    found = evaluate(_load("print-queue-stuck.json"), None, NOW)
    by = {(f.code, f.subject): f for f in found}
    disabled = by["queue.disabled", "Kitchen_TM_T20"]
    assert disabled.severity is Severity.FAULT
    assert "backend/usb failed" in disabled.detail["en"]
    stuck = by["queue.jobs_stuck", "Kitchen_TM_T20"]
    assert stuck.evidence["jobs"] == ["Kitchen_TM_T20-38", "Kitchen_TM_T20-39"]
    assert stuck.evidence["oldest_age_s"] == 720.0
    assert "12 min ago" in stuck.detail["en"]
    assert stuck.to_dict()["script"] == {"id": "cups-clear-queue", "risk": "B"}
    # 20 s old is not stuck
    assert ("queue.jobs_stuck", "Receipt_80mm") not in by


def test_offline_network_no_dhcp_dns_and_a_clock_an_hour_off() -> None:
    found = _codes(_load("network-offline-clock.json"))
    assert found["network.no_dhcp"].evidence["addresses"] == ["169.254.12.7"]
    assert found["network.dns_failed"].to_dict()["script"] == {"id": "flush-dns", "risk": "A"}
    clock = found["clock.offset"]
    assert clock.severity is Severity.FAULT  # over an hour: a step needs confirmation
    assert "2 h (behind)" in clock.detail["en"]
    assert "network.link_down" not in found


def test_relay_certificate_expiring_in_days_is_a_warning_with_the_date() -> None:
    found = _codes(_load("network-tls-expiring.json"))
    tls = found["tls.expiring"]
    assert tls.severity is Severity.WARNING
    assert tls.evidence["days_left"] == 3.0
    assert "in 3 days" in tls.detail["en"]
    assert found["clock.offset"].severity is Severity.WARNING  # 72 s ahead
    assert "ahead" in found["clock.offset"].detail["en"]
    expired = _load("network-tls-expiring.json")
    expired["sections"]["network"]["data"]["relay"]["tls"]["not_after"] = NOW - 86400 * 2
    assert _codes(expired)["tls.expired"].severity is Severity.CRITICAL


def test_disk_and_memory_in_human_units() -> None:
    found = evaluate(_load("system-disk-memory.json"), None, NOW)
    disks = {f.subject: f for f in found if f.code.startswith("disk.")}
    assert disks["C:\\"].code == "disk.full"
    assert "922 MB" in disks["C:\\"].detail["en"]
    assert disks["D:\\"].code == "disk.full"
    assert disks["E:\\"].code == "disk.low"  # 50 GB free but 95 % used
    assert "F:\\" not in disks  # unreadable mount: raw data only
    (memory,) = [f for f in found if f.code == "memory.low"]
    assert memory.detail["en"] == "Only 128 MB of 2.0 GB memory available"
    assert memory.evidence["top_by_memory"][0]["name"] == "pos.exe"


def test_antivirus_or_update_hogging_the_cpu_since_it_started() -> None:
    rows = [
        {"pid": 900, "name": "MsMpEng.exe", "rss": 3 * 10**8, "cpu_seconds": 1800.0,
         "create_time": NOW - 3600},  # half a CPU for an hour
        {"pid": 901, "name": "TiWorker.exe", "rss": 10**8, "cpu_seconds": 60.0,
         "create_time": NOW - 3600},  # 2 %
        {"pid": 902, "name": "pos.exe", "rss": 10**9, "cpu_seconds": 3000.0,
         "create_time": NOW - 3600},  # busy, but it is the POS
    ]  # fmt: skip
    data = {"processes": {"top_by_memory": rows}, "disks": [], "memory": {}}
    (finding,) = evaluate({"sections": {"system": {"ok": True, "data": data}}}, None, NOW)
    assert finding.code == "system.update_or_av_busy"
    assert finding.detail["en"] == "MsMpEng.exe (pid 900) averages 50% of a CPU"


def test_locked_database_duplicate_instances_and_stopped_services(tmp_path: Path) -> None:
    profile = load_profile("demo", tmp_path)
    found = evaluate(_load("pos-locked-twice.json"), profile, NOW)
    codes = [f.code for f in found]
    for code in (
        "pos.duplicate_instances",
        "pos.database_locked",
        "pos.service_stopped",
        "pos.database_down",
        "pos.log_unreadable",
        "pos.data_disk_low",
        "pos.data_path_unreadable",
        "pos.sale_open",
    ):
        assert code in codes
    assert "pos.not_running" not in codes
    locked = next(f for f in found if f.code == "pos.database_locked")
    assert locked.evidence["lines"][-1].endswith("database is locked")
    assert "2 time(s)" in locked.detail["en"]
    dup = next(f for f in found if f.code == "pos.duplicate_instances")
    assert "4100, 5230" in dup.detail["en"]
    # most severe first
    ranks = [f.severity.rank for f in found]
    assert ranks == sorted(ranks, reverse=True)


def test_stopped_pos_and_a_corrupt_database(tmp_path: Path) -> None:
    found = _codes(_load("pos-stopped-corrupt.json"), load_profile("demo", tmp_path))
    assert found["pos.not_running"].severity is Severity.FAULT
    assert "posassist-demo-pos, demo-pos" in found["pos.not_running"].detail["en"]
    assert found["pos.not_running"].to_dict()["script"]["id"] == "restart-pos-service"
    assert found["pos.database_corrupt"].severity is Severity.CRITICAL
    assert "pos.log_errors" not in found  # the corruption says it better


def test_a_port_held_by_two_processes_names_both_and_the_prober() -> None:
    found = evaluate(_load("serial-shared.json"), None, NOW)
    shared, prober = found
    assert shared.code == "serial.port_shared"
    assert shared.subject == "/dev/ttyACM0"
    assert "ModemManager(880)" in shared.detail["en"]
    assert (prober.code, prober.subject) == ("serial.prober_interference", "ttyACM0")
    assert prober.evidence["held_by"] == [{"pid": 880, "name": "ModemManager"}]


@pytest.mark.parametrize("how", ["status", "problems"])
def test_out_of_paper_supersedes_paper_near_end(how: str) -> None:
    """readme-walk F24: a printer out of paper also has its near-end sensor set; the cashier is
    told to load a new roll, not also to have one ready. Near end alone is still reported."""

    def printer(name: str, *flags: str) -> dict[str, Any]:
        row: dict[str, Any] = {"name": name, "target": "127.0.0.1:9100", "outcome": "ok"}
        if how == "status":
            row["status"] = {"online": True, **dict.fromkeys(flags, True)}
        else:
            row["status"], row["problems"] = {"online": True}, list(flags)
        return row

    rows = [printer("out", "paper_out", "paper_near_end"), printer("low", "paper_near_end")]
    report = {"sections": {"printers": {"ok": True, "data": {"printers": rows}}}}
    found = sorted((f.subject, f.code) for f in evaluate(report, None, NOW))
    assert found == [("low", "printer.paper_near_end"), ("out", "printer.paper_out")]


def test_printer_rows_that_were_not_probed() -> None:
    report = {
        "sections": {
            "printers": {
                "ok": True,
                "data": {
                    "printers": [
                        {
                            "name": "a",
                            "target": "/dev/ttyUSB0",
                            "outcome": "held",
                            "held_by": [{"pid": 4100, "name": "demo-pos"}],
                        },
                        {"name": "b", "target": "COM3", "outcome": "skipped", "detail": "sale"},
                        {"name": "c", "target": "COM4", "outcome": "permission_denied"},
                        {"name": "d", "target": "COM5", "outcome": "not_found", "detail": "gone"},
                    ]
                },
            }
        }
    }
    found = {f.subject: f for f in evaluate(report, None, NOW)}
    assert found["a"].code == "printer.port_held"
    assert "demo-pos(4100)" in found["a"].detail["en"]
    assert found["b"].code == "printer.skipped_sale_open"
    assert found["c"].code == "printer.permission_denied"
    assert found["d"].code == "printer.unreachable"
    assert found["d"].severity is Severity.FAULT


def test_section_status_comes_from_findings_not_from_the_probe_running() -> None:
    report = _load("pos-stopped-corrupt.json")
    report["sections"]["printers"] = {
        "ok": True,
        "data": {"printers": [{"name": "r", "target": "t", "outcome": "ok", "status": {}}]},
    }
    report["sections"]["queue"] = {"ok": False, "error": {"type": "CollectorTimeout"}}
    annotate(report, None, NOW)
    assert report["schema"] == SCHEMA
    assert report["sections"]["pos"]["status"] == "critical"
    assert report["sections"]["printers"]["status"] == "ok"
    assert report["sections"]["printers"]["findings"] == []
    assert report["sections"]["queue"]["status"] == "unreadable"
    assert report["sections"]["pos"]["data"]["running"] is False  # raw data kept as it was
    json.dumps(report)  # JSON-ready
    assert section_status([]) == "ok"


def test_a_clock_before_2020_is_reported_once() -> None:
    report: dict[str, Any] = {"sections": {}}
    annotate(report, None, 946_684_800.0)  # 2000-01-01: the CMOS battery died
    (finding,) = report["findings"]
    assert finding["code"] == "clock.implausible"
    assert finding["severity"] == "critical"


def test_a_profile_that_did_not_load_is_a_finding() -> None:
    found = _codes({"sections": {}, "profile_error": "profile [logs] paths must be an array"})
    assert "must be an array" in found["pos.profile_invalid"].detail["en"]


# --- bad input: garbage, truncated and empty replies --------------------------------------------

SECTIONS = (
    "system", "network", "serial", "printers", "pos", "print_queue", "scale", "scanner", "host",
)  # fmt: skip
GARBAGE: list[Any] = [
    None,
    "garbage",
    [],
    {},
    {"ok": True},
    {"ok": True, "data": None},
    {"ok": True, "data": {}},
    {"ok": True, "data": "\x00\x01garbage"},
    {"ok": True, "data": [1, 2]},
    {"ok": False},
    {"ok": False, "error": "boom"},
    {"ok": False, "error": {"type": "CollectorTimeout", "message": "no result within 5.0 s"}},
]
MALFORMED: dict[str, dict[str, Any]] = {
    "system": {"disks": "C:"},
    "network": {"interfaces": [1, 2]},
    "serial": {"ports": [{"held_by": "x"}]},
    "printers": {"printers": [{"name": "r", "outcome": "ok", "status": "garbage"}]},
    "pos": {"running": True, "processes": "x"},
    "print_queue": {"printers": 5},
    "scale": {"scales": "x"},
    "scanner": {"scanners": [5]},
    "host": {"device_problems": "x"},
}


@pytest.mark.parametrize("name", SECTIONS)
@pytest.mark.parametrize("section", GARBAGE)
def test_garbage_truncated_or_empty_sections_are_unreadable_never_ok(name, section) -> None:
    report = {"sections": {name: section}}
    found = evaluate(report, load_profile("demo"), NOW)
    assert [f.code for f in found] == ["collector.unreadable"]
    assert "unreadable" in found[0].advice.title_en
    annotate(report, load_profile("demo"), NOW)
    assert report["sections"][name]["status"] == "unreadable"


@pytest.mark.parametrize("name", SECTIONS)
def test_malformed_data_inside_a_section_is_unreadable(name) -> None:
    report = {"sections": {name: {"ok": True, "data": MALFORMED[name]}}}
    (finding,) = evaluate(report, load_profile("demo"), NOW)
    assert finding.code == "collector.unreadable"
    assert "malformed" in finding.detail["en"]


def test_a_misnamed_profile_is_only_profile_invalid_never_also_not_configured() -> None:
    """readme-walk F23: settings.json names a profile that does not load: the pos section fails
    for want of it, and that is said once, as profile_invalid, not also "names no POS profile"."""
    why = "POS profile 'nosuch': No such file or directory"
    report: dict[str, Any] = {
        "sections": {"pos": {"ok": False, "error": {"type": "CollectorError"}}},
        "profile_error": why,
    }
    (finding,) = evaluate(report, None, NOW)
    assert finding.code == "pos.profile_invalid"
    assert "nosuch" in finding.detail["en"]
    annotate(report, None, NOW)
    assert report["findings"] == []  # not a second time, report-wide
    (in_section,) = report["sections"]["pos"]["findings"]
    assert in_section["code"] == "pos.profile_invalid"
    assert report["sections"]["pos"]["status"] == "warning"


def test_folded_report_wide_findings_join_the_section_they_name() -> None:
    """A ``diag.report`` carries sections only: the clock and profile findings join theirs."""
    report: dict[str, Any] = {
        "sections": {
            "system": {"ok": True, "data": {}},
            "pos": {"ok": True, "data": {"processes": []}},
        },
        "profile_error": "POS profile 'x': bad",
    }
    annotate(report, load_profile("demo"), 1_262_304_000.0, fold=True)  # a till reset to 2010
    assert report["findings"] == []
    system = report["sections"]["system"]
    assert system["findings"][0]["code"] == "clock.implausible"
    assert system["status"] == "critical"
    assert "pos.profile_invalid" in [f["code"] for f in report["sections"]["pos"]["findings"]]


def test_sections_that_are_not_a_map_are_not_a_crash() -> None:
    """attack 14 F16: annotate raised AttributeError on ``{"sections": [1, 2]}``."""
    report: dict[str, Any] = {"sections": [1, 2]}
    annotate(report, None, NOW)
    assert report["findings"] == []


def test_the_pos_section_without_a_profile_says_so_instead_of_unreadable() -> None:
    report = {"sections": {"pos": {"ok": False, "error": {"type": "CollectorError"}}}}
    (finding,) = evaluate(report, None, NOW)
    assert finding.code == "pos.not_configured"


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)
_KEYS = st.sampled_from(
    ["printers", "jobs", "ports", "interfaces", "relay", "clock", "disks", "memory", "logs",
     "disk", "processes", "services", "database", "running", "status", "outcome", "held_by",
     "scales", "scanners", "payment_gateways", "file"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SECTIONS), st.dictionaries(_KEYS, _JSONISH, max_size=6))
def test_any_data_gives_findings_or_unreadable_never_an_exception(name, data) -> None:
    report = {"sections": {name: {"ok": True, "data": data}}}
    found = evaluate(report, load_profile("demo"), NOW)
    for finding in found:
        assert finding.code in ADVICE
        json.dumps(finding.to_dict())


def test_the_json_of_a_finding_has_exactly_the_documented_keys() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "findings.md").read_text()
    for report in ("pos-locked-twice.json", "network-tls-expiring.json"):
        for finding in evaluate(_load(report), None, NOW):
            data = finding.to_dict()
            assert list(data) == [
                "code", "severity", "section", "subject", "title", "detail", "cashier",
                "technician", "script", "ref", "evidence",
            ]  # fmt: skip
            for key in data:
                assert f'"{key}"' in doc, key
            assert f"`{finding.code}`" in doc  # every code is listed


def test_a_windows_printer_set_to_work_offline() -> None:
    from posassist.agent.collectors.printqueue import windows_queue

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "printqueue"
    data = windows_queue(
        (fixtures / "wmic-printer.txt").read_bytes().decode("utf-8"),
        (fixtures / "wmic-printjob.txt").read_bytes().decode("utf-8"),
    )
    report = {"sections": {"print_queue": {"ok": True, "data": data}}}
    found = {f.code: f for f in evaluate(report, None, NOW)}
    assert found["queue.offline"].subject == "厨房打印机"
    assert found["queue.jobs_stuck"].evidence["jobs"] == ["12", "13"]  # an error at the head


def test_every_interface_down_is_a_link_down() -> None:
    nics = [
        {"name": "eth0", "up": False, "addresses": [], "apipa": False, "loopback": False},
        {"name": "wlan0", "up": False, "addresses": [], "apipa": False, "loopback": False},
        {"name": "lo", "up": True, "addresses": [], "apipa": False, "loopback": True},
    ]
    report = {"sections": {"network": {"ok": True, "data": {"interfaces": nics}}}}
    (finding,) = evaluate(report, None, NOW)
    assert finding.code == "network.link_down"
    assert finding.evidence["interfaces"] == ["eth0", "wlan0"]


def test_the_findings_layer_does_no_io() -> None:
    import ast

    forbidden = {
        "os", "socket", "subprocess", "asyncio", "time", "shutil", "sqlite3", "ssl", "serial",
        "psutil", "pathlib", "threading", "urllib", "http",
    }  # fmt: skip
    checkout = Path(__file__).resolve().parents[2]
    for name in ("agent/findings.py", "client/advice.py"):
        tree = ast.parse((checkout / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                root = module.split(".")[0]
                assert root not in forbidden, (name, module)
                assert not module.startswith("posassist.agent.collectors"), (name, module)


def test_a_readings_own_bilingual_words_go_half_to_each_language() -> None:
    """README walk: the English line read "...could not be made: 未安装 CUPS (找不到 lpstat) /
    CUPS is not installed"."""
    from posassist.agent.findings import finding

    f = finding(
        "collector.unreadable",
        "print_queue",
        section="print_queue",
        why="未安装 CUPS (找不到 lpstat) / CUPS is not installed (no lpstat)",
    )
    assert f.detail["zh"].endswith("未安装 CUPS (找不到 lpstat)")
    assert f.detail["en"].endswith("CUPS is not installed (no lpstat)")
    plain = finding("collector.unreadable", "x", section="x", why="a / b")  # not bilingual
    assert plain.detail["en"].endswith("a / b")


def test_no_printer_configured_is_said_not_passed_as_ok() -> None:
    """readme-walk 14: "no printers configured" showed as [OK 正常] with nothing checked."""
    note = "未配置打印机 (settings.json) / no printers configured (settings.json)"
    report: dict[str, Any] = {
        "sections": {"printers": {"ok": True, "data": {"printers": [], "note": note}}}
    }
    annotate(report, None, NOW)
    section = report["sections"]["printers"]
    assert section["status"] == "info"
    (finding,) = section["findings"]
    assert finding["code"] == "printer.not_configured"
    assert "posassist-agent configure" in finding["technician"]["en"]
