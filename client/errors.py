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

from typing import Dict, Tuple

from posassist.protocol.errors import (
    EXIT_REFUSED,
    AuthenticationError,
    BadArgument,
    PosAssistError,
)

__all__ = ["REFUSALS", "ClosedByUsError", "NoTerminal", "RelayRefusedError", "refusal_words"]


class RelayRefusedError(AuthenticationError):
    """The relay refused us: ``auth.refused`` on a websocket, or a refusal of an HTTP request
    (enrolment). ``code`` is the relay's refusal code (its fixed vocabulary, never free text)."""

    close_code = 4001
    exit_code = EXIT_REFUSED
    public_reason = "refused by relay"
    public_reason_zh = "服务器拒绝了本设备或登录"

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(self.words_en)

    @property
    def words_zh(self) -> str:
        """What the merchant reads, in Chinese, with what to do next."""
        return refusal_words(getattr(self, "code", ""))[0]

    @property
    def detail_zh(self) -> str:
        """``words_zh`` for :func:`protocol.errors.error_line`; "" without a code."""
        return self.words_zh if getattr(self, "code", "") else ""

    @property
    def words_en(self) -> str:
        return refusal_words(getattr(self, "code", ""))[1]


#: What the till (or console) says for each refusal code the relay sends: ``auth.refused`` codes
#: and the error classes of its HTTP answers (relay/errors.py). Chinese for the merchant first,
#: then English; each says what to do next. Any other code is quoted, made printable.
REFUSALS: Dict[str, Tuple[str, str]] = {
    "revoked": (
        "本设备已被服务器停用, 请联系技术支持",
        "the relay refused this device: it was revoked; call support",
    ),
    "handed_over": (
        "本设备已转到其他服务商, 原服务器不再接受它; 请确认本机已登记到新的服务商",
        "the relay refused this device: it was handed over to another provider; check that "
        "this till is enrolled with the new one (posassist-agent switch-provider)",
    ),
    "unknown_device": (
        "服务器不认识本设备, 请联系技术支持重新登记",
        "the relay refused this device: it is not enrolled there; call support to enrol it again",
    ),
    "bad_signature": (
        "本设备身份验证失败, 请联系技术支持",
        "the relay refused this device: its key did not verify; call support",
    ),
    "unsupported": (
        "本机程序版本与服务器不兼容, 请联系技术支持升级",
        "the relay does not speak this agent's protocol version; call support to upgrade it",
    ),
    "EnrolmentTokenUsed": (
        "此登记码已被使用, 请向技术支持索取新的登记码",
        "this enrolment token was already used: ask support for a new one",
    ),
    "EnrolmentTokenExpired": (
        "此登记码已过期, 请向技术支持索取新的登记码",
        "this enrolment token has expired: ask support for a new one",
    ),
    "EnrolmentTokenRevoked": (
        "此登记码已被作废, 请向技术支持索取新的登记码",
        "this enrolment token was revoked: ask support for a new one",
    ),
    "EnrolmentTokenUnknown": (
        "服务器不认识此登记码, 请核对或索取新的登记码",
        "the relay does not know this enrolment token: check it, or ask support for a new one",
    ),
    "EnrolmentWrongRelay": (
        "此登记码属于另一台服务器, 请向技术支持索取新的登记码",
        "this enrolment token is for another relay: ask support for a new one",
    ),
    "RateLimited": ("请求过于频繁, 请稍后再试", "too many requests: try again in a minute"),
}


def refusal_words(code: str) -> Tuple[str, str]:
    """(Chinese, English) for a refusal code; an unknown code is quoted, made printable."""
    known = REFUSALS.get(code)
    if known is not None:
        return known
    from posassist.protocol.text import printable

    quoted = printable(code, multiline=False)[:80]
    return "服务器拒绝了本设备或登录: " + quoted, "the relay refused: " + quoted


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
