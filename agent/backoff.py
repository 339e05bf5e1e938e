"""Reconnect delays: capped exponential backoff with full jitter (pure, so it is tested alone).

Used as ``for delay in backoff(): try to connect; on failure sleep(delay)``.
"""

from __future__ import annotations

import random
from typing import Callable, Iterator


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
