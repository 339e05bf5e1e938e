"""Reconnect delays grow exponentially, are fully jittered, and never pass the cap; after a
1001 close they stay short for a while; a relay's Retry-After is honoured within bounds."""

from __future__ import annotations

import itertools

from posassist.agent.backoff import (
    GOING_AWAY_JITTER,
    GOING_AWAY_WINDOW,
    MAX_RETRY_AFTER,
    after_going_away,
    backoff,
    retry_after_delay,
)


def test_backoff_ceiling_doubles_up_to_cap() -> None:
    delays = list(itertools.islice(backoff(base=1.0, cap=10.0, rand=lambda: 1.0), 7))
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_backoff_is_full_jitter() -> None:
    delays = list(itertools.islice(backoff(base=1.0, cap=10.0, rand=lambda: 0.0), 5))
    assert delays == [0.0] * 5


def test_backoff_with_real_randomness_stays_in_bounds() -> None:
    for i, delay in enumerate(itertools.islice(backoff(base=0.5, cap=30.0), 200)):
        assert 0.0 <= delay <= min(30.0, 0.5 * 2**i)


def test_after_going_away_retries_within_two_seconds_for_fifteen_then_the_normal_schedule() -> None:
    then = backoff(base=1.0, cap=10.0, rand=lambda: 1.0)
    delays = list(itertools.islice(after_going_away(then, rand=lambda: 1.0), 12))
    # 2 s each until 15 s have been waited (8 waits: 16 s), then 1, 2, 4, 8 as a fresh backoff
    assert delays == [2.0] * 8 + [1.0, 2.0, 4.0, 8.0]
    assert GOING_AWAY_JITTER == 2.0
    assert GOING_AWAY_WINDOW == 15.0


def test_after_going_away_is_jittered_and_bounded() -> None:
    for delay in itertools.islice(after_going_away(backoff(cap=60.0)), 10):
        assert 0.0 <= delay <= GOING_AWAY_JITTER
    waits = list(itertools.islice(after_going_away(iter([99.0]), rand=lambda: 0.25), 40))
    # 0.5 s each: 30 of them reach 15 s, then the schedule it was given
    assert waits == [0.5] * 30 + [99.0]


def test_retry_after_is_honoured_with_jitter_and_never_sooner_than_scheduled() -> None:
    assert retry_after_delay("5", 0.3, rand=lambda: 0.0) == 5.0
    assert retry_after_delay("5", 0.3, rand=lambda: 1.0) == 7.0
    assert retry_after_delay(" 1.5 ", 0.1, rand=lambda: 0.5) == 2.5
    assert retry_after_delay("2", 30.0, rand=lambda: 1.0) == 30.0  # the schedule is longer


def test_a_relay_can_not_park_a_till_for_a_day() -> None:
    assert retry_after_delay("86400", 1.0, rand=lambda: 0.0) == MAX_RETRY_AFTER
    assert retry_after_delay("inf", 1.0, rand=lambda: 0.0) == MAX_RETRY_AFTER


def test_bad_retry_after_values_leave_the_schedule_alone() -> None:
    for bad in (None, "", "soon", "-5", "nan", "Wed, 21 Oct 2026 07:28:00 GMT", "1e"):
        assert retry_after_delay(bad, 0.7, rand=lambda: 1.0) == 0.7, bad
