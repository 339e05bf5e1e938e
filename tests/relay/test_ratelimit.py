"""Token buckets with an injected clock: bursts, refill, retry hints, and bounded keyed memory."""

from __future__ import annotations

import math

import pytest

from posassist.relay.ratelimit import KeyedLimiter, TokenBucket


def test_new_bucket_allows_a_full_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=1.0, burst=3)
    assert [bucket.allow(100.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_rate_and_never_above_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    for _ in range(3):
        assert bucket.allow(0.0)
    assert not bucket.allow(0.0)
    assert bucket.allow(0.5)  # 2 tokens/s: one token after half a second
    assert not bucket.allow(0.5)
    # A long idle period refills to burst, not beyond.
    assert [bucket.allow(1000.0) for _ in range(4)] == [True, True, True, False]


def test_retry_after_says_when_the_next_request_would_pass() -> None:
    bucket = TokenBucket(rate=4.0, burst=1)
    assert bucket.retry_after(10.0) == 0.0
    assert bucket.allow(10.0)
    assert bucket.retry_after(10.0) == pytest.approx(0.25)
    assert bucket.retry_after(10.1) == pytest.approx(0.15)
    assert not bucket.allow(10.2)
    assert bucket.allow(10.25)


def test_refused_request_spends_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1)
    assert bucket.allow(0.0)
    for _ in range(100):
        assert not bucket.allow(0.5)
    assert bucket.allow(1.0)


def test_cost_above_burst_can_never_pass() -> None:
    bucket = TokenBucket(rate=1.0, burst=2)
    assert not bucket.allow(0.0, cost=3)
    assert bucket.retry_after(0.0, cost=3) == math.inf
    assert bucket.allow(0.0, cost=2)


def test_clock_stepping_backwards_neither_refills_nor_drains() -> None:
    bucket = TokenBucket(rate=1.0, burst=2)
    assert bucket.allow(100.0)
    assert bucket.allow(100.0)
    assert not bucket.allow(50.0)  # clock went back 50 s: no free tokens
    assert not bucket.allow(100.5)
    assert bucket.allow(101.0)  # refill counts from the latest time seen


@pytest.mark.parametrize(
    ("rate", "burst"), [(0, 1), (-1, 1), (math.nan, 1), (math.inf, 1), (1, 0.5), (1, math.nan)]
)
def test_bucket_refuses_nonsense_settings(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


def test_keyed_limiter_keeps_keys_apart() -> None:
    limiter: KeyedLimiter[str] = KeyedLimiter(rate=1.0, burst=2, max_keys=10)
    assert limiter.allow("alice", 0.0)
    assert limiter.allow("alice", 0.0)
    assert not limiter.allow("alice", 0.0)
    assert limiter.allow("bob", 0.0)  # alice's flood costs bob nothing
    assert limiter.retry_after("alice", 0.0) == pytest.approx(1.0)
    assert limiter.retry_after("carol", 0.0) == 0.0
    assert limiter.retry_after("carol", 0.0, cost=3) == math.inf


def test_flood_of_100k_distinct_keys_stays_within_max_keys() -> None:
    limiter: KeyedLimiter[str] = KeyedLimiter(rate=1.0, burst=5, max_keys=1000)
    now = 0.0
    for i in range(100_000):
        now += 0.0001
        assert limiter.allow(f"203.0.113.{i}", now)  # each new key starts with a full bucket
        assert len(limiter) <= 1000
    assert len(limiter) == 1000


def test_idle_keys_are_evicted_before_busy_ones() -> None:
    limiter: KeyedLimiter[str] = KeyedLimiter(rate=1.0, burst=2, max_keys=3)
    assert limiter.allow("idle", 0.0)  # refills fully by t=10
    assert limiter.allow("busy", 0.0)
    assert limiter.allow("busy", 0.0)
    assert limiter.allow("other", 9.0)
    # By t=10 every bucket has refilled; drain "busy" again so only it is busy.
    assert limiter.allow("busy", 10.0)
    assert limiter.allow("busy", 10.0)
    assert not limiter.allow("busy", 10.0)
    assert limiter.allow("newcomer", 10.0)
    assert "idle" not in limiter
    assert "busy" in limiter
    assert not limiter.allow("busy", 10.0)  # its empty bucket was kept, not reset


def test_least_recently_used_is_evicted_when_no_key_is_idle() -> None:
    limiter: KeyedLimiter[int] = KeyedLimiter(rate=0.001, burst=1, max_keys=2)
    assert limiter.allow(1, 0.0)
    assert limiter.allow(2, 0.0)
    assert not limiter.allow(1, 0.0)  # touches 1: now 2 is the least recently used
    assert limiter.allow(3, 0.0)
    assert 2 not in limiter
    assert 1 in limiter
    assert 3 in limiter


def test_prune_forgets_only_idle_buckets() -> None:
    limiter: KeyedLimiter[str] = KeyedLimiter(rate=1.0, burst=1, max_keys=10)
    assert limiter.allow("early", 0.0)
    assert limiter.allow("late", 5.0)
    assert limiter.prune(5.5) == 1
    assert "early" not in limiter
    assert "late" in limiter


def test_keyed_limiter_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        KeyedLimiter(rate=1.0, burst=1, max_keys=0)
    with pytest.raises(ValueError):
        KeyedLimiter(rate=0.0, burst=1, max_keys=10)
