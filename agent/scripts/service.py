"""Serve a relay's ScriptRunRequest: verify against the signed repository, then run and stream.

Python 3.8-compatible. Verification (TUF) happens before every run, in a worker thread; a script
that does not verify, or that the runner refuses, ends as ``script.finished`` ``refused`` with the
reason, which the relay audits. Nothing runs unless it verified (docs/scripts.md).

A run belongs to this service, not to the connection that asked for it: when the connection to
the relay drops, the script runs on and its end is kept in the results file, which the relay asks
after once the agent is back (docs/protocol.md#request-lifetime-relay). Only :meth:`close` (the
agent stopping) cuts a run short.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import threading
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Optional,
    Set,
    Tuple,
    Union,
)

from posassist.client.http import http_url
from posassist.protocol import (
    ErrorReply,
    JobQuery,
    JobResults,
    Message,
    ScriptCancel,
    ScriptFinished,
    ScriptOutput,
    ScriptProgress,
    ScriptRestoreRequest,
    ScriptRunRequest,
    ScriptStarted,
)
from posassist.protocol.errors import ProtocolError
from posassist.protocol.messages import MAX_DEPTH, SCRIPT_STEPS, tree_ok

from ..errors import BackupError, ScriptRefusedError
from .consent import CURRENT_JOB
from .results import ResultStore
from .verify import ScriptVerificationError, refresh_metadata, verify_script

if TYPE_CHECKING:
    from pathlib import Path

    from posassist.protocol.manifest import Manifest

    from .process import OutputChunk
    from .runner import RunEvent, RunResult, ScriptRunner

log = logging.getLogger("posassist.agent")

#: The most bytes a script's files may add up to before the agent refuses to fetch them.
MAX_SCRIPT_BYTES = 4 * 1024 * 1024
#: Seconds between metadata refreshes while the agent runs (and one after every connect).
REFRESH_INTERVAL = 3600.0


class _Run:
    """A run under way, by the relay's job id: what a ``script.cancel`` needs to stop it and
    to answer with its end."""

    __slots__ = ("cancel", "cancel_asked", "ended", "finished", "started")

    def __init__(self) -> None:
        self.cancel = asyncio.Event()
        self.cancel_asked = False
        self.started = False
        #: the run's ScriptFinished once sent (None: it ended inside the agent without one)
        self.ended: asyncio.Future[Optional[ScriptFinished]] = (
            asyncio.get_event_loop().create_future()
        )
        self.finished: Optional[ScriptFinished] = None


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
        self.data_dir = data_dir
        #: (job id, what) of the run under way, for the record when the agent stops it
        self._current: Optional[Tuple[str, str]] = None
        self.root_file = data_dir / "scripts" / "root.json"
        self.cache_dir = data_dir / "scripts" / "cache"
        self.runner = runner
        self.root_hash = root_hash
        self.tls_pin = tls_pin
        self.max_script_bytes = max_script_bytes
        #: The last results of runs the relay named (protocol v3), for its ``job.query``.
        self.results = results or ResultStore(data_dir / "scripts" / "results.json")
        self._lock = asyncio.Lock()
        #: runs and restores under way; they outlive the connection that asked for them
        self._tasks: Set[asyncio.Future[None]] = set()
        # verify and refresh share the metadata cache; they run in worker threads, one at a time
        self._cache_lock = threading.Lock()
        self._refresh_wanted: Optional[asyncio.Event] = None
        #: runs under way by the relay's job id (protocol v3+), for ``script.cancel``
        self._runs: Dict[str, _Run] = {}
        #: answers to ``script.cancel`` waiting for their run to end
        self._cancels: Set[asyncio.Future[None]] = set()

    @property
    def busy(self) -> bool:
        return bool(self._tasks) or self._lock.locked()

    def submit(
        self,
        request: Union[ScriptRunRequest, ScriptRestoreRequest],
        send: Callable[[Message], Awaitable[None]],
        clock: Callable[[], float],
    ) -> Optional[ErrorReply]:
        """Start serving ``request`` in a task this service owns (not the connection: a run
        survives its connection dropping); or, if a script is running already, the ``busy``
        error to answer with. Either way the job is noted as received (never_received proof),
        and a refused one is recorded as such, so the relay's job.query gets a true answer."""
        job_id = request.job_id
        if job_id is not None:
            self.results.received(job_id)
        if self.busy:
            run = isinstance(request, ScriptRunRequest)
            what = "another script is running" if run else "a script is running"
            if job_id is not None:
                self.results.finished(job_id, "refused", clock(), detail="busy: " + what)
            return ErrorReply(id=request.id, code="busy", message=what)
        send = _tolerant(send)
        if isinstance(request, ScriptRunRequest):
            task = asyncio.ensure_future(self.handle(request, send, clock))
        else:
            task = asyncio.ensure_future(self.restore(request, send, clock))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return None

    def _done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("a script run failed inside the agent: %s: %s", type(exc).__name__, exc)

    async def close(self) -> None:
        """The agent is stopping: cut runs under way short (each recorded ``cancelled``, and in
        the till's own audit log: a service stop by an uninstall, an upgrade or a shutdown)."""
        tasks = list(self._tasks) + list(self._cancels)
        if self._tasks and self._current is not None:
            from .. import journal

            job_id, what = self._current
            try:
                journal.record(
                    self.data_dir,
                    "script.cancelled",
                    "ok",
                    {"job_id": job_id, "what": what, "why": "the agent stopped"},
                )
            except OSError as exc:  # the run is cut short all the same
                log.warning("cancellation of %s not recorded: %s", job_id, exc)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def cancel(
        self, request: ScriptCancel, send: Callable[[Message], Awaitable[None]]
    ) -> Optional[ErrorReply]:
        """The relay's ``script.cancel`` (protocol v7, docs/protocol.md#cancel): stop the run of
        ``request.job_id`` with the runner's own cancel (its process tree is killed, its backup
        restored and said so) and answer with its ``script.finished`` once it has ended; or,
        when that job is not running here, the ``not_running`` error to answer with at once."""
        job_id = request.job_id
        run = self._runs.get(job_id)
        if run is None or run.ended.done():
            log.warning("cancel of job %s asked by the relay, refused: not running", job_id)
            return ErrorReply(
                id=request.id,
                code="not_running",
                message=f"job {job_id} is not running on this till",
            )
        if run.cancel_asked:  # asked again while it stops: answered with the same end
            log.warning("cancel of job %s asked again by the relay: already stopping", job_id)
        else:
            log.warning("cancel of job %s asked by the relay: stopping its process tree", job_id)
        run.cancel_asked = True
        run.cancel.set()
        waiter = asyncio.ensure_future(self._answer_cancel(request, run, _tolerant(send)))
        self._cancels.add(waiter)
        waiter.add_done_callback(self._cancels.discard)
        return None

    async def _answer_cancel(
        self, request: ScriptCancel, run: _Run, send: Callable[[Message], Awaitable[None]]
    ) -> None:
        finished = await asyncio.shield(run.ended)
        if finished is not None and finished.status == "cancelled":
            log.warning("job %s cancelled: %s", request.job_id, finished.detail)
            await send(dataclasses.replace(finished, id=request.id))
            return
        ended = finished.status if finished is not None else "in the agent"
        log.warning("cancel of job %s came too late: the run ended %s", request.job_id, ended)
        await send(
            ErrorReply(
                id=request.id,
                code="not_running",
                message=f"job {request.job_id} ended {ended} before the cancel took effect",
            )
        )

    async def handle(
        self,
        request: ScriptRunRequest,
        send: Callable[[Message], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        """Verify, run and report one request; every outcome ends with one ScriptFinished."""
        job_id = request.job_id or f"run-{request.id}"
        run = _Run()
        if request.job_id is not None:  # only a job the relay named can be cancelled
            self._runs[request.job_id] = run
        try:
            what = f"{request.script} {request.version}"
            async with self._turn(job_id, request.job_id, what, clock):
                send = _noting(run, await self._recording(request.job_id, send))
                await self._handle(request, job_id, send, clock, run)
        finally:
            if self._runs.get(job_id) is run:
                del self._runs[job_id]
            if not run.ended.done():
                run.ended.set_result(run.finished)

    @contextlib.asynccontextmanager
    async def _turn(
        self, job_id: str, relay_job_id: Optional[str], what: str, clock: Callable[[], float]
    ) -> AsyncIterator[None]:
        """One run or restore at a time: the lock held and ``running.json`` written for the
        block; a block cut short (cancelled, or an error) recorded so for the relay's job."""
        async with self._lock:
            await self._mark_running(job_id, what, clock())
            try:
                yield
            except asyncio.CancelledError:
                self._cut_short(relay_job_id, clock())
                raise
            except Exception as exc:
                self._cut_short(relay_job_id, clock(), f"agent error: {type(exc).__name__}")
                raise
            finally:
                self._mark_idle()

    async def _mark_running(self, job_id: str, what: str, now: float) -> None:
        """``running.json`` while it runs: what an uninstaller waits on (agent/runstate.py)."""
        from ..runstate import write_running

        self._current = (job_id, what)
        loop = asyncio.get_event_loop()
        try:
            await loop.run_in_executor(None, write_running, self.data_dir, job_id, what, now)
        except OSError as exc:  # an uninstaller then does not wait; the run goes on
            log.warning("running.json not written: %s", exc)

    def _mark_idle(self) -> None:
        from ..runstate import clear_running

        self._current = None
        try:
            clear_running(self.data_dir)  # also on a cancel: no await here
        except OSError as exc:
            log.warning("running.json not removed: %s", exc)

    def answer(self, query: JobQuery, *, never_received: bool = True) -> JobResults:
        """What this till knows of the jobs a relay asks after (docs/protocol.md#requests);
        ``never_received`` False for a relay older than protocol v4."""
        results = self.results.lookup(query.job_ids, never_received=never_received)
        return JobResults(id=query.id, results=tuple(results))

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

    def _cut_short(
        self, job_id: Optional[str], now: float, why: str = "stopped when the agent stopped"
    ) -> None:
        """The run was cancelled (the agent is stopping), or failed inside the agent, before
        its end was recorded."""
        if job_id is not None and self.results.lookup([job_id])[0]["status"] == "running":
            status = "cancelled" if why.startswith("stopped") else "failed"
            self.results.finished(job_id, status, now, detail=why)

    async def _handle(
        self,
        request: ScriptRunRequest,
        job_id: str,
        send: Callable[[Message], Awaitable[None]],
        clock: Callable[[], float],
        run: Optional[_Run] = None,
    ) -> None:
        run = run if run is not None else _Run()
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
                # the run timeout this agent enforces: the relay holds the route that long
                {
                    "risk": manifest.risk,
                    "approvals": manifest.approvals_needed,
                    "run_timeout": manifest.timeout,
                },
            )
        )

        async def on_event(event: RunEvent) -> None:
            if event.kind == "started":
                run.started = True
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

        CURRENT_JOB.set(job_id)  # a consent question names its job (docs/helpwindow.md#consent)
        result = await self.runner.run(
            manifest,
            folder,
            dict(request.params),
            on_event=on_event,
            on_output=on_output,
            unattended=request.unattended,
            cancel=run.cancel,
        )
        detail = result.detail
        if result.status == "cancelled" and run.cancel_asked:
            detail = _cancel_detail(result, run.started)
        await send(
            ScriptFinished(
                id=request.id,
                job_id=job_id,
                status=result.status,
                finished_at=clock(),
                exit_code=result.exit_code,
                backup_id=result.backup_id,
                detail=detail[:1024],
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
        async with self._turn(job_id, request.job_id, f"restore {request.backup_id}", clock):
            send = await self._recording(request.job_id, send)
            await self._restore(request, job_id, send, clock)

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
        except ScriptRefusedError as exc:  # a sale is open: nothing was touched
            await send(
                ScriptFinished(
                    id=request.id,
                    job_id=job_id,
                    status="refused",
                    finished_at=clock(),
                    detail=exc.refusal.text[:1024],
                )
            )
            return
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


def _cancel_detail(result: RunResult, started: bool) -> str:
    """What a cancelled run did, in words: nothing is restored without saying so, and a backup
    stays in the till's store, restorable again (docs/protocol.md#cancel)."""
    said = "已按要求取消 / cancelled on request"
    if not started:
        return said + " before the script started: nothing ran, nothing changed"
    said += ": the script's process tree was stopped"
    if result.backup_id is None:
        return said + "; it backed nothing up, so nothing was restored"
    if result.restore is not None:
        return (
            f"{said}; backup {result.backup_id} restored, and kept: it can be restored again"
            " (posassist restore)"
        )
    return (
        f"{said}; restoring backup {result.backup_id} FAILED: the files may be half changed,"
        " restore it with posassist restore"
    )


def _noting(
    run: _Run, send: Callable[[Message], Awaitable[None]]
) -> Callable[[Message], Awaitable[None]]:
    """``send`` that keeps the run's ScriptFinished for a ``script.cancel`` to answer with."""

    async def send_and_note(msg: Message) -> None:
        if isinstance(msg, ScriptFinished):
            run.finished = msg
        await send(msg)

    return send_and_note


def _tolerant(send: Callable[[Message], Awaitable[None]]) -> Callable[[Message], Awaitable[None]]:
    """``send`` for a run: a connection that is closing or gone drops the message, never the run
    (its end is in the results file for the relay to ask after)."""

    async def send_or_drop(msg: Message) -> None:
        try:
            await send(msg)
        except ProtocolError as exc:
            log.info("%s of a run not sent: %s", msg.TAG, exc)

    return send_or_drop


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
