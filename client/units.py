"""Human units shared by the till's and the console's renderers: sizes, durations, "3 min ago"."""

from __future__ import annotations

from typing import Any

__all__ = ["ENROLMENT_TTL", "ago", "mb", "span"]

#: How long an enrolment token may stay valid, in seconds (60 s .. 30 days): the relay refuses
#: anything else (relay/handlers/api.py) and ``posassist enrol-token create --ttl`` before sending.
ENROLMENT_TTL = (60, 30 * 86400)


def mb(n: Any) -> str:
    """Bytes as "512 MB" or "3.2 GB"."""
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "?"
    if abs(n) >= 1024**3:
        return f"{n / 1024**3:.1f} GB"
    return f"{n / 1024**2:.0f} MB"


def span(seconds: float) -> str:
    """A duration as "45 s", "12 min", "3 h", "5 days"."""
    s = abs(seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.0f} h"
    return f"{s / 86400:.0f} days"


def ago(then: float, now: float) -> str:
    """``then`` relative to ``now``: "3 min ago" or "in 5 days"."""
    return f"{span(now - then)} ago" if then <= now else f"in {span(then - now)}"
