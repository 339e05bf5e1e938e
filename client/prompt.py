"""Asking the person at the keyboard for a secret: the one way (readme-walk F11).

With no terminal on stdin (a pipe, /dev/null, a service) nothing is asked and nothing is read
from stdin: :class:`NoTerminal`, one line and exit 2, naming the option that gives the secret.
Python 3.8-compatible.
"""

from __future__ import annotations

import getpass
import sys

from .errors import NoTerminal

__all__ = ["ask_secret"]


def ask_secret(prompt: str, instead: str) -> str:
    """The secret typed at the terminal after ``prompt``; ``instead`` says how else to give it
    (``"give --password-file"``) when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        raise NoTerminal(instead)
    return getpass.getpass(prompt)
