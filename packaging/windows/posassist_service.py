"""The Windows service host of the posassist agent: speaks to the service control manager
(ctypes, no pywin32) and runs ``launch.py run --data DATA`` as its child.

Python 3.8+, standard library only. An agent that ends with an error ends the service with a
service-specific error, so the failure actions installer.py set (restart) apply; a stop request
ends the child. Its output goes to ``DATA\\logs\\agent.log``. Never yet run on Windows: the pure
parts are tested on Linux (tests/e2e/test_windows_bundle.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, List, Optional, Sequence, Tuple

SERVICE = "posassist-agent"
HERE = Path(__file__).resolve().parent
#: A log past this size is moved to agent.log.1 when the service starts.
MAX_LOG_BYTES = 10 * 1024 * 1024
STOP_WAIT_SECONDS = 15.0

# winsvc.h
SERVICE_WIN32_OWN_PROCESS = 0x10
SERVICE_STOPPED, SERVICE_START_PENDING, SERVICE_STOP_PENDING, SERVICE_RUNNING = 1, 2, 3, 4
SERVICE_ACCEPT_STOP, SERVICE_ACCEPT_SHUTDOWN = 0x1, 0x4
SERVICE_CONTROL_STOP, SERVICE_CONTROL_INTERROGATE, SERVICE_CONTROL_SHUTDOWN = 1, 4, 5
NO_ERROR = 0
ERROR_CALL_NOT_IMPLEMENTED = 120
ERROR_SERVICE_SPECIFIC_ERROR = 1066
#: StartServiceCtrlDispatcher's error when the process was not started by the SCM
ERROR_FAILED_SERVICE_CONTROLLER_CONNECT = 1063


def child_argv(python: str, data: Path) -> List[str]:
    return [python, str(HERE / "launch.py"), "run", "--data", str(data)]


def exit_codes(returncode: Optional[int], stop_requested: bool) -> Tuple[int, int]:
    """(dwWin32ExitCode, dwServiceSpecificExitCode) for the agent's end.

    A stop we asked for is a clean stop; an agent that ends by itself is a failure (it is meant to
    run until stopped), reported as a service-specific error so the SCM's failure actions restart
    it (``sc failureflag`` 1 makes them apply to an error stop, not only a crash).
    """
    if stop_requested:
        return NO_ERROR, 0
    code = returncode if returncode else 1
    return ERROR_SERVICE_SPECIFIC_ERROR, code & 0xFFFFFFFF


def open_log(data: Path) -> IO[bytes]:
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / "agent.log"
    if log.exists() and log.stat().st_size > MAX_LOG_BYTES:
        os.replace(str(log), str(logs / "agent.log.1"))
    return log.open("ab")


class Host:
    """One run of the agent as a child process, stoppable from another thread."""

    def __init__(self, data: Path, python: str = sys.executable) -> None:
        self.data = data
        self.python = python
        self.stop_requested = threading.Event()
        self.child: Optional[subprocess.Popen[bytes]] = None

    def run(self) -> int:
        """Start the child and wait for it; its return code."""
        with open_log(self.data) as log:
            flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
            self.child = subprocess.Popen(
                child_argv(self.python, self.data),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                creationflags=flags,
            )
            if self.stop_requested.is_set():
                self.child.terminate()
            return self.child.wait()

    def stop(self) -> None:
        self.stop_requested.set()
        child = self.child
        if child is not None and child.poll() is None:
            child.terminate()  # the outbox is durable: an alert in flight is sent after restart
            try:
                child.wait(STOP_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()


def serve(data: Path) -> int:  # pragma: no cover - Windows only
    """Run under the service control manager until it stops the service."""
    import ctypes
    from ctypes import wintypes

    advapi32: Any = ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined]

    class ServiceStatus(ctypes.Structure):
        _fields_ = [
            ("dwServiceType", wintypes.DWORD),
            ("dwCurrentState", wintypes.DWORD),
            ("dwControlsAccepted", wintypes.DWORD),
            ("dwWin32ExitCode", wintypes.DWORD),
            ("dwServiceSpecificExitCode", wintypes.DWORD),
            ("dwCheckPoint", wintypes.DWORD),
            ("dwWaitHint", wintypes.DWORD),
        ]

    functype: Any = ctypes.WINFUNCTYPE  # type: ignore[attr-defined]
    handler_ex = functype(
        wintypes.DWORD, wintypes.DWORD, wintypes.DWORD, wintypes.LPVOID, wintypes.LPVOID
    )
    service_main = functype(None, wintypes.DWORD, ctypes.POINTER(wintypes.LPWSTR))

    class TableEntry(ctypes.Structure):
        _fields_ = [("lpServiceName", wintypes.LPWSTR), ("lpServiceProc", service_main)]

    advapi32.RegisterServiceCtrlHandlerExW.restype = ctypes.c_void_p
    advapi32.RegisterServiceCtrlHandlerExW.argtypes = [
        wintypes.LPCWSTR,
        handler_ex,
        wintypes.LPVOID,
    ]
    advapi32.SetServiceStatus.argtypes = [ctypes.c_void_p, ctypes.POINTER(ServiceStatus)]
    advapi32.StartServiceCtrlDispatcherW.argtypes = [ctypes.POINTER(TableEntry)]

    host = Host(data)
    state: dict[str, Any] = {"handle": None}

    def report(current: int, exit_code: int = NO_ERROR, specific: int = 0) -> None:
        accepted = (
            SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN if current == SERVICE_RUNNING else 0
        )
        status = ServiceStatus(
            SERVICE_WIN32_OWN_PROCESS, current, accepted, exit_code, specific, 0, 20000
        )
        advapi32.SetServiceStatus(state["handle"], ctypes.byref(status))

    def on_control(control: int, _type: int, _data: Any, _context: Any) -> int:
        if control in (SERVICE_CONTROL_STOP, SERVICE_CONTROL_SHUTDOWN):
            report(SERVICE_STOP_PENDING)
            threading.Thread(target=host.stop, daemon=True).start()
            return NO_ERROR
        if control == SERVICE_CONTROL_INTERROGATE:
            return NO_ERROR
        return ERROR_CALL_NOT_IMPLEMENTED

    handler = handler_ex(on_control)  # kept referenced for the life of the service

    def main(_argc: int, _argv: Any) -> None:
        state["handle"] = advapi32.RegisterServiceCtrlHandlerExW(SERVICE, handler, None)
        report(SERVICE_START_PENDING)
        try:
            report(SERVICE_RUNNING)
            returncode: Optional[int] = host.run()
        except OSError:
            returncode = None
        report(SERVICE_STOPPED, *exit_codes(returncode, host.stop_requested.is_set()))

    entry = service_main(main)
    table = (TableEntry * 2)(TableEntry(SERVICE, entry), TableEntry(None, service_main()))
    if not advapi32.StartServiceCtrlDispatcherW(table):
        error = ctypes.get_last_error()  # type: ignore[attr-defined]
        if error == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT:
            print("这是 Windows 服务程序, 请用 sc.exe / net start 启动", file=sys.stderr)
            print("this is the Windows service host: start it with net start", file=sys.stderr)
        return 2
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument(
        "--console", action="store_true", help="run the agent in this window (no service)"
    )
    args = parser.parse_args(argv)
    if sys.platform == "win32" and not args.console:
        return serve(args.data)
    return Host(args.data).run()


if __name__ == "__main__":
    sys.exit(main())
