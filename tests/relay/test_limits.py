"""The pure rule for connections that have not signed in: caps, deadlines, trust."""

from __future__ import annotations

import pytest

from posassist.relay.limits import ConnectionLimits, ConnectionTable, Refusal

LIMITS = ConnectionLimits(
    header_timeout=10.0,
    idle_timeout=15.0,
    http_request_timeout=30.0,
    max_unauthenticated=4,
    max_unauthenticated_per_address=2,
)


def test_a_new_connection_must_send_its_request_head_by_the_header_deadline() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    assert table.admit("a", "10.0.0.1", now=100.0) is None
    assert table.deadline("a") == 110.0
    assert table.expired(109.9) == []
    assert table.expired(110.0) == ["a"]


def test_connections_over_the_per_address_cap_are_refused_others_are_not() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    assert table.admit("a", "10.0.0.1", now=0.0) is None
    assert table.admit("b", "10.0.0.1", now=0.0) is None
    assert table.admit("c", "10.0.0.1", now=0.0) is Refusal.TOO_MANY_FROM_ADDRESS
    assert "c" not in table
    assert table.admit("d", "10.0.0.2", now=0.0) is None
    assert table.from_address("10.0.0.1") == 2


def test_connections_over_the_total_cap_are_refused() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    for i in range(4):
        assert table.admit(f"c{i}", f"10.0.0.{i}", now=0.0) is None
    assert table.admit("more", "10.0.0.9", now=0.0) is Refusal.TOO_MANY
    table.release("c0")
    assert table.admit("more", "10.0.0.9", now=0.0) is None


def test_a_plain_request_has_its_own_deadline_and_then_the_idle_deadline() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    table.admit("a", "10.0.0.1", now=0.0)
    table.request_started("a", now=5.0, websocket=False)
    assert table.deadline("a") == 35.0
    table.request_finished("a", now=6.0)
    assert table.deadline("a") == 35.0  # the response may still be being sent
    table.request_started("a", now=40.0, websocket=False)  # the next request on the connection
    table.request_finished("a", now=69.0)
    assert table.deadline("a") == 84.0  # kept alive: idle until the next request head
    assert table.expired(84.0) == ["a"]


def test_a_websocket_that_ends_unsigned_gets_the_idle_deadline() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    table.admit("a", "10.0.0.1", now=0.0)
    table.request_started("a", now=1.0, websocket=True)
    table.request_finished("a", now=2.0)
    assert table.deadline("a") == 17.0


def test_a_websocket_signing_in_has_no_deadline_here_and_still_counts() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    table.admit("a", "10.0.0.1", now=0.0)
    table.request_started("a", now=1.0, websocket=True)
    assert table.deadline("a") is None
    assert table.expired(1e9) == []
    assert table.from_address("10.0.0.1") == 1


def test_a_signed_in_connection_is_forgotten_and_frees_its_place() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    table.admit("a", "10.0.0.1", now=0.0)
    table.admit("b", "10.0.0.1", now=0.0)
    table.trust("a")
    assert "a" not in table
    assert table.deadline("a") is None
    table.request_finished("a", now=5.0)  # its handler returning later changes nothing
    assert "a" not in table
    assert table.admit("c", "10.0.0.1", now=0.0) is None
    table.release("a")  # closing after trust: nothing left to release
    assert len(table) == 2


def test_releasing_the_last_connection_of_an_address_forgets_the_address() -> None:
    table: ConnectionTable[str] = ConnectionTable(LIMITS)
    table.admit("a", "10.0.0.1", now=0.0)
    table.release("a")
    assert table.from_address("10.0.0.1") == 0
    assert len(table) == 0


def test_zero_means_no_cap() -> None:
    table: ConnectionTable[int] = ConnectionTable(
        ConnectionLimits(max_unauthenticated=0, max_unauthenticated_per_address=0)
    )
    for i in range(5000):
        assert table.admit(i, "10.0.0.1", now=0.0) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("header_timeout", 0.0),
        ("idle_timeout", -1.0),
        ("http_request_timeout", float("nan")),
        ("max_unauthenticated", -1),
        ("max_unauthenticated_per_address", -5),
    ],
)
def test_limits_refuse_nonsense(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        ConnectionLimits(**{field: value})  # type: ignore[arg-type]


def test_deadlines_are_checked_often_enough_and_not_too_often() -> None:
    assert ConnectionLimits(header_timeout=1.0).sweep_interval == 0.25
    assert ConnectionLimits(header_timeout=0.01).sweep_interval == 0.05
    assert ConnectionLimits().sweep_interval == 1.0
