"""Errors the relay raises on purpose, grafted onto :mod:`protocol.errors`.

Each class has a fixed ``public_reason`` (safe to show a console or agent) and ``http_status``;
the exception text is for our logs only and is never sent to a peer.

    PosAssistError
    ├── StorageError                  the data layer failed                      500
    │   ├── NotFound                  no such row                                404
    │   ├── Conflict                  unique key taken / illegal state change    409
    │   └── StorageUnavailable        database unreachable, locked or timed out  503
    ├── ScopeError                    target outside the caller's tenant scope   403
    └── AuthenticationError           (protocol.errors)                          401
        ├── BadCredentials            unknown user or wrong password
        ├── LockedOut                 too many failed sign-ins (``until``)       429
        ├── TokenError                bearer token refused
        │   ├── TokenUnknown
        │   ├── TokenExpired
        │   └── TokenRevoked
        ├── DeviceRevoked             an enrolled device that was revoked
        └── EnrolmentError            enrolment token refused                    403
            ├── EnrolmentTokenUnknown
            ├── EnrolmentTokenUsed
            ├── EnrolmentTokenExpired
            ├── EnrolmentTokenRevoked
            └── EnrolmentWrongRelay
"""

from __future__ import annotations

from typing import ClassVar

from posassist.protocol.errors import AuthenticationError, PosAssistError

__all__ = [
    "BadCredentials",
    "Conflict",
    "DeviceRevoked",
    "EnrolmentError",
    "EnrolmentTokenExpired",
    "EnrolmentTokenRevoked",
    "EnrolmentTokenUnknown",
    "EnrolmentTokenUsed",
    "EnrolmentWrongRelay",
    "LockedOut",
    "NotFound",
    "ScopeError",
    "StorageError",
    "StorageUnavailable",
    "TokenError",
    "TokenExpired",
    "TokenRevoked",
    "TokenUnknown",
]


class StorageError(PosAssistError):
    """The data layer failed; the request did not take effect."""

    http_status: ClassVar[int] = 500
    close_code = 1011
    public_reason = "internal error"


class NotFound(StorageError):
    """The row asked for does not exist (or is outside what the caller may know of)."""

    http_status = 404
    close_code = 1008
    public_reason = "not found"


class Conflict(StorageError):
    """A unique key is already taken, or the change is illegal in the row's current state."""

    http_status = 409
    close_code = 1008
    public_reason = "conflict with the current state"


class StorageUnavailable(StorageError):
    """The database is unreachable, busy beyond the timeout, or dropped the connection."""

    http_status = 503
    close_code = 1013  # try again later
    public_reason = "service temporarily unavailable"


class ScopeError(PosAssistError):
    """The caller's role or tenant scope does not cover the target."""

    http_status: ClassVar[int] = 403
    close_code = 4003
    public_reason = "not permitted"


# AuthenticationError (protocol.errors) has no http_status; the subclasses below set it.


class BadCredentials(AuthenticationError):
    """Unknown username or wrong password; deliberately indistinguishable to the peer."""

    http_status: ClassVar[int] = 401
    public_reason = "invalid username or password"


class LockedOut(AuthenticationError):
    """Sign-in refused because of repeated failures, until ``until`` (epoch seconds)."""

    http_status: ClassVar[int] = 429
    public_reason = "too many failed sign-ins; try again later"

    def __init__(self, until: float) -> None:
        super().__init__(f"locked out until {until}")
        self.until = until


class TokenError(AuthenticationError):
    """A bearer token was refused."""

    http_status: ClassVar[int] = 401
    public_reason = "invalid token"


class TokenUnknown(TokenError):
    """No such bearer token."""


class TokenExpired(TokenError):
    """The bearer token is past its expiry."""

    public_reason = "token expired"


class TokenRevoked(TokenError):
    """The bearer token was revoked (sign-out, or an admin action)."""

    public_reason = "token revoked"


class DeviceRevoked(AuthenticationError):
    """The device was enrolled but has since been revoked."""

    http_status: ClassVar[int] = 403
    public_reason = "device revoked"


class EnrolmentError(AuthenticationError):
    """An enrolment token was refused; nothing was enrolled."""

    http_status: ClassVar[int] = 403
    public_reason = "enrolment token refused"


class EnrolmentTokenUnknown(EnrolmentError):
    """No such enrolment token."""

    public_reason = "enrolment token not recognised"


class EnrolmentTokenUsed(EnrolmentError):
    """The enrolment token was already used (tokens are one-time)."""

    public_reason = "enrolment token already used"


class EnrolmentTokenExpired(EnrolmentError):
    """The enrolment token is past its expiry."""

    public_reason = "enrolment token expired"


class EnrolmentTokenRevoked(EnrolmentError):
    """An operator revoked the enrolment token before it was used."""

    public_reason = "enrolment token revoked"


class EnrolmentWrongRelay(EnrolmentError):
    """The enrolment token was issued by a different relay."""

    public_reason = "enrolment token is for another relay"
