"""``posassist``: the technician's console (health now; devices, diagnostics and runs follow).

Output is English with Chinese where it is cheap.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posassist", description="posassist technician console")
    parser.add_argument("--version", action="version", version=f"posassist {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    health = commands.add_parser("health", help="is the relay up, and how many agents are on it")
    health.add_argument("--relay", required=True, help="http(s)://host:port or ws(s)://host:port")
    return parser


def health(relay: str) -> int:
    """Print the relay's /healthz in plain words; exit 1 if it can't be reached."""
    base = relay.replace("ws://", "http://", 1).replace("wss://", "https://", 1).rstrip("/")
    if not base.startswith(("http://", "https://")):
        print("error: relay must be an http(s):// or ws(s):// URL", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"relay unreachable / 服务器无法连接: {exc}", file=sys.stderr)
        return 1
    print(f"relay {body['relay_id']}: {body['status']}, {body['agents']} agent(s) connected")
    print(f"服务器 {body['relay_id']}: 正常, 在线设备 {body['agents']} 台")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return health(args.relay)


if __name__ == "__main__":
    sys.exit(main())
