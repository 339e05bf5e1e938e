"""Typed failures raised by the store agent, all under :class:`protocol.errors.PosAssistError`.

Collectors raise these (or report them in a result) so one broken collector never spoils a report.

Each class's ``close_code``, ``http_status`` and ``exit_code`` are class attributes (mapped once
at each boundary, protocol/errors.py); ``exit_code`` is the one that matters here, in ``main``:
``ConfigError`` exits 2, ``RelayRefusedError`` (client/errors.py, re-exported here) 3,
everything else 1.

    PosAssistError
    └── AgentError
        ├── ConfigError               the data directory or arguments are unusable   exit 2
        ├── UntrustedRootError        a script root the approvers did not name      exit 3
        │   └── RootHashOutOfDate     the hash names an older root of the same repository
        ├── ReplacedError             the relay closed us 4002: this identity connected again
        ├── SwitchRefused             the merchant said no to changing provider      exit 1
        ├── GoingAwayError            the relay closed us 1001: it restarts, back in seconds
        ├── OutboxError               the alert outbox (SQLite) could not be read or written
        └── CollectorError            a collector could not produce its data
            ├── CollectorTimeout      the collector's own deadline passed
            ├── LogReadError          a log file could not be read
            └── PortError             a serial port or printer link failed   .port
                ├── PortNotFoundError     the device node / host does not exist or refused
                ├── PortPermissionError   the OS refused access (Linux EACCES, dialout group)
                ├── PortHeldError         another process holds the port     .holders
                └── PortUnpluggedError    the link vanished mid-conversation
        └── ScriptError               a vetted script could not be run as asked
            ├── ScriptRefusedError    a check failed before it ran            .refusal
            ├── BackupError           a backup could not be made or restored
            └── ScriptVerificationError  (agent/scripts/verify.py) refused by TUF  .reason
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Tuple

if TYPE_CHECKING:
    from posassist.agent.scripts.refusal import Refusal

from posassist.client.errors import RelayRefusedError
from posassist.protocol.errors import EXIT_REFUSED, EXIT_USAGE, PosAssistError

__all__ = [
    "AgentError",
    "BackupError",
    "CollectorError",
    "CollectorTimeout",
    "ConfigError",
    "GoingAwayError",
    "LogReadError",
    "OutboxError",
    "PortError",
    "PortHeldError",
    "PortNotFoundError",
    "PortPermissionError",
    "PortUnpluggedError",
    "RelayRefusedError",
    "ReplacedError",
    "ScriptError",
    "ScriptRefusedError",
    "SwitchRefused",
    "UntrustedRootError",
]


class AgentError(PosAssistError):
    """Root of the errors the store agent raises on purpose."""

    public_reason = "agent error"
    public_reason_zh = "收银助手出错"


class ConfigError(AgentError):
    """The agent's data directory or arguments are unusable."""

    exit_code = EXIT_USAGE
    public_reason = "agent configuration error"
    public_reason_zh = "收银助手配置有误"


class UntrustedRootError(AgentError):
    """The script repository's root is not the one the approvers named out of band (or the
    token names another): this till will not trust it (docs/scripts.md#trust)."""

    exit_code = EXIT_REFUSED
    public_reason = "the script repository root is not the one the approvers named"
    public_reason_zh = "脚本库根证书与审批人提供的不一致"


class RootHashOutOfDate(UntrustedRootError):
    """The approvers' root hash the store was given names an older root of the repository the
    relay serves: the approvers have published a newer one since (a retirement, a key change).
    Nothing is enrolled or trusted; the store asks for the current hash (readme-walk F21)."""

    public_reason = "the script repository root hash is out of date"
    public_reason_zh = "脚本库根哈希已过期: 审批人已发布新的根证书, 请向他们索取最新的根哈希"


class ReplacedError(AgentError):
    """The relay closed this connection (4002) because the same device connected again: on a
    working till the connection it had already lost, else another PC holding this identity (a
    cloned disk image). The agent backs off before reconnecting (agent/run.py), so two such
    tills do not replace each other forever (docs/relay.md#flapping-agents)."""

    close_code = 4002
    public_reason = "replaced by another connection of this device"
    public_reason_zh = "本设备身份在另一处连接了服务器 (可能是复制的系统镜像)"


class SwitchRefused(AgentError):
    """The merchant did not agree to move this till to another provider
    (docs/agent.md#changing-provider): nothing was changed, here or at either relay."""

    public_reason = "the merchant did not agree to change provider; nothing changed"
    public_reason_zh = "商户未同意更换服务商, 未做任何更改"


class GoingAwayError(AgentError):
    """The relay closed this connection with 1001 (going away: it is restarting). The agent
    tries again within a couple of seconds, at random, for a while (agent/backoff.py
    ``after_going_away``) instead of its doubling backoff, so a restarted relay has its tills
    back in seconds (docs/protocol.md#reconnecting)."""

    close_code = 1001
    public_reason = "the relay is restarting"
    public_reason_zh = "服务器正在重启"


class OutboxError(AgentError):
    """The alert outbox (agent/outbox.py) could not be opened, read or written: a full or
    read-only disk, a damaged file. The health checks go on; what was committed stays."""

    public_reason = "alert outbox unavailable"
    public_reason_zh = "告警发件箱不可用"


class CollectorError(AgentError):
    """A diagnostics collector could not produce its data."""

    public_reason = "collector failed"
    public_reason_zh = "诊断项采集失败"


class CollectorTimeout(CollectorError):
    """A collector's own deadline passed before it finished."""

    public_reason = "collector timed out"
    public_reason_zh = "诊断项采集超时"


class LogReadError(CollectorError):
    """A log file could not be opened or read."""

    public_reason = "log not readable"
    public_reason_zh = "日志无法读取"


class PortError(CollectorError):
    """A serial port or printer link failed.

    Attributes:
        port: the port name, device path or ``host:port`` the failure is about.
    """

    public_reason = "port error"
    public_reason_zh = "端口出错"

    def __init__(self, port: str, message: str = "") -> None:
        super().__init__(f"{port}: {message}" if message else port)
        self.port = port


class PortNotFoundError(PortError):
    """The device node does not exist, or the TCP printer refused / did not answer the connect."""

    public_reason = "port not found"
    public_reason_zh = "找不到端口或设备"


class PortPermissionError(PortError):
    """The operating system refused access to the port (Linux: not in the ``dialout`` group)."""

    public_reason = "permission denied on port"
    public_reason_zh = "无权访问端口"


class PortHeldError(PortError):
    """Another process holds the port, so the agent did not open it.

    Attributes:
        holders: the processes found holding it (empty when the OS only said "in use").
    """

    public_reason = "port held by another process"
    public_reason_zh = "端口被其他程序占用"

    def __init__(self, port: str, holders: Tuple[Any, ...] = (), message: str = "") -> None:
        super().__init__(port, message)
        self.holders = holders


class PortUnpluggedError(PortError):
    """The link vanished while the agent was talking to the device (unplug, power-off, close)."""

    public_reason = "device disconnected"
    public_reason_zh = "设备已断开"


class ScriptError(AgentError):
    """A vetted script could not be run as asked (agent/scripts/)."""

    public_reason = "script error"
    public_reason_zh = "脚本出错"


class ScriptRefusedError(ScriptError):
    """A check failed before the script ran, so nothing ran.

    Attributes:
        refusal: the machine code and the zh/en reason the merchant and technician see.
    """

    public_reason = "script refused"
    public_reason_zh = "脚本被拒绝执行"

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"{refusal.code}: {refusal.en}")
        self.refusal = refusal


class BackupError(ScriptError):
    """A path could not be backed up, or a backup could not be restored and verified."""

    public_reason = "backup failed"
    public_reason_zh = "备份失败"
