"""The relay's health-alert machinery, one per app (relay/handlers/alerts.py ``health_context``
makes it): its storage, the webhook sender, the check policies and the background work started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from prometheus_client import Counter

    from .alerts import Alert
    from .policies import PolicyBook
    from .storage.health import HealthStore
    from .webhooks import WebhookSender

__all__ = ["Health"]


@dataclass(slots=True)
class Health:
    """The relay's health-alert machinery: its storage, the webhook sender, and the background
    work (remediation) it started."""

    store: HealthStore
    sender: WebhookSender
    policies: PolicyBook
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: (device, check) whose remediation is being decided (relay/remediation.py) -> the alert of
    #: a firing event that came meanwhile (None: none did), decided again once this one ends
    remediating: dict[tuple[str, str], Alert | None] = field(default_factory=dict)
    #: ``posassist_relay_alert_events_total{result}``: stored, duplicate, unavailable
    events: Counter | None = None
