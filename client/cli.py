"""What the agent's and the console's command lines share: a parser whose errors are the error
tree's ``BadArgument`` (one line and exit 2 from ``main``, no usage dump, no ``SystemExit`` from a
helper) and an argparse type for a number of seconds within a range."""

from __future__ import annotations

import argparse
from typing import Callable, NoReturn

from posassist.protocol.errors import BadArgument
from posassist.protocol.text import printable

__all__ = ["Parser", "seconds"]


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
