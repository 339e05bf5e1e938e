"""A stand-in for the shop's POS application, for the demo and tests: a process the agent sees
by the name the demo POS profile names (``demo-pos``), with the files that profile points at
(``DATA/pos``: its log and config).

A fake of software outside the product: it writes what a POS writes and waits; it sells
nothing. Linux only (it renames itself with prctl, as a program started as ``demo-pos`` is).

    python -m tests.fakes.simpos --data TILL_DATA     # until stdin closes or SIGTERM
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import signal
import sys
import time
from pathlib import Path

__all__ = ["NAME", "main", "prepare"]

NAME = "demo-pos"
_PR_SET_NAME = 15


def prepare(data: Path, printer: str = "") -> Path:
    """The POS's folder under the till's data folder: its log of an ordinary morning and its
    INI config (the printer it prints to). Returns the folder."""
    folder = data / "pos"
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    lines = [
        f"{now} INFO 收银系统启动 / POS started, version 5.2.1",
        f"{now} INFO 班次开始 / shift opened by cashier 01",
        f"{now} INFO sale 0001 total 38.00 paid by card 6222 0212 3456 7890",
    ]
    (folder / "logs" / "pos.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "pos.ini").write_text(f"[printer]\naddress = {printer}\n", encoding="utf-8")
    return folder


def _rename(name: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_NAME, name.encode(), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME) failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simpos", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="the till's data folder")
    parser.add_argument("--printer", default="", help="host:port of its receipt printer")
    args = parser.parse_args(argv)
    prepare(args.data, args.printer)
    _rename(NAME)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"the shop's POS application ({NAME}) is running / 收银软件已运行", flush=True)
    sys.stdin.read()  # until the demo closes it
    return 0


if __name__ == "__main__":
    sys.exit(main())
