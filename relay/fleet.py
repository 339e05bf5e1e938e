"""``posassist-fleet``: simulated stores against a relay on this machine, on the real protocol.

The load generator for capacity work (benchmarks/bench_fleet.py) and for the multi-node work that
follows. Each simulated store is one till: a real Ed25519 identity in the agent's own format
(``agent.json`` + ``agent.key``, so ``posassist-agent run --data DIR/00042`` runs the same till),
enrolled through a real one-time enrolment token, signed in over the agent's websocket with the
one connection driver (client/connection.py), kept alive by the protocol's heartbeats, answering
diagnostics and script requests with realistic payloads and raising alerts at a set rate.

Bounded by design: every run has a ``--duration`` (at most a day), ``--agents`` is capped, and
the relay must be on this machine (127.0.0.1, ::1 or localhost): anything else is refused before
a single byte is sent. With ``--spread-addresses`` (the default on IPv4) each store connects from
its own loopback address (127.x.y.z, all of 127.0.0.0/8 is this machine), as real stores each
come from their own address and meet the relay's per-address limits on their own.

Output is one JSON object per line on stdout (``event``: ``enrolled``, ``status``,
``all_connected``, ``restart``, ``done``); errors for people go to stderr in zh-CN and English.
SIGUSR1 restarts every simulated agent at once (a reconnect storm from the fleet's side).
docs/fleet.md describes the whole thing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from posassist.protocol.errors import BadArgument

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from posassist.client.connection import Connection
    from posassist.protocol import Message, Session
    from posassist.protocol.signing import Ed25519PrivateKey

__all__ = ["FleetError", "main"]

#: The most simulated agents in one run, and in one process (each holds a socket: fd limits).
MAX_AGENTS = 50_000
MAX_AGENTS_PER_PROCESS = 20_000
MAX_PROCESSES = 64
#: The longest run: a day. Every run ends by itself.
MAX_DURATION = 86_400.0
#: The most log text a report may be padded with (--diag-bytes): under the 1 MiB frame limit.
MAX_DIAG_BYTES = 1_000_000
#: Alerts per agent per minute at most.
MAX_ALERT_RATE = 60.0
SOFTWARE = "posassist-fleet/0.1"
#: Exit codes: 2 for bad input (as argparse), 1 for a run that failed.
EXIT_USAGE = 2
#: Alert round trips kept for the ``done`` line (``alert_ms``).
MAX_LATENCIES = 20_000
#: Seconds between status lines while something changes.
STATUS_INTERVAL = 0.25
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")


class FleetError(BadArgument):
    """Bad input for the fleet: said in zh-CN and English, exit code 2, nothing started."""

    public_reason = "bad input for the fleet simulator"
    public_reason_zh = "模拟器参数有误"

    def __init__(self, zh: str, en: str) -> None:
        super().__init__(en)
        self.zh, self.en = zh, en

    def __str__(self) -> str:
        zh, en = getattr(self, "zh", None), getattr(self, "en", None)
        if zh is None or en is None:  # made without its words (the error tree's own tests)
            return super().__str__()
        return f"错误：{zh}\nerror: {en}"


# --- input ----------------------------------------------------------------------------------


def checked_relay_url(url: str) -> str:
    """The relay's ws:// URL if it is on this machine (localhost is spelled 127.0.0.1)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme != "ws" or not parts.hostname or port is None:
        raise FleetError(
            f"中继地址必须是 ws://127.0.0.1:端口 这样的本机地址，而不是 {url!r}",
            f"the relay address must be ws://127.0.0.1:PORT (or [::1], localhost), not {url!r}",
        )
    host = parts.hostname
    if host not in LOOPBACK_NAMES:
        raise FleetError(
            f"只允许本机中继（127.0.0.1、::1、localhost），拒绝 {host}",
            f"the fleet talks only to a relay on this machine (127.0.0.1, ::1, localhost); "
            f"{host} refused",
        )
    if host == "localhost":
        host = "127.0.0.1"
    return f"ws://[{host}]:{port}" if ":" in host else f"ws://{host}:{port}"


def _count(low: int, high: int, what: str) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: 需要整数 / not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{what} 必须在 {low} 到 {high} 之间 / must be {low}..{high}, not {value}"
            )
        return value

    return parse


def _seconds(low: float, high: float, what: str) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: 需要数字 / not a number") from None
        if not low <= value <= high:  # NaN is refused here too
            raise argparse.ArgumentTypeError(
                f"{what} 必须在 {low:g} 到 {high:g} 之间 / must be {low:g}..{high:g}, not {text}"
            )
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="posassist-fleet",
        description="Simulated stores against a relay on this machine (docs/fleet.md). "
        "本机中继的模拟门店负载。",
    )
    p.add_argument("--relay", required=True, help="ws://127.0.0.1:PORT (this machine only)")
    p.add_argument(
        "--identities",
        type=Path,
        required=True,
        help="folder of till identities (one sub-folder each, the agent's own format)",
    )
    enrol = p.add_argument_group("enrolment (makes new identities in --identities first)")
    enrol.add_argument(
        "--enrol",
        type=_count(1, MAX_AGENTS, "--enrol"),
        default=None,
        help="enrol this many new tills with fresh one-time tokens",
    )
    enrol.add_argument("--store", help="store id the new tills belong to")
    enrol.add_argument(
        "--user", default="admin", help="admin who creates the tokens (default: admin)"
    )
    enrol.add_argument("--password-file", type=Path, help="that admin's password")
    enrol.add_argument(
        "--tokens",
        type=Path,
        help="or: enrol with these tokens instead (one per line); new tills are added after "
        "those already in --identities, and all of them run",
    )
    enrol.add_argument("--enrol-only", action="store_true", help="enrol, then stop (run nothing)")
    p.add_argument(
        "--agents",
        type=_count(1, MAX_AGENTS, "--agents"),
        default=None,
        help=f"run this many of the identities (default: all; at most {MAX_AGENTS})",
    )
    p.add_argument(
        "--first",
        type=_count(0, MAX_AGENTS, "--first"),
        default=0,
        help="skip this many identities (in folder order) before the ones run",
    )
    p.add_argument(
        "--processes",
        type=_count(1, MAX_PROCESSES, "--processes"),
        default=1,
        help=f"spread the tills over this many processes (default 1, at most {MAX_PROCESSES})",
    )
    p.add_argument(
        "--duration",
        type=_seconds(0.1, MAX_DURATION, "--duration"),
        default=60.0,
        help="seconds to run, then stop (default 60, at most a day)",
    )
    p.add_argument(
        "--alert-rate",
        type=_seconds(0.0, MAX_ALERT_RATE, "--alert-rate"),
        default=0.0,
        help="alerts each agent raises per minute (alternately firing and resolved)",
    )
    p.add_argument(
        "--max-backoff",
        type=_seconds(1.0, 3600.0, "--max-backoff"),
        default=60.0,
        help="longest wait between reconnects (and between enrolment retries after a 429/503), "
        "as posassist-agent run's (default 60 s)",
    )
    p.add_argument(
        "--diag-bytes",
        type=_count(0, MAX_DIAG_BYTES, "--diag-bytes"),
        default=0,
        help="pad each diagnostics report with this many bytes of log text (a big reply)",
    )
    p.add_argument(
        "--plain-backoff",
        action="store_true",
        help="after a 1001 close, the doubling backoff as before (a benchmark's 'before')",
    )
    p.add_argument(
        "--connect-concurrency",
        type=_count(1, 4096, "--connect-concurrency"),
        default=128,
        help="connections being opened at once, per process (default 128)",
    )
    p.add_argument(
        "--single-address",
        action="store_true",
        help="every store connects from 127.0.0.1 (default: one loopback address each)",
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "i/K": one slice
    return p


def source_address(index: int) -> str:
    """Store ``index``'s own loopback address, 127.1.0.1 onwards (never .0 or .255)."""
    top, rest = divmod(index, 250 * 250)
    mid, low = divmod(rest, 250)
    return f"127.{1 + top}.{mid}.{low + 1}"


# --- identities -----------------------------------------------------------------------------


def identity_folders(root: Path) -> list[Path]:
    """The till folders under ``root`` in order; FleetError for a folder that isn't one."""
    if not root.is_dir():
        raise FleetError(f"身份文件夹 {root} 不存在", f"identities folder {root} does not exist")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise FleetError(
            f"身份文件夹 {root} 里没有终端身份（先用 --enrol 注册）",
            f"no till identities in {root} (enrol some with --enrol first)",
        )
    return folders


class Identity(NamedTuple):
    """One till's identity, in the agent's own format (agent/config.py: ``agent.json`` with
    ``device_id`` and ``relay_url``, ``agent.key`` as unencrypted PKCS#8 PEM, 0600). The relay's
    packages may not import the agent's (docs/packaging.md), so it is read and written here;
    tests/e2e/test_fleet.py checks that the agent loads what the fleet writes."""

    device_id: str
    relay_url: str
    key: Ed25519PrivateKey


def write_identity(folder: Path, identity: Identity) -> None:
    """A new till folder (0700), its key (0600, never over an existing one) and settings."""
    from posassist.client.files import private_dir, write_private
    from posassist.protocol import signing

    private_dir(folder)
    key = identity.key
    write_private(folder / "agent.key", signing.private_key_to_pem(key), exclusive=True)
    write_private(folder / "agent.pub", signing.public_key_to_pem(key.public_key()))
    settings = {"device_id": identity.device_id, "relay_url": identity.relay_url}
    write_private(folder / "agent.json", json.dumps(settings, indent=2))


def load_identity(folder: Path) -> Identity:
    """The identity in ``folder``; ValueError/OSError/KeyError say what is wrong with it."""
    from posassist.protocol import PosAssistError, signing

    settings = json.loads((folder / "agent.json").read_text(encoding="utf-8"))
    try:
        key = signing.private_key_from_pem((folder / "agent.key").read_bytes())
    except PosAssistError as exc:
        raise ValueError(f"agent.key: {exc}") from None
    return Identity(str(settings["device_id"]), str(settings["relay_url"]), key)


def load_identities(folders: Sequence[Path], relay: str) -> list[Identity]:
    """Every identity, checked before anything connects: all or nothing."""
    loaded = []
    for folder in folders:
        try:
            identity = load_identity(folder)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FleetError(
                f"{folder} 不是可用的终端身份：{exc}", f"{folder} is not a usable identity: {exc}"
            ) from None
        if identity.relay_url.rstrip("/") != relay:
            raise FleetError(
                f"{folder} 注册在另一个中继（{identity.relay_url}）",
                f"{folder} is enrolled with another relay ({identity.relay_url}), not {relay}",
            )
        loaded.append(identity)
    return loaded


def backoff(cap: float, base: float = 1.0) -> Iterator[float]:
    """The agent's reconnect schedule (agent/backoff.py, which the relay may not import):
    attempt n waits uniformly in [0, min(cap, base * 2**n)]; tests/e2e/test_fleet.py checks
    both give the same delays."""
    ceiling = base
    while True:
        yield random.random() * ceiling
        ceiling = min(cap, ceiling * 2.0)


#: agent/backoff.py's GOING_AWAY_JITTER, GOING_AWAY_WINDOW and MAX_RETRY_AFTER.
GOING_AWAY_JITTER = 2.0
GOING_AWAY_WINDOW = 15.0
MAX_RETRY_AFTER = 300.0


def after_going_away(then: Iterator[float]) -> Iterator[float]:
    """The agent's schedule after a 1001 close (agent/backoff.py ``after_going_away``): uniform
    in [0, 2] s until 15 s have been waited, then ``then``."""
    waited = 0.0
    while waited < GOING_AWAY_WINDOW:
        delay = random.random() * GOING_AWAY_JITTER
        waited += delay
        yield delay
    yield from then


def retry_after_delay(retry_after: str | None, scheduled: float) -> float:
    """The agent's wait after a 503/429 with ``Retry-After`` (agent/backoff.py, same name)."""
    if retry_after is None:
        return scheduled
    try:
        asked = float(retry_after.strip())
    except ValueError:
        return scheduled
    if not asked >= 0:
        return scheduled
    return max(scheduled, min(asked, MAX_RETRY_AFTER) + random.random() * GOING_AWAY_JITTER)


#: How long one enrolment request is retried while the relay sheds it (429/503) before the
#: fleet gives up on it: bounded, as every loop here.
ENROL_TIMEOUT = 600.0


class Enrolment:
    """Requests of one enrolment run, retried as an agent would: a 429/503 waits for its
    ``Retry-After`` (with jitter) or the agent's backoff, up to ``ENROL_TIMEOUT`` per request.
    ``retried`` counts the waits (the ``enrolled`` line's ``retried``)."""

    def __init__(self, max_backoff: float, timeout: float = ENROL_TIMEOUT) -> None:
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.retried = 0

    async def fetch(
        self, method: str, url: str, gate: asyncio.Semaphore | None = None, **kwargs: Any
    ) -> Any:
        """The relay's answer to one request: the first that is not load shedding, or the last
        429/503 once ``timeout`` has passed. ``gate`` is held for each try, not for the waits."""
        from posassist.client import http

        deadline = time.monotonic() + self.timeout
        delays = backoff(cap=self.max_backoff)
        while True:
            async with gate or contextlib.nullcontext():
                answer = await http.fetch(method, url, **kwargs)
            left = deadline - time.monotonic()
            if answer.status not in (429, 503) or left <= 0:
                return answer
            self.retried += 1
            wait = retry_after_delay(answer.headers.get("retry-after"), next(delays))
            await asyncio.sleep(min(wait, left))  # a backoff, not a synchronisation


async def _tokens_from_api(
    enrolment: Enrolment, relay: str, store: str, user: str, password: str, n: int
) -> list[str]:
    from posassist.client import http

    base = http.http_url(relay)
    login = await enrolment.fetch(
        "POST", base + "/v1/login", json_body={"username": user, "password": password}
    )
    _raise_refused(login, "sign-in", "登录")
    token = str(login.json()["token"])
    tokens = []
    for _ in range(n):
        answer = await enrolment.fetch(
            "POST", base + "/v1/enrolments", json_body={"store_id": store}, token=token
        )
        _raise_refused(answer, "enrolment token", "注册令牌")
        tokens.append(str(answer.json()["token"]))
    return tokens


def _raise_refused(answer: Any, what: str, what_zh: str) -> None:
    from posassist.client import http

    try:
        answer.raise_for_status()
    except http.HttpStatusError as exc:
        raise FleetError(
            f"中继拒绝了{what_zh}：{exc.error or exc}", f"the relay refused the {what}: {exc}"
        ) from None


def _prepare_folder(root: Path) -> int:
    """Make ``root`` (0700) if need be; the index the next new till folder gets (after the
    highest there, so a gap left by an earlier run never makes two tills share a number)."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    taken = [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(taken, default=-1) + 1


async def enrol_tills(
    enrolment: Enrolment,
    relay: str,
    root: Path,
    tokens: Sequence[str],
    spread: bool,
    concurrency: int,
) -> list[Path]:
    """Enrol one till per token into new folders under ``root``, the way an agent does.

    Each identity is saved as soon as the relay's answer to it comes, and a refusal of one
    stops none of the others: when the run fails, every till the relay enrolled is on disk
    (FleetError then says how many)."""
    from posassist.client import http
    from posassist.protocol import signing
    from posassist.protocol.enrolment import EnrolmentInvite

    invites = [EnrolmentInvite.decode(text) for text in tokens]
    for invite in invites:
        if checked_relay_url(invite.relay_url) != relay:
            raise FleetError(
                f"令牌属于另一个中继（{invite.relay_url}）",
                f"a token names another relay ({invite.relay_url})",
            )
    start = await asyncio.to_thread(_prepare_folder, root)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, invite: EnrolmentInvite) -> Path:
        key = signing.generate_private_key()
        raw = signing.public_key_to_raw(key.public_key())
        index = start + i
        local = (source_address(index), 0) if spread else None
        answer = await enrolment.fetch(
            "POST",
            http.http_url(relay) + "/v1/enrol",
            gate,
            json_body={
                "secret": invite.secret,
                "public_key": base64.b64encode(raw).decode("ascii"),
                "agent_version": SOFTWARE,
            },
            local_addr=local,
        )
        _raise_refused(answer, "enrolment", "注册")
        folder = root / f"{index:05d}"
        write_identity(folder, Identity(str(answer.json()["device_id"]), relay, key))
        return folder

    results = await asyncio.gather(
        *(one(i, invite) for i, invite in enumerate(invites)), return_exceptions=True
    )
    saved = [r for r in results if isinstance(r, Path)]
    failed = [r for r in results if not isinstance(r, Path)]
    if failed:
        first = failed[0]
        if not isinstance(first, Exception):
            raise first  # KeyboardInterrupt, cancellation: not ours to reword
        zh, en = (first.zh, first.en) if isinstance(first, FleetError) else (first, first)
        raise FleetError(
            f"{zh}（{len(saved)} 个已注册的终端已保存在 {root}）",
            f"{en} ({len(saved)} tills enrolled before it are saved in {root})",
        ) from first
    return saved


# --- one simulated till ---------------------------------------------------------------------


def diagnostics_sections(identity: Identity, index: int) -> dict[str, Any]:
    """A report like a healthy Windows till's (the real collectors' shape, docs/findings.md)."""
    return {
        "system": {
            "ok": True,
            "elapsed_ms": 38.2,
            "data": {
                "hostname": f"STORE-{index:05d}-TILL1",
                "os": "Windows 7 Professional 6.1.7601 SP1",
                "boot_time": time.time() - 3600 * 26,
                "cpu_percent": 7.5,
                "memory": {"total": 4_294_967_296, "available": 1_932_735_283},
                "disks": [{"mount": "C:\\", "total": 128_034_672_640, "free": 41_203_654_656}],
            },
            "findings": [],
        },
        "printers": {
            "ok": True,
            "elapsed_ms": 212.0,
            "status": "ok",
            "data": {
                "printers": [
                    {
                        "name": "receipt",
                        "target": "COM3",
                        "model": "EPSON TM-T82III",
                        "outcome": "ok",
                        "online": True,
                        "problems": [],
                        "replies": {"1": "16", "2": "12", "3": "12", "4": "12"},
                    }
                ],
            },
            "findings": [],
        },
        "pos": {
            "ok": True,
            "elapsed_ms": 95.4,
            "data": {
                "process": "posmain.exe",
                "running": True,
                "version": "8.2.14",
                "database": {"reachable": True, "latency_ms": 3.1},
                "last_sale_at": time.time() - 420,
            },
            "findings": [],
        },
        "network": {
            "ok": True,
            "elapsed_ms": 61.7,
            "data": {
                "gateway_ms": 1.2,
                "dns_ok": True,
                "payment_gateway_ms": 48.0,
                "interfaces": [{"name": "Local Area Connection", "up": True, "speed_mbps": 100}],
            },
            "findings": [],
        },
        "peripherals": {
            "ok": True,
            "elapsed_ms": 18.9,
            "data": {
                "scanner": {"present": True, "vid_pid": "05e0:1200"},
                "scale": {"port": "COM4", "present": True},
                "cash_drawer": {"via": "printer", "present": True},
            },
            "findings": [],
        },
    }


def log_section(size: int) -> dict[str, Any]:
    """A ``logs`` section with ``size`` bytes of POS log lines (a big report, as a till with a
    chatty POS log sends when a technician asks for its logs)."""
    line = "2026-12-06 09:00:00.000 INFO posmain: sale 000042 total 23.50 paid WECHAT ok\n"
    text = (line * (size // len(line) + 1))[:size]
    # in pieces under the codec's string limit (protocol/codec.py, 256 KiB)
    pieces = [text[i : i + LOG_PIECE] for i in range(0, len(text), LOG_PIECE)]
    return {"ok": True, "elapsed_ms": 120.0, "data": {"pos.log": pieces}, "findings": []}


LOG_PIECE = 200_000


SCRIPT_OUTPUT = (
    b"stopping spooler... ok\r\n",
    b"clearing 3 stuck jobs from C:\\Windows\\System32\\spool\\PRINTERS... ok\r\n",
    b"starting spooler... ok\r\nprinter EPSON TM-T82III: ready\r\n",
)


@dataclass
class Counters:
    connected: int = 0
    authenticated: int = 0  # sign-ins since the start
    diagnostics: int = 0
    scripts: int = 0
    alerts_sent: int = 0
    alerts_acked: int = 0
    refused: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    #: Seconds from each alert sent to its ack (the first MAX_LATENCIES), for the done line.
    alert_latencies: list[float] = field(default_factory=list)

    def error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


class SimulatedTill:
    """One store's till on one connection at a time: signs in, answers, raises alerts."""

    def __init__(self, fleet: Fleet, identity: Identity, index: int) -> None:
        self.fleet = fleet
        self.identity = identity
        self.index = index
        self.connection: Connection | None = None
        self.relay_id = ""
        self.version = 0
        self.alert_firing = False

    def authenticate(self, session: Session, msg: Message) -> None:
        from posassist.protocol import AuthChallenge, Welcome, signing

        if isinstance(msg, Welcome):
            self.relay_id, self.version = msg.relay_id, msg.version
        elif isinstance(msg, AuthChallenge):
            payload = signing.auth_payload(
                self.relay_id, self.identity.device_id, msg.nonce, self.version
            )
            session.send_auth_response(
                self.identity.device_id, signing.sign(self.identity.key, payload)
            )

    def on_message(self, msg: Message) -> None:
        """A request from the relay: the reply is queued on the session; the driver writes it."""
        from posassist.protocol import (
            DiagnosticsReport,
            DiagnosticsRequest,
            ErrorReply,
            Kind,
            ScriptFinished,
            ScriptOutput,
            ScriptRunRequest,
            ScriptStarted,
        )

        connection = self.connection
        if connection is None:
            return
        session = connection.session
        now = time.time()
        if isinstance(msg, DiagnosticsRequest):
            sections = diagnostics_sections(self.identity, self.index)
            if msg.collectors:
                sections = {k: v for k, v in sections.items() if k in msg.collectors}
            if self.fleet.diag_bytes:
                sections["logs"] = log_section(self.fleet.diag_bytes)
            session.send(
                DiagnosticsReport(
                    id=msg.id,
                    device_id=self.identity.device_id,
                    collected_at=now,
                    sections=sections,
                )
            )
            self.fleet.counters.diagnostics += 1
        elif isinstance(msg, ScriptRunRequest):
            job = msg.job_id or f"job-{msg.id}"
            session.send(ScriptStarted(id=msg.id, job_id=job, started_at=now))
            for seq, chunk in enumerate(SCRIPT_OUTPUT):
                session.send(
                    ScriptOutput(id=msg.id, job_id=job, seq=seq, stream="stdout", data=chunk)
                )
            session.send(
                ScriptFinished(
                    id=msg.id, job_id=job, status="succeeded", finished_at=time.time(), exit_code=0
                )
            )
            self.fleet.counters.scripts += 1
        elif msg.KIND is Kind.REQUEST:
            request_id: int = getattr(msg, "id")  # noqa: B009 - requests have ids
            session.send(
                ErrorReply(id=request_id, code="unsupported", message=f"{msg.TAG} not simulated")
            )

    async def raise_alert(self) -> None:
        """One alert, alternately firing and resolved, until its ack comes back."""
        from posassist.protocol import AlertAcknowledged, AlertRaised

        connection = self.connection
        if connection is None:
            return
        self.alert_firing = not self.alert_firing
        now = time.time()
        alert = AlertRaised(
            id=connection.session.next_id(),
            device_id=self.identity.device_id,
            alert_key=f"{self.identity.device_id}:printer.paper:{now:.6f}",
            check_name="printer.paper",
            severity="warning",
            state="firing" if self.alert_firing else "resolved",
            summary="打印机缺纸 / printer out of paper"
            if self.alert_firing
            else "打印机纸张正常 / printer paper ok",
            observed_at=now,
            details={"port": "COM3", "status_bytes": "16 12 72 12"},
        )
        counters = self.fleet.counters
        counters.alerts_sent += 1
        sent = time.perf_counter()
        async for reply in connection.request(alert, 30.0):
            if isinstance(reply, AlertAcknowledged):
                counters.alerts_acked += 1
                if len(counters.alert_latencies) < MAX_LATENCIES:
                    counters.alert_latencies.append(time.perf_counter() - sent)

    async def run(self) -> None:
        """Connected until the fleet stops; reconnects as the agent does (agent/run.py):
        capped, jittered backoff, soon after a 1001 close, never before a ``Retry-After``."""
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

        from posassist.client.connection import open_connection
        from posassist.client.errors import RelayRefusedError
        from posassist.protocol import PosAssistError, Role

        fleet, counters = self.fleet, self.fleet.counters
        delays = backoff(cap=fleet.max_backoff)  # the agent's own schedule (agent/run.py)
        local = (source_address(self.index), 0) if fleet.spread else None
        url = fleet.relay + "/v1/agent"
        while not fleet.stopping.is_set():
            generation = fleet.generation
            retry_after: str | None = None
            async with contextlib.AsyncExitStack() as stack:
                try:
                    async with fleet.connect_gate:
                        self.connection = await stack.enter_async_context(
                            open_connection(
                                url,
                                Role.AGENT,
                                SOFTWARE,
                                self.authenticate,
                                handshake_timeout=60.0,
                                on_message=self.on_message,
                                local_addr=local,
                            )
                        )
                except RelayRefusedError as exc:
                    counters.refused += 1
                    counters.error(exc)
                except (
                    InvalidStatus,
                    InvalidHandshake,
                    ConnectionClosed,
                    OSError,
                    TimeoutError,
                    PosAssistError,
                ) as exc:
                    counters.error(exc)  # load shed (429/503), a refused connection: retried
                    if isinstance(exc, InvalidStatus) and exc.response.status_code in (429, 503):
                        retry_after = exc.response.headers.get("Retry-After")
                else:
                    delays = backoff(cap=fleet.max_backoff)
                    counters.authenticated += 1
                    fleet.connected_changed(+1)
                    try:
                        ended = await fleet.wait_restart_or_close(self.connection, generation)
                    finally:
                        self.connection = None
                        fleet.connected_changed(-1)
                    if fleet.generation != generation:
                        continue  # restarted on purpose: straight back, through the gate
                    if going_away(ended) and not fleet.plain_backoff:
                        delays = after_going_away(delays)
            if fleet.stopping.is_set():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(retry_after_delay(retry_after, next(delays))):
                    await fleet.stopping.wait()


def going_away(ended: BaseException | None) -> bool:
    """Whether the relay closed the connection with 1001 (it restarts)."""
    from websockets.exceptions import ConnectionClosed

    received = ended.rcvd if isinstance(ended, ConnectionClosed) else None
    return received is not None and received.code == 1001


# --- one process's share --------------------------------------------------------------------


class Fleet:
    """The simulated tills of one process, their counters and their status lines."""

    def __init__(
        self, relay: str, spread: bool, concurrency: int, process: int, whole: bool = True
    ) -> None:
        self.relay = relay
        self.max_backoff = 60.0
        self.plain_backoff = False  # the schedule before going-away (benchmarks' "before")
        self.diag_bytes = 0  # padding of each diagnostics report (--diag-bytes)
        self.whole = whole  # this process runs the whole fleet (else one slice of it)
        self.spread = spread
        self.process = process
        self.counters = Counters()
        self.tills: list[SimulatedTill] = []
        self.stopping = asyncio.Event()
        self.restarted = asyncio.Event()
        self.generation = 0
        self.connect_gate = asyncio.Semaphore(concurrency)
        self.changed = asyncio.Event()
        #: Since when not every till is connected (wall clock, comparable across processes),
        #: and how many times all were in and one dropped.
        self.dropped_at = self.all_in_at = time.time()
        self.episode = 0

    def connected_changed(self, delta: int) -> None:
        before = self.counters.connected
        self.counters.connected += delta
        if before == len(self.tills) and delta < 0:
            self.episode += 1  # all were in, one went: a new episode until all are in again
            self.dropped_at = time.time()
        if self.counters.connected == len(self.tills):
            self.all_in_at = time.time()
        self.changed.set()

    async def wait_restart_or_close(
        self, connection: Connection, generation: int
    ) -> BaseException | None:
        """Until the connection ends (its reason), or the fleet restarts or stops (None)."""
        closed = asyncio.ensure_future(connection.wait_closed())
        stop = asyncio.ensure_future(self.stopping.wait())
        restart = asyncio.ensure_future(self.restarted.wait())
        try:
            await asyncio.wait({closed, stop, restart}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (closed, stop, restart):
                waiter.cancel()
        return closed.result() if closed.done() and not closed.cancelled() else None

    def restart(self) -> None:
        """Every till drops its connection and signs in again at once."""
        self.generation += 1
        self.restarted.set()
        self.restarted = asyncio.Event()
        emit({"event": "restart", "process": self.process, "generation": self.generation})

    def status(self) -> dict[str, Any]:
        c = self.counters
        return {
            "event": "status",
            "process": self.process,
            "at": time.time(),
            "agents": len(self.tills),
            "connected": c.connected,
            "episode": self.episode,
            "authenticated": c.authenticated,
            "diagnostics": c.diagnostics,
            "scripts": c.scripts,
            "alerts_sent": c.alerts_sent,
            "alerts_acked": c.alerts_acked,
            "refused": c.refused,
            "errors": dict(c.errors),
        }

    async def report(self) -> None:
        """Status lines while things change; ``all_connected`` each time every till is in."""
        announced = -1
        while not self.stopping.is_set():
            self.changed.clear()
            emit(self.status())
            if self.counters.connected == len(self.tills) and self.episode != announced:
                announced = self.episode
                emit(
                    {
                        "event": "all_connected" if self.whole else "slice_connected",
                        "process": self.process,
                        "agents": len(self.tills),
                        "seconds": round(self.all_in_at - self.dropped_at, 3),
                        "dropped_at": self.dropped_at,
                        "all_in_at": self.all_in_at,
                        "episode": self.episode,
                        "generation": self.generation,
                    }
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self.changed.wait()
            await asyncio.sleep(STATUS_INTERVAL)  # pacing of the lines, not synchronisation

    async def alerts(self, per_minute: float) -> None:
        """Alerts from random connected tills: ``per_minute`` per till on average (Poisson)."""
        if per_minute <= 0:
            return
        rate = per_minute * len(self.tills) / 60.0
        pending: set[asyncio.Future[None]] = set()
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(random.expovariate(rate)):
                    await self.stopping.wait()
            till = random.choice(self.tills)
            if till.connection is None or len(pending) >= 1000:
                continue
            task = asyncio.ensure_future(till.raise_alert())
            pending.add(task)
            task.add_done_callback(self._alert_done(pending))
        for waiting in pending:
            waiting.cancel()

    def _alert_done(self, pending: set[asyncio.Future[None]]) -> Any:
        def done(task: asyncio.Future[None]) -> None:
            pending.discard(task)
            if not task.cancelled() and (exc := task.exception()) is not None:
                self.counters.error(exc)

        return done


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()


async def run_fleet(
    relay: str,
    identities: Sequence[Identity],
    first_index: int,
    *,
    duration: float,
    alert_rate: float,
    spread: bool,
    concurrency: int,
    process: int,
    whole: bool = True,
    max_backoff: float = 60.0,
    plain_backoff: bool = False,
    diag_bytes: int = 0,
) -> Counters:
    fleet = Fleet(relay, spread, concurrency, process, whole)
    fleet.max_backoff = max_backoff
    fleet.plain_backoff = plain_backoff
    fleet.diag_bytes = diag_bytes
    fleet.tills = [
        SimulatedTill(fleet, ident, first_index + i) for i, ident in enumerate(identities)
    ]
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, fleet.restart)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, fleet.stopping.set)
    try:
        async with asyncio.TaskGroup() as group:
            for till in fleet.tills:
                group.create_task(till.run())
            group.create_task(fleet.report())
            group.create_task(fleet.alerts(alert_rate))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration):
                    await fleet.stopping.wait()
            fleet.stopping.set()
            fleet.changed.set()
    finally:
        for signum in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    latencies = [round(x * 1000, 3) for x in fleet.counters.alert_latencies]
    emit(fleet.status() | {"event": "done", "alert_ms": latencies})
    return fleet.counters


# --- the command ----------------------------------------------------------------------------


def _event_loop() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:  # Windows
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def _raise_fd_limit(wanted: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, wanted), hard))


def _spread(args: argparse.Namespace, relay: str) -> bool:
    """One loopback address per store: on an IPv4 relay, unless --single-address."""
    return not args.single_address and not relay.startswith("ws://[")


def _enrol(args: argparse.Namespace, relay: str) -> None:
    if args.tokens is not None:
        try:
            tokens = [t.strip() for t in args.tokens.read_text().splitlines() if t.strip()]
        except OSError as exc:
            raise FleetError(
                f"读不了令牌文件：{exc}", f"can't read the tokens file: {exc}"
            ) from None
        if not tokens:
            raise FleetError("令牌文件是空的", f"{args.tokens} holds no tokens")
    else:
        if not args.store or args.password_file is None:
            raise FleetError(
                "--enrol 需要 --store 和 --password-file（管理员密码）",
                "--enrol needs --store and --password-file (an admin's password)",
            )
        try:
            password = args.password_file.read_text().strip()
        except OSError as exc:
            raise FleetError(
                f"读不了密码文件：{exc}", f"can't read the password file: {exc}"
            ) from None
        tokens = []
    spread = _spread(args, relay)
    enrolment = Enrolment(args.max_backoff)

    async def go() -> list[Path]:
        wanted = tokens or await _tokens_from_api(
            enrolment, relay, args.store, args.user, password, int(args.enrol)
        )
        return await enrol_tills(enrolment, relay, args.identities, wanted, spread, 16)

    with _event_loop() as runner:
        folders = runner.run(go())
    emit({"event": "enrolled", "tills": len(folders), "retried": enrolment.retried})


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        relay = checked_relay_url(args.relay)
        if args.worker is not None:
            return _worker(args, relay)
        if args.enrol is not None or args.tokens is not None:
            _enrol(args, relay)
            if args.enrol_only:
                return 0
        folders = identity_folders(args.identities)[args.first :]
        if not folders:
            raise FleetError(
                f"--first {args.first} 跳过了全部身份",
                f"--first {args.first} skips every identity in {args.identities}",
            )
        if args.agents is not None:
            if args.agents > len(folders):
                raise FleetError(
                    f"只有 {len(folders)} 个身份，不够 {args.agents} 个",
                    f"--agents {args.agents} but {args.identities} holds {len(folders)} identities",
                )
            folders = folders[: args.agents]
        if len(folders) > MAX_AGENTS_PER_PROCESS * args.processes:
            raise FleetError(
                f"每个进程最多 {MAX_AGENTS_PER_PROCESS} 个终端：加大 --processes",
                f"at most {MAX_AGENTS_PER_PROCESS} tills per process: raise --processes",
            )
        load_identities(folders, relay)  # all checked before anything connects
    except FleetError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_USAGE
    if args.processes == 1:
        return _run_slice(args, relay, folders, args.first, 0)
    return _spawn(args, argv, len(folders))


def _run_slice(
    args: argparse.Namespace, relay: str, folders: Sequence[Path], first: int, process: int
) -> int:
    identities = load_identities(folders, relay)
    _raise_fd_limit(len(identities) + 256)
    with _event_loop() as runner:
        runner.run(
            run_fleet(
                relay,
                identities,
                first,
                duration=args.duration,
                alert_rate=args.alert_rate,
                spread=_spread(args, relay),
                concurrency=args.connect_concurrency,
                process=process,
                whole=args.worker is None,
                max_backoff=args.max_backoff,
                plain_backoff=args.plain_backoff,
                diag_bytes=args.diag_bytes,
            )
        )
    return 0


def _worker(args: argparse.Namespace, relay: str) -> int:
    index, count = (int(x) for x in str(args.worker).split("/"))
    folders = identity_folders(args.identities)[args.first :]
    if args.agents is not None:
        folders = folders[: args.agents]
    size = -(-len(folders) // count)
    mine = folders[index * size : (index + 1) * size]
    if not mine:
        return 0
    return _run_slice(args, relay, mine, args.first + index * size, index)


def _spawn(args: argparse.Namespace, argv: Sequence[str] | None, total: int) -> int:
    """K worker processes, each with a slice; their lines pass through, plus the fleet's own
    ``all_connected`` when every process reports all of its tills in."""
    base = [a for a in (sys.argv[1:] if argv is None else argv)]
    base = _without_enrolment(base)
    k = args.processes
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "posassist.relay.fleet", *base, "--worker", f"{i}/{k}"],
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        for i in range(k)
    ]

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    for signum in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    return _merge(procs, total)


def _without_enrolment(argv: list[str]) -> list[str]:
    """The command line minus the enrolment options (done once, by the parent)."""
    out, skip = [], False
    with_value = {"--enrol", "--store", "--user", "--password-file", "--tokens"}
    argv = [a for a in argv if a != "--enrol-only"]
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in with_value:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def _merge(procs: list[subprocess.Popen[bytes]], total: int) -> int:
    """Pass the workers' lines through; ``all_connected`` once every worker has reported its
    whole slice in since the last drop anywhere (and since the last restart)."""
    import selectors

    selector = selectors.DefaultSelector()
    for i, proc in enumerate(procs):
        assert proc.stdout is not None
        selector.register(proc.stdout, selectors.EVENT_READ, i)
    partial = [b""] * len(procs)
    latest: dict[int, dict[str, Any]] = {}  # each worker's last slice_connected
    episodes: dict[int, int] = {}  # each worker's current episode
    announced: tuple[int, ...] | None = None
    generation = 0
    open_pipes = len(procs)
    while open_pipes:
        for key, _ in selector.select():
            chunk = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
            if not chunk:
                selector.unregister(key.fileobj)
                open_pipes -= 1
                continue
            *lines, partial[key.data] = (partial[key.data] + chunk).split(b"\n")
            for line in lines:
                sys.stdout.write(line.decode("utf-8", "replace") + "\n")
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                kind = event.get("event")
                if kind == "restart":
                    generation = max(generation, int(event.get("generation", 0)))
                if kind in ("status", "slice_connected"):
                    episodes[key.data] = int(event["episode"])
                if kind == "slice_connected":
                    latest[key.data] = event
                current = tuple(episodes.get(i, -1) for i in range(len(procs)))
                in_now = all(
                    i in latest
                    and latest[i]["episode"] == current[i]
                    and int(latest[i]["generation"]) >= generation
                    for i in range(len(procs))
                )
                if in_now and current != announced:
                    announced = current
                    since = min(float(e["dropped_at"]) for e in latest.values())
                    until = max(float(e["all_in_at"]) for e in latest.values())
                    emit(
                        {
                            "event": "all_connected",
                            "process": "all",
                            "agents": sum(int(e["agents"]) for e in latest.values()),
                            "seconds": round(until - since, 3),
                            "dropped_at": since,
                            "all_in_at": until,
                            "generation": generation,
                        }
                    )
        sys.stdout.flush()
    codes = [proc.wait() for proc in procs]
    return max(codes) if codes else 0


if __name__ == "__main__":
    raise SystemExit(main())
