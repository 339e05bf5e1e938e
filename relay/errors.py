"""Errors the relay raises on purpose, grafted onto :mod:`protocol.errors`.

Each class has a fixed ``public_reason`` (safe to show a console or agent), ``http_status``,
``close_code`` and ``exit_code`` (protocol/errors.py says where each is mapped); the exception
text is for our logs only and is never sent to a peer.

    class                             meaning                                  close HTTP exit
    PosAssistError
    ├── StorageError                  the data layer failed                     1011  500   1
    │   ├── NotFound                  no such row                               1008  404   2
    │   ├── Conflict                  unique key taken / illegal state change   1008  409   2
    │   │   ├── JobFinished           cancel: the job has ended already (relay/handlers/cancel.py)
    │   │   ├── NotCancellable        cancel: not a script run
    │   │   ├── NotRunning            cancel: the device is not running it
    │   │   ├── AgentTooOld           cancel: the device's protocol is older than v7
    │   │   ├── DeviceActive          delete: the device is not revoked yet
    │   │   ├── EnrolmentAlreadyUsed  revoke: the enrolment token was used already
    │   │   └── DeviceNotActive       run, diagnose, restore: the device is revoked or handed over
    │   └── StorageUnavailable        database unreachable, locked or timed out 1013  503   1
    ├── CheckpointKeyError            audit checkpoint key unreadable           1011  500   2
    ├── CheckpointError               a checkpoint line unreadable or forged    1011  500   1
    ├── ScopeError                    target outside the caller's tenant scope  4003  403   3
    │   └── CsrfError                 a web form without its CSRF token / foreign origin 403
    ├── BadRequest                    a request body the API can't take         1008  400   2
    │   └── ShortPassword, BadTtl, NotYourself, BadCursor, BadName: the reason in words
    ├── RateLimited                   too many requests from one address        1008  429   1
    ├── CancelUnanswered              a device did not answer a cancel in time  1011  504   1
    ├── Overloaded                    sign-ins shed at load (``retry_after``)   1013  503   1
    ├── SignInEnded                   a console's token expired or was revoked  4001  401   3
    ├── OfflineError                  (relay/routing.py) device not connected   1011  503   1
    ├── ConnectionClosedError         (relay/connection.py) peer went away      1011  500   1
    ├── SlowConsumerError             (relay/connection.py) outbox full         4008  500   1
    ├── NothingToVerifyError          (relay/__main__.py) no database there     1011  500   2
    ├── DataDirInUse                  (relay/__main__.py) another serve holds it 1011  500   2
    └── AuthenticationError           (protocol.errors)                         4001  401   3
        ├── BadCredentials            unknown user or wrong password
        ├── LockedOut                 too many failed sign-ins (``until``)            429
        ├── TokenError                bearer token refused
        │   ├── TokenUnknown
        │   ├── TokenExpired
        │   └── TokenRevoked
        ├── DeviceRevoked             an enrolled device that was revoked             403
        └── EnrolmentError            enrolment token refused                         403
            ├── EnrolmentTokenUnknown
            ├── EnrolmentTokenUsed
            ├── EnrolmentTokenExpired
            ├── EnrolmentTokenRevoked
            └── EnrolmentWrongRelay
"""

from __future__ import annotations

from posassist.protocol.errors import (
    EXIT_REFUSED,
    EXIT_USAGE,
    AuthenticationError,
    PosAssistError,
)

__all__ = [
    "AgentTooOld",
    "BadCredentials",
    "BadCursor",
    "BadName",
    "BadRequest",
    "BadTtl",
    "CancelUnanswered",
    "CheckpointError",
    "CheckpointKeyError",
    "Conflict",
    "CsrfError",
    "DeviceActive",
    "DeviceNotActive",
    "DeviceRevoked",
    "EnrolmentAlreadyUsed",
    "EnrolmentError",
    "EnrolmentTokenExpired",
    "EnrolmentTokenRevoked",
    "EnrolmentTokenUnknown",
    "EnrolmentTokenUsed",
    "EnrolmentWrongRelay",
    "JobFinished",
    "LockedOut",
    "NameTaken",
    "NotCancellable",
    "NotFound",
    "NotRunning",
    "NotYourself",
    "Overloaded",
    "RateLimited",
    "ScopeError",
    "ShortPassword",
    "StorageError",
    "StorageUnavailable",
    "TokenError",
    "TokenExpired",
    "TokenRevoked",
    "TokenUnknown",
]


class StorageError(PosAssistError):
    """The data layer failed; the request did not take effect."""

    http_status = 500
    close_code = 1011
    public_reason = "internal error"
    public_reason_zh = "内部错误"


class NotFound(StorageError):
    """The row asked for does not exist (or is outside what the caller may know of)."""

    http_status = 404
    close_code = 1008
    exit_code = EXIT_USAGE
    public_reason = "not found"
    public_reason_zh = "未找到"


class Conflict(StorageError):
    """A unique key is already taken, or the change is illegal in the row's current state."""

    http_status = 409
    close_code = 1008
    exit_code = EXIT_USAGE
    public_reason = "conflict with the current state"
    public_reason_zh = "与当前状态冲突"


class EnrolmentAlreadyUsed(Conflict):
    """Revoking an enrolment token that a device has already used; nothing changes (revoke
    the device instead)."""

    public_reason = "enrolment token already used: revoke the device instead"
    public_reason_zh = "登记码已被使用, 无法撤销; 请改为注销该设备"


class DeviceNotActive(Conflict):
    """A script run, diagnosis or restore asked of a device that is revoked or handed over to
    another provider: it can no longer connect, so nothing is sent and no job is made."""

    public_reason = "the device is revoked or moved to another provider: nothing can run on it"
    public_reason_zh = "设备已注销或已转移到其他服务商, 无法再对其操作"


class JobFinished(Conflict):
    """A cancel of a job that has ended already (docs/protocol.md#cancel); nothing is sent."""

    public_reason = "job already finished: nothing to cancel"
    public_reason_zh = "任务已结束, 无需取消"


class NotCancellable(Conflict):
    """A cancel of a job that is not a script run (a diagnosis, a restore)."""

    public_reason = "only a running script can be cancelled"
    public_reason_zh = "只能取消正在运行的脚本"


class DeviceActive(Conflict):
    """Deleting a device that is still active; nothing changes (revoke it first: the till is
    then refused, and whoever deletes it has seen it go)."""

    public_reason = "the device is still active: revoke it first, then delete it"
    public_reason_zh = "设备仍在使用中: 请先注销设备, 再删除"


class NameTaken(Conflict):
    """Creating an organisation, merchant or store whose name (letter case and outer spaces
    aside) its parent already has: nothing is made, the refusal audited (two merchants of one
    name could only be told apart by their ids)."""

    public_reason = "that name is taken here already: pick another or use the existing one"
    public_reason_zh = "此处已有同名项: 请换一个名称或使用已有的"


class NotRunning(Conflict):
    """The device answered a cancel ``not_running``: the script ended (or never ran) there."""

    public_reason = "the script is not running on the device: it ended before the cancel"
    public_reason_zh = "设备上没有在运行此脚本: 它已在取消前结束"


class AgentTooOld(Conflict):
    """The device's agent speaks a protocol older than ``script.cancel`` (v7): it is never
    sent one (docs/protocol.md#cancel)."""

    public_reason = "agent too old: the device's agent can't cancel a running script; update it"
    public_reason_zh = "收银台代理版本过旧, 无法取消正在运行的脚本, 请先升级"


class StorageUnavailable(StorageError):
    """The database is unreachable, busy beyond the timeout, or dropped the connection."""

    http_status = 503
    close_code = 1013  # try again later
    public_reason = "service temporarily unavailable"
    public_reason_zh = "服务暂时不可用"


class CheckpointKeyError(PosAssistError):
    """The audit checkpoint key (docs/relay.md#audit-checkpoints) is missing or unreadable."""

    exit_code = EXIT_USAGE
    public_reason = "audit checkpoint key unavailable"
    public_reason_zh = "审计检查点密钥不可用"


class CheckpointError(PosAssistError):
    """A line of the audit checkpoint file that can't be read, or whose signature doesn't verify
    (relay/checkpoints.py): someone edited the file."""

    public_reason = "audit checkpoint invalid"
    public_reason_zh = "审计检查点无效"


class ScopeError(PosAssistError):
    """The caller's role or tenant scope does not cover the target."""

    http_status = 403
    close_code = 4003
    exit_code = EXIT_REFUSED
    public_reason = "not permitted"
    public_reason_zh = "无权操作"


#: Each role in words for a refusal that says which role an action needs (readme-walk 15 L6).
ROLE_WORDS = {
    "admin": ("admin", "管理员"),
    "technician": ("technician", "技术员"),
    "viewer": ("viewer", "查看员"),
    "merchant": ("merchant", "商户"),
}


def role_needed(internal: str, *roles: object) -> ScopeError:
    """A ScopeError (403) whose answer says which roles may act (``detail``: "this needs the
    admin role / 需要管理员角色"), a fixed sentence per role set; ``internal`` is for the log."""
    names = [str(getattr(role, "value", role)) for role in roles]
    en = " or ".join(ROLE_WORDS.get(name, (name, name))[0] for name in names)
    zh = "或".join(ROLE_WORDS.get(name, (name, name))[1] for name in names)
    exc = ScopeError(internal)
    exc.public_detail = f"this needs the {en} role / 需要{zh}角色"  # type: ignore[attr-defined]
    return exc


class CsrfError(ScopeError):
    """A web console form (relay/web) without the session's CSRF token, with a wrong one, or
    sent from another origin: refused before anything is read or changed."""

    public_reason = "form refused: reload the page and try again"
    public_reason_zh = "表单已失效, 请刷新页面后重试"


class BadRequest(PosAssistError):
    """The request body is missing a field, has the wrong type, or is not JSON."""

    close_code = 1008
    http_status = 400
    exit_code = EXIT_USAGE
    public_reason = "bad request"
    public_reason_zh = "请求无效"


class ShortPassword(BadRequest):
    """A new password shorter than 10 characters; nothing is changed."""

    public_reason = "password too short: at least 10 characters"
    public_reason_zh = "密码太短: 至少需要 10 个字符"


class BadTtl(BadRequest):
    """An enrolment token's ``ttl`` outside 60 s .. 30 days; nothing is created."""

    public_reason = "ttl must be between 60 seconds and 30 days"
    public_reason_zh = "有效期必须在 60 秒到 30 天之间"


class NotYourself(BadRequest):
    """An admin deleting, disabling, demoting or resetting the password of their own account;
    nothing is changed."""

    public_reason = "you may not do that to your own account: ask another admin"
    public_reason_zh = "不能对自己的账号执行此操作, 请让另一位管理员操作"


class BadCursor(BadRequest):
    """A page cursor (``before``/``cursor``) this relay did not give."""

    public_reason = "bad page cursor: use the one the last page printed"
    public_reason_zh = "分页游标无效: 请使用上一页给出的游标"


class BadName(BadRequest):
    """A username or organisation/merchant/store name that a console's sign-in, the audit chain
    or a terminal can't carry as is (control characters, spaces in a username); nothing is
    created (found in the outside attack, F9)."""

    public_reason = (
        "bad name: a username is 1-64 letters, digits and . _ @ -; "
        "a name is 1-256 characters without control characters"
    )
    public_reason_zh = (
        "名称无效: 用户名只能包含字母、数字和 . _ @ - (1-64 个); 名称不能包含控制字符"
    )


class CancelUnanswered(PosAssistError):
    """The device did not answer a ``script.cancel`` in time (relay/handlers/cancel.py); the
    run's own end still reaches its job."""

    http_status = 504
    public_reason = "the device did not confirm the cancel in time; the job shows how it ends"
    public_reason_zh = "设备未及时确认取消; 任务的最终结果会在设备报告后显示"


class RateLimited(PosAssistError):
    """Too many requests from one address or for one account; the caller should slow down."""

    close_code = 1008
    http_status = 429
    public_reason = "too many requests; slow down"
    public_reason_zh = "请求过于频繁, 请稍后再试"

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        #: Seconds until a try may succeed, sent as ``Retry-After`` when known.
        self.retry_after = retry_after


class Overloaded(PosAssistError):
    """The relay is signing in as many agents as it can (a reconnect storm): this one is asked
    to come back after ``retry_after`` seconds (503 + ``Retry-After``, relay/limits.py
    ``HandshakeGate``). Load, not abuse: not audited, counted in the metrics."""

    close_code = 1013
    http_status = 503
    public_reason = "the relay is busy; try again shortly"
    public_reason_zh = "服务器繁忙, 请稍后重试"

    def __init__(self, message: str = "", *, retry_after: float) -> None:
        super().__init__(message)
        #: Seconds to wait, sent as ``Retry-After``.
        self.retry_after = retry_after


class BadCredentials(AuthenticationError):
    """Unknown username or wrong password; deliberately indistinguishable to the peer."""

    http_status = 401
    public_reason = "invalid username or password"
    public_reason_zh = "用户名或密码错误"


class LockedOut(AuthenticationError):
    """Sign-in refused because of repeated failures, until ``until`` (epoch seconds)."""

    http_status = 429
    public_reason = "too many failed sign-ins; try again later"
    public_reason_zh = "登录失败次数过多, 请稍后再试"

    def __init__(self, until: float) -> None:
        super().__init__(f"locked out until {until}")
        self.until = until


class TokenError(AuthenticationError):
    """A bearer token was refused."""

    http_status = 401
    public_reason = "invalid token"
    public_reason_zh = "登录已失效, 请重新登录"


class TokenUnknown(TokenError):
    """No such bearer token."""


class TokenExpired(TokenError):
    """The bearer token is past its expiry."""

    public_reason = "token expired"
    public_reason_zh = "登录已过期, 请重新登录"


class TokenRevoked(TokenError):
    """The bearer token was revoked (sign-out, or an admin action)."""

    public_reason = "token revoked"
    public_reason_zh = "登录已被撤销, 请重新登录"


class DeviceRevoked(AuthenticationError):
    """The device was enrolled but has since been revoked."""

    http_status = 403
    public_reason = "device revoked"
    public_reason_zh = "设备已被注销"


class EnrolmentError(AuthenticationError):
    """An enrolment token was refused; nothing was enrolled."""

    http_status = 403
    public_reason = "enrolment token refused"
    public_reason_zh = "登记码被拒绝"


class EnrolmentTokenUnknown(EnrolmentError):
    """No such enrolment token."""

    public_reason = "enrolment token not recognised"
    public_reason_zh = "登记码无效"


class EnrolmentTokenUsed(EnrolmentError):
    """The enrolment token was already used (tokens are one-time)."""

    public_reason = "enrolment token already used"
    public_reason_zh = "登记码已被使用"


class EnrolmentTokenExpired(EnrolmentError):
    """The enrolment token is past its expiry."""

    public_reason = "enrolment token expired"
    public_reason_zh = "登记码已过期"


class EnrolmentTokenRevoked(EnrolmentError):
    """An operator revoked the enrolment token before it was used."""

    public_reason = "enrolment token revoked"
    public_reason_zh = "登记码已被撤销"


class EnrolmentWrongRelay(EnrolmentError):
    """The enrolment token was issued by a different relay."""

    public_reason = "enrolment token is for another relay"
    public_reason_zh = "登记码属于另一台服务器"


#: The JSON body of an HTTP error the relay did not raise itself (aiohttp's 404, 405, 413, a
#: request head it could not parse or that is too large, an unexpected failure): a fixed
#: ``{"error", "message", "message_zh"}`` by status, never the request's input
#: (relay/responses.py ``errors_middleware``, relay/limits.py's connection handler).
HTTP_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("BadRequest", BadRequest.public_reason, BadRequest.public_reason_zh),
    401: ("Unauthorized", "authentication required", "需要登录"),
    403: ("Forbidden", ScopeError.public_reason, ScopeError.public_reason_zh),
    404: ("NotFound", NotFound.public_reason, NotFound.public_reason_zh),
    405: ("MethodNotAllowed", "method not allowed", "不支持该请求方法"),
    408: ("RequestTimeout", "request took too long", "请求超时"),
    413: ("PayloadTooLarge", "request body too large", "请求内容过大"),
    414: ("UriTooLong", "request target too long", "请求地址过长"),
    429: ("RateLimited", RateLimited.public_reason, RateLimited.public_reason_zh),
    431: ("HeadersTooLarge", "request headers too large", "请求头过大"),
    500: ("InternalError", PosAssistError.public_reason, PosAssistError.public_reason_zh),
    503: ("ServiceUnavailable", "service temporarily unavailable", "服务暂时不可用"),
}


def http_error_body(status: int) -> dict[str, str]:
    """The fixed JSON body for an HTTP error ``status`` (any 4xx/5xx; unknown ones by class)."""
    known = HTTP_ERRORS.get(status) or HTTP_ERRORS[400 if status < 500 else 500]
    code, message, message_zh = known
    return {"error": code, "message": message, "message_zh": message_zh}
