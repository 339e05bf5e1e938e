"""Run a verified vetted script: parameters, platform, preconditions, consent, backup, the process,
and restore on failure, each step reported to the caller (DESIGN.md flow 5, issue 6).

The caller has already verified the script (agent/scripts/verify.py) and passes its folder and the
parsed manifest; it turns the events into ScriptStarted/ScriptOutput/ScriptFinished and audit.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Dict,
    Mapping,
    Optional,
    Sequence,
)

from posassist.agent.errors import BackupError, ScriptRefusedError
from posassist.agent.profile import profile_env
from posassist.agent.scripts.backup import BackupStore, RestoreResult, expand_paths
from posassist.agent.scripts.consent import (
    ConsentDecision,
    ConsentProvider,
    Decided,
    UnattendedOnlyPolicy,
)
from posassist.agent.scripts.preconditions import Facts, evaluate, gather_facts
from posassist.agent.scripts.process import (
    OutputChunk,
    check_cmd_argv,
    interpreter_argv,
    minimal_env,
    run_process,
)
from posassist.agent.scripts.refusal import Refusal
from posassist.protocol.manifest import ParamError, Precondition, validate_params

if TYPE_CHECKING:
    import datetime
    from pathlib import Path

    from posassist.agent.profile import PosProfile
    from posassist.protocol.manifest import Manifest

__all__ = ["EVENT_KINDS", "RunEvent", "RunResult", "ScriptRunner"]

#: what :class:`RunEvent` reports, in the order a run can produce them
EVENT_KINDS = (
    "refused",  # detail: code, zh, en — nothing ran
    "consent_asked",  # detail: script, version, timeout
    "consent_answered",  # detail: decision
    "backup_made",  # detail: backup_id, paths, sizes
    "started",  # detail: pid, argv (interpreter and script, then validated params)
    "finished",  # detail: status, exit_code, output_bytes, dropped_bytes, duration
    "restored",  # detail: backup_id, restored, removed, unchanged, verified
    "restore_failed",  # detail: backup_id, error
)


@dataclass(frozen=True)
class RunEvent:
    """One step of a run, for the relay and the audit chain."""

    kind: str
    at: float
    detail: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    """How a run ended; ``status`` is one of protocol.messages.SCRIPT_STATUSES.

    Attributes:
        status: ``succeeded``, ``failed``, ``timed_out``, ``cancelled`` or ``refused``.
        exit_code: the script's exit code (negative: killed by that signal), None if none.
        refusal: why it was refused (status ``refused`` only).
        backup_id: the backup made before the run, if the manifest lists paths.
        restore: what was restored after a failed run, if anything.
        output_bytes: output passed on; ``dropped_bytes``: output past ``max_output``.
        duration: seconds the process ran (0 when refused).
    """

    status: str
    exit_code: Optional[int] = None
    refusal: Optional[Refusal] = None
    backup_id: Optional[str] = None
    restore: Optional[RestoreResult] = None
    output_bytes: int = 0
    dropped_bytes: int = 0
    duration: float = 0.0

    @property
    def detail(self) -> str:
        """Text for ``ScriptFinished.detail``."""
        if self.refusal is not None:
            return self.refusal.text
        parts = []
        if self.dropped_bytes:
            parts.append(f"output capped, {self.dropped_bytes} bytes dropped")
        if self.restore is not None:
            parts.append(f"backup {self.restore.backup_id} restored")
        return "; ".join(parts)


EventSink = Callable[[RunEvent], Awaitable[None]]
OutputSink = Callable[[OutputChunk], Awaitable[None]]


async def _ignore(_: Any) -> None:
    return None


async def _unless_cancelled(
    asked: Awaitable[Any], cancel: Optional[asyncio.Event]
) -> Optional[Any]:
    """``asked``'s answer, or None as soon as ``cancel`` is set (``asked`` is then cancelled)."""
    if cancel is None:
        return await asked
    answer = asyncio.ensure_future(asked)
    cancelled = asyncio.ensure_future(cancel.wait())
    try:
        await asyncio.wait({answer, cancelled}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (answer, cancelled):
            if not task.done():
                task.cancel()
        await asyncio.gather(answer, cancelled, return_exceptions=True)
    if answer.done() and not answer.cancelled():
        return answer.result()
    return None


class ScriptRunner:
    """Runs verified scripts on this till, one call of :meth:`run` per request.

    Args:
        backups: where backups live (``<data dir>/backups``).
        consent: who answers consent questions; default: deny unless the manifest allows
            unattended runs.
        profile: the POS profile (how to tell an open sale); None refuses ``no_sale_open``.
        placeholders: values for ``${DATA}``, ``${POS_DATA}``… in the manifest's backup paths.
        tz: the store's time zone for ``outside_hours``; None for the till's local time.
        consent_timeout: how long to wait for the merchant's answer.
        work_root: parent of the fresh working directories (None: the system temp directory).
        facts: gathers the precondition facts (blocking; run in a worker). For tests of
            situations this machine can't stage; the default reads the real till.
        clock: wall-clock time, for events and business hours.
    """

    def __init__(
        self,
        *,
        backups: BackupStore,
        consent: Optional[ConsentProvider] = None,
        profile: Optional[PosProfile] = None,
        placeholders: Optional[Mapping[str, str]] = None,
        tz: Optional[datetime.tzinfo] = None,
        consent_timeout: float = 120.0,
        work_root: Optional[Path] = None,
        facts: Optional[Callable[[Sequence[Precondition]], Facts]] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backups = backups
        self.consent: ConsentProvider = consent if consent is not None else UnattendedOnlyPolicy()
        self.profile = profile
        self.placeholders = dict(placeholders or {})
        if profile is not None and profile.config_path:  # backup: ["${POS_CONFIG}"]
            self.placeholders.setdefault("POS_CONFIG", profile.config_path)
        self.tz = tz
        self.consent_timeout = consent_timeout
        self.work_root = work_root
        self._facts = facts if facts is not None else self._gather_facts
        self.clock = clock

    def _gather_facts(self, preconditions: Sequence[Precondition]) -> Facts:
        return gather_facts(preconditions, self.profile)

    async def _check_preconditions(self, manifest: Manifest) -> None:
        if not manifest.preconditions:
            return
        loop = asyncio.get_running_loop()
        facts = await loop.run_in_executor(None, self._facts, manifest.preconditions)
        failures = evaluate(manifest.preconditions, facts, self.clock(), self.tz)
        if failures:
            first = failures[0]
            if len(failures) > 1:
                first = Refusal(
                    first.code,
                    "；".join(f.zh for f in failures),
                    "; ".join(f.en for f in failures),
                )
            raise ScriptRefusedError(first)

    async def _check_no_sale_open(self) -> None:
        """A restore rewrites the POS's files: never under an open sale. Unlike a script's
        ``no_sale_open``, a till without a POS profile (that can't tell) may still restore:
        the restore is the way back from a bad change, and it is the technician's to ask."""
        if self.profile is None or not (
            self.profile.sale_open_file or self.profile.sale_open_process
        ):
            return
        check = (Precondition("no_sale_open"),)
        loop = asyncio.get_running_loop()
        facts = await loop.run_in_executor(None, self._facts, check)
        failures = evaluate(check, facts, self.clock(), self.tz)
        if failures:
            raise ScriptRefusedError(failures[0])

    async def _ask_consent(
        self,
        manifest: Manifest,
        params: Mapping[str, Any],
        on_event: EventSink,
        cancel: Optional[asyncio.Event] = None,
    ) -> None:
        await on_event(
            RunEvent(
                "consent_asked",
                self.clock(),
                {
                    "script": manifest.id,
                    "version": manifest.version,
                    "timeout": self.consent_timeout,
                    "backup": bool(manifest.backup),
                },
            )
        )
        answered_by = ""
        try:
            answer = await asyncio.wait_for(
                _unless_cancelled(self.consent.ask(manifest, params), cancel),
                self.consent_timeout,
            )
        except asyncio.TimeoutError:
            answer = ConsentDecision.TIMED_OUT
        if answer is None:  # cancelled while the merchant was asked: the run ends, nothing ran
            return
        if isinstance(answer, Decided):
            decision, answered_by = ConsentDecision(answer.decision), answer.answered_by
        else:
            decision = ConsentDecision(answer)
        await on_event(
            RunEvent(
                "consent_answered",
                self.clock(),
                {
                    "decision": decision.value,
                    "answered_by": answered_by,
                    "timeout": self.consent_timeout,
                },
            )
        )
        if decision is ConsentDecision.GRANTED:
            return
        if decision is ConsentDecision.DENIED:
            refusal = Refusal("consent_denied", "商户拒绝了此操作", "the merchant declined")
        elif decision is ConsentDecision.NO_WINDOW:
            refusal = Refusal(
                "consent_no_window",
                "收银台没有打开帮助窗口, 无人可以确认",
                "no help window open on the till: nobody to ask",
            )
        else:
            refusal = Refusal(
                "consent_timed_out",
                f"{self.consent_timeout:.0f} 秒内商户无应答",
                f"no answer from the merchant in {self.consent_timeout:.0f} s",
            )
        raise ScriptRefusedError(refusal)

    @staticmethod
    def _check_files(manifest: Manifest, script_dir: Path) -> None:
        for name in manifest.files:
            try:
                info = os.lstat(script_dir / name)
            except OSError:
                info = None
            if info is None or not stat.S_ISREG(info.st_mode):
                raise ScriptRefusedError(
                    Refusal(
                        "files_missing",
                        "脚本文件不完整",
                        f"script file {name} is missing or not a regular file",
                    )
                )

    async def run(
        self,
        manifest: Manifest,
        script_dir: Path,
        params: Mapping[str, Any],
        *,
        on_event: Optional[EventSink] = None,
        on_output: Optional[OutputSink] = None,
        unattended: bool = False,
        cancel: Optional[asyncio.Event] = None,
    ) -> RunResult:
        """Check, ask, back up, run and (on failure) restore one verified script.

        Nothing runs unless every check passes, in this order: parameters (validate_params),
        platform and interpreter, unattended allowed, the script's files present, preconditions,
        consent (when the manifest asks for it), preconditions again (time passed while the
        merchant read the question), then the backup. A refusal is a result, not an exception.

        Args:
            manifest: the verified script's manifest.
            script_dir: the verified folder holding ``manifest.files``; it is copied, never run
                in place.
            params: the technician's parameters, validated here.
            on_event: receives each :class:`RunEvent`.
            on_output: receives each :class:`OutputChunk` (≤ 64 KiB, capped at max_output).
            unattended: nobody asked for this run (an alert triggered it).
            cancel: set it to stop the script: before the process starts nothing runs (status
                ``cancelled``, no backup made); once it runs its process tree is killed and the
                backup restored, as after any failed run (``restored`` event).

        Returns:
            the result; ``status == "refused"`` with ``refusal`` when nothing ran.
        """
        emit: EventSink = on_event if on_event is not None else _ignore
        sink: OutputSink = on_output if on_output is not None else _ignore
        if cancel is not None and cancel.is_set():  # cancelled while it was being verified
            return RunResult(status="cancelled")
        try:
            try:
                argv_tail, env_extra = validate_params(manifest, params)
            except ParamError as exc:
                raise ScriptRefusedError(
                    Refusal("invalid_params", "参数不符合脚本的要求", str(exc))
                ) from None
            check_cmd_argv(manifest, argv_tail)
            head = interpreter_argv(manifest, manifest.entry)
            if unattended and not manifest.unattended:
                raise ScriptRefusedError(
                    Refusal(
                        "unattended_not_allowed",
                        "此脚本不能在无人值守时运行",
                        "this script may not run unattended",
                    )
                )
            self._check_files(manifest, script_dir)
            await self._check_preconditions(manifest)
            if manifest.consent:
                await self._ask_consent(manifest, params, emit, cancel)
                await self._check_preconditions(manifest)
            if cancel is not None and cancel.is_set():  # before the backup: nothing ran
                return RunResult(status="cancelled")
            try:
                paths = expand_paths(manifest.backup, self.placeholders)
                record = None
                if paths:
                    loop = asyncio.get_running_loop()
                    record = await loop.run_in_executor(None, self.backups.backup, paths)
            except (BackupError, OSError) as exc:
                raise ScriptRefusedError(
                    Refusal("backup_failed", "无法备份脚本要修改的文件，未运行", str(exc))
                ) from None
        except ScriptRefusedError as exc:
            refusal = exc.refusal
            await emit(
                RunEvent(
                    "refused",
                    self.clock(),
                    {"code": refusal.code, "zh": refusal.zh, "en": refusal.en},
                )
            )
            return RunResult(status="refused", refusal=refusal)
        if record is not None:
            await emit(
                RunEvent(
                    "backup_made",
                    self.clock(),
                    {
                        "backup_id": record.id,
                        "paths": [e.path for e in record.entries],
                        "sizes": [e.size if e.existed else None for e in record.entries],
                    },
                )
            )
        backup_id = record.id if record is not None else None
        workdir = tempfile.mkdtemp(
            prefix="posassist-run-", dir=str(self.work_root) if self.work_root else None
        )
        try:
            for name in manifest.files:
                shutil.copyfile(
                    script_dir / name, os.path.join(workdir, name), follow_symlinks=False
                )
            argv = [*head, *argv_tail]

            async def started(pid: int) -> None:
                await emit(RunEvent("started", self.clock(), {"pid": pid, "argv": argv}))

            try:
                ended = await run_process(
                    argv,
                    cwd=workdir,
                    env=minimal_env(workdir, {**profile_env(self.profile), **env_extra}),
                    timeout=manifest.timeout,
                    max_output=manifest.max_output,
                    on_output=sink,
                    on_start=started,
                    cancel=cancel,
                )
            except asyncio.CancelledError:
                if backup_id is not None:  # the tree is dead; put the files back before leaving
                    # on a worker thread, not the loop; shielded so a second cancel can't stop it
                    # half way (the thread finishes the restore either way)
                    await asyncio.shield(
                        asyncio.get_running_loop().run_in_executor(
                            None, self.backups.restore, backup_id
                        )
                    )
                raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        await emit(
            RunEvent(
                "finished",
                self.clock(),
                {
                    "status": ended.status,
                    "exit_code": ended.exit_code,
                    "output_bytes": ended.output_bytes,
                    "dropped_bytes": ended.dropped_bytes,
                    "duration": round(ended.duration, 3),
                },
            )
        )
        restored = None
        if ended.status != "succeeded" and backup_id is not None:
            try:
                restored = await self.restore(backup_id, on_event=emit)
            except BackupError:
                pass  # reported as restore_failed; the technician can retry restore(backup_id)
        return RunResult(
            status=ended.status,
            exit_code=ended.exit_code,
            backup_id=backup_id,
            restore=restored,
            output_bytes=ended.output_bytes,
            dropped_bytes=ended.dropped_bytes,
            duration=ended.duration,
        )

    async def restore(self, backup_id: str, on_event: Optional[EventSink] = None) -> RestoreResult:
        """Restore a backup byte for byte (after a failed run, or on a technician's request).

        Raises:
            BackupError: unknown or damaged backup, or the restore did not verify (reported as a
                ``restore_failed`` event first).
        """
        emit: EventSink = on_event if on_event is not None else _ignore
        loop = asyncio.get_running_loop()
        await self._check_no_sale_open()
        try:
            result = await loop.run_in_executor(None, self.backups.restore, backup_id)
        except (BackupError, OSError) as exc:
            await emit(
                RunEvent(
                    "restore_failed", self.clock(), {"backup_id": backup_id, "error": str(exc)}
                )
            )
            if isinstance(exc, BackupError):
                raise
            raise BackupError(f"restore of {backup_id} failed: {exc}") from exc
        await emit(
            RunEvent(
                "restored",
                self.clock(),
                {
                    "backup_id": backup_id,
                    "restored": list(result.restored),
                    "removed": list(result.removed),
                    "unchanged": list(result.unchanged),
                    "verified": result.verified,
                },
            )
        )
        return result
