"""What the agent's and the console's command lines share: a parser whose errors are the error
tree's ``BadArgument`` (one line and exit 2 from ``main``, no usage dump, no ``SystemExit`` from a
helper), an argparse type for a number of seconds within a range, and durations (``30m``)."""

from __future__ import annotations

import argparse
import re
from typing import Callable, NoReturn, Optional

from posassist.protocol.errors import BadArgument
from posassist.protocol.text import printable

__all__ = ["Parser", "seconds", "seconds_from"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d{1,6})([smhd])")


class Parser(argparse.ArgumentParser):
    """argparse whose errors are :class:`BadArgument`."""

    def error(self, message: str) -> NoReturn:
        # argparse may quote the argument: shown without its control characters
        raise BadArgument(printable(f"{self.prog}: {message} (see --help)", multiline=False))


def seconds(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: seconds within [low, high]; NaN, infinities and words refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not low <= value <= high:  # false for NaN too
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g} seconds")
        return value

    return parse


def seconds_from(text: str, what: str) -> Optional[float]:
    """``30m`` → 1800.0; ``none`` → None (no target). BadArgument names ``what``."""
    text = text.strip().lower()
    if text in ("none", "off", "-"):
        return None
    found = _DURATION.fullmatch(text)
    if found is None:
        raise BadArgument(f"{what}: a duration like 30m, 4h or 2d, or none / 时长格式如 30m, 4h")
    return float(int(found.group(1)) * _UNITS[found.group(2)])
