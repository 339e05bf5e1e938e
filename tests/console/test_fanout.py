"""`posassist diag --store`: a device's line says what its findings say, not "the probe ran"
(readme-walk 14: a till with a jammed cutter and two POS instances was listed as ✓ ok)."""

from __future__ import annotations

from posassist.console.fanout import DeviceResult, diag_summary, diag_verdict, result_line
from posassist.protocol import DiagnosticsReport


def _report(sections: dict[str, object]) -> DiagnosticsReport:
    return DiagnosticsReport(id=1, device_id="dev_1", collected_at=1.0, sections=sections)


def _finding(severity: str) -> dict[str, object]:
    return {"code": "x.y", "severity": severity}


def test_a_till_with_faults_is_not_ok_and_says_so() -> None:
    report = _report(
        {
            "printers": {"ok": True, "status": "fault", "findings": [_finding("fault")]},
            "pos": {"ok": True, "status": "warning", "findings": [_finding("warning")]},
            "disks": {"ok": True, "status": "ok", "findings": []},
        }
    )
    assert diag_verdict(report) == "fault"
    assert diag_summary(report) == "1/3 sections ok, 2 findings (fault)"
    result = DeviceResult("dev_1", diag_verdict(report), 0.012, diag_summary(report), {})
    assert not result.ok
    line = result_line(result)
    assert line.startswith("✗ dev_1")
    assert " fault " in line


def test_information_only_is_ok_and_a_failed_probe_is_unreadable() -> None:
    fine = _report({"printers": {"ok": True, "status": "info", "findings": [_finding("info")]}})
    assert diag_verdict(fine) == "info"
    assert DeviceResult("d", diag_verdict(fine), 0.0).ok
    assert diag_summary(fine) == "1/1 sections ok, 1 findings (info)"
    older = _report({"printers": {"ok": True}, "pos": {"ok": False, "error": {"type": "X"}}})
    assert diag_verdict(older) == "unreadable"  # an older agent: no statuses, one probe failed
    assert diag_summary(older) == "1/2 sections ok, 0 findings"
    garbage = _report({"printers": "not a section", "pos": {"status": "bogus", "ok": True}})
    assert diag_verdict(garbage) == "unreadable"
    critical = _report({"disks": {"status": "critical"}, "pos": {"status": "unreadable"}})
    assert diag_verdict(critical) == "critical"
