"""Asking the merchant before a script runs; the runner awaits an answer, nothing runs without one.

:class:`LinkConsent` asks through the help window's local link (agent/helpwindow/); with no
window connected the answer is ``no_window``. Scripts whose manifest allows unattended runs
follow the store's policy (settings ``unattended_consent``). :class:`UnattendedOnlyPolicy` stands
in where there is no link at all (tests, a till with the link switched off).

A question still open when the agent stops is in ``<data>/help/consent-pending.json``; the next
start records its job as refused (``consent_denied``, the agent restarted), which the relay
learns through ``job.query`` (docs/helpwindow.md#consent).
"""

from __future__ import annotations

import contextvars
import enum
import json
import logging
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, NamedTuple, Optional, Protocol, Union

from posassist.client.files import write_private

if TYPE_CHECKING:
    from pathlib import Path

    from posassist.protocol.manifest import Manifest

    from .results import ResultStore

__all__ = [
    "CURRENT_JOB",
    "UNATTENDED_POLICIES",
    "ConsentDecision",
    "ConsentProvider",
    "Decided",
    "LinkConsent",
    "PendingConsents",
    "UnattendedOnlyPolicy",
    "WindowAsker",
]

log = logging.getLogger("posassist.agent")

#: The relay's job id of the run being asked about (set by the script service for each run).
CURRENT_JOB: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "posassist_consent_job", default=None
)
#: What a store may choose for scripts whose manifest allows unattended runs: ``ask`` the window
#: when one is open, else run; ``allow`` without asking; ``require`` an answer like any other.
UNATTENDED_POLICIES = ("ask", "allow", "require")
#: What the agent says of a question that was open when it stopped.
RESTARTED_DETAIL = (
    "consent_denied: the agent restarted before the merchant answered / 收银助手重启, 商户未作答"
)


class ConsentDecision(str, enum.Enum):
    """The merchant's answer, or the lack of one."""

    GRANTED = "granted"
    DENIED = "denied"
    TIMED_OUT = "timed_out"
    #: nobody to ask: no desktop session has the help window open
    NO_WINDOW = "no_window"


class Decided(NamedTuple):
    """A decision and who made it (a desktop user's name, ``store policy``, or empty)."""

    decision: ConsentDecision
    answered_by: str = ""


class ConsentProvider(Protocol):
    """Something that asks the merchant: the help window, or a policy standing in for it."""

    async def ask(
        self, manifest: Manifest, params: Mapping[str, Any]
    ) -> Union[ConsentDecision, Decided]:
        """Ask whether ``manifest``'s script may run with ``params``.

        The question names the script (``manifest.title``), what it changes (``manifest.changes``)
        and how long it takes (``manifest.expected_duration``). The runner bounds the wait with
        its own consent timeout and treats a timeout as :attr:`ConsentDecision.TIMED_OUT`.
        """
        ...


class UnattendedOnlyPolicy:
    """Nobody to ask: grant only scripts whose manifest allows unattended runs."""

    async def ask(self, manifest: Manifest, params: Mapping[str, Any]) -> ConsentDecision:
        return ConsentDecision.GRANTED if manifest.unattended else ConsentDecision.DENIED


class WindowAsker(Protocol):
    """The help service's side of a consent question (agent/helpwindow/service.py)."""

    @property
    def window_open(self) -> bool: ...

    async def ask_window(
        self, manifest: Manifest, params: Mapping[str, Any], timeout: float
    ) -> Decided: ...


class PendingConsents:
    """The consent questions open now, in a file, so a restart can't leave one unanswered."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._open: Dict[str, Dict[str, Any]] = {}

    def _write(self) -> None:
        write_private(self.path, json.dumps(list(self._open.values())))

    def add(self, key: str, job_id: Optional[str], script: str, at: float) -> None:
        self._open[key] = {"key": key, "job_id": job_id, "script": script, "asked_at": at}
        self._write()

    def remove(self, key: str) -> None:
        if self._open.pop(key, None) is not None:
            self._write()

    def recover(self, results: Optional[ResultStore], now: float) -> List[Dict[str, Any]]:
        """At start: each question the last run of the agent left open is denied; its job is
        recorded refused for the relay's ``job.query``. Returns what was found."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("open consent questions in %s not read: %s", self.path, exc)
            raw = []
        found = [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
        for entry in found:
            job_id = entry.get("job_id")
            log.warning(
                "consent for %s was open when the agent stopped: denied (job %s)",
                entry.get("script"),
                job_id,
            )
            if results is not None and isinstance(job_id, str) and job_id:
                results.finished(job_id, "refused", now, detail=RESTARTED_DETAIL)
        self._open = {}
        self._write()
        return found


class LinkConsent:
    """Asks the merchant through the help window (the store's policy for unattended-ok scripts).

    Args:
        asker: the help service: is a window open, and ask it.
        timeout: seconds the merchant has (the runner's consent timeout; shown as a countdown).
        unattended_policy: one of :data:`UNATTENDED_POLICIES`.
    """

    def __init__(self, asker: WindowAsker, timeout: float, unattended_policy: str = "ask") -> None:
        if unattended_policy not in UNATTENDED_POLICIES:
            raise ValueError(f"unattended_policy must be one of {UNATTENDED_POLICIES}")
        self.asker = asker
        self.timeout = timeout
        self.unattended_policy = unattended_policy

    async def ask(self, manifest: Manifest, params: Mapping[str, Any]) -> Decided:
        if manifest.unattended and self.unattended_policy == "allow":
            return Decided(ConsentDecision.GRANTED, "store policy")
        if not self.asker.window_open:
            if manifest.unattended and self.unattended_policy == "ask":
                return Decided(ConsentDecision.GRANTED, "store policy")
            return Decided(ConsentDecision.NO_WINDOW)
        return await self.asker.ask_window(manifest, params, self.timeout)
