"""Run one script process: no shell, a minimal environment, streamed and capped output, a deadline,
and the whole process tree killed on timeout or cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Optional, Sequence

from posassist.agent.errors import ScriptRefusedError
from posassist.agent.scripts.refusal import Refusal
from posassist.protocol.messages import (
    MAX_CHUNK,
)  # the largest ScriptOutput chunk (docs/protocol.md#chunking)

if TYPE_CHECKING:
    from posassist.protocol.manifest import Manifest

__all__ = [
    "MAX_CHUNK",
    "OutputChunk",
    "ProcessResult",
    "current_platform",
    "interpreter_argv",
    "kill_tree",
    "minimal_env",
    "run_process",
]

#: after the script ends or is killed, how long its pipes may stay open before we stop reading
DRAIN_TIMEOUT = 2.0
#: characters cmd.exe would act on even inside an argv item; refused there as a second guard
CMD_METACHARACTERS = frozenset('&|<>^%!"()\r\n')


def current_platform() -> str:
    """``linux`` or ``windows`` as the manifest spells them ("" for anything else)."""
    name = str(sys.platform)  # str(): mypy would fold the comparison for the checking OS
    if name == "win32":
        return "windows"
    return "linux" if name.startswith("linux") else ""


def _system_root() -> str:
    return os.environ.get("SystemRoot", r"C:\Windows")


def interpreter_argv(manifest: Manifest, entry: str, platform: Optional[str] = None) -> List[str]:
    """The absolute-path command line that starts ``entry`` (the script file) with its interpreter.

    Raises:
        ScriptRefusedError: the script's platforms or interpreter do not fit this OS, or the
            interpreter is missing.
    """
    platform = current_platform() if platform is None else platform
    if platform not in manifest.platforms:
        raise ScriptRefusedError(
            Refusal(
                "wrong_platform",
                "此脚本不适用于本机的操作系统",
                f"script is for {', '.join(manifest.platforms)}, "
                f"this till is {platform or sys.platform}",
            )
        )
    kind = manifest.interpreter
    fits = {"python": ("linux", "windows"), "sh": ("linux",), "powershell": ("windows",)}
    if platform not in fits.get(kind, ("windows",)):
        raise ScriptRefusedError(
            Refusal(
                "wrong_interpreter",
                "此脚本的解释器在本机上不可用",
                f"interpreter {kind} does not run on {platform}",
            )
        )
    if kind == "python":
        exe = sys.executable
        # -I: ignore PYTHON* variables and the user's site-packages; -B: no .pyc in the workdir
        argv = [exe, "-I", "-B", "-X", "utf8", entry]
    elif kind == "sh":
        exe = "/bin/sh"
        argv = [exe, entry]
    elif kind == "powershell":  # pragma: no cover - Windows only
        exe = os.path.join(
            _system_root(), "System32", "WindowsPowerShell", "v1.0", "powershell.exe"
        )
        argv = [exe, "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-File", entry]
    else:  # pragma: no cover - Windows only
        exe = os.path.join(_system_root(), "System32", "cmd.exe")
        argv = [exe, "/d", "/c", entry]
    if not exe or not os.path.isabs(exe) or not os.path.isfile(exe):
        raise ScriptRefusedError(
            Refusal(
                "interpreter_missing",
                "本机找不到此脚本需要的解释器",
                f"interpreter {kind} not found at {exe or '(unknown)'}",
            )
        )
    return argv


def check_cmd_argv(manifest: Manifest, argv: Sequence[str]) -> None:
    """cmd.exe re-parses its command line: refuse argv parameters it would act on."""
    if manifest.interpreter == "cmd" and any(set(a) & CMD_METACHARACTERS for a in argv):
        raise ScriptRefusedError(
            Refusal(
                "invalid_params",
                "参数含有不允许的字符",
                "a parameter holds characters cmd.exe would interpret; pass it as env instead",
            )
        )


def minimal_env(
    workdir: str, extra: Dict[str, str], platform: Optional[str] = None
) -> Dict[str, str]:
    """An explicit environment: system paths, a UTF-8 locale, the workdir as home and temp, and the
    parameters passed as env. Nothing else of the agent's environment leaks into the script.
    """
    platform = current_platform() if platform is None else platform
    if platform == "windows":  # pragma: no cover - Windows only
        root = _system_root()
        env = {
            "SystemRoot": root,
            "windir": root,
            "SystemDrive": root[:2],
            "PATH": ";".join(
                [os.path.join(root, "System32"), root, os.path.join(root, "System32", "Wbem")]
            ),
            "PATHEXT": ".COM;.EXE;.BAT;.CMD",
            "TEMP": workdir,
            "TMP": workdir,
            "USERPROFILE": workdir,
        }
    else:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": workdir,
            "TMPDIR": workdir,
        }
    env["POSASSIST_WORKDIR"] = workdir
    env.update(extra)
    return env


def kill_tree(pid: int, walk: bool = True) -> None:
    """Kill ``pid`` and everything it started (best effort, never raises).

    POSIX: the script leads its own session (``start_new_session``), so ``killpg`` reaches every
    process that stayed in its group; descendants found by psutil are killed too, which catches
    those that moved to a new session but are still children of the tree. A process that
    double-forked away to init escapes both.
    Windows: ``taskkill /T /F`` walks the tree from ``pid`` (CREATE_NEW_PROCESS_GROUP).
    ``walk=False`` skips the psutil walk, for a ``pid`` already reaped (its number may be reused).
    """
    if sys.platform == "win32":  # pragma: no cover - Windows only
        taskkill = os.path.join(_system_root(), "System32", "taskkill.exe")
        try:
            subprocess.run(
                [taskkill, "/PID", str(pid), "/T", "/F"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            pass
        return
    descendants = []
    if walk:
        try:
            import psutil  # type: ignore[import-untyped]

            descendants = psutil.Process(pid).children(recursive=True)
        except Exception:  # gone already, or psutil unavailable: killpg still covers the group
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for proc in descendants:
        try:
            proc.kill()
        except Exception:
            pass


@dataclass(frozen=True)
class OutputChunk:
    """A piece of output, at most MAX_CHUNK bytes; ``seq`` counts chunks of both streams from 0."""

    seq: int
    stream: str
    data: bytes


@dataclass(frozen=True)
class ProcessResult:
    """How the process ended.

    Attributes:
        status: ``succeeded``, ``failed``, ``timed_out`` or ``cancelled``.
        exit_code: the process's exit code (negative: killed by that signal); None if unknown.
        output_bytes: bytes passed to the output callback.
        dropped_bytes: bytes read past ``max_output`` and discarded.
        duration: seconds from start to end.
        pid: the script's process id.
    """

    status: str
    exit_code: Optional[int]
    output_bytes: int
    dropped_bytes: int
    duration: float
    pid: int


class _Output:
    """Shared budget and sequence numbers for both streams."""

    def __init__(self, max_output: int, sink: Callable[[OutputChunk], Awaitable[None]]) -> None:
        self.left = max_output
        self.seq = 0
        self.sent = 0
        self.dropped = 0
        self.sink = sink

    async def pump(self, stream_name: str, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(MAX_CHUNK)
            if not data:
                return
            keep = data[: self.left]
            self.dropped += len(data) - len(keep)
            if keep:
                self.left -= len(keep)
                self.sent += len(keep)
                chunk = OutputChunk(seq=self.seq, stream=stream_name, data=keep)
                self.seq += 1
                await self.sink(chunk)


async def run_process(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Dict[str, str],
    timeout: float,
    max_output: int,
    on_output: Callable[[OutputChunk], Awaitable[None]],
    on_start: Optional[Callable[[int], Awaitable[None]]] = None,
    cancel: Optional[asyncio.Event] = None,
) -> ProcessResult:
    """Start ``argv`` (no shell), stream its output, and end it by ``timeout`` or ``cancel``.

    Output beyond ``max_output`` bytes is read and discarded (counted), so a flooding script
    neither blocks on a full pipe nor fills the agent's memory. When the script ends, whatever
    it left running in its process group is killed too. If the calling task is cancelled the
    tree is killed before the CancelledError propagates.
    """
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    kwargs: Dict[str, object] = {}
    if sys.platform == "win32":  # pragma: no cover - Windows only
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        kwargs["start_new_session"] = True
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        **kwargs,  # type: ignore[arg-type]
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    output = _Output(max_output, on_output)
    pumps = asyncio.ensure_future(
        asyncio.gather(output.pump("stdout", proc.stdout), output.pump("stderr", proc.stderr))
    )
    waiter = asyncio.ensure_future(proc.wait())
    status = "failed"
    try:
        if on_start is not None:
            await on_start(proc.pid)
        waits: List[asyncio.Future[Any]] = [waiter]
        canceller: Optional[asyncio.Future[Any]] = None
        if cancel is not None:
            canceller = asyncio.ensure_future(cancel.wait())
            waits.append(canceller)
        remaining = max(0.0, started + timeout - time.monotonic())
        done, _ = await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        if canceller is not None and not canceller.done():
            canceller.cancel()
        if waiter in done:
            status = "succeeded" if proc.returncode == 0 else "failed"
        else:
            status = "cancelled" if canceller is not None and canceller in done else "timed_out"
        # the script is over: stragglers in its group go too, so nothing outlives the run
        await loop.run_in_executor(None, kill_tree, proc.pid, waiter not in done)
        for task in (waiter, pumps):
            try:
                await asyncio.wait_for(asyncio.shield(task), DRAIN_TIMEOUT)
            except asyncio.TimeoutError:
                pass  # a process that escaped the tree still holds a pipe: stop reading
    except BaseException:
        kill_tree(proc.pid)
        # Reap the killed tree and read its pipes to the end, briefly, so its transport closes
        # here and not (with a ResourceWarning) whenever it is garbage-collected.
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(asyncio.gather(waiter, pumps)), DRAIN_TIMEOUT)
        raise
    finally:
        for task in (pumps, waiter):
            if not task.done():
                task.cancel()
        await asyncio.gather(pumps, waiter, return_exceptions=True)
    return ProcessResult(
        status=status,
        exit_code=proc.returncode,
        output_bytes=output.sent,
        dropped_bytes=output.dropped,
        duration=time.monotonic() - started,
        pid=proc.pid,
    )
