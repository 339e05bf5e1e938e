"""Reconnect delays grow exponentially, are fully jittered, and never pass the cap."""

from __future__ import annotations

import itertools

from posassist.agent.backoff import backoff


def test_backoff_ceiling_doubles_up_to_cap() -> None:
    delays = list(itertools.islice(backoff(base=1.0, cap=10.0, rand=lambda: 1.0), 7))
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_backoff_is_full_jitter() -> None:
    delays = list(itertools.islice(backoff(base=1.0, cap=10.0, rand=lambda: 0.0), 5))
    assert delays == [0.0] * 5


def test_backoff_with_real_randomness_stays_in_bounds() -> None:
    for i, delay in enumerate(itertools.islice(backoff(base=0.5, cap=30.0), 200)):
        assert 0.0 <= delay <= min(30.0, 0.5 * 2**i)
