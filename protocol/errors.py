"""The one error tree of posassist, rooted at :class:`PosAssistError`.

Protocol errors carry the websocket close code to send; see docs/protocol.md#close-codes.

    PosAssistError
    ├── ProtocolError                 close_code
    │   ├── LocalProtocolError        we tried something illegal (a bug on our side)
    │   └── RemoteProtocolError       the peer sent something illegal
    │       ├── PayloadTooBig         frame over the size limit                 1009
    │       ├── MalformedMessage      not one clean msgpack map within limits   1007
    │       ├── UnknownMessageType    tag not in the registry                   1003
    │       ├── InvalidMessage        known tag, bad fields                     1007
    │       ├── UnsupportedVersion    no protocol version in common             4000
    │       ├── UnexpectedMessage     illegal in the current session state      1002
    │       ├── UnknownReply          reply id matches no request in flight     1002
    │       └── TooManyRequests       more requests in flight than allowed      1008
    ├── AuthenticationError           refused sign-in or device auth            4001
    ├── SignatureError                an Ed25519 signature did not verify
    └── PeerSilentError               nothing arrived within the silence deadline   4009

The text of an exception is for our logs. What may be shown to a peer is ``public_reason``: a short,
fixed sentence per class that never echoes the peer's input or our internals.
"""

from __future__ import annotations

from typing import ClassVar, Optional

__all__ = [
    "AuthenticationError",
    "InvalidMessage",
    "LocalProtocolError",
    "MalformedMessage",
    "PayloadTooBig",
    "PeerSilentError",
    "PosAssistError",
    "ProtocolError",
    "RemoteProtocolError",
    "SignatureError",
    "TooManyRequests",
    "UnexpectedMessage",
    "UnknownMessageType",
    "UnknownReply",
    "UnsupportedVersion",
]


class PosAssistError(Exception):
    """Root of every error posassist raises on purpose."""

    #: A websocket close code suitable for this error (docs/protocol.md#close-codes).
    close_code: ClassVar[int] = 1011
    #: What may be told to the peer; never includes their input or our internals.
    public_reason: ClassVar[str] = "internal error"


class ProtocolError(PosAssistError):
    """A violation of the wire protocol, by either side."""

    close_code = 1002
    public_reason = "protocol error"


class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol forbids; a bug in our own code."""

    close_code = 1011
    public_reason = "internal error"


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""


class PayloadTooBig(RemoteProtocolError):
    """A frame larger than the negotiated limit."""

    close_code = 1009
    public_reason = "message too big"


class MalformedMessage(RemoteProtocolError):
    """Not exactly one msgpack map within the decoding limits."""

    close_code = 1007
    public_reason = "malformed message"


class UnknownMessageType(RemoteProtocolError):
    """A message tag that this side does not know."""

    close_code = 1003
    public_reason = "unknown message type"


class InvalidMessage(RemoteProtocolError):
    """A known message type with missing, extra or ill-typed fields."""

    close_code = 1007
    public_reason = "invalid message"

    def __init__(self, *args: object, tag: Optional[str] = None) -> None:
        super().__init__(*args)
        #: The registered tag of the refused message, when known: one of ours, never peer text.
        self.tag = tag


class UnsupportedVersion(RemoteProtocolError):
    """The peers share no protocol version."""

    close_code = 4000
    public_reason = "unsupported protocol version"


class UnexpectedMessage(RemoteProtocolError):
    """A valid message that is illegal in the session's current state or direction."""

    close_code = 1002
    public_reason = "unexpected message"


class UnknownReply(RemoteProtocolError):
    """A reply whose id matches no request in flight, or of the wrong kind for it."""

    close_code = 1002
    public_reason = "reply to unknown request"


class TooManyRequests(RemoteProtocolError):
    """The peer has more requests in flight than the session allows."""

    close_code = 1008
    public_reason = "too many requests in flight"


class AuthenticationError(PosAssistError):
    """A device or a person failed to authenticate."""

    close_code = 4001
    public_reason = "authentication failed"


class SignatureError(PosAssistError):
    """An Ed25519 signature did not verify, or a key could not be loaded."""

    close_code = 4001
    public_reason = "bad signature"


class PeerSilentError(PosAssistError):
    """Nothing at all arrived from the peer within the silence deadline (docs/protocol.md#liveness).

    The connection is closed and, on a client, reconnected like any lost connection.
    """

    close_code = 4009
    public_reason = "no traffic within the silence deadline"
