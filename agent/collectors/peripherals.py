"""Scales and barcode scanners on serial ports (reference §3.2, §3.3, §5 #16-17): listen only.

Opt-in collectors (a technician asks for ``scale`` or ``scanner`` by name), never while a sale is
open, never on a port another process holds, and they never send a byte: no polls, no zero or
tare, no scanner configuration. The frame parsers are pure and tested on byte strings.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from posassist.agent.collectors.pos import sale_open
from posassist.agent.collectors.serialports import classify_serial_error, find_holders

if TYPE_CHECKING:
    from posassist.agent.diagnostics import DiagContext
    from posassist.agent.settings import SerialDeviceConfig

__all__ = [
    "collect_scales",
    "collect_scanners",
    "listen",
    "parse_ascii_frames",
    "parse_toledo_frames",
    "scale_summary",
    "toledo_checksum",
]

STX, CR, LF = 0x02, 0x0D, 0x0A
#: Toledo continuous: STX SWA SWB SWC weight(6) tare(6) CR [CKS]; the short form has no tare.
_TOLEDO_LONG, _TOLEDO_SHORT = 17, 11
_ASCII = re.compile(rb"(ST|US|OL),(GS|NT|TR),([+-])\s*([0-9.]+)\s*([a-zA-Z]*)")


def toledo_checksum(frame: bytes) -> int:
    """The checksum byte of a Toledo frame (STX through CR): the two's complement of the sum of
    bits 0-6 of every byte, in 7 bits (§3.3)."""
    return (-sum(b & 0x7F for b in frame)) & 0x7F


def parse_toledo_frames(data: bytes) -> Dict[str, Any]:
    """Count the Toledo continuous frames in ``data`` and read their status bits.

    Returns:
        ``{"frames", "bad_checksum", "motion", "out_of_range", "last_weight"}``: frames with a
        good checksum, frames with a bad one, and how many good frames had SWB bit 3 (motion)
        or bit 2 (out of range) set.
    """
    good = bad = motion = out_of_range = 0
    last: Optional[str] = None
    i = 0
    while True:
        start = data.find(bytes((STX,)), i)
        if start < 0:
            break
        frame = None
        for length in (_TOLEDO_LONG, _TOLEDO_SHORT):
            end = start + length
            if end < len(data) and data[end - 1] == CR:
                frame = data[start:end]
                break
        if frame is None:
            i = start + 1
            continue
        cks = data[start + len(frame)]
        if (cks & 0x7F) != toledo_checksum(frame):
            bad += 1
        else:
            good += 1
            swb = frame[2]
            motion += bool(swb & 0x08)
            out_of_range += bool(swb & 0x04)
            last = frame[4:10].decode("ascii", "replace")
        i = start + len(frame) + 1
    return {
        "frames": good,
        "bad_checksum": bad,
        "motion": motion,
        "out_of_range": out_of_range,
        "last_weight": last,
    }


def parse_ascii_frames(data: bytes) -> Dict[str, Any]:
    """Count Chinese-indicator ASCII frames (``ST,GS,+  0.500kg``): stable, unstable, overload."""
    frames = _ASCII.findall(data)
    return {
        "frames": len(frames),
        "bad_checksum": 0,  # the ASCII form has no checksum
        "motion": sum(1 for f in frames if f[0] == b"US"),
        "out_of_range": sum(1 for f in frames if f[0] == b"OL"),
        "last_weight": (frames[-1][2] + frames[-1][3] + frames[-1][4]).decode("ascii")
        if frames
        else None,
    }


def scale_summary(protocol: str, data: bytes) -> Dict[str, Any]:
    """What a listening window on a scale's port heard, by its protocol."""
    parsed = parse_ascii_frames(data) if protocol == "ascii" else parse_toledo_frames(data)
    parsed.update(protocol=protocol, bytes=len(data), sample=data[:64].hex())
    return parsed


def listen(device: str, baudrate: int, seconds: float, parity: str = "N") -> Tuple[str, bytes]:
    """Read what ``device`` sends for ``seconds``, sending nothing.

    Returns:
        ``(outcome, bytes)``: outcome ``ok``, ``held`` (another process has it: not opened),
        or a port fault (``not_found``, ``permission_denied``…) with no bytes.
    """
    import serial  # only when a listening window runs

    if find_holders(device):
        return "held", b""
    ser = serial.Serial()
    ser.port = device
    ser.baudrate = baudrate
    ser.parity = parity
    ser.bytesize = serial.SEVENBITS if parity in ("E", "O") else serial.EIGHTBITS
    ser.timeout = 0.2
    ser.write_timeout = 0.2  # never None (§0.8); nothing is written anyway
    if os.name == "posix":
        ser.exclusive = True
    try:
        ser.open()
    except Exception as exc:
        fault, _ = classify_serial_error(exc, opening=True)
        return fault.value, b""
    heard = bytearray()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and len(heard) < 65536:
            heard += ser.read(256)
    except Exception as exc:  # unplugged mid-window
        fault, _ = classify_serial_error(exc, opening=False)
        return fault.value, bytes(heard)
    finally:
        try:
            ser.close()
        except Exception:
            pass
    return "ok", bytes(heard)


def _rows(
    ctx: DiagContext, devices: Tuple[SerialDeviceConfig, ...], kind: str
) -> List[Dict[str, Any]]:
    why_not = sale_open(ctx.profile)
    rows: List[Dict[str, Any]] = []
    for dev in devices:
        row: Dict[str, Any] = {"name": dev.name, "target": dev.serial, "listen_s": dev.listen_s}
        if why_not:  # a scale or scanner in use at the till: don't touch its port (§7)
            row.update(outcome="skipped", detail="sale open: " + why_not)
        else:
            outcome, heard = listen(dev.serial, dev.baudrate, dev.listen_s, dev.parity)
            row["outcome"] = outcome
            if outcome == "ok":
                if kind == "scale":
                    row.update(scale_summary(dev.protocol, heard))
                else:
                    lines = [x for x in heard.replace(b"\n", b"\r").split(b"\r") if x.strip()]
                    row.update(bytes=len(heard), scans=len(lines))
        rows.append(row)
    return rows


def collect_scales(ctx: DiagContext) -> Dict[str, Any]:
    """Listen to each configured scale for its window (opt-in collector ``scale``)."""
    return {"scales": _rows(ctx, ctx.settings.scales, "scale")}


def collect_scanners(ctx: DiagContext) -> Dict[str, Any]:
    """Listen to each serial scanner while a person scans a test code (opt-in ``scanner``)."""
    return {"scanners": _rows(ctx, ctx.settings.scanners, "scanner")}
