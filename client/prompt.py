"""Asking the person at the keyboard for a secret: the one way (readme-walk F11).

With no terminal on stdin (a pipe, /dev/null, a service) nothing is asked and nothing is read
from stdin: :class:`NoTerminal`, one line and exit 2, naming the option that gives the secret.
:func:`secret_from` is the whole rule a command follows for a password: a file given on the
command line, else an environment variable, else the terminal. Python 3.8-compatible.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import TYPE_CHECKING, Optional

from posassist.protocol.errors import BadArgument

from .errors import NoTerminal

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["NEW_PASSWORD_ENV", "PASSWORD_ENV", "ask_secret", "secret_from"]

#: The environment variable a script sets to give the password a command would ask for.
PASSWORD_ENV = "POSASSIST_PASSWORD"
#: ...and the one for a new password (a user created, a password reset or changed).
NEW_PASSWORD_ENV = "POSASSIST_NEW_PASSWORD"


def ask_secret(prompt: str, instead: str) -> str:
    """The secret typed at the terminal after ``prompt``; ``instead`` says how else to give it
    (``"give --password-file"``) when there is no terminal to ask on. Ctrl-D at the prompt is
    :class:`NoTerminal` too (nothing was typed), not a traceback."""
    if not sys.stdin.isatty():
        raise NoTerminal(instead)
    try:
        return getpass.getpass(prompt)
    except EOFError:
        sys.stderr.write("\n")  # the error goes on a line of its own, not after the prompt
        raise NoTerminal(f"nothing typed; {instead}") from None


def secret_from(
    path: Optional[Path],
    env: str,
    prompt: str,
    option: str = "--password-file",
    again: bool = False,
) -> str:
    """A password from the file ``path`` (its text, blanks around it stripped), else from the
    environment variable ``env``, else typed at the terminal (twice with ``again``). An empty
    file or variable, or two different answers, is :class:`BadArgument` (exit 2): a command
    never goes on with an empty password."""
    if path is not None:
        secret = path.read_text(encoding="utf-8").strip()
        if not secret:
            raise BadArgument(f"{option} {path} is empty / 密码文件为空")
        return secret
    given = os.environ.get(env)
    if given is not None:
        if not given:
            raise BadArgument(f"{env} is set but empty / 环境变量 {env} 为空")
        return given
    instead = f"give {option} or set ${env}"
    secret = ask_secret(prompt, instead)
    if not secret:
        raise BadArgument("no password typed / 未输入密码")
    if again and ask_secret("again / 再输入一次: ", instead) != secret:
        raise BadArgument("the two passwords differ / 两次输入的密码不一致")
    return secret
