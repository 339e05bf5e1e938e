"""One check's alert state: consecutive failures before firing, hysteresis before clearing. Pure.

A check fires after ``fail_after`` failing samples in a row; a firing check resolves only after
``clear_after`` passing samples in a row *and* ``clear_hold`` seconds since its last failure
(docs/protocol.md#health-policy). A printer flapping every 5 s so stays one alert. A sample that
could not be judged (``unknown``: a sale was open, the POS holds the port) or that sits between
the fire and clear thresholds (``hold``) changes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Dict, NamedTuple, Optional, Tuple

if TYPE_CHECKING:
    from posassist.protocol.health_policy import CheckPolicy

__all__ = ["RANK", "CheckState", "Transition", "Verdict", "step"]

RANK = {"info": 0, "warning": 1, "critical": 2}
STATUSES = ("pass", "fail", "hold", "unknown")


class Verdict(NamedTuple):
    """What one evaluation of a check concluded."""

    status: str  # pass | fail | hold | unknown
    severity: str = "warning"  # of the alert when failing: info | warning | critical
    codes: Tuple[str, ...] = ()  # the findings' codes (docs/findings.md)
    summary: str = ""  # "中文 / English", from the findings' words
    evidence: Optional[Dict[str, Any]] = None


class Transition(NamedTuple):
    """An alert event to queue: the check fired (or got worse), or resolved."""

    state: str  # firing | resolved
    severity: str
    summary: str
    codes: Tuple[str, ...]
    evidence: Dict[str, Any]


@dataclasses.dataclass
class CheckState:
    """Where one check stands. Kept across samples, and on disk across restarts while firing."""

    name: str
    firing: bool = False
    severity: str = ""
    fails: int = 0
    passes: int = 0
    last_fail_at: float = 0.0
    #: the alert episode (set when it fires) and the events sent in it: the alert keys
    episode: str = ""
    events: int = 0

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> CheckState:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in fields})

    def next_key(self) -> str:
        """The idempotency key of the next event of this episode (``alert_key``)."""
        self.events += 1
        return f"{self.name}:{self.episode}:{self.events}"


def step(
    state: CheckState, verdict: Verdict, policy: CheckPolicy, now: float, episode: str
) -> Optional[Transition]:
    """Apply one verdict; return the event to queue, if any. ``episode`` names a new alert
    episode should this verdict start one (the caller makes it unique)."""
    if verdict.status == "fail":
        state.fails += 1
        state.passes = 0
        state.last_fail_at = now
        worse = state.firing and RANK[verdict.severity] > RANK.get(state.severity, 0)
        if (not state.firing and state.fails >= policy.fail_after) or worse:
            if not state.firing:
                state.episode, state.events = episode, 0
            state.firing, state.severity = True, verdict.severity
            return Transition(
                "firing", verdict.severity, verdict.summary, verdict.codes, verdict.evidence or {}
            )
        return None
    if verdict.status == "pass":
        state.passes += 1
        state.fails = 0
        if (
            state.firing
            and state.passes >= policy.clear_after
            and now - state.last_fail_at >= policy.clear_hold
        ):
            state.firing = False
            return Transition("resolved", state.severity, verdict.summary, (), {})
    return None


def stop(state: CheckState, why: str) -> Optional[Transition]:
    """The check was disabled by policy: a firing alert resolves, saying why."""
    state.fails = state.passes = 0
    if not state.firing:
        return None
    state.firing = False
    return Transition("resolved", state.severity, why, (), {"reason": "disabled"})
