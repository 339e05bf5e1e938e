"""The last results of recent script runs, kept in the data dir so the relay can ask after them.

Python 3.8-compatible, stdlib only. A relay that lost track of a run (docs/protocol.md#requests)
sends ``job.query`` after a reconnect; the answer comes from here.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import tempfile
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional

from posassist.protocol.messages import SCRIPT_STATUSES, job_result_problem

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["MAX_RESULTS", "ResultStore"]

log = logging.getLogger("posassist.agent")

#: Runs remembered; the oldest is forgotten first.
MAX_RESULTS = 64
#: What a run still marked running in the file means: the agent stopped while it ran.
INTERRUPTED = "interrupted: the agent stopped while the script ran"


class ResultStore:
    """Job id → how that run ended (or ``running``), at most ``max_results``, in one JSON file.

    Each change rewrites the file atomically (temporary file, fsync, rename): a till that loses
    power keeps the old file or the new one, never half of one.
    """

    def __init__(self, path: Path, *, max_results: int = MAX_RESULTS) -> None:
        self.path = path
        self.max_results = max_results
        self._results: collections.OrderedDict[str, Dict[str, Any]] = collections.OrderedDict()
        self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("script results in %s not read, starting empty: %s", self.path, exc)
            return
        entries = raw if isinstance(raw, list) else []
        for entry in entries[-self.max_results :]:
            if not isinstance(entry, dict) or job_result_problem(entry) is not None:
                continue
            if entry["status"] == "running":
                # Written by an agent process that is gone: the run was cut short with it.
                entry = dict(entry, status="failed", detail=INTERRUPTED)
            self._results[entry["job_id"]] = entry

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

    def lookup(self, job_ids: Iterable[str]) -> List[Dict[str, Any]]:
        """One result per job id, in order; ``unknown`` for a job this till has no record of."""
        answers = []
        for job_id in job_ids:
            known = self._results.get(job_id)
            if known is None:
                known = {
                    "job_id": job_id,
                    "status": "unknown",
                    "exit_code": None,
                    "finished_at": None,
                    "backup_id": None,
                    "detail": "",
                }
            answers.append(dict(known))
        return answers

    def _put(self, entry: Dict[str, Any]) -> None:
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
        data = json.dumps(list(self._results.values()), ensure_ascii=False)
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
