"""Unattended remediation (docs/alerts.md#remediation): placeholder until the policy lands."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .alerts import Alert
    from .handlers.alerts import Health
    from .state import RelayState


def after_firing(state: RelayState, health: Health, alert: Alert) -> None:
    """A firing event changed ``alert``: maybe try the policy's script (not yet)."""
