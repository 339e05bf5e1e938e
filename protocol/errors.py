"""The one error tree of posassist, rooted at :class:`PosAssistError`.

Every class declares, as class attributes, how each boundary reports it: ``close_code`` (websocket
close, docs/protocol.md#close-codes), ``http_status`` (the relay's JSON API) and ``exit_code`` (a
command's exit status: :data:`EXIT_FAILURE`, :data:`EXIT_USAGE`, :data:`EXIT_REFUSED`). Each
boundary maps them in one place: relay/responses.py ``errors_middleware``,
relay/connection.py ``close_for``, and each command's ``main``. The other packages graft their
classes onto this tree (relay/errors.py, agent/errors.py, client/http.py, protocol/pins.py…),
each drawing its branch.

    class                             meaning                                  close HTTP exit
    PosAssistError                    root: an error raised on purpose          1011  500   1
    ├── ProtocolError                 a violation of the wire protocol          1002  500   1
    │   ├── LocalProtocolError        we tried something illegal (our bug)      1011  500   1
    │   └── RemoteProtocolError       the peer sent something illegal           1002  500   1
    │       ├── PayloadTooBig         frame over the size limit                 1009  500   1
    │       ├── MalformedMessage      not one clean msgpack map within limits   1007  500   1
    │       ├── UnknownMessageType    tag not in the registry                   1003  500   1
    │       ├── InvalidMessage        known tag, bad fields                     1007  500   1
    │       ├── UnsupportedVersion    no protocol version in common             4000  500   1
    │       ├── UnexpectedMessage     illegal in the current session state      1002  500   1
    │       ├── UnknownReply          reply id matches no request in flight     1002  500   1
    │       └── TooManyRequests       more requests in flight than allowed      1008  500   1
    ├── AuthenticationError           refused sign-in or device auth            4001  401   3
    ├── SignatureError                an Ed25519 signature did not verify       4001  500   3
    ├── PinMismatch                   (protocol/pins.py) TLS key is not pinned  1008  500   3
    ├── InvalidEnrolmentToken         (protocol/enrolment.py) damaged token     1008  400   2
    ├── ManifestError                 (protocol/manifest.py) bad manifest       1008  400   2
    ├── ParamError                    (protocol/manifest.py) bad run parameters 1008  400   2
    ├── PolicyError                   (protocol/health_policy.py) bad policy 1008  400   2
    ├── BadArgument                   a command-line argument a command can't take  1008  400   2
    └── PeerSilentError               nothing arrived within the silence deadline  4009  500   1
        └── SignInTimeout             the peer did not sign in in time         4009  500   1

The text of an exception is for our logs and the local operator. What may be shown to a peer is
``public_reason`` (with ``public_reason_zh`` for people): a short, fixed sentence per class that
never echoes the peer's input or our internals.
"""

from __future__ import annotations

from typing import ClassVar, Optional

__all__ = [
    "EXIT_FAILURE",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "AuthenticationError",
    "BadArgument",
    "InvalidMessage",
    "LocalProtocolError",
    "MalformedMessage",
    "PayloadTooBig",
    "PeerSilentError",
    "PosAssistError",
    "ProtocolError",
    "RemoteProtocolError",
    "SignInTimeout",
    "SignatureError",
    "TooManyRequests",
    "UnexpectedMessage",
    "UnknownMessageType",
    "UnknownReply",
    "UnsupportedVersion",
    "error_line",
]


#: A command's exit status: the work failed (the relay, the network or a device said no).
EXIT_FAILURE = 1
#: A command's exit status: bad arguments, input or configuration; retrying won't help.
EXIT_USAGE = 2
#: A command's exit status: refused for lack of trust (credentials, token, pin, signature, scope).
EXIT_REFUSED = 3


class PosAssistError(Exception):
    """Root of every error posassist raises on purpose."""

    #: A websocket close code suitable for this error (docs/protocol.md#close-codes).
    close_code: ClassVar[int] = 1011
    #: The HTTP status the relay's API answers with (relay/handlers/api.py).
    http_status: ClassVar[int] = 500
    #: A command's exit status (:data:`EXIT_FAILURE`, :data:`EXIT_USAGE`, :data:`EXIT_REFUSED`).
    exit_code: ClassVar[int] = EXIT_FAILURE
    #: What may be told to the peer; never includes their input or our internals.
    public_reason: ClassVar[str] = "internal error"
    #: ``public_reason`` for a Chinese-reading person (merchants, technicians).
    public_reason_zh: ClassVar[str] = "内部错误"


class ProtocolError(PosAssistError):
    """A violation of the wire protocol, by either side."""

    close_code = 1002
    public_reason = "protocol error"
    public_reason_zh = "协议错误"


class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol forbids; a bug in our own code."""

    close_code = 1011
    public_reason = "internal error"
    public_reason_zh = "内部错误"


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""


class PayloadTooBig(RemoteProtocolError):
    """A frame larger than the negotiated limit."""

    close_code = 1009
    public_reason = "message too big"
    public_reason_zh = "消息过大"


class MalformedMessage(RemoteProtocolError):
    """Not exactly one msgpack map within the decoding limits."""

    close_code = 1007
    public_reason = "malformed message"
    public_reason_zh = "消息格式错误"


class UnknownMessageType(RemoteProtocolError):
    """A message tag that this side does not know."""

    close_code = 1003
    public_reason = "unknown message type"
    public_reason_zh = "未知的消息类型"


class InvalidMessage(RemoteProtocolError):
    """A known message type with missing, extra or ill-typed fields."""

    close_code = 1007
    public_reason = "invalid message"
    public_reason_zh = "消息内容无效"

    def __init__(self, *args: object, tag: Optional[str] = None) -> None:
        super().__init__(*args)
        #: The registered tag of the refused message, when known: one of ours, never peer text.
        self.tag = tag


class UnsupportedVersion(RemoteProtocolError):
    """The peers share no protocol version."""

    close_code = 4000
    public_reason = "unsupported protocol version"
    public_reason_zh = "协议版本不兼容"


class UnexpectedMessage(RemoteProtocolError):
    """A valid message that is illegal in the session's current state or direction."""

    close_code = 1002
    public_reason = "unexpected message"
    public_reason_zh = "不应出现的消息"


class UnknownReply(RemoteProtocolError):
    """A reply whose id matches no request in flight, or of the wrong kind for it."""

    close_code = 1002
    public_reason = "reply to unknown request"
    public_reason_zh = "回复不对应任何请求"


class TooManyRequests(RemoteProtocolError):
    """The peer has more requests in flight than the session allows."""

    close_code = 1008
    public_reason = "too many requests in flight"
    public_reason_zh = "进行中的请求过多"


class AuthenticationError(PosAssistError):
    """A device or a person failed to authenticate."""

    close_code = 4001
    http_status = 401
    exit_code = EXIT_REFUSED
    public_reason = "authentication failed"
    public_reason_zh = "认证失败"


class SignatureError(PosAssistError):
    """An Ed25519 signature did not verify, or a key could not be loaded."""

    close_code = 4001
    exit_code = EXIT_REFUSED
    public_reason = "bad signature"
    public_reason_zh = "签名无效"


class BadArgument(PosAssistError):
    """A command-line argument a command can't take (a device id that can't be one, a
    ``--param`` that is not ``name=value``, a number out of range): the command prints one
    line and exits 2 (:data:`EXIT_USAGE`); nothing was sent or changed. The message names the
    argument; it is for the local user, whose own input it may quote."""

    close_code = 1008
    http_status = 400
    exit_code = EXIT_USAGE
    public_reason = "bad argument"
    public_reason_zh = "参数有误"


def error_line(exc: PosAssistError) -> str:
    """The one line a command prints for ``exc`` (to stderr, then it exits ``exc.exit_code``).

    ``error: <public reason>: <message> / <public reason in Chinese>``; the message is for the
    local operator (it may name their files), so this is for a command's own output, never a peer.
    A message may quote a peer (the relay's refusal): escape sequences and controls are dropped.
    """
    from .text import printable

    message = printable(str(exc), multiline=False)
    text = (
        exc.public_reason
        if message in ("", exc.public_reason)
        else f"{exc.public_reason}: {message}"
    )
    # an error may say more in Chinese than its class does (the relay's refusal: what to do next)
    detail_zh = printable(str(getattr(exc, "detail_zh", "") or ""), multiline=False)
    zh = f"{exc.public_reason_zh}: {detail_zh}" if detail_zh else exc.public_reason_zh
    return f"error: {text} / {zh}"


class PeerSilentError(PosAssistError):
    """Nothing at all arrived from the peer within the silence deadline (docs/protocol.md#liveness).

    The connection is closed and, on a client, reconnected like any lost connection.
    """

    close_code = 4009
    public_reason = "no traffic within the silence deadline"
    public_reason_zh = "对方长时间无响应"


class SignInTimeout(PeerSilentError):
    """The peer did not finish the handshake within the relay's handshake timeout (found in the
    outside attack, F4: such a socket was closed 1000 "OK", like a clean close)."""

    public_reason = "no sign-in within the handshake timeout"
    public_reason_zh = "登录超时"
