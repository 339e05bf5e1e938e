"""``posassist alerts`` says when an alert is held for the store's opening or was downgraded at
night, in the store's zone (the JSON alone had it: README walk, stop 24)."""

from __future__ import annotations

from posassist.console.alerts import render_alert

NOW = 1_764_900_000.0  # 2025-12-05 02:00 UTC, 10:00 in Shanghai


def _alert(**extra: object) -> dict[str, object]:
    alert: dict[str, object] = {
        "id": "alr_1",
        "status": "open",
        "severity": "critical",
        "check": "printer",
        "device_id": "dev_1",
        "store_id": "sto_1",
        "store_timezone": "Asia/Shanghai",
        "summary": "缺纸 / paper out\x1b[31m",
        "opened_at": NOW - 60,
        "updated_at": NOW - 60,
        "events": 1,
        "reopened": 0,
        "details": {},
    }
    alert.update(extra)
    return alert


def test_a_held_alert_says_when_the_store_opens_in_its_zone() -> None:
    lines = render_alert(_alert(held_until=NOW + 3600), NOW)
    (held,) = [line for line in lines if line.startswith("  HELD")]
    assert "11:00" in held
    assert "CST" in held
    assert "开店时通知" in held
    assert not any("\x1b" in line for line in lines)


def test_a_resolved_or_past_hold_and_a_downgrade_read_as_they_are() -> None:
    resolved = render_alert(_alert(status="resolved", held_until=NOW + 3600), NOW)
    assert not any("HELD" in line for line in resolved)
    past = render_alert(_alert(held_until=NOW - 10), NOW)
    assert not any("HELD" in line for line in past)
    down = render_alert(
        _alert(severity="warning", details={"relay": {"downgraded_from": "critical"}}), NOW
    )
    assert any("downgraded from critical" in line and "已降级" in line for line in down)
    garbage = render_alert(_alert(details="not a map", held_until="soon"), NOW)
    assert garbage[0].startswith("alr_1")
