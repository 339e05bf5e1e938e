"""relay/flapping.py: replacements per device and window, flagged past the threshold."""

from __future__ import annotations

import pytest

from posassist.relay.flapping import MAX_ADDRESSES, FlapDetector


def test_a_device_is_reported_once_per_window_past_the_threshold() -> None:
    flaps = FlapDetector(window=60, threshold=3)
    reports = [flaps.replaced("dev_a", "10.0.0.1", "10.0.0.2", now=float(t)) for t in range(6)]
    assert reports[:3] == [None, None, None]
    report = reports[3]
    assert report is not None
    assert (report.device_id, report.replacements, report.since) == ("dev_a", 4, 0.0)
    assert report.addresses == ("10.0.0.1", "10.0.0.2")
    assert reports[4:] == [None, None]  # once per window
    assert flaps.is_flapping("dev_a", 10.0)
    assert not flaps.is_flapping("dev_b", 10.0)
    assert flaps.flapping(10.0) == 1
    # a new window: counted afresh, reported again when it passes the threshold again
    later = [flaps.replaced("dev_a", "10.0.0.1", "10.0.0.3", now=70.0 + t) for t in range(4)]
    assert later[:3] == [None, None, None]
    assert later[3] is not None
    assert later[3].addresses == ("10.0.0.1", "10.0.0.3")


def test_the_flag_clears_after_a_quiet_window() -> None:
    flaps = FlapDetector(window=60, threshold=1)
    flaps.replaced("dev_a", "a", "b", now=0.0)
    assert flaps.replaced("dev_a", "a", "b", now=1.0) is not None
    assert flaps.is_flapping("dev_a", 119.0)
    assert not flaps.is_flapping("dev_a", 120.0)
    assert flaps.flapping(120.0) == 0


def test_a_device_replaced_now_and_then_is_not_flapping() -> None:
    flaps = FlapDetector(window=60, threshold=2)
    for hour in range(10):
        assert flaps.replaced("dev_a", "a", "b", now=3600.0 * hour) is None
    assert not flaps.is_flapping("dev_a", 36000.0)


def test_memory_is_bounded() -> None:
    flaps = FlapDetector(window=60, threshold=1, max_devices=100)
    for n in range(1000):
        flaps.replaced(f"dev_{n}", "a", "b", now=1.0)
    assert len(flaps) == 100
    addresses = FlapDetector(window=60, threshold=3 * MAX_ADDRESSES - 1)
    for n in range(3 * MAX_ADDRESSES):
        crossing = addresses.replaced("dev_a", f"10.0.0.{n}", f"10.0.1.{n}", now=2.0)
    assert crossing is not None
    assert len(crossing.addresses) == MAX_ADDRESSES
    assert crossing.addresses[:2] == ("10.0.0.0", "10.0.1.0")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 0, "threshold": 1},
        {"window": 1, "threshold": 0},
        {"window": 1, "threshold": 1, "max_devices": 0},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        FlapDetector(**kwargs)  # type: ignore[arg-type]
