"""Read the end of a log file with a byte limit: whole lines, UTF-8 or GB18030, redacted.

Never reads a whole file: a 2 GB log costs one seek and at most ``max_bytes`` of reading.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import List, Optional, Tuple

from posassist.agent.errors import LogReadError
from posassist.agent.redact import Redactor

__all__ = ["DEFAULT_MAX_BYTES", "LogTail", "decode_line", "parse_tail", "read_tail"]

DEFAULT_MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class LogTail:
    """The last whole lines of a log.

    Attributes:
        path: the file read.
        lines: decoded and redacted lines, oldest first, without line endings.
        bytes_read: how many bytes were read from the file (never more than the limit).
        file_size: the file's size when it was read.
        truncated: True when the file was longer than the limit, so earlier lines were skipped.
        gb18030_lines: how many lines were not UTF-8 and were decoded as GB18030.
    """

    path: str
    lines: Tuple[str, ...]
    bytes_read: int
    file_size: int
    truncated: bool
    gb18030_lines: int


def decode_line(raw: bytes) -> Tuple[str, bool]:
    """Decode one log line: UTF-8 first, then GB18030 (Chinese Windows logs), never failing.

    Args:
        raw: the line's bytes without the line ending.

    Returns:
        The text, and True when GB18030 was used.
    """
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("gb18030", errors="replace"), True


def parse_tail(
    chunk: bytes, starts_mid_file: bool, redactor: Optional[Redactor] = None
) -> Tuple[List[str], int]:
    """Cut a chunk from the end of a file into whole, decoded, redacted lines.

    Args:
        chunk: the bytes read.
        starts_mid_file: True when ``chunk`` does not begin at offset 0; everything up to the
            first newline is then dropped, since it may be the tail of a longer line.
        redactor: redaction to apply; card numbers are always masked.

    Returns:
        The lines, and how many of them were decoded as GB18030.
    """
    if starts_mid_file:
        cut = chunk.find(b"\n")
        chunk = b"" if cut < 0 else chunk[cut + 1 :]
    if chunk.startswith(b"\xef\xbb\xbf"):
        chunk = chunk[3:]  # UTF-8 BOM (Notepad)
    redactor = redactor or Redactor()
    lines: List[str] = []
    fallback = 0
    raw_lines = chunk.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    for raw in raw_lines:
        text, used_fallback = decode_line(raw[:-1] if raw.endswith(b"\r") else raw)
        fallback += used_fallback
        lines.append(redactor.redact(text))
    return lines, fallback


def read_tail(
    path: str, max_bytes: int = DEFAULT_MAX_BYTES, redactor: Optional[Redactor] = None
) -> LogTail:
    """Read the last whole lines within ``max_bytes`` of a log file.

    Seeks from the end and reads at most ``max_bytes``; a file growing meanwhile changes nothing.
    Card numbers are always masked; ``redactor`` adds the POS profile's patterns.

    Args:
        path: the log file.
        max_bytes: the most bytes to read.
        redactor: redaction to apply (card numbers are masked in any case).

    Returns:
        The tail.

    Raises:
        LogReadError: the file cannot be opened or read.
        ValueError: ``max_bytes`` is not positive.
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    try:
        # never blocks: a FIFO (or device) named as a log would hang open() or read() forever
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise LogReadError(f"{path}: not a regular file / 不是普通文件")
            size = info.st_size
            start = max(0, size - max_bytes)
            f.seek(start)
            chunk = f.read(max_bytes)
    except OSError as exc:
        raise LogReadError(f"{path}: {exc.strerror or exc}") from exc
    lines, fallback = parse_tail(chunk, start > 0, redactor)
    return LogTail(path, tuple(lines), len(chunk), size, start > 0, fallback)
