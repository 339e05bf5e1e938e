"""A scale streaming on a pseudo-terminal the way reference/pos-devices.md §3.3 describes: Toledo
continuous frames (STX SWA SWB SWC weight tare CR CKS) or a Chinese indicator's ASCII lines, with
good or bad checksums, stuck in motion, or silent. It only ever writes; it reads nothing."""

from __future__ import annotations

import os
import threading
from typing import Callable, Optional

STX, CR = 0x02, 0x0D


def toledo_frame(weight: int, motion: bool = False, over: bool = False, good: bool = True) -> bytes:
    """One 18-byte Toledo continuous frame; ``good=False`` spoils its checksum."""
    swa = 0x20 | 0x02 | 0x08  # bit 5 fixed on most indicators; decimal code 010; ×1
    swb = 0x20 | 0x10 | (0x08 if motion else 0) | (0x04 if over else 0)  # kg
    swc = 0x20
    body = bytes((STX, swa, swb, swc)) + b"%06d" % weight + b"000000" + bytes((CR,))
    cks = (-sum(b & 0x7F for b in body)) & 0x7F
    return body + bytes((cks if good else (cks + 1) & 0x7F,))


def ascii_frame(grams: int, stable: bool = True) -> bytes:
    return b"%s,GS,+%8.3fkg\r\n" % (b"ST" if stable else b"US", grams / 1000)


class SimScale:
    """Writes ``frame(i)`` to the pty every ``every`` seconds until stopped (None: silent)."""

    def __init__(self, frame: Optional[Callable[[int], bytes]], every: float = 0.05) -> None:
        import pty  # POSIX only
        import tty

        self.frame = frame
        self.every = every
        master, slave = pty.openpty()
        tty.setraw(slave)  # no echo, no CR translation: frames arrive as sent
        self.path = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(master, False)
        self._master = master
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._stream, daemon=True)
        self._thread.start()

    def _stream(self) -> None:
        i = 0
        while not self._stop.wait(self.every):  # the device's own pace, not a test's wait
            if self.frame is None:
                continue
            try:
                os.write(self._master, self.frame(i))
                self.sent += 1
            except OSError:  # the line's buffer is full while nobody reads: drop, like a scale
                pass
            i += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        os.close(self._master)

    def __enter__(self) -> SimScale:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
