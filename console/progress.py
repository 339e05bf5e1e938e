"""A live "still waiting" line for anything that takes over a second (diag, run, restore):
on stderr, redrawn once a second, and only when stderr is a terminal and the output is not
``--json``; a pipe or a log file gets nothing extra."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Progress"]

#: Carriage return and "erase to the end of the line": the line is drawn over in place.
_ERASE = "\r\x1b[K"


class Progress:
    """``async with Progress("waiting for till-1", enabled=not as_json) as progress:`` draws
    ``waiting for till-1 … 3 s`` after the first second; :meth:`clear` before printing
    anything else on the terminal (the next tick draws it again under that)."""

    def __init__(self, label: str, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and _is_terminal(self.stream)
        self.label = label
        self.started = time.monotonic()
        self._shown = False
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Progress:
        if self.enabled:
            self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self.clear()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)  # a clock for the person watching, not a wait on an event
            self.draw()

    def draw(self) -> None:
        seconds = int(time.monotonic() - self.started)
        self.stream.write(f"{_ERASE}{self.label} … {seconds} s")
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Take the line away (before other output), if it is shown."""
        if self._shown:
            self.stream.write(_ERASE)
            self.stream.flush()
            self._shown = False


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream: no progress
        return False
