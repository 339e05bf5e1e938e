"""Pure precondition evaluation: sale open, business hours (also across midnight), process."""

from __future__ import annotations

import datetime

import pytest

from posassist.agent.scripts.preconditions import Facts, evaluate, in_business_hours
from posassist.protocol.manifest import Precondition

CST = datetime.timezone(datetime.timedelta(hours=8))  # the store's zone, not the test machine's


def at(hhmm: str, tz: datetime.tzinfo = CST) -> float:
    hours, minutes = map(int, hhmm.split(":"))
    return datetime.datetime(2026, 11, 25, hours, minutes, tzinfo=tz).timestamp()


HOURS = Precondition("outside_hours", open_at="09:00", close_at="22:00")
NIGHT = Precondition("outside_hours", open_at="18:00", close_at="02:00")  # a late-night stall


@pytest.mark.parametrize(
    ("pre", "hhmm", "runs"),
    [
        (HOURS, "08:59", True),
        (HOURS, "09:00", False),
        (HOURS, "21:59", False),
        (HOURS, "22:00", True),
        (HOURS, "03:00", True),
        (NIGHT, "17:59", True),
        (NIGHT, "18:00", False),
        (NIGHT, "23:59", False),
        (NIGHT, "00:00", False),
        (NIGHT, "01:59", False),
        (NIGHT, "02:00", True),
        (NIGHT, "12:00", True),
    ],
)
def test_outside_hours_uses_the_store_time_and_spans_midnight(
    pre: Precondition, hhmm: str, runs: bool
) -> None:
    failures = evaluate([pre], Facts(), at(hhmm), CST)
    assert (failures == []) is runs
    if not runs:
        assert failures[0].code == "business_hours"
        assert "营业时间" in failures[0].zh


def test_store_time_zone_not_the_machine_one() -> None:
    # 23:00 in Shanghai is 15:00 UTC: inside 09:00-22:00 only when read in the wrong zone
    when = at("23:00")
    assert evaluate([HOURS], Facts(), when, CST) == []
    assert evaluate([HOURS], Facts(), when, datetime.UTC) != []


def test_open_equal_to_close_means_always_open() -> None:
    assert in_business_hours("00:00", "00:00", datetime.time(3, 0))


def test_sale_open_refuses_with_both_languages() -> None:
    pre = [Precondition("no_sale_open")]
    assert evaluate(pre, Facts(sale_known=True), 0.0) == []
    [refusal] = evaluate(pre, Facts(sale_known=True, sale_open="file /pos/sale.lock"), 0.0)
    assert refusal.code == "sale_open"
    assert "交易" in refusal.zh
    assert "/pos/sale.lock" in refusal.en
    assert evaluate(pre, Facts(sale_known=False), 0.0)[0].code == "sale_unknown"


def test_process_stopped_matches_names_case_insensitively() -> None:
    pre = [Precondition("process_stopped", process="POS.exe")]
    assert evaluate(pre, Facts(processes=frozenset({"pos.exe"})), 0.0)[0].code == "process_running"
    assert evaluate(pre, Facts(processes=frozenset({"explorer.exe"})), 0.0) == []


def test_pos_stopped_asks_the_profile_which_programs_are_the_pos() -> None:
    pre = [Precondition("pos_stopped")]
    running = frozenset({"explorer.exe", "possrv.exe"})
    [refusal] = evaluate(
        pre, Facts(processes=running, pos_processes=("PosSrv.exe", "pos.exe")), 0.0
    )
    assert refusal.code == "pos_running"
    assert "PosSrv.exe" in refusal.en
    assert "pos.exe" not in refusal.en
    assert "收银软件" in refusal.zh
    assert evaluate(pre, Facts(processes=frozenset({"x"}), pos_processes=("pos.exe",)), 0.0) == []
    [unknown] = evaluate(pre, Facts(processes=running), 0.0)  # no profile: never "stopped"
    assert unknown.code == "pos_unknown"
    assert "pos_profile" in unknown.en
    assert "pos_profile" in unknown.zh


def test_every_failure_is_reported() -> None:
    pre = [Precondition("no_sale_open"), HOURS, Precondition("process_stopped", process="pos")]
    facts = Facts(sale_known=True, sale_open="process pos", processes=frozenset({"pos"}))
    codes = [f.code for f in evaluate(pre, facts, at("12:00"), CST)]
    assert codes == ["sale_open", "business_hours", "process_running"]


def test_a_sale_marker_that_cannot_be_checked_counts_as_a_sale_open(tmp_path) -> None:
    """attack 14 F7: os.path.exists said "no sale" for a marker behind a symlink loop or a folder
    the agent may not enter; now only "no such file" means no sale, anything else refuses."""
    from posassist.agent.collectors.pos import sale_open
    from posassist.agent.profile import parse_profile

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    looped = parse_profile(f'name = "x"\n[sale]\nopen_file = "{loop}/sale.open"\n')
    why = sale_open(looped, [])
    assert why is not None
    assert why.startswith("unknown: file ")
    [refusal] = evaluate([Precondition("no_sale_open")], Facts(sale_known=True, sale_open=why), 0.0)
    assert refusal.code == "sale_open"
    absent = parse_profile(f'name = "x"\n[sale]\nopen_file = "{tmp_path}/no/sale.open"\n')
    assert sale_open(absent, []) is None  # no marker, no process: no sale
    (tmp_path / "sale.open").write_text("")
    present = parse_profile(f'name = "x"\n[sale]\nopen_file = "{tmp_path}/sale.open"\n')
    assert sale_open(present, []) == f"file {tmp_path}/sale.open"
