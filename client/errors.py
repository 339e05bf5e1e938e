"""Errors of the client side (agent and console), in the one tree rooted at PosAssistError.

Python 3.8-compatible and import-light (no websockets), so the agent's errors module can share
them without loading the network stack.

    PosAssistError
    ├── AuthenticationError (protocol.errors)
    │   └── RelayRefusedError    the relay said no (auth.refused, or an HTTP refusal)  .code
    ├── ClosedByUsError          the connection was closed on purpose by its owner
    └── BadArgument (protocol.errors)
        └── NoTerminal           a secret to ask for, and no terminal to ask on (client/prompt.py)
"""

from __future__ import annotations

from posassist.protocol.errors import (
    EXIT_REFUSED,
    AuthenticationError,
    BadArgument,
    PosAssistError,
)

__all__ = ["ClosedByUsError", "NoTerminal", "RelayRefusedError"]


class RelayRefusedError(AuthenticationError):
    """The relay refused us: ``auth.refused`` on a websocket, or a refusal of an HTTP request
    (enrolment). ``code`` is the relay's refusal code (its fixed vocabulary, never free text)."""

    close_code = 4001
    exit_code = EXIT_REFUSED
    public_reason = "refused by relay"
    public_reason_zh = "服务器拒绝了本设备或登录"

    def __init__(self, code: str) -> None:
        super().__init__(f"relay refused: {code}")
        self.code = code


class ClosedByUsError(PosAssistError):
    """The connection was closed on purpose by its owner; what a request still waiting sees."""

    close_code = 1000
    public_reason = "connection closed"
    public_reason_zh = "连接已关闭"


class NoTerminal(BadArgument):
    """A password or passphrase to ask for, and stdin is not a terminal (client/prompt.py); the
    message says which option gives it instead. Exit 2; nothing was read, sent or changed."""

    public_reason = "no terminal to ask on"
    public_reason_zh = "没有可输入密码的终端，请用文件提供"
