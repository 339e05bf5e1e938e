"""Refusals of peers that have not signed in, summarised so they cannot flood the audit chain.

Pure (``now`` is passed in). Per (address, action) and window, the first refusal is audited in full
at once and the rest are counted into one summary record written when the window ends
(docs/relay.md#refusals-in-the-audit-log): at most two chained records per address, action and
window, whatever a stranger sends. Refusals of signed-in users are audited one by one elsewhere.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["OVERFLOW_ADDRESS", "PRE_SIGN_IN_ACTIONS", "RefusalLedger", "RefusalSummary"]

#: Audited actions whose refusals come from a peer that has not proven who it is.
PRE_SIGN_IN_ACTIONS = frozenset(
    {
        "agent.connect",  # unknown or revoked device, bad signature (the device id is a claim)
        "api.auth",  # an API call without a valid bearer token
        "connection.refused",  # over the connection caps (relay/limits.py)
        "console.connect",  # a console websocket with a bad token
        "device.enrol",  # a bad or used enrolment secret, or too many tries
    }
)
# Failed sign-ins (user.login) with a wrong password for a real user stay one record each: they
# are evidence against one account, and the back-off (relay/lockout.py) makes them a handful per
# address and user. Those for an unknown name or while backed off (nothing was looked at) are
# summarised like the rest, or a stranger cycling through names wrote one record per try for
# ever (86,400 a day per address at the sign-in rate); so is the rate limit's own refusal.
SUMMARISED_SIGN_IN_REASONS = frozenset({"unknown user", "locked out", "rate limited"})

#: Where refusals from new addresses are counted once ``max_keys`` addresses are being tracked.
OVERFLOW_ADDRESS = "*"

#: Distinct reasons kept per summary; more are counted under "other".
MAX_REASONS = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class RefusalSummary:
    """Refusals after the first of one (address, action) in one window, as an audit record."""

    address: str
    action: str
    since: float
    until: float
    count: int
    reasons: Mapping[str, int]

    @property
    def actor(self) -> str:
        return f"ip:{self.address}"

    @property
    def detail(self) -> dict[str, Any]:
        return {
            "summary": True,
            "count": self.count,
            "since": self.since,
            "until": self.until,
            "reasons": dict(self.reasons),
        }


@dataclass(slots=True)
class _Window:
    started: float
    count: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def pre_sign_in_address(actor: str, action: str, detail: Mapping[str, Any] | None) -> str | None:
    """The peer address of a refusal made before sign-in, or None if it is not one."""
    reason = (detail or {}).get("reason")
    rate_limited = actor.startswith("ip:") and reason == "rate limited"
    sign_in_noise = (
        action == "user.login" and actor.startswith("ip:") and reason in SUMMARISED_SIGN_IN_REASONS
    )
    if action not in PRE_SIGN_IN_ACTIONS and not rate_limited and not sign_in_noise:
        return None
    if actor.startswith("ip:"):
        return actor[3:]
    peer = (detail or {}).get("peer")
    return str(peer) if peer is not None else "unknown"


class RefusalLedger:
    """Counts refusals per (address, action) and ``window`` seconds, for at most ``max_keys``
    pairs at once (the rest share :data:`OVERFLOW_ADDRESS`, so memory and records stay bounded
    under a flood of addresses)."""

    __slots__ = ("_unwritten", "_windows", "max_keys", "window")

    def __init__(self, window: float, max_keys: int) -> None:
        if not window > 0:
            raise ValueError(f"window must be a positive number of seconds, not {window!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys!r}")
        self.window = window
        self.max_keys = max_keys
        self._windows: dict[tuple[str, str], _Window] = {}
        #: Summaries handed out that could not be written (storage down), oldest first.
        self._unwritten: list[RefusalSummary] = []

    def __len__(self) -> int:
        return len(self._windows)

    def note(self, address: str, action: str, reason: str, now: float) -> bool:
        """Count one refusal; True if it is the first of its window (audit it in full now).

        A refusal after its window ended but before :meth:`due` ran is counted into that window.
        """
        key = (address, action)
        window = self._windows.get(key)
        if window is None and len(self._windows) >= self.max_keys:
            key = (OVERFLOW_ADDRESS, action)  # at most one more key per action
            window = self._windows.get(key)
        if window is None:
            self._windows[key] = _Window(started=now)
            return True
        window.count += 1
        _count_reason(window.reasons, reason)
        return False

    def due(self, now: float) -> list[RefusalSummary]:
        """Summaries of windows that have ended with refusals after their first; ended windows
        are forgotten."""
        summaries, self._unwritten = self._unwritten, []
        for key, window in list(self._windows.items()):
            if now >= window.started + self.window:
                del self._windows[key]
                if window.count:
                    summaries.append(_summary(key, window, now))
        return summaries

    def drain(self, now: float) -> list[RefusalSummary]:
        """Every pending summary, ended or not (the relay is stopping); forgets everything."""
        summaries = self._unwritten + [
            _summary(k, w, now) for k, w in self._windows.items() if w.count
        ]
        self._windows.clear()
        self._unwritten = []
        return summaries

    def put_back(self, summaries: list[RefusalSummary]) -> int:
        """Summaries that could not be written, to be handed out again by the next
        :meth:`due`; beyond ``max_keys`` waiting, the oldest are dropped. Returns how many."""
        waiting = summaries + self._unwritten
        dropped = max(0, len(waiting) - self.max_keys)
        self._unwritten = waiting[dropped:]
        return dropped


def _count_reason(reasons: Counter[str], reason: str) -> None:
    if reason in reasons or len(reasons) < MAX_REASONS:
        reasons[reason] += 1
    else:
        reasons["other"] += 1


def _summary(key: tuple[str, str], window: _Window, now: float) -> RefusalSummary:
    address, action = key
    return RefusalSummary(
        address=address,
        action=action,
        since=window.started,
        until=now,
        count=window.count,
        reasons=dict(window.reasons),
    )
