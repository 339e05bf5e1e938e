"""Drive the real command lines the way an operator does: init, tenancy, serve, enrolment."""

from __future__ import annotations

import atexit
import base64
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aiohttp import ClientSession
from websockets.asyncio.client import connect

from posassist.protocol import messages as m
from posassist.protocol import signing
from posassist.protocol.enrolment import EnrolmentInvite
from tests.relay.harness import agent_handshake, console_handshake, recv, send

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from websockets.asyncio.client import ClientConnection

    from posassist.protocol import Session
    from posassist.protocol.signing import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "demo-admin-password"


def py(
    *args: str, python: str = sys.executable, timeout: float = 60, database: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <args>`` in the repository, with ``--database`` appended when given."""
    extra = ["--database", database] if database else []
    return subprocess.run(
        [python, "-m", "posassist." + args[0], *args[1:], *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


#: One relay provisioned by the real commands per test process, copied for each test that asks
#: for an empty SQLite relay: four CLI runs (~2.7 s of CPU) once instead of for each test.
_TEMPLATE: tuple[Path, str] | None = None


def provision(data: Path, database: str = "") -> str:
    """Initialise a relay and one store; return the store id.

    A relay on its embedded SQLite in an empty (or absent) ``data`` is a byte-for-byte copy of one
    this process made with the same four commands (file modes kept: the directory and its files
    stay private); a PostgreSQL relay, or a ``data`` that already holds files, runs them here.
    """
    global _TEMPLATE
    if not database and not (data.exists() and any(data.iterdir())):
        if _TEMPLATE is None:
            home = Path(tempfile.mkdtemp(prefix="posassist-relay-template-"))  # mode 0700
            atexit.register(shutil.rmtree, home, ignore_errors=True)
            _TEMPLATE = home / "relay", _provision(home / "relay", "")
        shutil.copytree(_TEMPLATE[0], data, dirs_exist_ok=True)
        return _TEMPLATE[1]
    return _provision(data, database)


def _provision(data: Path, database: str) -> str:
    data.mkdir(parents=True, exist_ok=True)
    (data / "admin.pw").write_text(ADMIN_PASSWORD)
    ok(
        py(
            "relay",
            "init",
            "--data",
            str(data),
            "--admin-password-file",
            str(data / "admin.pw"),
            database=database,
        )
    )
    org = ok(
        py(
            "relay",
            "organisation",
            "create",
            "--data",
            str(data),
            "--name",
            "Acme",
            database=database,
        )
    )
    merchant = ok(
        py(
            "relay",
            "merchant",
            "create",
            "--data",
            str(data),
            "--name",
            "Noodles",
            "--organisation",
            org,
            database=database,
        )
    )
    return ok(
        py(
            "relay",
            "store",
            "create",
            "--data",
            str(data),
            "--name",
            "Main St",
            "--merchant",
            merchant,
            database=database,
        )
    )


def start_relay(
    data: Path,
    *extra: str,
    log: IO[str] | None = None,
    max_files: int | None = None,
    runner: Sequence[str] = (),
) -> tuple[subprocess.Popen[str], str]:
    """``posassist-relay serve`` on a free port; waits until it listens.

    Its output goes to pipes, or with ``log`` to that file (a flood must not fill a pipe).
    ``max_files`` sets the relay's ``RLIMIT_NOFILE`` (soft and hard) the way systemd's
    ``LimitNOFILE`` would. ``runner`` is what runs the relay's module in place of
    ``python -m`` (a profiler's command line, ending where the module's name goes).
    """
    limit = None
    if max_files is not None:
        import resource

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))

    url_file = data / "relay.url"
    url_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            *(runner or (sys.executable, "-m")),
            "posassist.relay",
            "serve",
            "--data",
            str(data),
            "--port",
            "0",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE if log is None else log,
        stderr=subprocess.PIPE if log is None else subprocess.STDOUT,
        text=True,
        preexec_fn=limit,
    )
    deadline = time.monotonic() + 30
    while not (url_file.exists() and url_file.read_text()):
        if proc.poll() is not None:
            raise AssertionError(
                proc.communicate()[1] if log is None else f"relay exited {proc.returncode}"
            )
        assert time.monotonic() < deadline, "relay did not start"
        time.sleep(0.05)
    return proc, url_file.read_text()


def invite(
    data: Path,
    store: str,
    url: str,
    database: str = "",
    ttl: float = 3600,
    tls_cert: Path | None = None,
) -> str:
    """A one-time enrolment token for ``store``; pinned to ``tls_cert``'s key when given."""
    pin = ["--tls-cert", str(tls_cert)] if tls_cert is not None else []
    return ok(
        py(
            "relay",
            "enrolment",
            "create",
            "--data",
            str(data),
            "--store",
            store,
            "--relay-url",
            url,
            "--ttl",
            str(ttl),
            *pin,
            database=database,
        )
    )


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` (if it still runs) and reap it, closing its pipes."""
    if proc.poll() is None:
        proc.kill()
    communicate(proc, 15)


def start_agent(till: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """``posassist-agent run`` for an enrolled till; waits until it is connected."""
    import json

    agent = subprocess.Popen(
        [sys.executable, "-m", "posassist.agent", "run", "--data", str(till), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = lines(agent).readline(within=30)
    if "connected to relay" not in line:
        agent.kill()
        raise AssertionError(f"agent did not connect: {line!r}\n" + communicate(agent, 15)[1])
    return agent, json.loads((till / "agent.json").read_text())["device_id"]


class Lines:
    """A process's stdout, read line by line by a thread into a queue: every wait for a line is
    bounded in time (a hung process fails the test instead of hanging the suite), and none misses
    a line that came in the same read as an earlier one (``select`` on the pipe would: the text
    wrapper has already buffered it). The reader owns the pipe: take a process's lines only
    through :func:`lines`, and end it with :func:`stop` or :func:`communicate`."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self._stdout = proc.stdout
        self._queue: queue.Queue[str] = queue.Queue()
        self._ended = False
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self._stdout:
            self._queue.put(line)
        self._queue.put("")  # the end of the output

    def readline(self, within: float) -> str:
        """The next line, or "" at the end of the output or if none comes ``within`` seconds."""
        if self._ended:
            return ""
        try:
            line = self._queue.get(timeout=within)
        except queue.Empty:
            return ""
        self._ended = not line
        return line

    def wait_for(self, pattern: str, within: float) -> re.Match[str]:
        """Read lines until one matches the regular expression ``pattern``: its match; fails
        naming the lines read if none has come ``within`` seconds (or the output ended)."""
        deadline = time.monotonic() + within
        seen: list[str] = []
        while line := self.readline(max(0.0, deadline - time.monotonic())):
            seen.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matching {pattern!r} within {within} s in {seen!r}")

    def rest(self, within: float = 30) -> str:
        """Everything after the lines already taken, up to the end of the output (the process
        has ended, or is ending); fails if the end has not come ``within`` seconds."""
        deadline = time.monotonic() + within
        rest: list[str] = []
        while not self._ended:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                ended = f"the output did not end within {within} s: {rest!r}"
                raise AssertionError(ended) from None
            self._ended = not line
            rest.append(line)
        return "".join(rest)

    def close(self) -> None:
        """Close the pipe once the reader has read it to its end."""
        self._thread.join(timeout=15)
        self._stdout.close()


#: Each process's reader, while the process object lives (a pid may be reused).
_READERS: weakref.WeakKeyDictionary[subprocess.Popen[str], Lines] = weakref.WeakKeyDictionary()


def lines(proc: subprocess.Popen[str]) -> Lines:
    """The reader of ``proc``'s stdout (started at the first call; the same one afterwards)."""
    if proc not in _READERS:
        _READERS[proc] = Lines(proc)
    return _READERS[proc]


def communicate(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """``proc.communicate(timeout=timeout)`` for a process whose lines :func:`lines` reads: the
    stdout not yet taken, and stderr."""
    reader = _READERS.pop(proc, None)
    if reader is None:
        return proc.communicate(timeout=timeout)
    out = reader.rest(within=timeout)
    reader.close()
    return out, proc.communicate(timeout=timeout)[1]


class Technician:
    """The ``posassist`` console as one technician, with a session of its own."""

    def __init__(self, home: Path) -> None:
        import os

        self.home = home
        self.env = dict(os.environ, POSASSIST_HOME=str(home))

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "posassist.console", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def login_args(self, url: str) -> list[str]:
        password = self.home.parent / f"{self.home.name}.pw"
        password.write_text(ADMIN_PASSWORD)
        return ["login", "--relay", url, "--user", "admin", "--password-file", str(password)]

    def login(self, url: str, *extra: str) -> Technician:
        ok(self(*self.login_args(url), *extra))
        return self


# --- a device and a console over the relay's HTTP API and websockets --------------------------


async def enrol_over_http(url: str, token_text: str) -> tuple[str, Ed25519PrivateKey]:
    """Enrol a fresh key with ``token_text`` at the relay at ``url`` (ws://); its device id."""
    key = signing.generate_private_key()
    raw = signing.public_key_to_raw(key.public_key())
    body = {
        "secret": EnrolmentInvite.decode(token_text).secret,
        "public_key": base64.b64encode(raw).decode(),
    }
    async with (
        ClientSession() as http,
        http.post(url.replace("ws://", "http://") + "/v1/enrol", json=body) as r,
    ):
        assert r.status == 200, await r.text()
        return str((await r.json())["device_id"]), key


async def api(
    url: str,
    token: str,
    method: str,
    path: str,
    body: object = None,
    *,
    expect: tuple[int, ...] = (200,),
) -> Any:
    """One HTTP API call to the relay at ``url`` (its ws:// address) with a bearer token; its
    JSON answer, after asserting the status is one of ``expect``."""
    async with (
        ClientSession() as http,
        http.request(
            method,
            url.replace("ws://", "http://") + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as r,
    ):
        assert r.status in expect, await r.text()
        return await r.json()


async def admin_token(url: str) -> str:
    """A bearer token for the admin that :func:`provision` made."""
    login = {"username": "admin", "password": ADMIN_PASSWORD}
    async with (
        ClientSession() as http,
        http.post(url.replace("ws://", "http://") + "/v1/login", json=login) as r,
    ):
        assert r.status == 200, await r.text()
        return str((await r.json())["token"])


@dataclass
class InFlight:
    """A signed-in agent and console, with the console's diagnostics request at the agent."""

    agent_ws: ClientConnection
    agent: Session
    console_ws: ClientConnection
    console: Session
    request: m.DiagnosticsRequest


@asynccontextmanager
async def diag_in_flight(
    url: str, device_id: str, key: Ed25519PrivateKey, token: str, request_id: int = 1
) -> AsyncIterator[InFlight]:
    """Connect the device and a console, and route one DiagnosticsRequest to the device."""
    async with (
        connect(url + "/v1/agent") as agent_ws,
        connect(url + "/v1/console") as console_ws,
    ):
        agent, accepted = await agent_handshake(agent_ws, device_id, key)
        assert isinstance(accepted, m.AuthAccepted)
        console, signed_in = await console_handshake(console_ws, token)
        assert isinstance(signed_in, m.AuthAccepted)
        console.send(m.DiagnosticsRequest(id=request_id, device_id=device_id, timeout=60))
        await send(console_ws, console)
        (request,) = await recv(agent_ws, agent)
        assert isinstance(request, m.DiagnosticsRequest)
        yield InFlight(agent_ws, agent, console_ws, console, request)
