"""Found in the outside attack (F1, F3): a till's facts or diagnostics of ANY shape render without
raising, on the console and through the agent's renderer; bad values show as "?" or as they are."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from posassist.client.render import render_findings
from posassist.client.render import render_report as agent_render_report
from posassist.console.render import facts_summary, render_facts, render_report
from posassist.protocol import DiagnosticsReport
from posassist.protocol.errors import LocalProtocolError

#: Anything msgpack can carry: scalars (huge/odd numbers included), lists and maps with any keys.
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=8)
    | st.sampled_from([1e300, -1e18, 1e18, 2**63, "many", "", "\x1b[31m"])
)
_KEYS = st.sampled_from(
    [
        "title",
        "detail",
        "severity",
        "started_at",
        "boot_time",
        "modified",
        "rss_history",
        "printers",
        "printers_omitted",
        "hostname",
        "os",
        "data",
        "ok",
        "error",
        "status",
        "findings",
        "uptime_s",
        "memory",
        "disks",
        "interfaces",
        "relay",
        "logs",
        "en",
        "zh",
    ]
) | st.text(max_size=8)
_DATA: Any = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=25,
)
_SECTION_NAMES = st.sampled_from(
    ["system", "network", "serial", "printers", "pos", "print_queue", "host", "scale", "x"]
)
_SECTIONS = st.dictionaries(_SECTION_NAMES, _DATA, max_size=4)
_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
@_SETTINGS
@given(facts=st.dictionaries(_KEYS, _DATA, max_size=8))
def test_any_facts_render(facts: dict[str, Any]) -> None:
    assert isinstance(facts_summary(facts), str)
    assert all("\x1b" not in line for line in render_facts(facts))


@_SETTINGS
@given(sections=_SECTIONS, at=st.floats(allow_nan=False, allow_infinity=False))
def test_any_report_renders_on_the_console(sections: dict[str, Any], at: float) -> None:
    try:
        report = DiagnosticsReport(id=1, device_id="dev_1", collected_at=at, sections=sections)
    except LocalProtocolError:  # the codec refuses it: it never reaches a renderer
        assume(False)
    assert "\x1b" not in render_report(report)


@_SETTINGS
@given(report=_DATA, now=st.none() | st.floats(allow_nan=False, allow_infinity=False))
def test_any_report_renders_through_the_agent_renderer(report: Any, now: Any) -> None:
    assert isinstance(agent_render_report(report if isinstance(report, dict) else {}, now), str)
    assert isinstance(render_findings(report if isinstance(report, list) else [report]), list)


def test_attack_facts_with_a_word_for_a_count_list_the_device() -> None:
    """F3's repro: ``printers_omitted: "many"`` crashed ``posassist devices`` for everyone."""
    facts = {"hostname": "h", "printers": [{"name": "p"}], "printers_omitted": "many"}
    assert facts_summary(facts) == "h · 1 printer"
    assert "  printers / 打印机: p" in render_facts(facts)


def test_attack_report_out_of_range_times_and_string_titles() -> None:
    """F1's repro: 1e300 / -1e18 times and a finding whose title is a string."""
    sections = {
        "system": {
            "ok": True,
            "data": {"started_at": 1e300, "boot_time": -1e18, "modified": 1e18},
            "findings": [{"severity": "fault", "title": "boom", "detail": "x", "code": "c"}],
        }
    }
    report = DiagnosticsReport(id=1, device_id="dev_1", collected_at=1.0, sections=sections)
    text = render_report(report)  # the agent's renderer: the system section's words
    assert "booted 开机: ?" in text  # an impossible time is "?", never an error
    assert "(c)" in text  # the finding is still listed, its unreadable title blank
    odd = {"started_at": 1e300, "boot_time": -1e18, "modified": 1e18}
    other = DiagnosticsReport(
        id=1, device_id="dev_1", collected_at=1.0, sections={"gadget": {"ok": True, "data": odd}}
    )
    text = render_report(other)  # a collector without words: each reading in human units
    assert "started_at: ?" in text
    assert "boot_time: -1e+18" in text  # not a plausible time: shown as the number
    assert "(c)" in agent_render_report({"sections": sections}, now=1.0)
