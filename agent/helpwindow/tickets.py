"""The till's own note of its tickets, so a reopened window or a restarted agent shows them even
before (or without) the relay answering ``ticket.query``.

Python 3.8, stdlib only. One JSON file (``<data>/help/tickets.json``, 0600), each entry exactly
the fields of ``ticket.updated``; rewritten whole on each change (write_private: old or new).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from posassist.client.files import read_state, write_private
from posassist.protocol import TicketOpened, TicketUpdated
from posassist.protocol.messages import MAX_TICKET_LIST, ticket_entry_problem

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["KEEP_RESOLVED", "TicketBook"]

log = logging.getLogger("posassist.agent")

#: Seconds a resolved or closed ticket stays on the till's list (as on the relay's ticket.list).
KEEP_RESOLVED = 7 * 86400.0
_DONE = ("resolved", "closed")


def _entry(update: TicketUpdated) -> Dict[str, Any]:
    wire = update.to_wire()
    del wire["t"]
    return wire


class TicketBook:
    """Ticket id -> its latest ``ticket.updated`` fields, newest first, at most MAX_TICKET_LIST."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tickets: Dict[str, Dict[str, Any]] = {}
        self._load()

    def _load(self) -> None:
        raw = read_state(self.path, "tickets", log)
        for entry in raw if isinstance(raw, list) else []:
            if ticket_entry_problem(entry) is None:
                self._tickets[entry["ticket_id"]] = entry

    def _save(self) -> None:
        write_private(
            self.path, json.dumps(self.entries(), ensure_ascii=False, separators=(",", ":"))
        )

    def entries(self, now: Optional[float] = None) -> List[Dict[str, Any]]:
        """The tickets to show, newest first: open ones, and done ones younger than 7 days."""
        kept = [
            e
            for e in self._tickets.values()
            if now is None or e["status"] not in _DONE or now - e["updated_at"] < KEEP_RESOLVED
        ]
        kept.sort(key=lambda e: e["updated_at"], reverse=True)
        return kept[:MAX_TICKET_LIST]

    def opened(self, opened: TicketOpened) -> Dict[str, Any]:
        """A ticket the relay just opened for this till's help request."""
        update = TicketUpdated(
            ticket_id=opened.ticket_id,
            support_code=opened.support_code,
            status=opened.status,
            message_zh="已收到您的求助, 正在等待技术员",
            message_en="we have your request; waiting for a technician",
            updated_at=opened.created_at,
            response_due=opened.response_due,
        )
        return self.updated(update)

    def updated(self, update: TicketUpdated) -> Dict[str, Any]:
        entry = _entry(update)
        old = self._tickets.get(update.ticket_id)
        if old is not None and old["updated_at"] > update.updated_at:
            return old  # an older update arriving late changes nothing
        self._tickets[update.ticket_id] = entry
        self._trim()
        self._save()
        return entry

    def replace(self, entries: List[Dict[str, Any]]) -> None:
        """The relay's list is the truth: it replaces the note (a ticket it no longer lists is
        older than 7 days, or was never this device's)."""
        self._tickets = {e["ticket_id"]: dict(e) for e in entries}
        self._trim()
        self._save()

    def _trim(self) -> None:
        ordered = sorted(self._tickets.values(), key=lambda e: e["updated_at"], reverse=True)
        for entry in ordered[MAX_TICKET_LIST:]:
            del self._tickets[entry["ticket_id"]]
