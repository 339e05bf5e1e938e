"""The alert lifecycle on the relay, pure: what one delivered ``alert.raised`` event does to the
alert of its (device, check) (docs/alerts.md#lifecycle).

- a ``firing`` event opens an alert, or updates the one not yet resolved (one per device and
  check: repeats and a flapping value make one alert, counted), or reopens the last one if it
  was resolved less than :data:`REOPEN_WINDOW` ago;
- a ``resolved`` event resolves the open (or acknowledged) alert; with none, it changes nothing;
- an event observed (on the agent's clock) before the newest one the alert has seen is stale: it
  is recorded, and changes nothing (redelivery after a long outage can bring old events late).

Times: ``received_at`` is the relay's clock when the event arrived; ``observed_at`` the agent's.
Ordering and windows use the relay's; the agent's is kept alongside, labelled (a till's clock
may be hours off).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "REOPEN_WINDOW",
    "Alert",
    "AlertEvent",
    "Change",
    "decide",
]

#: A check that fails again within this many seconds of its alert's resolution reopens it.
REOPEN_WINDOW = 24 * 3600.0
SEVERITIES = ("info", "warning", "critical")


class Change(enum.StrEnum):
    """What an event did; also the audit action's suffix and the webhook event's name."""

    OPENED = "opened"
    REOPENED = "reopened"
    UPDATED = "updated"
    RESOLVED = "resolved"
    #: nothing: a recovery with no alert to resolve, or a stale event
    NONE = "none"


#: Changes a webhook hears of (a repeat of the same alert is not news, unless it got worse).
NOTIFIED = frozenset({Change.OPENED, Change.REOPENED, Change.RESOLVED})


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertEvent:
    """One ``alert.raised`` as the relay takes it: the device from the connection, not the
    message (relay-owned), and the relay's receipt time."""

    device_id: str
    alert_key: str
    check_name: str
    severity: str
    state: str
    summary: str
    observed_at: float
    received_at: float
    details: dict[str, Any] = field(default_factory=dict)
    #: The relay's judgement (relay/policies.py): None, "silenced", "held" or "downgraded";
    #: a held alert's notifications wait until ``hold_until``.
    handling: str | None = None
    hold_until: float | None = None
    handling_reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    id: str
    device_id: str
    check_name: str
    status: str
    severity: str
    summary: str
    details: dict[str, Any]
    opened_at: float
    updated_at: float
    resolved_at: float | None
    first_observed_at: float
    last_observed_at: float
    events: int
    reopened: int
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    escalated_at: float | None = None
    ticket_id: str | None = None
    held_until: float | None = None
    store_id: str | None = None
    #: the store's IANA time zone, for showing times (listings only)
    store_timezone: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status != "resolved"

    def to_json(self) -> dict[str, Any]:
        """The alert as the API and webhooks show it; times labelled by whose clock they are."""
        return {
            "id": self.id,
            "device_id": self.device_id,
            "store_id": self.store_id,
            "store_timezone": self.store_timezone,
            "check": self.check_name,
            "status": self.status,
            "severity": self.severity,
            "summary": self.summary,
            "details": self.details,
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
            "resolved_at": self.resolved_at,
            "agent_first_observed_at": self.first_observed_at,
            "agent_last_observed_at": self.last_observed_at,
            "events": self.events,
            "reopened": self.reopened,
            "acknowledged_at": self.acknowledged_at,
            "acknowledged_by": self.acknowledged_by,
            "escalated_at": self.escalated_at,
            "ticket_id": self.ticket_id,
            "held_until": self.held_until,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """``change`` and the alert's new column values (``target`` is the row to update, None for
    a new row; ``values`` empty for :attr:`Change.NONE`)."""

    change: Change
    target: str | None
    values: dict[str, Any]


def decide(event: AlertEvent, unresolved: Alert | None, last_resolved: Alert | None) -> Decision:
    """What ``event`` does, given the (device, check)'s alert not yet resolved, if any, and
    else its most recently resolved one."""
    now = event.received_at
    if unresolved is not None and event.observed_at < unresolved.last_observed_at:
        return Decision(Change.NONE, None, {})
    if event.state == "resolved":
        if unresolved is None:
            return Decision(Change.NONE, None, {})
        return Decision(
            Change.RESOLVED,
            unresolved.id,
            {
                "status": "resolved",
                "resolved_at": now,
                "updated_at": now,
                "last_observed_at": event.observed_at,
                "events": unresolved.events + 1,
            },
        )
    common = {
        "held_until": event.hold_until,
        "severity": event.severity,
        "summary": event.summary,
        "details": event.details,
        "updated_at": now,
        "last_observed_at": event.observed_at,
    }
    if unresolved is not None:
        if unresolved.held_until is None or event.hold_until is None:
            common["held_until"] = None  # paged once: a repeat at night doesn't hold it again
        return Decision(Change.UPDATED, unresolved.id, {**common, "events": unresolved.events + 1})
    if (
        last_resolved is not None
        and last_resolved.resolved_at is not None
        and now - last_resolved.resolved_at < REOPEN_WINDOW
        and event.observed_at >= last_resolved.last_observed_at
    ):
        return Decision(
            Change.REOPENED,
            last_resolved.id,
            {
                **common,
                "status": "open",
                "resolved_at": None,
                "acknowledged_at": None,
                "acknowledged_by": None,
                "escalated_at": None,
                "events": last_resolved.events + 1,
                "reopened": last_resolved.reopened + 1,
            },
        )
    return Decision(
        Change.OPENED,
        None,
        {
            **common,
            "device_id": event.device_id,
            "check_name": event.check_name,
            "status": "open",
            "opened_at": now,
            "resolved_at": None,
            "first_observed_at": event.observed_at,
            "events": 1,
            "reopened": 0,
        },
    )


def worse(before: str, after: str) -> bool:
    """Whether severity ``after`` is worse than ``before`` (a repeat that got worse is news)."""
    return SEVERITIES.index(after) > SEVERITIES.index(before)
