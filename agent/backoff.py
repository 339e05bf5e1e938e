"""Reconnect delays: capped exponential backoff with full jitter (pure, so it is tested alone).

Used as ``for delay in backoff(): try to connect; on failure sleep(delay)``. A relay that says it
is going away (close 1001: it restarts) is tried again soon and at random
(:func:`after_going_away`), and a relay that sheds load (HTTP 503 or 429 with ``Retry-After``)
is not tried before it asked (:func:`retry_after_delay`): docs/protocol.md#reconnecting.
relay/fleet.py keeps a copy of this module's schedules (the relay may not import the agent);
tests/e2e/test_fleet.py checks they give the same delays.
"""

from __future__ import annotations

import random
from typing import Callable, Iterator, Optional

#: After a 1001 close, tries come within this many seconds (uniform) instead of doubling...
GOING_AWAY_JITTER = 2.0
#: ...until this many seconds have been waited; then the normal schedule goes on.
GOING_AWAY_WINDOW = 15.0
#: A relay's ``Retry-After`` is honoured up to this (a relay may not park its tills for a day).
MAX_RETRY_AFTER = 300.0


def backoff(
    base: float = 1.0,
    cap: float = 60.0,
    factor: float = 2.0,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Endless delays: attempt n waits uniformly in [0, min(cap, base * factor**n)]."""
    ceiling = base
    while True:
        yield rand() * ceiling
        ceiling = min(cap, ceiling * factor)


def after_going_away(
    then: Iterator[float],
    jitter: float = GOING_AWAY_JITTER,
    window: float = GOING_AWAY_WINDOW,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Delays after the relay closed with 1001 (going away: it restarts and will be back in
    seconds): uniform in [0, ``jitter``] while less than ``window`` seconds have been waited in
    all, so thousands of tills come back spread over a few seconds, not over the minute a
    doubling backoff reaches; then the delays of ``then`` (the normal schedule)."""
    waited = 0.0
    while waited < window:
        delay = rand() * jitter
        waited += delay
        yield delay
    for delay in then:
        yield delay


def retry_after_delay(
    retry_after: Optional[str],
    scheduled: float,
    jitter: float = GOING_AWAY_JITTER,
    rand: Callable[[], float] = random.random,
) -> float:
    """The wait after a refusal that carried ``Retry-After`` (seconds, as text, or None):
    at least what the relay asked (at most :data:`MAX_RETRY_AFTER`) plus a jitter of up to
    ``jitter`` seconds, so tills told the same do not come back together; never less than the
    ``scheduled`` delay. An absent, malformed or HTTP-date value leaves ``scheduled`` as it is."""
    if retry_after is None:
        return scheduled
    try:
        asked = float(retry_after.strip())
    except ValueError:
        return scheduled
    if not asked >= 0:  # NaN too
        return scheduled
    return max(scheduled, min(asked, MAX_RETRY_AFTER) + rand() * jitter)
