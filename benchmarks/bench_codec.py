"""Encode+decode cost of the protocol codec against plain msgpack and JSON, per message.

Run from the repository root: ``python -m benchmarks.bench_codec`` (``--help`` for options).
Prints a markdown table; the target is protocol ≤ 1.5× plain msgpack. Never a test assertion.

What each column times, per message, as one encode plus one decode:

- protocol: ``Codec.encode(msg)`` then ``Codec.decode(frame)`` (registry check, frame limits,
  msgpack with decoding limits, field-set check, full validation of the rebuilt message);
- plain msgpack: ``msgpack.packb(wire)`` then ``msgpack.unpackb(...)`` of the same dict,
  ``wire = msg.to_wire()``, no limits and no validation;
- json: ``json.dumps(wire)`` with bytes turned into base64 text by a ``default`` hook (so the
  base64 encoding is timed) then ``json.loads(...)`` (the base64 text is not decoded back).
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import statistics
import sys
import time
from typing import TYPE_CHECKING, Any

import msgpack

from posassist.protocol import Codec, DiagnosticsReport, Heartbeat, Message, ScriptOutput

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

TARGET_RATIO = 1.5
#: The DiagnosticsReport case must encode to about 2 KB; outside this range the bench refuses.
REPORT_SIZE_RANGE = (1800, 2300)


# --- the messages -------------------------------------------------------------------------------


def heartbeat() -> Heartbeat:
    return Heartbeat(seq=48213, sent_at=1700000123.456789)


def diagnostics_report() -> DiagnosticsReport:
    """A report shaped like a real till's: system, POS service, printer, serial ports, disks."""
    sections: dict[str, Any] = {
        "system": {
            "ok": True,
            "elapsed": 0.041,
            "data": {
                "hostname": "SHOP-0231-TILL1",
                "os": "Windows 7 Professional SP1",
                "os_build": "6.1.7601",
                "arch": "x86",
                "python": "3.8.10",
                "agent": "posassist-agent/0.1.0",
                "boot_time": 1699990000.0,
                "uptime": 10123.5,
                "cpu": {"count": 2, "percent": 17.5, "model": "Intel(R) Celeron(R) J1900"},
                "memory": {"total": 4294967296, "available": 1288490188, "percent": 70.0},
                "timezone": "Asia/Shanghai",
                "clock_offset": -0.231,
            },
        },
        "pos_service": {
            "ok": True,
            "elapsed": 0.012,
            "data": {
                "name": "SmartPOS",
                "process": "smartpos.exe",
                "running": True,
                "pid": 2316,
                "version": "5.2.18",
                "rss": 187654144,
                "sale_in_progress": False,
                "last_sale_at": 1700000001.0,
            },
        },
        "printer": {
            "ok": True,
            "elapsed": 0.218,
            "data": {
                "model": "EPSON TM-T82III",
                "port": "COM1",
                "baud": 38400,
                "online": True,
                "cover_open": False,
                "paper": "near_end",
                "cutter_error": False,
                "drawer_open": False,
                "raw_status": b"\x16\x12\x12\x12",
                "queue": {"jobs": 0, "errors": 0, "spooler": "running"},
            },
        },
        "serial_ports": {
            "ok": True,
            "elapsed": 0.009,
            "data": {
                "ports": [
                    {"name": "COM1", "description": "Communications Port (COM1)", "in_use": True},
                    {"name": "COM3", "description": "USB-SERIAL CH340 (COM3)", "in_use": False},
                    {
                        "name": "COM4",
                        "description": "Prolific USB-to-Serial (COM4)",
                        "in_use": True,
                    },
                ],
            },
        },
        "usb_devices": {
            "ok": True,
            "elapsed": 0.031,
            "data": {
                "devices": [
                    {"vid": "0x04b8", "pid": "0x0e28", "name": "EPSON TM-T82III Receipt"},
                    {"vid": "0x0c2e", "pid": "0x0b61", "name": "Honeywell 1900 Scanner (HID)"},
                    {"vid": "0x1a86", "pid": "0x7523", "name": "QinHeng CH340 serial"},
                    {"vid": "0x067b", "pid": "0x2303", "name": "Prolific PL2303 serial"},
                ],
            },
        },
        "certificates": {
            "ok": True,
            "elapsed": 0.002,
            "data": {"relay_pin": "sha256/9f2c0e5d", "not_after": 1731536000.0, "days_left": 366},
        },
        "scale": {
            "ok": False,
            "elapsed": 3.0,
            "error": {"code": "timeout", "message": "no answer from COM4 within 3.0 s"},
        },
        "disks": {
            "ok": True,
            "elapsed": 0.004,
            "data": {
                "volumes": [
                    {"mount": "C:\\", "fs": "NTFS", "total": 120034123776, "free": 9876543210},
                    {"mount": "D:\\", "fs": "NTFS", "total": 500107862016, "free": 312345678901},
                ],
            },
        },
        "network": {
            "ok": True,
            "elapsed": 0.120,
            "data": {
                "relay_rtt": 0.038,
                "dns_ok": True,
                "interfaces": [
                    {"name": "Local Area Connection", "ipv4": "192.168.1.23", "up": True},
                ],
            },
        },
        "event_log": {
            "ok": True,
            "elapsed": 0.350,
            "data": {
                "errors_24h": 3,
                "last": [
                    "Service Control Manager 7031: SmartPOS terminated unexpectedly",
                    "Disk 11: controller error on \\Device\\Harddisk0\\DR0",
                    "打印后台处理程序服务意外终止",
                ],
            },
        },
    }
    return DiagnosticsReport(
        id=9001, device_id="dev-shop0231-till1", collected_at=1700000100.25, sections=sections
    )


def script_output() -> ScriptOutput:
    line = b"2023-11-14 22:13:20 INFO  spooler: job 4711 printed, 38 lines, cut ok\r\n"
    data = (line * (64 * 1024 // len(line) + 1))[: 64 * 1024]
    return ScriptOutput(id=42, job_id="job-7f3a2c", seq=17, stream="stdout", data=data)


# --- the three round trips ----------------------------------------------------------------------


def _base64_default(value: object) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def round_trips(msg: Message, codec: Codec) -> dict[str, Callable[[], object]]:
    wire = msg.to_wire()
    encode, decode = codec.encode, codec.decode
    packb, unpackb = msgpack.packb, msgpack.unpackb
    dumps, loads = json.dumps, json.loads

    def protocol_rt() -> object:
        return decode(encode(msg))

    def msgpack_rt() -> object:
        return unpackb(packb(wire))

    def json_rt() -> object:
        return loads(dumps(wire, default=_base64_default))

    return {"protocol": protocol_rt, "msgpack": msgpack_rt, "json": json_rt}


# --- timing -------------------------------------------------------------------------------------


def _time_loops(func: Callable[[], object], loops: int) -> float:
    """Seconds for ``loops`` calls, with the garbage collector off (as timeit does)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(loops):
            func()
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def calibrate(func: Callable[[], object], repeat_time: float, max_loops: int) -> int:
    """Loops per repeat so that one repeat takes about ``repeat_time``; bounded by ``max_loops``."""
    loops = 1
    while loops < max_loops:
        elapsed = _time_loops(func, loops)
        if elapsed >= repeat_time / 10:
            return max(1, min(max_loops, int(loops * repeat_time / elapsed)))
        loops = min(max_loops, loops * 10)
    return max_loops


def measure(
    funcs: dict[str, Callable[[], object]],
    *,
    repeats: int,
    repeat_time: float,
    max_loops: int,
    budget: float,
) -> dict[str, float]:
    """Median µs per call of each function, repeats interleaved so drift hits all of them alike.

    Stops early once ``budget`` seconds are spent, but never before 3 repeats.
    """
    loops = {name: calibrate(func, repeat_time, max_loops) for name, func in funcs.items()}
    samples: dict[str, list[float]] = {name: [] for name in funcs}
    deadline = time.perf_counter() + budget
    for done in range(repeats):
        for name, func in funcs.items():
            samples[name].append(_time_loops(func, loops[name]) / loops[name] * 1e6)
        if done >= 2 and time.perf_counter() > deadline:
            break
    return {name: statistics.median(values) for name, values in samples.items()}


# --- the report ---------------------------------------------------------------------------------


def check_cases(codec: Codec, cases: Sequence[tuple[str, Message]]) -> dict[str, int]:
    """Encoded sizes; refuse to run if a round trip is wrong or the report is not about 2 KB."""
    sizes = {}
    for name, msg in cases:
        frame = codec.encode(msg)
        # Compared as frames: decoding yields tuples where the sender had lists (use_list=False).
        if codec.encode(codec.decode(frame)) != frame:
            raise SystemExit(f"{name}: the codec does not round-trip")
        sizes[name] = len(frame)
    low, high = REPORT_SIZE_RANGE
    report_size = sizes["DiagnosticsReport"]
    if not low <= report_size <= high:
        raise SystemExit(f"DiagnosticsReport encodes to {report_size} bytes, not about 2 KB")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_codec",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per case")
    parser.add_argument("--repeat-time", type=float, default=0.05, help="target seconds per repeat")
    parser.add_argument("--max-loops", type=int, default=200_000, help="cap on calls per repeat")
    parser.add_argument(
        "--budget", type=float, default=5.0, help="seconds per message before stopping early"
    )
    args = parser.parse_args(argv)

    codec = Codec()
    cases: list[tuple[str, Message]] = [
        ("Heartbeat", heartbeat()),
        ("DiagnosticsReport", diagnostics_report()),
        ("ScriptOutput 64 KiB", script_output()),
    ]
    sizes = check_cases(codec, cases)

    print(
        f"Python {sys.version.split()[0]}, msgpack {'.'.join(map(str, msgpack.version))}, "
        f"median of up to {args.repeats} repeats; µs per encode+decode\n"
    )
    print(
        "| message | size (bytes) | protocol µs | plain msgpack µs | json µs "
        f"| protocol/msgpack | target ≤ {TARGET_RATIO}× |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, msg in cases:
        result = measure(
            round_trips(msg, codec),
            repeats=args.repeats,
            repeat_time=args.repeat_time,
            max_loops=args.max_loops,
            budget=args.budget,
        )
        ratio = result["protocol"] / result["msgpack"]
        verdict = "met" if ratio <= TARGET_RATIO else "missed"
        print(
            f"| {name} | {sizes[name]} | {result['protocol']:.2f} | {result['msgpack']:.2f} "
            f"| {result['json']:.2f} | {ratio:.2f}× | {verdict} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
