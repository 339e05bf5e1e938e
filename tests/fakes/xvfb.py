"""A real X server for window tests (Xvfb) and screenshots of it as PNG files.

Xvfb and xwd come from Debian's ``xvfb`` and ``x11-apps`` (.ci/run installs them when missing);
the XWD dump is turned into a PNG here (zlib), so no image library is needed.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Xvfb", "screenshot", "xwd_to_png"]


class Xvfb:
    """``with Xvfb() as display:`` a fresh X display (``:N``) for the block, on no TCP port."""

    def __init__(self, width: int = 800, height: int = 660) -> None:
        self.size = f"{width}x{height}x24"
        self.proc: subprocess.Popen[bytes] | None = None
        self.display = ""

    def __enter__(self) -> str:
        binary = shutil.which("Xvfb")
        if binary is None:
            raise RuntimeError("Xvfb is missing: apt-get install -y xvfb x11-apps (.ci/run)")
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            [binary, "-displayfd", str(write), "-screen", "0", self.size, "-nolisten", "tcp"],
            pass_fds=(write,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write)
        with os.fdopen(read) as pipe:  # Xvfb writes the display number once it is ready
            number = pipe.readline().strip()
        if not number:
            self.proc.kill()
            raise RuntimeError("Xvfb did not start")
        self.display = ":" + number
        return self.display

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def screenshot(display: str, path: Path) -> Path:
    """The whole screen of ``display`` as a PNG at ``path``."""
    dump = subprocess.run(
        ["xwd", "-root", "-silent", "-display", display],
        capture_output=True,
        check=True,
        timeout=20,
    ).stdout
    path.write_bytes(xwd_to_png(dump))
    return path


def xwd_to_png(dump: bytes) -> bytes:
    """An XWD (X11 window dump, version 7, TrueColor 24/32 bits per pixel) as PNG bytes."""
    fields = struct.unpack(">25I", dump[:100])
    header_size, version, width, height = fields[0], fields[1], fields[4], fields[5]
    byte_order, bits_per_pixel, bytes_per_line, ncolors = (
        fields[7],
        fields[11],
        fields[12],
        fields[19],
    )
    red_mask, green_mask, blue_mask = fields[14], fields[15], fields[16]
    if version != 7 or bits_per_pixel not in (24, 32):
        raise ValueError(f"unsupported XWD (version {version}, {bits_per_pixel} bpp)")
    data = dump[header_size + 12 * ncolors :]
    step = bits_per_pixel // 8
    endian = "little" if byte_order == 0 else "big"
    shifts = [(mask, (mask & -mask).bit_length() - 1) for mask in (red_mask, green_mask, blue_mask)]
    rows = bytearray()
    for y in range(height):
        line = data[y * bytes_per_line : y * bytes_per_line + width * step]
        rows.append(0)  # PNG filter: none
        for x in range(0, width * step, step):
            pixel = int.from_bytes(line[x : x + step], endian)
            rows.extend((pixel & mask) >> shift for mask, shift in shifts)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 6))
        + chunk(b"IEND", b"")
    )
