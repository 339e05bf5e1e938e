"""Store time zones and opening hours: the clocks SLA and alert holding count in.

Pure checks of :mod:`posassist.relay.hours`, then the API that sets them (bad input changes
nothing and says what is wrong), on the relay's real storage.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from aiohttp import ClientSession

from posassist.relay.errors import BadRequest
from posassist.relay.hours import (
    add_business_seconds,
    business_seconds,
    is_open,
    local_iso,
    next_open,
    parse_hours,
    parse_timezone,
)
from tests.relay.harness import Relay, start_relay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

SHANGHAI = ZoneInfo("Asia/Shanghai")
WEEKDAYS_9_TO_18 = {
    "weekly": {day: [["09:00", "18:00"]] for day in ("mon", "tue", "wed", "thu", "fri")},
    "closed": ["2026-12-09"],  # a Wednesday: closed for a holiday
}


def at(text: str, zone: ZoneInfo = SHANGHAI) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def test_empty_hours_are_open_around_the_clock() -> None:
    hours = parse_hours({})
    assert is_open(hours, at("2026-12-06T03:00"))
    assert business_seconds(hours, at("2026-12-05T00:00"), at("2026-12-06T00:00")) == 86400
    assert hours.to_json() == {}


def test_open_hours_count_and_skip_a_closed_day_and_the_weekend() -> None:
    hours = parse_hours(WEEKDAYS_9_TO_18)
    assert is_open(hours, at("2026-12-08T09:00"))  # Tuesday
    assert not is_open(hours, at("2026-12-08T18:00"))
    assert not is_open(hours, at("2026-12-09T12:00"))  # the closed Wednesday
    assert not is_open(hours, at("2026-12-12T12:00"))  # Saturday
    # Tuesday 17:00 -> Thursday 10:00: one hour on Tuesday, none on Wednesday, one on Thursday.
    assert business_seconds(hours, at("2026-12-08T17:00"), at("2026-12-10T10:00")) == 2 * 3600
    # A four-hour response target asked for at Tuesday 16:00 falls due Thursday 11:00.
    due = add_business_seconds(hours, at("2026-12-08T16:00"), 4 * 3600)
    assert local_iso(hours, due) == "2026-12-10T11:00+08:00"
    # Asked on Friday evening: due Monday.
    due = add_business_seconds(hours, at("2026-12-11T20:00"), 3600)
    assert local_iso(hours, due) == "2026-12-14T10:00+08:00"
    assert next_open(hours, at("2026-12-12T08:00")) == at("2026-12-14T09:00")
    assert parse_hours(hours.to_json()) == hours


def test_a_change_of_time_zone_moves_the_wall_clock_with_it() -> None:
    shanghai = parse_hours(WEEKDAYS_9_TO_18, "Asia/Shanghai")
    urumqi = parse_hours(WEEKDAYS_9_TO_18, "Asia/Urumqi")  # UTC+6: opens two hours later
    moment = at("2026-12-08T10:00")  # 10:00 in Shanghai, 08:00 in Urumqi
    assert is_open(shanghai, moment)
    assert not is_open(urumqi, moment)
    assert local_iso(urumqi, moment) == "2026-12-08T08:00+06:00"


def test_summer_time_keeps_wall_clock_hours() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    hours = parse_hours({"weekly": {"sun": [["00:00", "24:00"]]}}, "Europe/Berlin")
    # 2026-03-29 is the Sunday clocks go forward: that day has 23 hours.
    assert (
        business_seconds(hours, at("2026-03-29T00:00", berlin), at("2026-03-30T00:00", berlin))
        == 23 * 3600
    )


def test_a_store_open_past_midnight_gives_two_intervals() -> None:
    hours = parse_hours({"weekly": {"fri": [["18:00", "24:00"]], "sat": [["00:00", "02:00"]]}})
    assert business_seconds(hours, at("2026-12-11T17:00"), at("2026-12-12T03:00")) == 8 * 3600
    assert is_open(hours, at("2026-12-12T01:59"))


def test_a_store_closed_beyond_the_horizon_never_falls_due() -> None:
    hours = parse_hours({"weekly": {"mon": [["09:00", "09:01"]]}})
    assert add_business_seconds(hours, at("2026-12-08T00:00"), 10**9) == math.inf


@pytest.mark.parametrize(
    ("hours", "words"),
    [
        ([], "must be an object"),
        ({"weekly": {"mon": [["09:00", "08:00"]]}}, "ends before it starts"),
        ({"weekly": {"mon": [["9am", "18:00"]]}}, "not a time"),
        ({"weekly": {"mon": [["09:00", "24:30"]]}}, "after 24:00"),
        ({"weekly": {"mon": [["09:00", "12:00"], ["11:00", "13:00"]]}}, "overlap"),
        ({"weekly": {"funday": []}}, "unknown day"),
        ({"weekly": {}}, "at least once a week"),
        ({"weekly": {"mon": [["09:00"]]}}, "[open, close]"),
        ({"closed": ["25/12/2026"]}, "not a date"),
        ({"closed": "2026-12-25"}, "list"),
        ({"opening": {}}, "unknown field"),
        ({"weekly": {"mon": [["00:00", "01:00"]] * 9}}, "at most"),
    ],
)
def test_bad_hours_say_what_is_wrong(hours: object, words: str) -> None:
    with pytest.raises(BadRequest, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_hours(hours)


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus", "../../etc/passwd", "", 8, "Asia/Shanghai\n", "localtime", "Factory"]
)
def test_bad_time_zones_are_refused(zone: object) -> None:
    with pytest.raises(BadRequest, match="timezone"):
        parse_timezone(zone)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    relay = await start_relay(tmp_path)
    try:
        yield relay
    finally:
        await relay.server.close()


async def patch(relay: Relay, store: str, body: object, user: str) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {relay.tokens[user]}"}
    async with (
        ClientSession() as http,
        http.patch(f"{relay.http}/v1/stores/{store}", json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_an_admin_sets_a_stores_zone_and_hours_and_it_is_audited(relay: Relay) -> None:
    status, body = await relay.get(f"/v1/stores/{relay.store}", relay.tokens["tech"])
    assert status == 200, body
    assert (body["timezone"], body["hours"]) == ("Asia/Shanghai", {})
    status, body = await patch(
        relay, relay.store, {"timezone": "Asia/Urumqi", "hours": WEEKDAYS_9_TO_18}, "admin"
    )
    assert status == 200, body
    store = await relay.state.storage.get_store(relay.store)
    assert store.timezone == "Asia/Urumqi"
    assert parse_hours(store.hours) == parse_hours(WEEKDAYS_9_TO_18)
    assert ("store.update", "ok", f"store:{relay.store}") in await relay.audit_actions()


@pytest.mark.parametrize(
    ("body", "error", "words"),
    [
        ({"timezone": "Mars/Olympus"}, "BadTimezone", "IANA"),
        (
            {"timezone": "Asia/Urumqi", "hours": {"weekly": {"mon": [["18:00", "09:00"]]}}},
            "BadHours",
            "ending after it starts",
        ),
        ({"hours": {"weekly": {}}}, "BadHours", "weekly"),
        ({"merchant_id": "mer_other"}, "BadRequest", "bad request"),  # a store never moves
        ({}, "BadRequest", "bad request"),
    ],
)
async def test_bad_store_settings_are_refused_and_change_nothing(
    relay: Relay, body: object, error: str, words: str
) -> None:
    before = await relay.state.storage.get_store(relay.store)
    status, answer = await patch(relay, relay.store, body, "admin")
    assert status == 400, answer
    assert answer["error"] == error
    assert words in str(answer["message"])  # says what a good value looks like
    assert answer["message_zh"]
    assert "Mars" not in str(answer)  # the fixed sentence, never the input echoed
    assert await relay.state.storage.get_store(relay.store) == before
    assert not [a for a in await relay.audit_actions() if a[0] == "store.update"]


async def test_only_an_admin_in_scope_may_change_a_store(relay: Relay) -> None:
    before = await relay.state.storage.get_store(relay.store)
    status, answer = await patch(relay, relay.store, {"timezone": "Asia/Urumqi"}, "tech")
    assert status == 403, answer
    assert await relay.state.storage.get_store(relay.store) == before
    assert ("store.update", "refused", f"store:{relay.store}") in await relay.audit_actions()
    status, _ = await relay.get(f"/v1/stores/{relay.other_store}", relay.tokens["tech"])
    assert status in (403, 404)
