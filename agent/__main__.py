"""``posassist-agent``: create this PC's identity, and run the agent (connect to the relay).

Merchant-facing lines are printed in Simplified Chinese with English.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

# On Python 3.8 (Windows 7 tills) cryptography warns, when first imported, that its support for
# 3.8 is deprecated: a line on every start that a merchant can do nothing about. Only that
# warning is silenced, here in the entry point and before cryptography is imported; every
# other warning still shows.
warnings.filterwarnings(
    "ignore",
    message=r"Python 3\.8 is no longer supported by the Python core team",
    category=UserWarning,
)

from posassist.client.cli import Parser, seconds  # noqa: E402
from posassist.protocol import PosAssistError, signing  # noqa: E402
from posassist.protocol.errors import BadArgument, error_line  # noqa: E402
from posassist.protocol.text import printable  # noqa: E402

from . import __version__  # noqa: E402
from .backoff import backoff  # noqa: E402
from .config import load_identity  # noqa: E402
from .errors import ConfigError, RelayRefusedError, ReplacedError  # noqa: E402

if TYPE_CHECKING:
    import argparse

    from posassist.protocol.enrolment import EnrolmentInvite

    from .config import Identity
    from .connection import Opened
    from .diagnostics import DiagContext
    from .helpwindow.service import HelpService
    from .scripts.service import ScriptService

log = logging.getLogger("posassist.agent")


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="posassist-agent", description="posassist store agent")
    parser.add_argument("--version", action="version", version="posassist-agent " + __version__)
    commands = parser.add_subparsers(dest="command")
    commands.required = True
    enroll = commands.add_parser("enroll", help="enrol this PC with a one-time token")
    enroll.add_argument("token", help="the PA1-… token from the operator")
    enroll.add_argument("--data", type=Path, required=True)
    enroll.add_argument(
        "--root-hash",
        help="the script repository's root hash, from the approvers (posassist-scripts root-hash)",
    )
    trust = commands.add_parser(
        "trust-root", help="trust the script repository root the approvers name (enrolled tills)"
    )
    trust.add_argument("--data", type=Path, required=True)
    trust.add_argument("--root-hash", required=True, help="from posassist-scripts root-hash")
    switch = commands.add_parser(
        "switch-provider",
        help="move this till to another service provider's relay, with the merchant's consent",
        description="Enrols with the relay the new provider's token names (a new identity in "
        "the same data folder), then tells the old relay, which shows the device as handed "
        "over and refuses it from then on. Settings, printers and backups are kept; the old "
        "identity is kept in retired/. Nothing changes if the merchant says no or the new "
        "enrolment fails. docs/agent.md#changing-provider",
    )
    switch.add_argument("--data", type=Path, required=True)
    switch.add_argument("--token", required=True, help="the new provider's PA1-… token")
    switch.add_argument(
        "--root-hash", help="the new provider's script repository root hash, from its approvers"
    )
    switch.add_argument(
        "--yes",
        action="store_true",
        help="the till's administrator agrees for the merchant (not asked at the terminal)",
    )
    idle = commands.add_parser(
        "wait-idle",
        help="wait until no vetted script runs here (installers call it before stopping the agent)",
        description="Exit 0 once no script runs on this till (at once if none does), 1 if one "
        "still runs after --timeout: stopping the agent then cancels it cleanly (its processes "
        "killed, its backup restored, recorded cancelled). Recorded in the till's audit.log. "
        "docs/agent.md#uninstall-while-a-script-runs",
    )
    idle.add_argument("--data", type=Path, required=True)
    idle.add_argument(
        "--timeout", type=seconds(0.0, 3600.0), default=300.0, help="longest wait (s)"
    )
    idle.add_argument(
        "--for",
        dest="purpose",
        choices=("uninstall", "upgrade", "stop"),
        default="stop",
        help="why, for the record",
    )
    run = commands.add_parser("run", help="connect to the relay and serve it")
    run.add_argument("--data", type=Path, required=True)
    run.add_argument("--once", action="store_true", help="exit after one successful handshake")
    run.add_argument(
        "--no-checks",
        action="store_true",
        help="run no health checks (alerts already queued stay queued)",
    )
    run.add_argument(
        "--max-backoff",
        type=seconds(1.0, 3600.0),
        default=60.0,
        help="longest wait between reconnects (s)",
    )
    diag = commands.add_parser("diag", help="collect a diagnostics report and print it")
    diag.add_argument("--data", type=Path, required=True)
    diag.add_argument("--offline", action="store_true", help="collect here, without the relay")
    diag.add_argument("--json", action="store_true", help="machine-readable output")
    diag.add_argument(
        "--timeout", type=seconds(0.1, 600.0), default=15.0, help="seconds for the whole report"
    )
    helpw = commands.add_parser(
        "help", help="the merchant's 获取帮助 / get help window (the agent must be running)"
    )
    helpw.add_argument("--data", type=Path, required=True)
    helpw.add_argument("--text", action="store_true", help="in this terminal, not a window")
    helpw.add_argument("--lang", choices=("zh-CN", "en"), default="zh-CN")
    helpw.add_argument(
        "--autostart",
        action="store_true",
        help="add an entry that opens the window when this user logs in, then exit",
    )
    configure = commands.add_parser(
        "configure",
        help="find the receipt printers and the POS, propose settings.json (--write saves it)",
        description="Serial ports that answer DLE EOT (not those the POS holds), raw TCP "
        "printers on the addresses you allow (--tcp), USB printers and print queues, and the "
        "POS profile whose processes run. Prints the settings; --write saves them (the old file "
        "kept as settings.json.bak). docs/agent.md#configure",
    )
    configure.add_argument("--data", type=Path, required=True)
    configure.add_argument(
        "--tcp",
        action="append",
        default=[],
        metavar="ADDR",
        help="host, host:port or a.b.c.d/nn (at most 256 addresses) to ask on port 9100",
    )
    configure.add_argument(
        "--serial", action="append", default=[], metavar="PORT", help="also ask this port"
    )
    configure.add_argument(
        "--no-scan", action="store_true", help="ask only the --serial ports, not every port"
    )
    configure.add_argument(
        "--baudrate", type=int, default=9600, help="the printers' serial speed (not scanned)"
    )
    configure.add_argument(
        "--pos-profile", default="auto", help="a POS profile name, or auto (detect; default)"
    )
    configure.add_argument("--write", action="store_true", help="save settings.json")
    return parser


def _configure(args: argparse.Namespace) -> int:
    """posassist-agent configure: see agent/discovery.py."""
    from posassist.client.files import write_private

    from .collectors.escpos import probe_serial, probe_tcp
    from .collectors.printers import PROBE_TIMEOUT
    from .collectors.serialports import list_serial_ports
    from .discovery import (
        propose,
        queue_candidates,
        running_profiles,
        serial_candidates,
        tcp_candidates,
        tcp_targets,
        usb_printer_devices,
    )
    from .profile import list_profiles, load_profile
    from .settings import parse_settings

    path = args.data / "settings.json"
    current: Dict[str, Any] = {}
    if path.exists():
        try:
            current = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{path} is unreadable ({exc}): fix or move it; nothing written"
            ) from None
        if not isinstance(current, dict):
            raise ConfigError(f"{path} must hold a JSON object: fix or move it; nothing written")
    if args.baudrate not in STANDARD_BAUDRATES:
        raise ConfigError(
            "--baudrate 必须是标准串口速率 / --baudrate must be a standard serial speed: "
            + ", ".join(str(speed) for speed in STANDARD_BAUDRATES)
        )
    targets = tcp_targets(args.tcp)  # refused before anything is asked
    profile = ""
    if args.pos_profile != "auto":
        load_profile(args.pos_profile, args.data)  # ConfigError names what is wrong
        profile = args.pos_profile
    ports = [] if args.no_scan else list_serial_ports()
    found = serial_candidates(
        ports, args.serial, args.baudrate, lambda d, b: probe_serial(d, b, timeout=PROBE_TIMEOUT)
    )
    found += tcp_candidates(targets, lambda h, p: probe_tcp(h, p, timeout=PROBE_TIMEOUT))
    found += usb_printer_devices()
    try:
        from .collectors import printqueue

        found += queue_candidates(printqueue.collect())
    except PosAssistError as exc:  # no spooler to ask: say so, go on
        _say("未读取打印队列", f"no print queue read: {exc}")
    for candidate in found:
        print(printable(candidate.line(), multiline=False))
    if not profile:
        shipped = {name: load_profile(name, args.data).process_names for name in list_profiles()}
        from .collectors.pos import _process_table  # the POS collector's own process walk

        running = running_profiles(shipped, [name or "" for _, name, _ in _process_table()])
        if len(running) == 1:
            profile = running[0]
            _say(f"检测到收银软件: {profile}", f"POS detected: {profile}")
        else:
            which = ", ".join(running) if running else "none running"
            _say(
                f"未能自动确定收银软件 ({which}); 用 --pos-profile 指定: {', '.join(shipped)}",
                f"no single POS detected ({which}); name it with --pos-profile: "
                + ", ".join(shipped),
            )
    doc = propose(current, found, profile or None)
    parse_settings(doc)  # what the agent will read: refused here, never written broken
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    print(text, end="")
    if not args.write:
        _say("未保存; 加 --write 保存", f"nothing written; --write saves it to {path}")
        return 0
    if path.exists():
        write_private(path.with_name("settings.json.bak"), path.read_bytes())
    write_private(path, text)
    _say(f"已保存 {path}", f"written to {path}")
    return 0


def _confirm_switch(invite: EnrolmentInvite, yes: bool) -> bool:
    """The merchant's consent to changing provider, asked at the terminal (zh-CN, then English);
    ``--yes`` is a local administrator's. No terminal and no ``--yes``: NoTerminal, exit 2."""
    if yes:
        return True
    if not sys.stdin.isatty():
        from posassist.client.errors import NoTerminal

        raise NoTerminal(
            "没有可询问商户的终端; 由本机管理员加 --yes 确认 / no terminal to ask the merchant "
            "on: a local administrator confirms with --yes; nothing changed"
        )
    where = printable(f"{invite.relay_url} ({invite.relay_id})", multiline=False)
    _say(f"将本收银机转到另一家服务商: {where}", f"move this till to another provider: {where}")
    _say(
        "原服务商将不能再连接本机; 设置、打印机和备份保留",
        "the current provider will no longer reach this till; settings, printers and backups "
        "are kept",
    )
    try:
        answer = input("同意请输入 yes / type yes to agree: ")
    except EOFError:
        return False
    return answer.strip().lower() in ("yes", "y", "是", "同意")


def _switch(args: argparse.Namespace) -> int:
    """posassist-agent switch-provider: see agent/handover.py."""
    from .handover import switch_provider

    done = switch_provider(
        args.data, args.token, args.root_hash, lambda invite: _confirm_switch(invite, args.yes)
    )
    _say(
        f"已转到新的服务商, 设备编号 {done.new_device_id}",
        f"moved to the new provider as device {done.new_device_id} ({done.new_relay_url})",
    )
    if done.told == "told":
        _say(
            f"已通知原服务商, 原设备 {done.old_device_id} 显示为已转移",
            f"the old relay was told: device {done.old_device_id} shows as handed over",
        )
    else:
        _say(
            f"未能通知原服务商 ({done.told}); 请让原服务商注销设备 {done.old_device_id}",
            f"the old relay was NOT told ({done.told}); ask the old provider to revoke "
            f"device {done.old_device_id}",
        )
    _say(
        f"原身份保存在 {done.retired}; 运行中的代理会自动改连新服务器",
        f"the old identity is kept in {done.retired}; a running agent moves to the new relay "
        "by itself",
    )
    return 0


def _wait_idle(data_dir: Path, timeout: float, purpose: str) -> int:
    """posassist-agent wait-idle: see agent/runstate.py."""
    from . import journal
    from .runstate import check_running, wait_idle

    running, problem = check_running(data_dir)
    if problem is not None:
        text = printable(problem, multiline=False)
        _say(f"无法读取运行状态, 视为无脚本运行 ({text})", f"{text}: counted as no script running")
    if running is not None:
        what = printable(str(running.get("what", "")), multiline=False)
        _say(
            f"正在等待脚本结束 ({what}), 最多 {timeout:g} 秒",
            f"waiting for the running script ({what}) to end, at most {timeout:g} s",
        )
    outcome, run, waited = wait_idle(data_dir, timeout)
    detail: Dict[str, Any] = {"for": purpose, "waited": round(waited, 1)}
    if run is not None:
        detail.update(job_id=run.get("job_id"), what=run.get("what"))
    try:
        journal.record(data_dir, "agent.wait_idle", outcome, detail)
    except OSError as exc:  # the installer goes on either way; say so
        log.warning("wait-idle not recorded in %s: %s", data_dir, exc)
    what = printable(str(detail.get("what", "")), multiline=False)
    if outcome == "idle":
        _say("没有正在运行的脚本", "no script is running")
    elif outcome == "finished":
        _say(
            f"正在运行的脚本已结束 ({what}, 等待 {waited:.0f} 秒)",
            f"the running script ended ({what}) after {waited:.0f} s",
        )
    else:
        _say(
            f"脚本仍在运行 ({what}); 停止代理时将取消它并恢复备份",
            f"a script still runs after {waited:.0f} s ({what}); stopping the agent cancels "
            "it cleanly and restores its backup",
        )
        return 1
    return 0


def _help(data_dir: Path, text: bool, lang: str, autostart: bool) -> int:
    """The help window, or its ``--text`` twin; both need the agent running on this till."""
    if autostart:
        import os

        from .helpwindow.autostart import write_autostart

        path = write_autostart(data_dir, lang, os.environ)
        _say(f"登录后将自动打开帮助窗口: {path}", f"the help window opens at log-in: {path}")
        return 0
    if text:
        from .helpwindow.text import run_text

        return asyncio.run(run_text(data_dir, lang))
    from .helpwindow.window import run_window

    return run_window(data_dir, lang)


def _say(zh: str, en: str) -> None:
    """One line for the person at the till; it may quote the relay, so it is made printable.

    Best effort: a closed or missing stdout (a pipe whose reader left, a service wrapper) is
    logged, never raised, so it can't end a connection (found in the outside attack, F7).
    """
    line = printable(zh + " / " + en, multiline=False)
    try:
        print(line, flush=True)
    except (OSError, ValueError) as exc:  # BrokenPipeError; ValueError: stdout closed
        log.warning("could not print to the console (%s): %s", type(exc).__name__, line)


def _help_service(
    data_dir: Path, identity: Identity, diagnostics: DiagContext
) -> Optional[HelpService]:
    """The help window's side of the agent (docs/helpwindow.md), unless settings switch it off."""
    settings = diagnostics.settings
    if settings.help_link == "off":
        return None
    from .helpwindow.service import HelpService
    from .scripts.results import ResultStore

    return HelpService(
        data_dir,
        identity.device_id,
        timezone=settings.time_zone or "Asia/Shanghai",
        allowed_uids=frozenset(settings.desktop_uids) if settings.desktop_uids else None,
        transport=None if settings.help_link == "auto" else settings.help_link,
        diagnostics=diagnostics,
        results=ResultStore(data_dir / "scripts" / "results.json"),
        unattended_policy=settings.unattended_consent,
        consent_timeout=settings.consent_timeout,
    )


def _script_service(
    data_dir: Path,
    identity: Identity,
    diagnostics: DiagContext,
    help_service: Optional[HelpService] = None,
) -> Optional[ScriptService]:
    """The vetted-script service, if this till was enrolled with a script repository root."""
    if not (data_dir / "scripts" / "root.json").exists():
        return None
    from .scripts.backup import BackupStore
    from .scripts.runner import ScriptRunner
    from .scripts.service import ScriptService

    runner = ScriptRunner(
        backups=BackupStore(data_dir / "backups"),
        consent=None if help_service is None else help_service.consent,
        consent_timeout=diagnostics.settings.consent_timeout,
        profile=diagnostics.profile,
        placeholders={"DATA": str(data_dir)},
    )
    root_hash = json.loads((data_dir / "agent.json").read_text(encoding="utf-8")).get("root_hash")
    return ScriptService(
        data_dir, identity.relay_url, runner, root_hash=root_hash, tls_pin=identity.tls_pin
    )


#: How many times one agent process takes up a new identity (a provider switch) by itself.
MAX_IDENTITY_RELOADS = 8


#: The serial speeds ``configure --baudrate`` accepts (receipt printers use 9600-115200).
STANDARD_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)


def _finish_switch(data_dir: Path) -> None:
    """A switch interrupted after the new relay accepted the till is finished first."""
    if not (data_dir / "switch.new").exists():  # the usual case: nothing to finish, and the
        return  # switch's modules (enrolment, HTTP) stay out of an idle agent (test_idle_imports)
    from .handover import STAGING, complete_pending

    assert STAGING == "switch.new"

    try:
        done = complete_pending(data_dir)
    except ConfigError as exc:  # under way in another process, or the disk still refuses
        _say("更换服务商未完成", str(exc))
    else:
        if done is not None:
            _say(
                f"已完成中断的服务商更换, 设备编号 {done.new_device_id}",
                f"finished the interrupted provider switch: now device {done.new_device_id} "
                f"({done.new_relay_url}); the old relay: {done.told}",
            )


async def _run(data_dir: Path, once: bool, max_backoff: float, checks: bool = True) -> int:
    """Serve the relay of the identity in ``data_dir``; when ``switch-provider`` replaced that
    identity while we ran (docs/agent.md#changing-provider), start again with the new one."""
    for _ in range(MAX_IDENTITY_RELOADS):
        status, moved = await _run_identity(data_dir, once, max_backoff, checks)
        if not moved:
            return status
        _say(
            "本机已转到新的服务商, 正在连接新服务器",
            "this till moved to a new provider: reconnecting",
        )
    return 1


def _identity_moved(data_dir: Path, device_id: str) -> bool:
    """Whether ``agent.json`` now names another device (a provider switch replaced it)."""
    try:
        config = json.loads((data_dir / "agent.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # mid-swap, or damaged: the next attempt looks again
    return isinstance(config, dict) and config.get("device_id") not in (None, device_id)


async def _run_identity(
    data_dir: Path, once: bool, max_backoff: float, checks: bool
) -> Tuple[int, bool]:
    from .diagnostics import DiagContext
    from .run import run_agent

    identity = load_identity(data_dir)
    diagnostics = DiagContext.load(data_dir)
    if diagnostics.profile_error:
        _say("POS 配置文件有误", diagnostics.profile_error)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    except NotImplementedError:  # pragma: no cover - Windows: the service wrapper stops us
        pass

    helper = _help_service(data_dir, identity, diagnostics)
    if helper is not None:
        try:
            await helper.start()  # before scripts: a consent left open by the last run is denied
        except (OSError, PosAssistError) as exc:  # the agent works on without a window
            _say(
                "帮助窗口的本地连接无法建立, 需要商户确认的脚本将被拒绝",
                f"the help window's link could not start ({exc}); scripts needing consent are "
                "refused",
            )
            helper = None
    scripts = _script_service(data_dir, identity, diagnostics, helper)
    fresh = None if scripts is None else asyncio.ensure_future(scripts.keep_fresh(stop))
    health = None
    checking = None
    if checks and not once:
        from .checks.monitor import HealthMonitor

        health = HealthMonitor(diagnostics, data_dir, identity.relay_url)
        await health.open()  # OutboxError (exit 1) if the till's disk can't hold it
        checking = asyncio.ensure_future(health.run(stop))

    async def opened(info: Opened) -> None:
        if scripts is not None:
            scripts.refresh_soon()  # every connect moves the rollback floor (docs/scripts.md)
        _say(
            f"已连接到服务器 {info.relay_id} (设备 {identity.device_id})",
            f"connected to relay {info.relay_id} as {identity.device_id} (v{info.version})",
        )

    moved = False

    def failed(exc: BaseException) -> None:
        nonlocal moved
        if not once and _identity_moved(data_dir, identity.device_id):
            moved = True  # replaced by our own handover connection, or refused handed_over
            stop.set()
            return
        if isinstance(exc, RelayRefusedError):
            _say(exc.words_zh, exc.words_en)
        elif isinstance(exc, ReplacedError) and (data_dir / "switch.new").exists():
            # switch-provider's handover connection, signed with this identity (agent/handover.py)
            _say("正在更换服务商", "changing provider: the old relay is being told")
        elif isinstance(exc, ReplacedError):
            _say(
                "本设备身份在另一处连接了服务器, 稍后重连 (若为复制的系统镜像, 请重新登记本机)",
                "another connection with this device identity replaced ours; reconnecting "
                "after a back-off (a cloned till must be enrolled on its own)",
            )
        elif once:
            _say("无法连接服务器", "cannot connect to the relay: " + type(exc).__name__)

    try:
        status = await run_agent(
            identity,
            stop,
            once=once,
            delays=lambda: backoff(cap=max_backoff),
            diagnostics=diagnostics,
            scripts=scripts,
            on_open=opened,
            on_failure=failed,
            help_service=helper,
            health=health,
        )
    finally:
        if helper is not None:
            await helper.close()
        if checking is not None:
            checking.cancel()
            await asyncio.gather(checking, return_exceptions=True)
        if health is not None:
            await health.close()
        if fresh is not None:
            fresh.cancel()
            await asyncio.gather(fresh, return_exceptions=True)
        if scripts is not None:
            await scripts.close()  # runs outlive connections, not the agent
    if moved:
        return status, True
    if not once:
        _say("代理已停止", "agent stopped")
    return status, False


async def _diag(data_dir: Path, as_json: bool, timeout: float) -> int:
    from posassist.client.render import render_report, terminal_json

    from .diagnostics import DiagContext, collect_report, default_collectors
    from .findings import annotate

    ctx = DiagContext.load(data_dir)
    sections = await collect_report(ctx, default_collectors(), time.monotonic() + timeout)
    now = time.time()
    report: Dict[str, Any] = {"collected_at": now, "sections": sections}
    if ctx.profile_error:
        report["profile_error"] = ctx.profile_error
    annotate(report, ctx.profile, now)  # findings first (docs/findings.md)
    if as_json:
        print(terminal_json(report))  # no escape or bidi character reaches the terminal raw
    else:
        print(render_report(report, now=now))
    return 0 if all(s["ok"] for s in sections.values()) else 1


def main(argv: Optional[List[str]] = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a GBK console or a redirected report on a
        reconfigure = getattr(stream, "reconfigure", None)  # Chinese Windows till: a character
        if reconfigure is not None:  # outside the code page becomes "?", never a traceback
            reconfigure(errors="replace")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        args = _parser().parse_args(argv)
        if getattr(args, "data", None) is not None:  # a relative --data: its paths (profile
            args.data = args.data.absolute()  # ${DATA}, scripts) must not depend on the cwd
        if args.command == "enroll":
            from .enrol import enrol  # pinned HTTP and the token parser: not at agent idle

            identity = enrol(args.token, args.data, args.root_hash)
            _say(
                f"登记成功, 设备编号 {identity.device_id}",
                f"enrolled as device {identity.device_id} with {identity.relay_url}",
            )
            print("fingerprint: " + signing.fingerprint(identity.key.public_key()))
            if args.root_hash is None:
                _say(
                    "未提供脚本库根哈希, 本机不会运行任何脚本; 请向审批人索取后运行 trust-root",
                    "no --root-hash: this till runs no script until `posassist-agent trust-root "
                    "--root-hash HASH` with the hash from the approvers",
                )
            return 0
        if args.command == "configure":
            return _configure(args)
        if args.command == "switch-provider":
            return _switch(args)
        if args.command == "wait-idle":
            return _wait_idle(args.data, args.timeout, args.purpose)
        if args.command == "trust-root":
            from .enrol import trust_root

            trust_root(args.data, args.root_hash)
            _say("已信任脚本库根证书", "the script repository root is trusted")
            return 0
        if args.command == "help":
            return _help(args.data, args.text, args.lang, args.autostart)
        if args.command == "diag":
            if not args.offline:
                raise BadArgument(
                    "本机只能离线诊断, 请用 posassist-agent diag --offline; "
                    "远程诊断由技术员通过服务器发起 "
                    "(only --offline is available here; a technician asks for diagnostics "
                    "through the relay)"
                )
            return asyncio.run(_diag(args.data, args.json, args.timeout))
        _finish_switch(args.data)
        return asyncio.run(_run(args.data, args.once, args.max_backoff, not args.no_checks))
    except PosAssistError as exc:  # the one place errors become words and an exit status
        print(error_line(exc), file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
