"""The enrolment token string an operator hands to a store: everything an agent needs to enrol.

Format (docs/protocol.md#enrolment): ``PA1-`` + base64url(msgpack map), no padding. The map holds
the relay URL and id, the one-time secret, the relay's TLS public-key pin (when TLS is on) and the
SHA-256 of the script repository's root metadata (when a repository exists).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from typing import Any, Dict, Optional

import msgpack

from .errors import EXIT_USAGE, PosAssistError
from .pins import PIN_PATTERN

__all__ = ["PREFIX", "EnrolmentInvite", "InvalidEnrolmentToken"]

PREFIX = "PA1-"
MAX_TOKEN = 2048
_SECRET = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
#: Printed at the till and kept in its identity: visible ASCII only, no escape can hide in it.
_URL = re.compile(r"(?:ws|wss)://[!-~]{1,500}\Z")
_RELAY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")


class InvalidEnrolmentToken(PosAssistError):
    """The text is not an enrolment token this version understands."""

    close_code = 1008
    http_status = 400
    exit_code = EXIT_USAGE
    public_reason = "not a valid enrolment token"
    public_reason_zh = "登记码无效"


@dataclasses.dataclass(frozen=True)
class EnrolmentInvite:
    """A decoded enrolment token; validates on construction (and never shows its secret)."""

    relay_url: str
    relay_id: str
    secret: str = dataclasses.field(repr=False)
    tls_pin: Optional[str] = None
    root_hash: Optional[str] = None

    def __post_init__(self) -> None:
        if not _URL.match(self.relay_url):
            raise InvalidEnrolmentToken("relay URL must be ws:// or wss:// (visible ASCII)")
        if not _RELAY_ID.match(self.relay_id):
            raise InvalidEnrolmentToken("bad relay id")
        if not _SECRET.match(self.secret):
            raise InvalidEnrolmentToken("bad secret")
        if self.tls_pin is not None and not PIN_PATTERN.match(self.tls_pin):
            raise InvalidEnrolmentToken("TLS pin must be 64 lowercase hex digits (SHA-256)")
        if self.tls_pin is None and self.relay_url.startswith("wss://"):
            raise InvalidEnrolmentToken("a wss:// relay needs a TLS pin")
        if self.root_hash is not None and not PIN_PATTERN.match(self.root_hash):
            raise InvalidEnrolmentToken("root hash must be 64 lowercase hex digits (SHA-256)")

    def _fields(self) -> Dict[str, Any]:
        return {
            "u": self.relay_url,
            "r": self.relay_id,
            "s": self.secret,
            "p": self.tls_pin,
            "h": self.root_hash,
        }

    def encode(self) -> str:
        """The token text, e.g. ``PA1-haF1...``: safe to paste, print as a QR code, or read out."""
        packed: bytes = msgpack.packb(self._fields())
        return PREFIX + base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, text: str) -> EnrolmentInvite:
        """Parse a token; InvalidEnrolmentToken says what is wrong, never echoing the secret."""
        text = text.strip()
        if not text.startswith(PREFIX) or len(text) > MAX_TOKEN:
            raise InvalidEnrolmentToken("token must start with PA1- and be at most 2048 chars")
        body = text[len(PREFIX) :]
        try:
            packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            fields = msgpack.unpackb(packed, raw=False, strict_map_key=True, max_str_len=1024)
        except (binascii.Error, ValueError):
            raise InvalidEnrolmentToken("token is damaged (base64/msgpack)") from None
        if type(fields) is not dict or set(fields) != {"u", "r", "s", "p", "h"}:
            raise InvalidEnrolmentToken("token has the wrong fields")
        values = [fields[k] for k in ("u", "r", "s")]
        optional = [fields[k] for k in ("p", "h")]
        if not all(type(v) is str for v in values) or not all(
            v is None or type(v) is str for v in optional
        ):
            raise InvalidEnrolmentToken("token fields have the wrong types")
        return cls(
            relay_url=values[0],
            relay_id=values[1],
            secret=values[2],
            tls_pin=optional[0],
            root_hash=optional[1],
        )
