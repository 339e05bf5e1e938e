"""console/fanout.py: the lines ``posassist diag --store`` prints from the relay's one answer to
``POST /v1/stores/{id}/diag``, whatever the agents (or a relay) put in it."""

from __future__ import annotations

from posassist.console.fanout import result_line, store_results, totals_line


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
    assert [r.ok for r in results] == [True, False, True, False]
    assert results[0].summary == "1/2 sections ok, 1 findings (warning)"
    assert results[0].seconds == 0.0125
    assert results[0].report == answer["results"][0]["sections"]  # type: ignore[index]
    assert results[2].report is None
    assert "too large" in results[2].summary
    assert results[3].seconds == 0.0
    lines = [result_line(r) for r in results]
    assert lines[0].startswith("✓ dev_a")
    assert "offline" in lines[1]
    assert all("\x1b" not in line and "\x07" not in line for line in lines)
    assert totals_line(results, 0.5).startswith("2/4 devices ok")


def test_an_answer_without_results_is_no_devices_not_a_crash() -> None:
    assert store_results({}) == []
    assert store_results({"results": None}) == []
