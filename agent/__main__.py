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
from typing import TYPE_CHECKING, Any, Dict, List, Optional

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
    if not 0 < args.baudrate <= 4_000_000:
        raise ConfigError("--baudrate must be a serial speed such as 9600 or 115200")
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


async def _run(data_dir: Path, once: bool, max_backoff: float, checks: bool = True) -> int:
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

    def failed(exc: BaseException) -> None:
        if isinstance(exc, RelayRefusedError):
            _say(exc.words_zh, exc.words_en)
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
    if not once:
        _say("代理已停止", "agent stopped")
    return status


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
        return asyncio.run(_run(args.data, args.once, args.max_backoff, not args.no_checks))
    except PosAssistError as exc:  # the one place errors become words and an exit status
        print(error_line(exc), file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
