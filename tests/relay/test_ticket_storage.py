"""Tickets in the database, on SQLite and PostgreSQL: one winner when technicians race to accept,
a change and its audit record commit together or not at all, breaches recorded once and dated
at the due time they missed; and the SLA clock across closed days, summer time and a store's
change of time zone (relay/tickets.py ``due_times`` over relay/hours.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from posassist.relay.audit import AuditEntry, Outcome
from posassist.relay.errors import Conflict, NotFound
from posassist.relay.hours import business_seconds, local_iso, parse_hours
from posassist.relay.storage import Scope
from posassist.relay.storage.tickets import TicketStore
from posassist.relay.tickets import (
    CODE_ALPHABET,
    Sla,
    due_times,
    new_support_code,
    normalise_code,
)
from tests.relay.test_storage import NOW, enrol, make_tree

if TYPE_CHECKING:
    from posassist.relay.storage import SqlStorage
    from posassist.relay.storage.tickets import Ticket
    from tests.relay.conftest import OpenStorage


def entry(action: str = "ticket.open", **detail: Any) -> AuditEntry:
    return AuditEntry("user:test", action, "ticket", Outcome.OK, detail)


async def open_one(
    storage: SqlStorage, *, response_due: float | None = None, resolve_due: float | None = None
) -> Ticket:
    _, _, store = await make_tree(storage)
    device = await enrol(storage, store.id)
    return await TicketStore(storage).open_ticket(
        code=new_support_code(),
        store_id=store.id,
        device_id=device.id,
        channel="agent",
        category="printer",
        description="打印机不出纸",
        contact="",
        language="zh-CN",
        diagnostics={"findings": [{"code": "printer.paper_out"}]},
        opened_by=f"device:{device.id}",
        now=NOW,
        response_due=response_due,
        resolve_due=resolve_due,
        audit=entry(),
    )


async def accept(tickets: TicketStore, ticket_id: str, who: str) -> Ticket:
    return await tickets.change(
        ticket_id,
        from_states={"new", "reopened"},
        to="accepted",
        actor=f"user:{who}",
        kind="accepted",
        text="",
        now=NOW + 5,
        audit=entry("ticket.accept"),
        values={"technician": who, "first_response_at": NOW + 5},
    )


async def test_technicians_racing_to_accept_one_ticket_exactly_one_wins(
    storage: SqlStorage, open_more: OpenStorage
) -> None:
    ticket = await open_one(storage)
    nodes = [storage, await open_more()]  # two relays on one database
    results = await asyncio.gather(
        *(accept(TicketStore(nodes[i % 2]), ticket.id, f"tech{i}") for i in range(8)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
    stored = await TicketStore(storage).get(ticket.id)
    assert (stored.status, stored.technician) == ("accepted", winners[0].technician)
    assert stored.version == 2
    events = (await TicketStore(storage).events([ticket.id]))[ticket.id]
    assert [e.kind for e in events] == ["opened", "accepted"]
    actions = [r.action async for r in storage.records()]
    assert actions.count("ticket.accept") == 1


async def test_a_change_whose_audit_record_cant_be_written_changes_nothing(
    storage: SqlStorage,
) -> None:
    ticket = await open_one(storage)
    tickets = TicketStore(storage)
    with pytest.raises(ValueError, match="JSON"):
        await tickets.change(
            ticket.id,
            from_states={"new"},
            to="accepted",
            actor="user:x",
            kind="accepted",
            text="",
            now=NOW + 1,
            audit=entry("ticket.accept", bad=float("nan")),
            values={"technician": "x"},
        )
    stored = await tickets.get(ticket.id)
    assert (stored.status, stored.technician, stored.version) == ("new", None, 1)
    assert [e.kind for e in (await tickets.events([ticket.id]))[ticket.id]] == ["opened"]


async def test_an_illegal_or_unknown_change_is_refused_and_changes_nothing(
    storage: SqlStorage,
) -> None:
    ticket = await open_one(storage)
    tickets = TicketStore(storage)
    with pytest.raises(Conflict):  # resolve a ticket nobody accepted
        await tickets.change(
            ticket.id,
            from_states={"accepted", "in_progress"},
            to="resolved",
            actor="user:x",
            kind="resolved",
            text="",
            now=NOW + 1,
            audit=entry("ticket.resolve"),
        )
    with pytest.raises(NotFound):
        await accept(tickets, "tkt_nope", "x")
    assert (await tickets.get(ticket.id)).status == "new"


async def test_breaches_are_recorded_once_dated_at_the_due_time_and_again_after_reopening(
    storage: SqlStorage,
) -> None:
    ticket = await open_one(storage, response_due=NOW + 600, resolve_due=NOW + 3600)
    tickets = TicketStore(storage)
    assert await tickets.mark_breaches(NOW + 599) == []
    (found,) = await tickets.mark_breaches(NOW + 1_000)  # the relay was down until then
    assert found[1] == "response"
    assert found[0].response_breached_at == NOW + 600
    # resolved late: the resolution breach is recorded too, dated when it was due
    await accept(tickets, ticket.id, "li")
    await tickets.change(
        ticket.id,
        from_states={"accepted"},
        to="resolved",
        actor="user:li",
        kind="resolved",
        text="",
        now=NOW + 20_000,
        audit=entry("ticket.resolve"),
        values={"resolved_at": NOW + 20_000},
    )
    (found,) = await tickets.mark_breaches(NOW + 20_001)
    assert (found[1], found[0].resolve_breached_at) == ("resolution", NOW + 3600)
    assert await tickets.mark_breaches(NOW + 30_000) == []  # once
    # reopened: its clocks start again, and a new miss is a new breach
    await tickets.change(
        ticket.id,
        from_states={"resolved"},
        to="reopened",
        actor="user:li",
        kind="reopened",
        text="",
        now=NOW + 40_000,
        audit=entry("ticket.reopen"),
        values={
            "clock_started_at": NOW + 40_000,
            "first_response_at": None,
            "resolved_at": None,
            "response_due": NOW + 40_600,
            "resolve_due": None,
        },
    )
    (found,) = await tickets.mark_breaches(NOW + 41_000)
    assert (found[1], found[0].response_breached_at) == ("response", NOW + 40_600)
    events = (await tickets.events([ticket.id]))[ticket.id]
    assert [e.kind for e in events if e.kind.startswith("breach")] == [
        "breach.response",
        "breach.resolution",
        "breach.response",
    ]
    assert len(await tickets.search(Scope.root(), breached=True)) == 1


async def test_support_codes_are_unique_in_the_database(storage: SqlStorage) -> None:
    ticket = await open_one(storage)
    with pytest.raises(Conflict):
        await TicketStore(storage).open_ticket(
            code=ticket.support_code,
            store_id=ticket.store_id,
            device_id=None,
            channel="phone",
            category="other",
            description="x",
            contact="",
            language="en",
            diagnostics={},
            opened_by="user:x",
            now=NOW,
            response_due=None,
            resolve_due=None,
            audit=entry(),
        )
    assert len(await TicketStore(storage).search(Scope.root())) == 1


# --- codes (pure) --------------------------------------------------------------------------------


def test_support_codes_use_only_unambiguous_characters_and_are_not_sequential() -> None:
    codes = {new_support_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert not set("".join(codes)) & set("01OIL")
    assert all(normalise_code(code) == code for code in codes)
    assert all(set(code.replace("-", "")) <= set(CODE_ALPHABET) for code in codes)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("k7q2-xm9p", "K7Q2-XM9P"),
        ("K7Q2XM9P", "K7Q2-XM9P"),
        (" k7q2 xm9p ", "K7Q2-XM9P"),
        ("K7Q2-XM9", None),
        ("K7Q2-XM9O", None),  # O is never in a code: not silently read as 0
        ("K7Q2-XM9P-", "K7Q2-XM9P"),
        ("<script>", None),
        ("x" * 100, None),
    ],
)
def test_a_typed_code_is_read_loosely_but_never_guessed_at(typed: str, stored: str | None) -> None:
    assert normalise_code(typed) == stored


# --- the SLA clock (pure) ------------------------------------------------------------------------

SHANGHAI = ZoneInfo("Asia/Shanghai")
WEEKDAYS = {
    "weekly": {day: [["09:00", "18:00"]] for day in ("mon", "tue", "wed", "thu", "fri")},
    "closed": ["2026-12-25"],
}


def _at(zone: str, *args: int) -> float:
    return dt.datetime(*args, tzinfo=ZoneInfo(zone)).timestamp()  # type: ignore[misc]


def test_sla_across_a_holiday_and_a_weekend() -> None:
    hours = parse_hours(WEEKDAYS, "Asia/Shanghai")
    opened = _at("Asia/Shanghai", 2026, 12, 24, 17, 0)  # Thursday 17:00; Friday is Christmas
    response, resolve = due_times(Sla(2 * 3600, 10 * 3600), hours, opened)
    assert response is not None
    assert resolve is not None
    # 1 h on Thursday, nothing on the holiday nor the weekend, 1 h on Monday
    assert local_iso(hours, response) == "2026-12-28T10:00+08:00"
    # 1 h Thursday + 9 h Monday
    assert local_iso(hours, resolve) == "2026-12-28T18:00+08:00"
    assert business_seconds(hours, opened, response) == 2 * 3600


def test_sla_across_the_night_summer_time_starts() -> None:
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    daily = {"weekly": {day: [["09:00", "18:00"]] for day in days}}
    hours = parse_hours(daily, "America/New_York")
    opened = _at("America/New_York", 2026, 3, 7, 17, 0)  # Saturday 17:00 EST; DST starts Sunday
    (response, _) = due_times(Sla(3 * 3600, None), hours, opened)
    assert response is not None
    assert local_iso(hours, response) == "2026-03-08T11:00-04:00"  # 1 h Sat + 2 h Sun (EDT)
    assert response - opened == 18 * 3600 - 3600  # the wall clock lost an hour that night


def test_a_store_that_changes_its_zone_keeps_the_due_times_it_had() -> None:
    before = parse_hours(WEEKDAYS, "Asia/Shanghai")
    opened = _at("Asia/Shanghai", 2026, 12, 7, 17, 30)  # Monday 17:30 in Shanghai
    (due, _) = due_times(Sla(3600, None), before, opened)
    assert due is not None
    assert local_iso(before, due) == "2026-12-08T09:30+08:00"
    after = parse_hours(WEEKDAYS, "Europe/London")  # the store moved (or its zone was wrong)
    assert local_iso(after, due) == "2026-12-08T01:30+00:00"  # the same instant, shown there
    # a ticket opened now counts in London's hours: 09:30 UTC is in hours, due at 10:30
    (later, _) = due_times(Sla(3600, None), after, _at("Europe/London", 2026, 12, 8, 9, 30))
    assert later is not None
    assert local_iso(after, later) == "2026-12-08T10:30+00:00"


def test_no_target_means_no_due_time_and_a_store_never_open_again_too() -> None:
    hours = parse_hours({"weekly": {"mon": [["09:00", "10:00"]]}, "closed": []}, "Asia/Shanghai")
    assert due_times(Sla(), hours, NOW) == (None, None)
    assert due_times(Sla(10**9, None), hours, NOW) == (None, None)  # beyond the horizon


async def test_random_moves_follow_the_state_table_and_each_success_leaves_one_record(
    storage: SqlStorage,
) -> None:
    import random

    from posassist.relay.tickets import TRANSITIONS

    ticket = await open_one(storage)
    tickets = TicketStore(storage)
    rng = random.Random(12)
    states = sorted(TRANSITIONS)
    status, done = "new", 0
    for step in range(120):
        to = rng.choice(states)
        sources = {s for s, targets in TRANSITIONS.items() if to in targets}
        try:
            moved = await tickets.change(
                ticket.id,
                from_states=sources,
                to=to,
                actor="user:r",
                kind=to,
                text="",
                now=NOW + step,
                audit=entry(f"ticket.{to}"),
            )
        except Conflict:
            assert to not in TRANSITIONS[status]  # refused only when the table says no
            continue
        assert to in TRANSITIONS[status]  # allowed only when the table says yes
        status, done = moved.status, done + 1
    stored = await tickets.get(ticket.id)
    events = (await tickets.events([ticket.id]))[ticket.id]
    assert (stored.status, stored.version, len(events)) == (status, done + 1, done + 1)
    seqs = [e.audit_seq or 0 for e in events]
    assert all(seqs)  # every step has its audit record
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert done > 20  # the walk went somewhere
