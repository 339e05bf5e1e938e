"""Asking the merchant before a script runs; the runner awaits an answer, nothing runs without one.

Until the help window exists (issue 7) :class:`UnattendedOnlyPolicy` answers: deny unless the
manifest allows unattended runs.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Mapping, Protocol

if TYPE_CHECKING:
    from posassist.protocol.manifest import Manifest

__all__ = ["ConsentDecision", "ConsentProvider", "UnattendedOnlyPolicy"]


class ConsentDecision(str, enum.Enum):
    """The merchant's answer, or the lack of one."""

    GRANTED = "granted"
    DENIED = "denied"
    TIMED_OUT = "timed_out"


class ConsentProvider(Protocol):
    """Something that asks the merchant: the help window, or a policy standing in for it."""

    async def ask(self, manifest: Manifest, params: Mapping[str, Any]) -> ConsentDecision:
        """Ask whether ``manifest``'s script may run with ``params``.

        The question names the script (``manifest.title``), what it changes (``manifest.changes``)
        and how long it takes (``manifest.expected_duration``). The runner bounds the wait with
        its own consent timeout and treats a timeout as :attr:`ConsentDecision.TIMED_OUT`.
        """
        ...


class UnattendedOnlyPolicy:
    """Nobody to ask yet: grant only scripts whose manifest allows unattended runs."""

    async def ask(self, manifest: Manifest, params: Mapping[str, Any]) -> ConsentDecision:
        return ConsentDecision.GRANTED if manifest.unattended else ConsentDecision.DENIED
