"""`posassist diag --store` (console/fanout.py): a device's line says what its findings say, not
"the probe ran" (readme-walk 14: a till with a jammed cutter and two POS instances was listed as
✓ ok); the lines from the relay's one answer to ``POST /v1/stores/{id}/diag``, whatever the
agents (or a relay) put in it."""

from __future__ import annotations

from posassist.console.fanout import (
    DeviceResult,
    diag_summary,
    diag_verdict,
    result_line,
    store_results,
    totals_line,
)
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


def test_each_device_gets_its_line_and_hostile_strings_are_made_printable() -> None:
    answer = {
        "store_id": "sto_1",
        "devices": 4,
        "results": [
            {
                "device_id": "dev_a",
                "job_id": "job_a",
                "status": "ok",
                "elapsed_ms": 12.5,
                "sections": {
                    "printers": {"ok": True, "findings": [{"severity": "warning"}]},
                    "system": {"ok": False, "findings": []},
                },
            },
            {"device_id": "dev_b", "status": "offline", "message": "设备离线\x1b[2J"},
            {"device_id": "dev_c", "status": "ok", "sections": None, "truncated": True},
            {"device_id": "dev_\x1b]0;evil\x07", "status": "timeout", "elapsed_ms": "x"},
            "not a row",
        ],
    }
    results = store_results(answer)
    assert [r.device for r in results] == ["dev_a", "dev_b", "dev_c", "dev_\x1b]0;evil\x07"]
    # dev_a answered, but one section could not be read: not "ok" (its verdict is unreadable)
    assert [r.ok for r in results] == [False, False, True, False]
    assert results[0].status == "unreadable"
    assert results[0].summary == "1/2 sections ok, 1 findings (warning)"
    assert results[0].seconds == 0.0125
    assert results[0].report == answer["results"][0]["sections"]  # type: ignore[index]
    assert results[2].report is None
    assert "too large" in results[2].summary
    assert results[3].seconds == 0.0
    lines = [result_line(r) for r in results]
    assert lines[0].startswith("✗ dev_a")
    assert "offline" in lines[1]
    assert all("\x1b" not in line and "\x07" not in line for line in lines)
    assert totals_line(results, 0.5).startswith("1/4 devices ok")


def test_an_answer_without_results_is_no_devices_not_a_crash() -> None:
    assert store_results({}) == []
    assert store_results({"results": None}) == []
