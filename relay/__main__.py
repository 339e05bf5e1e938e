"""``posassist-relay``: the relay's command line (serve; init and audit arrive with relay-core).

Runs on uvloop where the platform has it; SIGTERM and SIGINT shut down gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from protocol import signing
from protocol.errors import SignatureError

from . import __version__
from .app import create_app
from .config import RelayConfig
from .devices import DirectoryDeviceKeys

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posassist-relay", description="posassist relay")
    parser.add_argument("--version", action="version", version=f"posassist-relay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="accept agents and consoles")
    serve.add_argument("--data", type=Path, required=True, help="data directory")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    serve.add_argument("--heartbeat", type=float, default=20.0, help="seconds between heartbeats")
    device = commands.add_parser("device", help="bind device keys (until enrolment tokens land)")
    device_commands = device.add_subparsers(dest="device_command", required=True)
    add = device_commands.add_parser("add", help="bind a device id to its public key (PEM)")
    add.add_argument("--data", type=Path, required=True)
    add.add_argument("--device-id", required=True)
    add.add_argument("--key", type=Path, required=True, help="the agent's agent.pub")
    return parser


def add_device(data_dir: Path, device_id: str, key_file: Path) -> int:
    """Bind ``device_id`` to the public key in ``key_file``; print its fingerprint."""
    try:
        key = signing.public_key_from_pem(key_file.read_bytes())
        path = DirectoryDeviceKeys(data_dir / "devices").add(device_id, key)
    except (OSError, ValueError, SignatureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"device {device_id} bound to key {signing.fingerprint(key)} ({path})")
    return 0


async def serve(config: RelayConfig) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and drain for the grace period."""
    runner = web.AppRunner(create_app(config), shutdown_timeout=config.shutdown_grace)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = runner.addresses[0][1]
    url = f"ws://{config.host}:{port}"
    (config.data_dir / "relay.url").write_text(url, encoding="utf-8")
    print(f"posassist relay {config.relay_id} listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        print("posassist relay shutting down", flush=True)
        await runner.cleanup()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows, or uvloop not installed
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "device":
        return add_device(args.data, args.device_id, args.key)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    config = RelayConfig.load(
        args.data, host=args.host, port=args.port, heartbeat_interval=args.heartbeat
    )
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
