"""Token-bucket rate limits for sign-ins and console requests: pure, clock injected as ``now``.

Nothing here reads a clock or knows aiohttp; callers pass ``time.monotonic()``.

``RelayState`` holds one limiter per purpose (no globals): sign-ins by address, checked before
the password hash is touched (relay/handlers/api.py ``login``, which answers 429 ``RateLimited``),
and console requests by user (relay/handlers/consoles.py, which refuses the request with
``rate_limited`` and keeps the socket). Both refusals are audited and counted under the
``rate_limited`` reason in ``/metrics``.

Lockout after repeated *failed* passwords is a separate, durable rule kept in storage; these buckets
only bound how fast anyone may try, and forget everything on restart.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from itertools import islice
from typing import Generic, TypeVar

__all__ = ["KeyedLimiter", "TokenBucket"]

K = TypeVar("K", bound=Hashable)

#: How many least-recently-used buckets to look at for an idle one before evicting the oldest.
_IDLE_SCAN = 8


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` tokens per second; each request spends one.

    A new bucket is full. A clock that steps backwards refills nothing (and never drains).
    """

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float) -> None:
        """Args:
        rate: tokens added per second (> 0).
        burst: bucket capacity, the most requests allowed at once (>= 1).
        """
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number of tokens per second, not {rate!r}")
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = self.burst
        self.updated: float | None = None

    def _refill(self, now: float) -> None:
        if self.updated is not None and now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        if self.updated is None or now > self.updated:
            self.updated = now

    def allow(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens and return True, or spend nothing and return False."""
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def retry_after(self, now: float, cost: float = 1.0) -> float:
        """Seconds from ``now`` until ``allow(cost=cost)`` would succeed; 0.0 if it would now.

        Returns ``math.inf`` when ``cost`` is more than the bucket can ever hold.
        """
        if cost > self.burst:
            return math.inf
        self._refill(now)
        return max(0.0, (cost - self.tokens) / self.rate)

    def is_full(self, now: float) -> bool:
        """True when the bucket has refilled completely: forgetting it would change nothing."""
        self._refill(now)
        return self.tokens >= self.burst


class KeyedLimiter(Generic[K]):
    """One :class:`TokenBucket` per key (user, IP address), holding at most ``max_keys`` buckets.

    Memory stays bounded under a flood of distinct keys: when a new key arrives and the table is
    full, buckets that have refilled completely (idle keys, which a fresh bucket would equal) are
    dropped first, oldest use first; if none is idle, the least recently used key is dropped.
    Dropping a busy key hands it a fresh bucket, so under a flood of more than ``max_keys`` active
    keys the limit per key degrades to ``burst`` per eviction cycle; size ``max_keys`` above the
    number of honest clients you expect, and pair per-IP with per-user limits.
    """

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys!r}")
        TokenBucket(rate, burst)  # validates rate and burst with the same messages
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        # Least recently used first: every use moves a key to the end.
        self._buckets: OrderedDict[K, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def allow(self, key: K, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens from ``key``'s bucket; False (and nothing spent) if it can't."""
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
        else:
            self._buckets.move_to_end(key)
        return bucket.allow(now, cost)

    def retry_after(self, key: K, now: float, cost: float = 1.0) -> float:
        """Seconds until ``allow(key, cost=cost)`` would succeed; an unknown key could go now."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0 if cost <= self.burst else math.inf
        return bucket.retry_after(now, cost)

    def prune(self, now: float) -> int:
        """Forget every idle (full) bucket; returns how many. O(n): call it from a slow timer."""
        idle = [key for key, bucket in self._buckets.items() if bucket.is_full(now)]
        for key in idle:
            del self._buckets[key]
        return len(idle)

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self.max_keys:
            return
        # Idle buckets first, scanning a bounded number from the least recently used end, so that
        # a flood costs O(1) per new key rather than a full scan.
        for key in list(islice(self._buckets, _IDLE_SCAN)):
            if self._buckets[key].is_full(now):
                del self._buckets[key]
                return
        self._buckets.popitem(last=False)
