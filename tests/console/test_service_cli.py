"""``posassist sla`` and ``posassist store`` against a real relay: targets and hours set from the
command line's own forms, names looked up in the user's scope, and bad input refused before
anything is sent (nothing changed on the relay)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from posassist.client.cli import seconds_from
from posassist.console.service import hours_from_text, hours_text
from posassist.protocol.errors import BadArgument
from tests.relay.test_tickets import call
from tests.relay.test_tickets import relay as relay
from tests.relay.test_tickets_console import console

if TYPE_CHECKING:
    from pathlib import Path

    from tests.relay.harness import Relay


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("30m", 1800.0), ("4h", 14400.0), ("2d", 172800.0), ("none", None)],
)
def test_durations(text: str, seconds: float | None) -> None:
    assert seconds_from(text, "--resolve") == seconds


@pytest.mark.parametrize("text", ["", "4", "4 h", "-1h", "1.5h", "1w", "4h30m", "ten minutes"])
def test_bad_durations_name_the_option(text: str) -> None:
    with pytest.raises(BadArgument, match="--resolve"):
        seconds_from(text, "--resolve")


def test_hours_round_trip_through_the_apis_form() -> None:
    hours = hours_from_text("mon-fri 09:00-12:00 13:00-21:00; sat,sun 10:00-18:00")
    assert hours["weekly"]["wed"] == [["09:00", "12:00"], ["13:00", "21:00"]]
    assert hours["weekly"]["sun"] == [["10:00", "18:00"]]
    assert list(hours["weekly"]) == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    assert hours_text(hours).startswith("mon-fri 09:00-12:00 13:00-21:00; sat-sun 10:00-18:00")
    assert hours_from_text("always") == {}
    assert hours_text({}) == "always open / 全天营业"
    assert hours_text(hours_from_text("mon 09:00-18:00; wed 09:00-18:00")).startswith(
        "mon 09:00-18:00; wed 09:00-18:00"  # not run together across tuesday
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("mon-fri", "names no times"),
        ("mon-fri 9-21", "is not HH:MM-HH:MM"),
        ("fri-mon 09:00-18:00", "runs backwards"),
        ("monday 09:00-18:00", "is not a day"),
        ("mon 09:00-18:00; mon-fri 10:00-18:00", "mon is named twice"),
        (" ; ", "nothing given"),
        ("mon-sun 22:00-02:00", "跨午夜请分成两段"),
    ],
)
def test_bad_hours_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(BadArgument, match=words):
        hours_from_text(text)


async def test_sla_and_store_hours_from_the_command_line(
    relay: Relay,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def run(user: str, *argv: str) -> tuple[int, str, str]:
        return await console(relay, tmp_path, monkeypatch, capsys, user, *argv)

    status, out, _ = await run("admin", "sla", "set", relay.merchant, "--response", "30m")
    assert status == 0, out
    assert "response / 响应时限: 30m" in out
    assert "resolution / 解决时限: none" in out
    status, out, _ = await run("admin", "sla", "set", relay.merchant, "--resolve", "4h")
    assert "response / 响应时限: 30m" in out  # kept: only what was given changes
    assert "resolution / 解决时限: 4h" in out
    status, answer = await call(relay, "GET", f"/v1/merchants/{relay.merchant}/sla", "boss")
    assert answer["response_seconds"] == 1800
    assert answer["resolve_seconds"] == 14400

    status, out, _ = await run(
        "admin",
        "store",
        "set",
        relay.store,
        "--timezone",
        "Asia/Urumqi",
        "--hours",
        "mon-sat 09:00-21:00",
        "--closed",
        "2027-02-10,2027-02-11",
    )
    assert status == 0, out
    assert "time zone / 时区: Asia/Urumqi" in out
    assert "mon-sat 09:00-21:00" in out
    assert "closed / 休息日: 2027-02-10, 2027-02-11" in out
    status, stored = await call(relay, "GET", f"/v1/stores/{relay.store}", "admin")
    assert stored["hours"]["weekly"]["sat"] == [["09:00", "21:00"]]
    assert "sun" not in stored["hours"]["weekly"]
    status, out, _ = await run("admin", "store", "set", relay.store, "--closed", "none")
    assert "mon-sat 09:00-21:00" in out  # the hours kept, the closed days gone
    assert "休息日" not in out
    name = stored["name"]
    status, out, _ = await run("tech", "store", "show", name)  # by name, in the tech's scope
    assert (status, relay.store in out) == (0, True)
    status, out, _ = await run("tech", "tickets", "--store", name)  # names work everywhere
    assert (status, "no tickets / 没有工单" in out) == (0, True)
    status, out, _ = await run("tech", "store", "list")
    assert relay.store in out
    assert relay.other_store not in out  # the technician's scope is one store


async def test_bad_input_changes_nothing(
    relay: Relay,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def run(user: str, *argv: str) -> tuple[int, str, str]:
        return await console(relay, tmp_path, monkeypatch, capsys, user, *argv)

    status, before = await call(relay, "GET", f"/v1/stores/{relay.store}", "admin")
    cases = [
        (("sla", "set", relay.merchant), "give --response and/or --resolve"),
        (("sla", "set", relay.merchant, "--response", "soon"), "--response"),
        (("sla", "set", relay.merchant, "--response", "1d", "--resolve", "91d"), "90 days"),
        (("store", "set", relay.store), "give --name"),
        (("store", "set", relay.store, "--hours", "mon 18:00-09:00"), "ends before it starts"),
        (("store", "set", relay.store, "--timezone", "Mars/Olympus"), "IANA"),
        (("store", "set", relay.store, "--closed", "2027-02-30"), "hours"),
        (("store", "show", "no such shop"), "no store 'no such shop'"),
        (("sla", "show", "mer_unknown"), "no merchant 'mer_unknown'"),
        (("tickets", "--store", "no such shop"), "no store 'no such shop'"),
        (("report", "--store", "no such shop"), "posassist store list"),
    ]
    for argv, words in cases:
        status, out, err = await run("admin", *argv)
        assert status != 0, (argv, out)
        assert words in err, (argv, err)
        assert "Traceback" not in err
    status, _, err = await run("tech", "sla", "set", relay.merchant, "--response", "1h")
    assert status != 0  # a technician sees no merchant to set
    status, after = await call(relay, "GET", f"/v1/stores/{relay.store}", "admin")
    assert after == before
    status, sla = await call(relay, "GET", f"/v1/merchants/{relay.merchant}/sla", "admin")
    assert sla == {"merchant_id": relay.merchant, "response_seconds": None, "resolve_seconds": None}
