"""``posassist-agent``: create this PC's identity, and run the agent (connect to the relay).

Merchant-facing lines are printed in Simplified Chinese with English.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import List, Optional

from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from protocol import PosAssistError, signing
from protocol.enrolment import InvalidEnrolmentToken

from . import __version__
from .backoff import backoff
from .config import load_identity
from .connection import Opened, connect_once
from .enrol import enrol
from .errors import ConfigError, RelayRefusedError

log = logging.getLogger("posassist.agent")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posassist-agent", description="posassist store agent")
    parser.add_argument("--version", action="version", version="posassist-agent " + __version__)
    commands = parser.add_subparsers(dest="command")
    commands.required = True
    enroll = commands.add_parser("enroll", help="enrol this PC with a one-time token")
    enroll.add_argument("token", help="the PA1-… token from the operator")
    enroll.add_argument("--data", type=Path, required=True)
    run = commands.add_parser("run", help="connect to the relay and serve it")
    run.add_argument("--data", type=Path, required=True)
    run.add_argument("--once", action="store_true", help="exit after one successful handshake")
    return parser


def _say(zh: str, en: str) -> None:
    print(zh + " / " + en, flush=True)


async def _run(data_dir: Path, once: bool) -> int:
    identity = load_identity(data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    except NotImplementedError:  # pragma: no cover - Windows: the service wrapper stops us
        pass

    async def opened(info: Opened) -> None:
        _say(
            f"已连接到服务器 {info.relay_id} (设备 {identity.device_id})",
            f"connected to relay {info.relay_id} as {identity.device_id} (v{info.version})",
        )

    delays = backoff()
    while not stop.is_set():
        attempt = asyncio.ensure_future(connect_once(identity, on_open=opened, serve=not once))
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({attempt, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if attempt not in done:
            attempt.cancel()
            await asyncio.gather(attempt, return_exceptions=True)
            break
        try:
            attempt.result()
            if once:
                return 0
            delays = backoff()  # a connection that worked resets the backoff
            delay = next(delays)
        except RelayRefusedError as exc:
            _say("服务器拒绝了本设备: " + exc.code, "the relay refused this device: " + exc.code)
            if once:
                return 3
            delay = next(delays)
        except (OSError, asyncio.TimeoutError, WebSocketException, PosAssistError) as exc:
            if isinstance(exc, (InvalidURI, InvalidHandshake)) and once:
                _say("无法连接服务器", "cannot connect to the relay: " + type(exc).__name__)
                return 2
            log.warning("connection to %s failed: %s", identity.relay_url, type(exc).__name__)
            if once:
                _say("无法连接服务器", "cannot connect to the relay: " + type(exc).__name__)
                return 2
            delay = next(delays)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except asyncio.TimeoutError:
            pass
    _say("代理已停止", "agent stopped")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if args.command == "enroll":
            identity = enrol(args.token, args.data)
            _say(
                f"登记成功, 设备编号 {identity.device_id}",
                f"enrolled as device {identity.device_id} with {identity.relay_url}",
            )
            print("fingerprint: " + signing.fingerprint(identity.key.public_key()))
            return 0
        return asyncio.run(_run(args.data, args.once))
    except (ConfigError, InvalidEnrolmentToken) as exc:
        print("error: " + str(exc), file=sys.stderr)
        return 2
    except RelayRefusedError as exc:
        _say("服务器拒绝登记: " + exc.code, "the relay refused the enrolment: " + exc.code)
        return 3


if __name__ == "__main__":
    sys.exit(main())
