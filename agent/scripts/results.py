"""The last results of recent script runs, kept in the data dir so the relay can ask after them.

Python 3.8-compatible, stdlib only. A relay that lost track of a run (docs/protocol.md#requests)
sends ``job.query`` after a reconnect; the answer comes from here. Next to the results, a longer
log of the job ids this till has *received* proves a negative: a job not in it never reached the
till, so it never ran here (``never_received``).

The file (``results.json``) is format 2: ``{"format": 2, "results": [...], "received": [...]}``.
Format 1, a plain list of results, is still read (its results count as received).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import tempfile
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional

from posassist.client.files import read_state
from posassist.protocol.messages import SCRIPT_STATUSES, job_result_problem

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["FORMAT", "MAX_RECEIPTS", "MAX_RESULTS", "ResultStore"]

log = logging.getLogger("posassist.agent")

#: Runs remembered; the oldest is forgotten first.
MAX_RESULTS = 64
#: Job ids remembered as received (the receipts log); the oldest is forgotten first.
MAX_RECEIPTS = 4096
#: The format this module writes.
FORMAT = 2
#: What the till says of a job it received but no longer keeps the result of.
FORGOTTEN = "received, but its result is no longer kept on this till"
#: What a run still marked running in the file means: the agent stopped while it ran.
INTERRUPTED = "interrupted: the agent stopped while the script ran"


class ResultStore:
    """Job id → how that run ended (or ``running``), at most ``max_results``, and the ids of the
    last ``max_receipts`` jobs received, in one JSON file.

    Each change rewrites the file atomically (temporary file, fsync, rename): a till that loses
    power keeps the old file or the new one, never half of one.
    """

    def __init__(
        self, path: Path, *, max_results: int = MAX_RESULTS, max_receipts: int = MAX_RECEIPTS
    ) -> None:
        self.path = path
        self.max_results = max_results
        self.max_receipts = max_receipts
        self._results: collections.OrderedDict[str, Dict[str, Any]] = collections.OrderedDict()
        #: job ids received, oldest first (values unused)
        self._received: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._load()

    def _load(self) -> None:
        raw = read_state(self.path, "script results", log)
        if raw is None:
            return
        entries: List[Any] = []
        received: List[Any] = []
        if isinstance(raw, list):  # format 1: the results alone
            entries = raw
        elif isinstance(raw, dict) and raw.get("format") == FORMAT:
            results, ids = raw.get("results"), raw.get("received")
            entries = results if isinstance(results, list) else []
            received = ids if isinstance(ids, list) else []
        else:
            log.warning("script results in %s have an unknown format, starting empty", self.path)
            return
        for job_id in received[-self.max_receipts :]:
            if type(job_id) is str and 1 <= len(job_id) <= 64:
                self._receipt(job_id)
        for entry in entries[-self.max_results :]:
            if not isinstance(entry, dict) or job_result_problem(entry) is not None:
                continue
            if entry["status"] == "running":
                # Written by an agent process that is gone: the run was cut short with it.
                entry = dict(entry, status="failed", detail=INTERRUPTED)
            self._results[entry["job_id"]] = entry
            self._receipt(entry["job_id"])

    def received(self, job_id: str) -> None:
        """Note that the request for ``job_id`` reached this till (in memory; written with the
        next change, :meth:`started` or :meth:`finished`, which follow at once). A job noted
        only here never ran: the agent records its start before any step of it."""
        self._receipt(job_id)

    def _receipt(self, job_id: str) -> None:
        self._received.pop(job_id, None)
        self._received[job_id] = None
        while len(self._received) > self.max_receipts:
            self._received.popitem(last=False)

    def started(self, job_id: str) -> None:
        """Record that the run ``job_id`` has begun, before any step of it."""
        self._put(
            {
                "job_id": job_id,
                "status": "running",
                "exit_code": None,
                "finished_at": None,
                "backup_id": None,
                "detail": "",
            }
        )

    def finished(
        self,
        job_id: str,
        status: str,
        finished_at: float,
        *,
        exit_code: Optional[int] = None,
        backup_id: Optional[str] = None,
        detail: str = "",
    ) -> None:
        """Record how the run ``job_id`` ended (``status`` from SCRIPT_STATUSES)."""
        if status not in SCRIPT_STATUSES:
            raise ValueError(f"not a script status: {status!r}")
        self._put(
            {
                "job_id": job_id,
                "status": status,
                "exit_code": exit_code,
                "finished_at": float(finished_at),
                "backup_id": backup_id,
                "detail": detail[:1024],
            }
        )

    def lookup(
        self, job_ids: Iterable[str], *, never_received: bool = True
    ) -> List[Dict[str, Any]]:
        """One result per job id, in order. A job received whose result is forgotten is
        ``unknown``; one not in the receipts log is ``never_received`` (with ``never_received``
        False, for a v3 relay that doesn't know the status: ``unknown``)."""
        answers = []
        for job_id in job_ids:
            known = self._results.get(job_id)
            if known is None:
                status, detail = "unknown", FORGOTTEN
                if job_id not in self._received:
                    status = "never_received" if never_received else "unknown"
                    detail = "this till never received the job"
                known = {
                    "job_id": job_id,
                    "status": status,
                    "exit_code": None,
                    "finished_at": None,
                    "backup_id": None,
                    "detail": detail,
                }
            answers.append(dict(known))
        return answers

    def _put(self, entry: Dict[str, Any]) -> None:
        self._receipt(entry["job_id"])
        self._results.pop(entry["job_id"], None)
        self._results[entry["job_id"]] = entry
        while len(self._results) > self.max_results:
            self._results.popitem(last=False)
        try:
            self._write()
        except OSError as exc:  # the run itself must not fail for it; the relay asks in vain
            log.warning("script results not written to %s: %s", self.path, exc)

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(
            {
                "format": FORMAT,
                "results": list(self._results.values()),
                "received": list(self._received),
            },
            ensure_ascii=False,
        )
        fd, tmp = tempfile.mkstemp(prefix=".results-", dir=str(self.path.parent))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, str(self.path))
        except BaseException:
            os.unlink(tmp)
            raise
