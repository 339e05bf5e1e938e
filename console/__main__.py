"""``posassist``: the technician's console: sign in, list devices, run diagnostics, health.

The sign-in token is kept in ``$POSASSIST_HOME/session.json`` (default ``~/.posassist``), 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from posassist.client import http
from posassist.client.cli import Parser, seconds
from posassist.client.files import write_private
from posassist.client.prompt import PASSWORD_ENV, secret_from
from posassist.client.render import HEADINGS as COLLECTORS
from posassist.client.render import when
from posassist.protocol import (
    DiagnosticsReport,
    DiagnosticsRequest,
    ErrorReply,
    PosAssistError,
    ScriptFinished,
    ScriptOutput,
    ScriptProgress,
    ScriptRestoreRequest,
    ScriptRunRequest,
    ScriptStarted,
)
from posassist.protocol.errors import EXIT_USAGE, BadArgument, LocalProtocolError, error_line
from posassist.protocol.messages import DEVICE_ID
from posassist.protocol.pins import spki_pin_from_pem

from . import __version__, admin, alerts, cancel, service, tickets
from .api import pick_node
from .progress import Progress
from .render import (
    count,
    facts_summary,
    local_time,
    named_zone,
    printable,
    printable_data,
    render_facts,
    render_report,
    table,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator, Sequence

    from posassist.protocol import Message

M = TypeVar("M", bound="Message")


#: Shown under a device whose connections keep replacing each other (docs/relay.md#flapping-agents).
FLAPPING = (
    "FLAPPING: two PCs are connecting with this device identity (a cloned till?); enrol each "
    "PC on its own / 两台电脑在使用同一个设备身份, 请分别登记"
)


def _home() -> Path:
    return Path(os.environ.get("POSASSIST_HOME", Path.home() / ".posassist"))


class NotSignedIn(PosAssistError):
    """No saved session: ``posassist login`` first."""

    exit_code = EXIT_USAGE
    public_reason = "not signed in: run `posassist login` first"
    public_reason_zh = "请先登录"


def _call(
    url: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    pin: str | None = None,
    ca_file: str | None = None,
) -> Any:
    """One JSON exchange with the relay (client/http.py); HttpStatusError unless it says 200."""
    method = "POST" if body is not None else "GET"
    answer = asyncio.run(
        http.fetch(method, url, json_body=body, token=token, pin=pin, ca_file=ca_file)
    )
    return answer.raise_for_status().json()


def _open(session: dict[str, str]) -> Any:
    """The console's websocket to the session's relay, trusted as the login was (pin or CA)."""
    from .connection import ConsoleConnection

    return ConsoleConnection.open(
        http.ws_url(session["relay"]),  # a session kept before F6's fix may hold http(s)://
        session["token"],
        tls_pin=session.get("tls_pin"),
        ca_file=session.get("tls_ca"),
    )


def _session() -> dict[str, str]:
    try:
        return dict(json.loads((_home() / "session.json").read_text()))
    except (OSError, ValueError):
        raise NotSignedIn(str(_home() / "session.json")) from None


def login(
    relay: str, user: str, password_file: Path | None, pin: str | None, ca_file: Path | None = None
) -> int:
    """Sign in and keep the token, with how the relay is trusted: a pin, or a CA file (its
    absolute path; the file is read at each command, so a renewed CA is picked up)."""
    ca = str(ca_file.resolve()) if ca_file is not None else None
    if ca is not None:
        http.ssl_for(ca)  # a file that holds no certificate: refused before the password is read
    password = secret_from(password_file, PASSWORD_ENV, f"password for {user}: ")
    answer = _call(
        http.http_url(relay) + "/v1/login",
        {"username": user, "password": password},
        pin=pin,
        ca_file=ca,
    )
    # Kept as ws(s)://, however typed: an http(s):// address stored as is made every websocket
    # command fail later with InvalidURI (outside attack 16, F6).
    session = {"relay": http.ws_url(relay), "token": answer["token"], "user": user, "tls_pin": pin}
    if ca is not None:
        session["tls_ca"] = ca
    write_private(_home() / "session.json", json.dumps(session))  # a 0700 folder if new
    print(printable(f"signed in as {user} ({answer.get('role')}) / 登录成功", multiline=False))
    return 0


def _matches(device: dict[str, Any], store_name: str, words: str) -> bool:
    """Whether ``words`` (any case) is in the device's id, host name or store's name."""
    facts = device.get("facts") if isinstance(device.get("facts"), dict) else {}
    hostname = str((facts or {}).get("hostname") or "")
    return any(words.casefold() in text.casefold() for text in (device["id"], hostname, store_name))


def devices(
    show_facts: bool = False,
    as_json: bool = False,
    in_store: str | None = None,
    search: str | None = None,
) -> int:
    """The devices in the caller's scope, with their store's name and last contact on the
    store's clock; with ``show_facts`` every fact each one reported. ``in_store`` (name or id)
    keeps that store's; ``search`` those whose id, host name or store name holds the words."""
    session = _session()
    base = http.http_url(session["relay"])
    trust: dict[str, Any] = {"pin": session.get("tls_pin"), "ca_file": session.get("tls_ca")}
    store_id = None if in_store is None else pick_node(session, "store", in_store)["id"]
    answer = _call(base + "/v1/devices", token=session["token"], **trust)
    if store_id is not None:
        answer["devices"] = [d for d in answer["devices"] if d.get("store_id") == store_id]
    if as_json:  # the relay's answer; its strings (a till's facts) made printable
        print(json.dumps(printable_data(answer["devices"]), ensure_ascii=False, indent=2))
        return 0
    stores: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(http.HttpStatusError):  # a relay before issue 15: ids only
        listed = _call(base + "/v1/stores", token=session["token"], **trust)["stores"]
        stores = {row["id"]: row for row in listed}
    rows, notes, details = [], [], []
    now = time.time()
    for d in answer["devices"]:
        facts = d.get("facts")  # a relay before protocol v2 lists none
        facts = facts if isinstance(facts, dict) else {}
        store = stores.get(d["store_id"], {})
        if search and not _matches(d, str(store.get("name") or ""), search):
            continue
        zone = store.get("timezone") or d.get("store_timezone")
        seen = d.get("last_seen")
        rows.append(
            [
                d["id"],
                "yes" if d["online"] else "no",
                d["status"],
                store.get("name") or d["store_id"],
                local_time(seen, zone) if seen else "never / 从未",
                facts_summary(facts),
            ]
        )
        if d.get("status") == "handed_over":  # docs/protocol.md#changing-provider
            moved = when(d.get("handed_over_at"), named_zone(zone), now)
            notes.append(printable(f"  {d['id']}: handed over / 已转移: {moved}", multiline=False))
        if d.get("flapping") is True:  # relay/flapping.py
            notes.append(printable(f"  ! {d['id']}: {FLAPPING}", multiline=False))
        if show_facts:
            details.append(printable(f"\n[{d['id']}] {store.get('name') or ''}", multiline=False))
            details.extend(render_facts(facts))
    headers = [
        "device",
        "online",
        "status",
        "store / 门店",
        "last seen / 最近在线",
        "facts / 设备信息",
    ]
    empty = "no devices match / 没有符合条件的设备" if search else "no devices / 没有设备"
    print(table(headers, rows, empty=empty))
    for line in (*notes, *details):
        print(line)
    return 0


async def _for_device(asked: M) -> M:
    """``asked`` (checked by :func:`_request`) for DEVICE as typed: an id (``dev_…``, sent as
    is: the relay checks the scope) or a till's host name, looked up among the devices in your
    scope (readme-walk 15 M2: ``diag vm`` was refused as "not in your scope"); NoSuchDevice
    (exit 3) for none, nothing sent."""
    text = str(getattr(asked, "device_id"))  # noqa: B009
    if text.startswith("dev_"):
        return asked
    found = await asyncio.to_thread(admin.find_device, _session(), text)
    return dataclasses.replace(asked, device_id=str(found["id"]))  # type: ignore[type-var]


def _request(cls: Callable[..., M], **fields: Any) -> M:
    """The request the arguments make, checked before anything is sent (its id is set once
    connected): BadArgument naming the field the protocol refuses (docs/protocol.md#messages)."""
    device = fields.get("device_id")
    if isinstance(device, str) and not DEVICE_ID.fullmatch(device):
        raise BadArgument(
            "DEVICE must be a device id: letters, digits and . _ : - (at most 64), "
            "as `posassist devices` lists them"
        )
    try:
        return cls(id=1, **fields)
    except LocalProtocolError as exc:  # "ScriptRunRequest.version has a bad value"
        raise BadArgument(str(exc).partition(".")[2] or str(exc)) from None


#: A websocket refusal's Chinese and exit code by its code (docs/cli.md: 403/not found exit 3).
REFUSALS = {
    "forbidden": ("不允许: 设备不存在或不在你的权限范围内", 3),
}


def refused(reply: ErrorReply) -> int:
    """An ``error`` reply as one line, English and Chinese; its exit code."""
    zh, code = REFUSALS.get(reply.code, ("", 1))
    line = f"error: {reply.code}: {reply.message}" + (f" / {zh}" if zh else "")
    print(printable(line, multiline=False), file=sys.stderr)
    return code


async def _diag(device: str, collectors: tuple[str, ...], as_json: bool, timeout: float) -> int:
    asked = _request(DiagnosticsRequest, device_id=device, collectors=collectors, timeout=timeout)
    asked = await _for_device(asked)
    device = asked.device_id
    session = _session()
    waiting = Progress(f"waiting for {device}'s diagnostics / 等待设备诊断", enabled=not as_json)
    async with _open(session) as conn, waiting as progress:
        request = asked.with_id(conn.session.next_id())
        async for reply in conn.request(request, timeout=timeout + 5):
            progress.clear()
            if isinstance(reply, ErrorReply):
                return refused(reply)
            if isinstance(reply, DiagnosticsReport):
                if as_json:
                    sections = printable_data(reply.sections)
                    print(json.dumps(sections, default=repr, ensure_ascii=False, indent=2))
                else:
                    print(render_report(reply, await _store_zone(session, device)))
    return 0


async def _store_zone(session: dict[str, Any], device: str) -> Any:
    """The time zone of ``device``'s store (times in a report show in the store's zone, as on
    the till and in tickets), or None (this console's) when the relay does not say."""
    from urllib.parse import quote

    base, token, pin = http.http_url(session["relay"]), session["token"], session.get("tls_pin")
    ca_file = session.get("tls_ca")
    try:
        url = base + "/v1/devices"
        listed = (await http.fetch("GET", url, token=token, pin=pin, ca_file=ca_file)).json()
        store = next(
            (d.get("store_id") for d in listed.get("devices", []) if d.get("id") == device), None
        )
        if not isinstance(store, str):
            return None
        path = f"/v1/stores/{quote(store, safe='')}"
        answer = await http.fetch("GET", base + path, token=token, pin=pin, ca_file=ca_file)
        return named_zone(answer.json().get("timezone")) if answer.status == 200 else None
    except (OSError, ValueError, AttributeError, http.HttpError):
        return None


async def _store_command(args: argparse.Namespace) -> int:
    """``diag --store S`` / ``run --store S SCRIPT``: every active device of the store, one
    line each as it answers, then the totals; exit 1 unless every device succeeded."""
    from urllib.parse import quote

    from . import fanout

    if args.store is None or (args.command == "diag" and args.device is not None):
        raise BadArgument("give either a DEVICE or --store STORE / 请指定设备或门店")
    if args.command == "run":
        if args.script is not None:  # run --store S SCRIPT: the one positional is the script
            raise BadArgument("run --store STORE takes only SCRIPT, not a device as well")
        script = args.device
        _request(ScriptRunRequest, device_id="dev", script=script, version=args.version)
        make = fanout.run_request(script, args.version, _params(args.param), args.unattended)
    else:
        _request(DiagnosticsRequest, device_id="dev", collectors=tuple(args.collector))
        make = None  # the relay asks the store's devices itself
    session = _session()
    # a store's name or its id, as every other command takes (readme-walk 15 M1); an ambiguous
    # name is refused with the ids, an unknown one as unknown (not as a store without tills)
    store = await asyncio.to_thread(pick_node, session, "store", args.store)
    store_id, store_name = str(store["id"]), printable(str(store.get("name") or store["id"]))
    as_json = bool(getattr(args, "json", False))
    listed = await http.fetch(
        "GET",
        http.http_url(session["relay"]) + "/v1/devices",
        token=session["token"],
        pin=session.get("tls_pin"),
        ca_file=session.get("tls_ca"),
    )
    devices = fanout.store_devices(listed.raise_for_status().json()["devices"], store_id)
    if not devices:
        raise BadArgument(
            f"no active device of store {store_name} in your scope / 您的范围内该门店没有设备"
        )
    print(
        f"{count(len(devices), 'device')} of {store_name} / 门店设备 {len(devices)} 台",
        flush=True,
    )
    start = time.perf_counter()

    def show(result: fanout.DeviceResult) -> None:
        progress.clear()
        print(fanout.result_line(result), flush=True)

    waiting = Progress(f"waiting for {store_name}'s devices / 等待门店设备", enabled=not as_json)
    if args.command == "diag":  # one request for the whole store (docs/api.md)
        async with waiting as progress:
            answer = await http.fetch(
                "POST",
                http.http_url(session["relay"]) + f"/v1/stores/{quote(store_id, safe='')}/diag",
                json_body={"collectors": list(args.collector), "timeout": args.timeout},
                token=session["token"],
                pin=session.get("tls_pin"),
                ca_file=session.get("tls_ca"),
                timeout=args.timeout + 15,
                max_bytes=fanout.MAX_STORE_ANSWER,
            )
            results = fanout.store_results(answer.raise_for_status().json())
            for result in results:
                show(result)
    else:
        assert make is not None
        async with _open(session) as conn, waiting as progress:
            results = await fanout.fan_out(conn, devices, make, args.timeout + 5, on_result=show)
    if as_json:
        report = {
            r.device: r.report if r.report is not None else {"error": r.status} for r in results
        }
        print(json.dumps(printable_data(report), default=repr, ensure_ascii=False, indent=2))
    print(fanout.totals_line(results, time.perf_counter() - start))
    return 0 if all(r.ok for r in results) else 1


def _param_value(text: str) -> Any:
    """``5`` → 5, ``true`` → True, ``"5"`` → "5"; anything that isn't JSON stays text.
    BadArgument for a number no message can carry (``NaN``, ``1e999``, past 64 bits)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, float) and not math.isfinite(value):
        raise BadArgument("a --param number must be finite")
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        raise BadArgument("a --param number must fit in 64 bits")
    return value if isinstance(value, str | int | float | bool) else text


def _params(items: list[str]) -> dict[str, Any]:
    """``--param name=value`` arguments as a map; BadArgument for one that isn't."""
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise BadArgument("--param takes name=value")
        if name in values:
            raise BadArgument(f"--param {name} given twice")
        values[name] = _param_value(text)
    return values


async def _run_script(
    device: str, script: str, version: str, params: list[str], unattended: bool, timeout: float
) -> int:
    """Ask the device to run a vetted script; stream its output; say how it ended."""

    asked = _request(
        ScriptRunRequest,
        device_id=device,
        script=script,
        version=version,
        params=_params(params),
        unattended=unattended,
    )
    asked = await _for_device(asked)
    device = asked.device_id
    session = _session()
    waiting = Progress(f"{script} on {device} / 等待设备执行")
    async with _open(session) as conn, waiting as progress:
        request = asked.with_id(conn.session.next_id())
        lines = OutputLines()
        print(
            f"asking {device} to run {script} {version} (the device verifies the signatures, "
            "checks preconditions and asks the merchant where needed) / 等待设备执行",
            flush=True,
        )
        told = False  # the job id, said once as soon as the relay gives it (before consent)
        async for reply in conn.request(request, timeout=timeout):
            progress.clear()
            job_id = getattr(reply, "job_id", None)
            if not told and isinstance(job_id, str) and not isinstance(reply, ScriptStarted):
                told = True
                print(
                    printable(f"job {job_id} (to stop it: posassist cancel {job_id}) / 任务编号"),
                    flush=True,
                )
            if isinstance(reply, ErrorReply):
                return refused(reply)
            if isinstance(reply, ScriptStarted):
                print(printable(f"started (job {reply.job_id}) / 开始执行"))
            elif isinstance(reply, ScriptProgress):
                print(progress_line(reply))
            elif isinstance(reply, ScriptOutput):
                lines.write(reply.stream, reply.data)
            elif isinstance(reply, ScriptFinished):
                lines.flush()
                print("\n" + finished_line(reply))
                return 0 if reply.status == "succeeded" else 1
    return 1


class OutputLines:
    """A script's output as it streams: whole lines, printable, each ``RESULT {json}`` line in
    words (client/render.py ``result_line``); a last line without its newline at the end."""

    def __init__(self) -> None:
        self.pending = {"stdout": b"", "stderr": b""}

    def write(self, stream: str, data: bytes) -> None:
        key = "stderr" if stream == "stderr" else "stdout"
        *whole, self.pending[key] = (self.pending[key] + data).split(b"\n")
        for line in whole:
            self._show(key, line)

    def flush(self) -> None:
        for key, rest in self.pending.items():
            if rest:
                self._show(key, rest)
            self.pending[key] = b""

    def _show(self, key: str, raw: bytes) -> None:
        from posassist.client.render import result_line

        text = raw.decode("utf-8", "replace")
        out = sys.stderr if key == "stderr" else sys.stdout
        print(printable(result_line(text) or text).rstrip("\r"), file=out, flush=True)  # tabs kept


def progress_line(reply: ScriptProgress) -> str:
    """One step of a run, one printable line. A refusal reads as its words, Chinese first, then
    its code (readme-walk F10: not ``code=…, zh=…, en=…``); other steps list their detail."""
    from posassist.client.render import consent_line, step_line

    detail = dict(reply.detail)
    consent = consent_line(reply.step, detail)  # the merchant's real answer (issue 12)
    if consent is not None:
        text = consent
    elif reply.step == "refused" and {"zh", "en"} <= detail.keys():
        text = f"[refused] {detail.pop('zh')} / {detail.pop('en')}"
        if "code" in detail:
            text += f" ({detail.pop('code')})"
        rest = step_line("", detail).partition("] ")[2]  # what else it said, in words
        text += f" {rest}" if rest else ""
    else:
        text = step_line(reply.step, detail)
    return printable(text, multiline=False).rstrip()


def finished_line(reply: ScriptFinished) -> str:
    """How a run ended, one printable line: the exit status only if the script ran (a refused
    run has none; readme-walk F10), the backup only if one was made."""
    facts = [] if reply.exit_code is None else [f"exit {reply.exit_code}"]
    if reply.backup_id:
        facts.append(f"backup {reply.backup_id}")
    ended = reply.status + (f" ({', '.join(facts)})" if facts else "") + f" {reply.detail}"
    return printable(ended, multiline=False).rstrip()


async def _restore(device: str, backup_id: str, timeout: float) -> int:
    """Ask the device to put back the files an earlier run backed up, byte for byte."""

    asked = await _for_device(_request(ScriptRestoreRequest, device_id=device, backup_id=backup_id))
    device = asked.device_id
    session = _session()
    async with _open(session) as conn, Progress(f"restoring on {device} / 正在恢复") as progress:
        request = asked.with_id(conn.session.next_id())
        async for reply in conn.request(request, timeout=timeout):
            progress.clear()
            if isinstance(reply, ErrorReply):
                return refused(reply)
            if isinstance(reply, ScriptProgress):
                print(progress_line(reply))  # the same words as a run's steps
            elif isinstance(reply, ScriptFinished):
                zh = "恢复成功" if reply.status == "succeeded" else "恢复失败"
                print(printable(f"{reply.status}: {reply.detail}", multiline=False) + f" / {zh}")
                return 0 if reply.status == "succeeded" else 1
    return 1


def list_scripts(
    relay: str, pin: str | None = None, ca_file: str | None = None, as_json: bool = False
) -> int:
    """The scripts the relay's signed repository offers (shown, not verified: devices verify)."""
    base = http.http_url(relay) + "/v1/scripts/metadata/"

    async def get(name: str) -> Any:
        answer = await http.fetch("GET", base + name, pin=pin, ca_file=ca_file)
        return answer.raise_for_status().json()["signed"]

    async def collect() -> dict[tuple[str, str], dict[str, Any]]:
        timestamp = await get("timestamp.json")
        snap_version = timestamp["meta"]["snapshot.json"]["version"]
        snapshot = await get(f"{snap_version}.snapshot.json")
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for role in ("low-risk", "high-risk"):
            version = snapshot["meta"][f"{role}.json"]["version"]
            for info in (await get(f"{version}.{role}.json"))["targets"].values():
                manifest = info.get("custom", {}).get("posassist-manifest", {})
                rows[(str(manifest.get("id")), str(manifest.get("version")))] = manifest
        return rows

    try:
        rows = asyncio.run(collect())
    except (http.HttpStatusError, KeyError, TypeError, AttributeError) as exc:
        print(
            printable(
                f"no script repository on this relay / 服务器没有脚本库: {exc}", multiline=False
            ),
            file=sys.stderr,
        )
        return 1
    if as_json:  # the manifests as published (not verified: devices verify), made printable
        manifests = [manifest for _key, manifest in sorted(rows.items())]
        print(json.dumps(printable_data(manifests), ensure_ascii=False, indent=2))
        return 0
    listing = []
    for (script_id, version), manifest in sorted(rows.items()):
        # The relay's word, not yet verified (devices verify): made printable by the table.
        title = manifest.get("title", {})
        platforms = ",".join(map(str, manifest.get("platforms", [])))
        words = f"{title.get('en', '')} / {title.get('zh', '')}"
        listing.append([script_id, version, manifest.get("risk", "?"), platforms, words])
    print(table(["script", "version", "risk", "platforms", "title"], listing))
    print("(listed from the relay as published; each device verifies signatures before running)")
    return 0


def _trust_for(
    relay: str, pin: str | None, cert: Path | None, ca_file: Path | None = None
) -> tuple[str | None, str | None]:
    """(pin, CA file) to trust ``relay`` by: what the command line gives (``--tls-pin``,
    ``--tls-cert``, ``--ca-file``), else what the saved session's login stored for the same
    relay."""
    if cert is not None:
        return spki_pin_from_pem(cert.read_bytes()), None
    if pin is not None or ca_file is not None:
        return pin, None if ca_file is None else str(ca_file)
    with contextlib.suppress(NotSignedIn):
        session = _session()
        if http.http_url(session.get("relay", "")) == http.http_url(relay):
            return session.get("tls_pin"), session.get("tls_ca")
    return None, None


def health(relay: str, pin: str | None = None, ca_file: str | None = None) -> int:
    """Print the relay's /healthz in plain words; RelayUnreachable if it can't be reached."""
    url = http.http_url(relay) + "/healthz"
    answer = asyncio.run(http.fetch("GET", url, pin=pin, ca_file=ca_file))
    body = answer.raise_for_status().json()
    relay_id, agents = body["relay_id"], body["agents"]
    print(
        printable(
            f"relay {relay_id}: {body['status']}, {agents} agent(s) connected", multiline=False
        )
    )
    state = "正常" if body["status"] == "ok" else str(body["status"])  # the relay's own word
    print(printable(f"服务器 {relay_id}: {state}, 在线设备 {agents} 台", multiline=False))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="posassist", description="posassist technician console")
    parser.add_argument("--version", action="version", version=f"posassist {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    h = commands.add_parser("health", help="is the relay up, and how many agents are on it")
    h.add_argument(
        "--relay",
        help="http(s)://host:port or ws(s)://host:port (default: the one you signed in to)",
    )
    h.add_argument("--tls-pin", help="trust the relay by this key pin (default: the session's)")
    h.add_argument("--tls-cert", type=Path, help="…or by the key in this certificate")
    h.add_argument("--ca-file", type=Path, help="…or by the CA certificates in this PEM file")
    li = commands.add_parser("login", help="sign in to a relay")
    li.add_argument("--relay", required=True)
    li.add_argument("--user", required=True)
    li.add_argument("--password-file", type=Path, help=f"the password (or set {PASSWORD_ENV})")
    li.add_argument("--tls-pin", help="trust the relay by this key pin (self-signed relays)")
    li.add_argument("--tls-cert", type=Path, help="…or by the key in this certificate")
    li.add_argument(
        "--ca-file",
        type=Path,
        help="…or by the CA certificates in this PEM file (kept for later commands, like a pin)",
    )
    dv = commands.add_parser("devices", help="devices in your scope, and whether they are online")
    dv.add_argument(
        "--facts", action="store_true", help="every fact each device reported (OS, printers…)"
    )
    dv.add_argument("--json", action="store_true", help="the relay's listing as JSON")
    dv.add_argument("--store", help="only this store's devices (its name or id)")
    dv.add_argument("--search", help="only devices whose id, host name or store name holds this")
    d = commands.add_parser(
        "diag", help="run diagnostics on a device, or on every device of a store"
    )
    d.add_argument("device", nargs="?")
    d.add_argument("--store", help="every active device of this store, one line each")
    d.add_argument(
        "--collector",
        action="append",
        default=[],
        choices=sorted(COLLECTORS),
        help="only these collectors",
    )
    d.add_argument("--json", action="store_true")
    d.add_argument("--timeout", type=seconds(0.1, 600.0), default=20.0)
    rs = commands.add_parser("restore", help="put back the files a script run backed up")
    rs.add_argument("device")
    rs.add_argument("backup_id", help="the backup id `posassist run` printed")
    rs.add_argument("--timeout", type=seconds(0.1, 86400.0), default=120.0)
    sc = commands.add_parser("scripts", help="the vetted scripts the relay offers")
    sc_commands = sc.add_subparsers(dest="scripts_command", required=True)
    sc_list = sc_commands.add_parser("list", help="list signed scripts and versions")
    sc_list.add_argument("--json", action="store_true", help="the manifests as JSON")
    alerts.add_parser(commands)  # console/alerts.py
    r = commands.add_parser(
        "run",
        help="run a vetted script on a device, streaming its output (or with --store S SCRIPT, "
        "on every device of a store, one line each)",
    )
    r.add_argument("device")
    r.add_argument("script", nargs="?")
    r.add_argument("--store", help="every active device of this store: run --store S SCRIPT")
    r.add_argument("--version", required=True, help="the signed version, e.g. 1.0.0")
    r.add_argument("--param", action="append", default=[], help="name=value (JSON or text)")
    r.add_argument("--unattended", action="store_true", help="only scripts allowed to run so")
    r.add_argument(
        "--timeout",
        type=seconds(0.1, 86400.0),
        default=600.0,
        help="seconds without any progress",
    )
    r.add_argument("--ticket", help="the ticket this run is for (marks it in progress, yours)")
    tickets.add_parsers(commands)
    service.add_parsers(commands)  # console/service.py: sla, store
    cancel.add_parsers(commands)  # console/cancel.py: cancel JOB
    admin.add_parsers(commands)  # console/admin.py: org, merchant, user, password, jobs, audit…
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        with _answer_shape():  # every command: an odd answer is one line, never a traceback
            return _command(args)
    except PosAssistError as exc:  # the one place errors become words and an exit status
        print(error_line(exc), file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `posassist alerts --json | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    except (OSError, ValueError) as exc:  # a file or pin given on the command line
        print(f"error: {exc} / 参数或文件有误", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C: the technician stopped waiting; the till keeps going
        print(
            "interrupted: the request may still be running on the device / 已中断", file=sys.stderr
        )
        return 130


@contextlib.contextmanager
def _answer_shape() -> Iterator[None]:
    """Around commands that read the relay's JSON: an answer of another shape than docs/api.md's
    (a missing key, a list for a map) is the relay's fault, said in one line, exit 1."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise admin.UnexpectedAnswer(type(exc).__name__) from None


def _command(args: argparse.Namespace) -> int:
    if args.command == "health":
        relay = args.relay
        if relay is None:  # readme-walk 15 L5: the relay `posassist login` stored
            try:
                relay = _session()["relay"]
            except (NotSignedIn, KeyError):
                raise BadArgument(
                    "health: give --relay URL, or sign in first (posassist login) / "
                    "请指定 --relay 或先登录"
                ) from None
        return health(relay, *_trust_for(relay, args.tls_pin, args.tls_cert, args.ca_file))
    if args.command == "login":
        pin = spki_pin_from_pem(args.tls_cert.read_bytes()) if args.tls_cert else args.tls_pin
        if pin is not None and args.ca_file is not None:
            raise BadArgument("give a pin (--tls-pin/--tls-cert) or --ca-file, not both")
        return login(args.relay, args.user, args.password_file, pin, args.ca_file)
    if admin.handles(args):
        with _answer_shape():
            return admin.command(args, _session())
    if args.command == "devices":
        with _answer_shape():
            return devices(args.facts, args.json, args.store, args.search)
    if args.command == "alerts":
        session = _session()
        return alerts.run(args, session, functools.partial(_call, ca_file=session.get("tls_ca")))
    if args.command == "scripts":
        session = _session()
        trust = (session.get("tls_pin"), session.get("tls_ca"))
        return list_scripts(session["relay"], *trust, as_json=args.json)
    if args.command in tickets.COMMANDS:
        with _answer_shape():
            return tickets.command(args, _session())
    if args.command in service.COMMANDS:
        with _answer_shape():
            return service.command(args, _session())
    if args.command in cancel.COMMANDS:
        return cancel.command(args, _session())
    if args.command == "run" and args.ticket:
        tickets.start_work(_session(), args.ticket)
    from websockets.exceptions import InvalidStatus

    try:
        if args.command in ("diag", "run") and (args.store is not None or args.device is None):
            return asyncio.run(_store_command(args))
        if args.command == "run" and args.script is None:
            raise BadArgument("run takes DEVICE SCRIPT (or --store STORE SCRIPT)")
        if args.command == "restore":
            return asyncio.run(_restore(args.device, args.backup_id, args.timeout))
        if args.command == "run":
            return asyncio.run(
                _run_script(
                    args.device,
                    args.script,
                    args.version,
                    args.param,
                    args.unattended,
                    args.timeout,
                )
            )
        return asyncio.run(_diag(args.device, tuple(args.collector), args.json, args.timeout))
    except BrokenPipeError:  # our reader went (`posassist diag dev_… | head`): see main()
        raise
    except (OSError, TimeoutError) as exc:  # the websocket could not reach the relay
        raise http.RelayUnreachable(f"{type(exc).__name__}: {exc}") from None
    except InvalidStatus as exc:  # the relay answered the upgrade with an HTTP error (429…)
        answer = exc.response
        body = bytes(answer.body or b"")
        http.Response(answer.status_code, dict(answer.headers), body).raise_for_status()
        raise http.RelayUnreachable(f"HTTP {answer.status_code} to a websocket upgrade") from None


if __name__ == "__main__":
    sys.exit(main())
