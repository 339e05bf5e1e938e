"""Serve a relay's ScriptRunRequest: verify against the signed repository, then run and stream.

Python 3.8-compatible. Verification (TUF) happens before every run, in a worker thread; a script
that does not verify, or that the runner refuses, ends as ``script.finished`` ``refused`` with the
reason, which the relay audits. Nothing runs unless it verified (docs/scripts.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Optional, Tuple, Union

from posassist.client.http import http_url
from posassist.protocol import (
    JobQuery,
    JobResults,
    Message,
    ScriptFinished,
    ScriptOutput,
    ScriptProgress,
    ScriptRestoreRequest,
    ScriptRunRequest,
    ScriptStarted,
)
from posassist.protocol.messages import MAX_DEPTH, SCRIPT_STEPS, tree_ok

from ..errors import BackupError
from .results import ResultStore
from .verify import ScriptVerificationError, refresh_metadata, verify_script

if TYPE_CHECKING:
    from pathlib import Path

    from posassist.protocol.manifest import Manifest

    from .process import OutputChunk
    from .runner import RunEvent, ScriptRunner

log = logging.getLogger("posassist.agent")

#: The most bytes a script's files may add up to before the agent refuses to fetch them.
MAX_SCRIPT_BYTES = 4 * 1024 * 1024
#: Seconds between metadata refreshes while the agent runs (and one after every connect).
REFRESH_INTERVAL = 3600.0


class ScriptService:
    """Runs verified scripts for one agent; one run at a time (a till is not a build server)."""

    def __init__(
        self,
        data_dir: Path,
        relay_url: str,
        runner: ScriptRunner,
        *,
        root_hash: Optional[str] = None,
        tls_pin: Optional[str] = None,
        max_script_bytes: int = MAX_SCRIPT_BYTES,
        results: Optional[ResultStore] = None,
    ) -> None:
        base = http_url(relay_url)
        self.metadata_url = base + "/v1/scripts/metadata/"
        self.targets_url = base + "/v1/scripts/targets/"
        self.root_file = data_dir / "scripts" / "root.json"
        self.cache_dir = data_dir / "scripts" / "cache"
        self.runner = runner
        self.root_hash = root_hash
        self.tls_pin = tls_pin
        self.max_script_bytes = max_script_bytes
        #: The last results of runs the relay named (protocol v3), for its ``job.query``.
        self.results = results or ResultStore(data_dir / "scripts" / "results.json")
        self._lock = asyncio.Lock()
        # verify and refresh share the metadata cache; they run in worker threads, one at a time
        self._cache_lock = threading.Lock()
        self._refresh_wanted: Optional[asyncio.Event] = None

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def handle(
        self,
        request: ScriptRunRequest,
        send: Callable[[Message], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        """Verify, run and report one request; every outcome ends with one ScriptFinished."""
        job_id = request.job_id or f"run-{request.id}"
        async with self._lock:
            send = await self._recording(request.job_id, send)
            try:
                await self._handle(request, job_id, send, clock)
            except asyncio.CancelledError:
                self._cut_short(request.job_id, clock())
                raise

    def answer(self, query: JobQuery) -> JobResults:
        """What this till knows of the jobs a relay asks after (docs/protocol.md#requests)."""
        return JobResults(id=query.id, results=tuple(self.results.lookup(query.job_ids)))

    async def _recording(
        self, job_id: Optional[str], send: Callable[[Message], Awaitable[None]]
    ) -> Callable[[Message], Awaitable[None]]:
        """``send`` that also records the run's end under the relay's ``job_id`` (if it gave
        one), after recording that the run began: before any step of it."""
        if job_id is None:
            return send
        loop = asyncio.get_event_loop()
        await loop.run_in_executor(None, self.results.started, job_id)

        async def send_and_record(msg: Message) -> None:
            if isinstance(msg, ScriptFinished):
                await loop.run_in_executor(
                    None,
                    functools.partial(
                        self.results.finished,
                        job_id,
                        msg.status,
                        msg.finished_at,
                        exit_code=msg.exit_code,
                        backup_id=msg.backup_id,
                        detail=msg.detail,
                    ),
                )
            await send(msg)

        return send_and_record

    def _cut_short(self, job_id: Optional[str], now: float) -> None:
        """The run was cancelled (the agent's connection or process is ending) before its end
        was recorded."""
        if job_id is not None and self.results.lookup([job_id])[0]["status"] == "running":
            self.results.finished(
                job_id, "cancelled", now, detail="stopped when the agent's connection ended"
            )

    async def _handle(
        self,
        request: ScriptRunRequest,
        job_id: str,
        send: Callable[[Message], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        if not self.root_file.exists():
            await send(
                self._finished(
                    request,
                    job_id,
                    clock,
                    "refused",
                    "no trusted script repository root on this till",
                )
            )
            return
        loop = asyncio.get_event_loop()
        try:
            manifest, folder = await loop.run_in_executor(
                None, self._verify, request.script, request.version
            )
        except ScriptVerificationError as exc:
            log.warning("refused script %s %s: %s", request.script, request.version, exc)
            await send(
                _progress(
                    request,
                    job_id,
                    "refused",
                    clock(),
                    {"reason": exc.reason, "stage": "verification"},
                )
            )
            await send(self._finished(request, job_id, clock, "refused", str(exc)))
            return
        await send(
            _progress(
                request,
                job_id,
                "verified",
                clock(),
                {"risk": manifest.risk, "approvals": manifest.approvals_needed},
            )
        )

        async def on_event(event: RunEvent) -> None:
            if event.kind == "started":
                await send(ScriptStarted(id=request.id, job_id=job_id, started_at=clock()))
            elif event.kind in SCRIPT_STEPS:
                await send(_progress(request, job_id, event.kind, event.at, event.detail))

        async def on_output(chunk: OutputChunk) -> None:
            await send(
                ScriptOutput(
                    id=request.id,
                    job_id=job_id,
                    seq=chunk.seq,
                    stream=chunk.stream,
                    data=chunk.data,
                )
            )

        result = await self.runner.run(
            manifest,
            folder,
            dict(request.params),
            on_event=on_event,
            on_output=on_output,
            unattended=request.unattended,
        )
        await send(
            ScriptFinished(
                id=request.id,
                job_id=job_id,
                status=result.status,
                finished_at=clock(),
                exit_code=result.exit_code,
                backup_id=result.backup_id,
                detail=result.detail[:1024],
            )
        )

    async def restore(
        self,
        request: ScriptRestoreRequest,
        send: Callable[[Message], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        """A technician's restore of an earlier run's backup; ends with one ScriptFinished."""
        job_id = request.job_id or f"restore-{request.id}"
        async with self._lock:
            send = await self._recording(request.job_id, send)
            try:
                await self._restore(request, job_id, send, clock)
            except asyncio.CancelledError:
                self._cut_short(request.job_id, clock())
                raise

    async def _restore(
        self,
        request: ScriptRestoreRequest,
        job_id: str,
        send: Callable[[Message], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:

        async def on_event(event: RunEvent) -> None:
            if event.kind in SCRIPT_STEPS:
                await send(_progress(request, job_id, event.kind, event.at, event.detail))

        try:
            result = await self.runner.restore(request.backup_id, on_event=on_event)
        except BackupError as exc:
            await send(
                ScriptFinished(
                    id=request.id,
                    job_id=job_id,
                    status="failed",
                    finished_at=clock(),
                    detail=str(exc)[:1024],
                )
            )
            return
        detail = (
            f"restored {len(result.restored)}, removed {len(result.removed)}, "
            f"unchanged {len(result.unchanged)}"
        )
        await send(
            ScriptFinished(
                id=request.id,
                job_id=job_id,
                status="succeeded",
                finished_at=clock(),
                backup_id=result.backup_id,
                detail=detail,
            )
        )

    def _verify(self, script: str, version: str) -> Tuple[Manifest, Path]:
        with self._cache_lock:
            return verify_script(
                self.metadata_url,
                self.targets_url,
                self.root_file,
                self.cache_dir,
                script,
                version,
                self.max_script_bytes,
                root_hash=self.root_hash,
                tls_pin=self.tls_pin,
            )

    # -- keeping the rollback floor moving (docs/scripts.md#revocation) -------------------------

    def refresh(self) -> Dict[str, int]:
        """Fetch and verify every role's newest metadata into the cache; blocking (a worker
        thread). Returns role → trusted version; ScriptVerificationError when refused.

        Run on every connect and every :data:`REFRESH_INTERVAL` (:meth:`keep_fresh`), so a till
        that has seen a retirement refuses a relay that serves the older role again.
        """
        with self._cache_lock:
            return refresh_metadata(
                self.metadata_url,
                self.targets_url,
                self.root_file,
                self.cache_dir,
                root_hash=self.root_hash,
                tls_pin=self.tls_pin,
            )

    def refresh_soon(self) -> None:
        """Ask :meth:`keep_fresh` to refresh now (after a connect); never blocks."""
        if self._refresh_wanted is not None:
            self._refresh_wanted.set()

    async def keep_fresh(self, stop: asyncio.Event, interval: float = REFRESH_INTERVAL) -> None:
        """Refresh when asked (:meth:`refresh_soon`) and every ``interval`` s until ``stop``."""
        self._refresh_wanted = wanted = asyncio.Event()
        loop = asyncio.get_event_loop()
        while not stop.is_set():
            waits = [asyncio.ensure_future(e.wait()) for e in (wanted, stop)]
            await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            if stop.is_set():
                break
            wanted.clear()
            if not self.root_file.exists():
                continue
            try:
                versions = await loop.run_in_executor(None, self.refresh)
            except ScriptVerificationError as exc:
                log.warning("script metadata refresh refused: %s", exc)
            else:
                log.info("script metadata refreshed: %s", versions)

    @staticmethod
    def _finished(
        request: ScriptRunRequest,
        job_id: str,
        clock: Callable[[], float],
        status: str,
        detail: str,
    ) -> ScriptFinished:
        return ScriptFinished(
            id=request.id, job_id=job_id, status=status, finished_at=clock(), detail=detail[:1024]
        )


def _progress(
    request: Union[ScriptRunRequest, ScriptRestoreRequest],
    job_id: str,
    step: str,
    at: float,
    detail: Dict[str, Any],
) -> ScriptProgress:
    """A step for the relay to audit; a detail that msgpack can't carry is left out, not sent."""
    safe = detail if tree_ok(detail, MAX_DEPTH - 2) else {"note": "detail not representable"}
    return ScriptProgress(id=request.id, job_id=job_id, step=step, at=at, detail=dict(safe))
