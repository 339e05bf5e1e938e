"""Findings: turn a diagnostics report's readings into coded findings that say what is wrong and
what to do (docs/findings.md). Pure: no I/O, no clock; ``now`` is passed in.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

if TYPE_CHECKING:
    from posassist.agent.profile import PosProfile

__all__ = [
    "ADVICE",
    "SCHEMA",
    "Advice",
    "Finding",
    "Severity",
    "annotate",
    "evaluate",
    "section_status",
]

#: The ``schema`` value of an annotated report (docs/findings.md#json); bump on any breaking change.
SCHEMA = "posassist.diag/1"


class Severity(str, enum.Enum):
    """How bad a finding is, least first."""

    INFO = "info"  # worth knowing, nothing to do
    WARNING = "warning"  # will hurt soon, or a reading could not be made
    FAULT = "fault"  # something the store needs is not working
    CRITICAL = "critical"  # sales or data at risk now

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.INFO: 1, Severity.WARNING: 2, Severity.FAULT: 3, Severity.CRITICAL: 4}


@dataclass(frozen=True)
class Advice:
    """The fixed words of one finding code: title, detail template, next steps, fixing script.

    ``detail_*`` are ``str.format`` templates filled from the finding's evidence-derived values.
    """

    severity: Severity
    title_zh: str
    title_en: str
    detail_zh: str
    detail_en: str
    cashier_zh: str
    cashier_en: str
    tech_zh: str
    tech_en: str
    script: str = ""  # a catalog script that fixes it, when one exists
    risk: str = ""  # that script's risk class (A/B/C, reference §5)
    ref: str = ""  # reference/pos-devices.md §5 row


_W, _F, _C, _I = Severity.WARNING, Severity.FAULT, Severity.CRITICAL, Severity.INFO
_CALL = ("请联系技术支持。", "Call support.")

#: Every finding code the agent can raise, with its words. Codes are stable: never rename one.
# fmt: off
ADVICE: Dict[str, Advice] = {
    "collector.unreadable": Advice(
        _W, "诊断数据无法读取", "Diagnostic reading unreadable", "{section} 部分无法读取: {why}",
        "The {section} reading could not be made: {why}", "请联系技术支持。", "Call support.",
        "查看错误原因, 必要时重新诊断", "Read the error; re-run diagnostics", ref="—",
    ),
    "pos.not_configured": Advice(
        _I, "未配置收银软件档案", "No POS profile configured", "未在 settings.json 中指定 POS 档案",
        "settings.json names no POS profile", "无需操作。", "Nothing to do.",
        "在 settings.json 中设置 pos_profile", "Set pos_profile in settings.json", ref="—",
    ),
    "pos.profile_invalid": Advice(
        _W, "收银软件档案有误", "POS profile invalid", "POS 档案无法读取: {why}",
        "The POS profile could not be read: {why}", "请联系技术支持。", "Call support.",
        "修正 POS 档案文件", "Fix the POS profile file", ref="—",
    ),
    "printer.unrecoverable_error": Advice(
        _C, "打印机严重故障", "Printer unrecoverable error",
        "打印机 {name} 报告不可恢复错误 (打印头或电压)",
        "Printer {name} reports an unrecoverable error (head or voltage)",
        "请关闭打印机电源, 并联系技术支持。", "Switch the printer off and call support.",
        "断电重启; 仍报错则报修更换", "Power-cycle; if it persists, open a repair ticket",
        ref="5.1#7",
    ),
    "printer.cover_open": Advice(
        _F, "打印机盖未关", "Printer cover open", "打印机 {name} 的上盖打开着",
        "The cover of printer {name} is open", "请合上打印机上盖。", "Close the printer cover.",
        "确认收银员已合盖, 再次诊断", "Have the cashier close it, then re-check", ref="5.1#5",
    ),
    "printer.paper_out": Advice(
        _F, "打印机缺纸", "Printer out of paper", "打印机 {name} 没有纸了",
        "Printer {name} is out of paper", "请更换打印纸卷。", "Load a new paper roll.",
        "确认换纸后再次诊断", "Confirm the roll was changed, then re-check", ref="5.1#4",
    ),
    "printer.paper_near_end": Advice(
        _W, "打印纸快用完", "Printer paper near end", "打印机 {name} 的纸卷快用完了",
        "The roll in printer {name} is nearly used up", "请准备新的纸卷。",
        "Have a new paper roll ready.", "无需远程处理", "Nothing to do remotely", ref="5.1#4",
    ),
    "printer.cutter_error": Advice(
        _F, "打印机切刀卡纸", "Printer cutter jammed", "打印机 {name} 切刀出错 (可能卡纸)",
        "Printer {name} reports an autocutter error (jam)", "请打开上盖清除卡纸, 然后告诉技术员。",
        "Open the cover, clear the jam, then tell the technician.",
        "收银员清除卡纸后运行 DLE ENQ 恢复; 收银软件需重打小票",
        "After the cashier clears the jam, run DLE ENQ recovery; the POS must reprint",
        script="printer-recover", risk="B", ref="5.1#6",
    ),
    "printer.recoverable_error": Advice(
        _F, "打印机可恢复错误", "Printer recoverable error", "打印机 {name} 报告可恢复错误",
        "Printer {name} reports a recoverable error", "请检查打印机 (卡纸、上盖), 然后告诉技术员。",
        "Check the printer (jam, cover), then tell the technician.",
        "原因排除后运行 DLE ENQ 恢复; 收银软件需重打小票",
        "Once the cause is cleared, run DLE ENQ recovery; the POS must reprint",
        script="printer-recover", risk="B", ref="5.1#6",
    ),
    "printer.auto_recoverable_error": Advice(
        _W, "打印机暂时错误", "Printer temporary error",
        "打印机 {name} 报告会自动恢复的错误 (如打印头过热)",
        "Printer {name} reports an auto-recoverable error (e.g. head overheat)",
        "请稍等片刻再打印。", "Wait a moment before printing.",
        "通常自行恢复; 反复出现则检查打印量", "Clears by itself; if frequent, check the print load",
        ref="5.1#7",
    ),
    "printer.waiting_recovery": Advice(
        _W, "打印机等待恢复", "Printer waiting for recovery", "打印机 {name} 在等待恢复联机",
        "Printer {name} is waiting for online recovery", "请按一下打印机的进纸键。",
        "Press the printer's FEED button once.", "可运行 DLE ENQ 0 (等同按进纸键)",
        "DLE ENQ 0 recovers it (same as FEED)", script="printer-recover", risk="B", ref="5.1#6",
    ),
    "printer.offline": Advice(
        _F, "打印机脱机", "Printer offline", "打印机 {name} 处于脱机状态",
        "Printer {name} is offline", "请检查打印机指示灯、上盖和纸卷。",
        "Check the printer's lights, cover and paper.", "查看脱机原因 (DLE EOT 2/3)",
        "Read the offline cause (DLE EOT 2/3)", ref="5.1#5",
    ),
    "printer.unreachable": Advice(
        _F, "打印机无法连接", "Printer not reachable", "打印机 {name} ({target}) 无响应: {why}",
        "Printer {name} ({target}) does not answer: {why}", "请检查打印机电源和连接线。",
        "Check the printer's power and cable.",
        "核对配置的端口/地址; USB 串口按 VID:PID:序列号查找",
        "Check the configured port or address; find USB-serial ports by VID:PID:serial",
        ref="5.1#8",
    ),
    "printer.port_renumbered": Advice(
        _F, "打印机串口号变了", "Printer port renumbered",
        "打印机 {name} (USB {usb}) 现在在 {new}, 收银软件配置的是 {old}",
        "Printer {name} (USB {usb}) is now on {new}; the POS is configured for {old}",
        "请联系技术支持, 小票可能打印不出来。", "Call support: receipts may not print.",
        "把收银软件的打印机端口改为新端口 (或在设备管理器中改回原端口号)",
        "Point the POS at the new port (or give the port its old number in Device Manager)",
        script="fix-printer-port", risk="C", ref="5.1#10",
    ),
    "printer.usb_ambiguous": Advice(
        _W, "无法确定是哪台打印机", "Printer USB identity ambiguous", "打印机 {name}: {why}",
        "Printer {name}: {why}", "请联系技术支持。", "Call support.",
        "在 settings.json 的 usb 中加上序列号",
        "Add the serial number to its usb id in settings.json", ref="5.1#10",
    ),
    "printer.port_held": Advice(
        _I, "打印机端口被占用", "Printer port in use",
        "打印机 {name} 的端口正被 {holders} 使用, 未探测",
        "The port of printer {name} is held by {holders}; not probed", "无需操作。",
        "Nothing to do.", "若占用者不是收银软件, 找出并停止它 (交易中绝不停止收银软件)",
        "If the holder is not the POS, identify and stop it (never stop the POS during a sale)",
        ref="5.1#9",
    ),
    "printer.permission_denied": Advice(
        _F, "无权访问打印机端口", "Printer port access denied", "系统拒绝访问打印机 {name} 的端口",
        "The OS refused access to the port of printer {name}", "请联系技术支持。", "Call support.",
        "Linux: 代理用户加入 dialout 组", "Linux: add the agent's user to dialout", ref="5.1#9",
    ),
    "printer.unreadable": Advice(
        _W, "打印机状态无法读取", "Printer status unreadable",
        "打印机 {name} 的回复无法识别 ({why})",
        "Printer {name} answered with bytes that are not a status ({why})", "请联系技术支持。",
        "Call support.", "核对波特率和打印机型号 (Star 打印机不是 ESC/POS)",
        "Check the baud rate and model (Star printers do not speak ESC/POS)", ref="5.1#8",
    ),
    "printer.skipped_sale_open": Advice(
        _I, "交易中, 未探测打印机", "Sale open: printer not probed",
        "正在交易 ({why}), 未探测打印机 {name}",
        "A sale is open ({why}); printer {name} was not probed", "无需操作。", "Nothing to do.",
        "交易结束后再诊断", "Re-check after the sale", ref="§0.2",
    ),
    "queue.disabled": Advice(
        _F, "打印队列已停用", "Print queue disabled", "打印队列 {name} 已停用{why}",
        "Print queue {name} is disabled{why}", "请联系技术支持, 小票可能没有打印。",
        "Call support; receipts may not have printed.", "打印机恢复后启用队列 (cupsenable)",
        "Re-enable the queue once the printer is back (cupsenable)", script="cups-enable-queue",
        risk="A", ref="5.1#2",
    ),
    "queue.offline": Advice(
        _F, "打印机被设为脱机使用", "Printer set to work offline",
        "Windows 打印机 {name} 被设为脱机使用",
        "Windows printer {name} is set to Use Printer Offline", "请联系技术支持。", "Call support.",
        "在打印机设置中取消脱机使用", "Untick Use Printer Offline", ref="5.1#3",
    ),
    "queue.jobs_stuck": Advice(
        _F, "打印任务卡住", "Print jobs stuck", "{count} 个打印任务未完成, 最早的提交于 {age}",
        "{count} print job(s) not done, the oldest submitted {age}",
        "请检查打印机; 不要重复打印, 技术员会处理。",
        "Check the printer; don't reprint yet, the technician will handle it.",
        "先修复打印机; 需要时清理队列 (任务会丢失, 先确认)",
        "Fix the printer first; clear the queue if needed (jobs are lost: confirm first)",
        script="cups-clear-queue", risk="B", ref="5.1#1",
    ),
    "serial.port_shared": Advice(
        _W, "串口被多个程序占用", "Serial port held by several programs",
        "{device} 同时被 {holders} 打开", "{device} is open in {holders} at once",
        "请联系技术支持。", "Call support.", "停止多余的程序 (交易中绝不停止收银软件)",
        "Stop the extra program (never stop the POS during a sale)", ref="5.1#9",
    ),
    "network.link_down": Advice(
        _F, "网络断开", "Network link down", "没有已连接的网卡", "No network interface is up",
        "请检查网线或 Wi-Fi。", "Check the network cable or Wi-Fi.",
        "检查交换机/路由器; 重新连接网卡", "Check the switch/router; reconnect the interface",
        ref="5.3#21",
    ),
    "network.no_dhcp": Advice(
        _F, "未获取到网络地址", "No DHCP address", "网卡 {name} 只有自动地址 {address} (DHCP 失败)",
        "Interface {name} has only the self-assigned address {address} (DHCP failed)",
        "请重启路由器, 或联系技术支持。", "Restart the router, or call support.",
        "检查 DHCP 服务器; 重新获取地址", "Check the DHCP server; renew the lease", ref="5.3#21",
    ),
    "network.dns_failed": Advice(
        _F, "域名解析失败", "DNS lookup failed", "无法解析服务器 {host}: {why}",
        "The relay's name {host} does not resolve: {why}", "请联系技术支持。", "Call support.",
        "刷新 DNS 缓存, 检查 DNS 服务器设置", "Flush the DNS cache; check the DNS servers",
        script="flush-dns", risk="A", ref="5.3#22",
    ),
    "network.relay_unreachable": Advice(
        _F, "无法连接服务器", "Relay not reachable", "无法连接 {host}:{port}: {why}",
        "Cannot connect to {host}:{port}: {why}", "请联系技术支持。", "Call support.",
        "检查防火墙和代理设置", "Check the firewall and proxy", ref="5.3#24",
    ),
    "tls.expired": Advice(
        _C, "服务器证书已过期", "Relay certificate expired", "{host} 的证书已于 {when} 过期",
        "The certificate of {host} expired {when}", "请联系技术支持。", "Call support.",
        "更换服务器证书; 或检查收银机时钟", "Renew the certificate; or check the till's clock",
        ref="5.3#18",
    ),
    "tls.expiring": Advice(
        _W, "服务器证书即将过期", "Relay certificate expires soon", "{host} 的证书将于 {when} 过期",
        "The certificate of {host} expires {when}", "无需操作。", "Nothing to do.",
        "通知运维更换证书", "Tell the relay's operator to renew it", ref="5.3#18",
    ),
    "tls.handshake_failed": Advice(
        _F, "无法建立加密连接", "TLS handshake failed", "与 {host} 的 TLS 握手失败: {why}",
        "TLS handshake with {host} failed: {why}", "请联系技术支持。", "Call support.",
        "检查时钟、证书和 TLS 版本", "Check the clock, the certificate and TLS versions",
        ref="5.3#23",
    ),
    "gateway.tls_expired": Advice(
        _C, "支付网关证书已过期", "Payment gateway certificate expired",
        "支付网关 {host} 的证书已于 {when} 过期",
        "The certificate of payment gateway {host} expired {when}",
        "刷卡可能失败, 请改用其他收款方式并联系技术支持。",
        "Card payments may fail: take another payment method and call support.",
        "联系支付服务商; 先检查收银机时钟",
        "Contact the payment provider; check the till's clock first", ref="5.3#18",
    ),
    "gateway.tls_expiring": Advice(
        _W, "支付网关证书即将过期", "Payment gateway certificate expires soon",
        "支付网关 {host} 的证书将于 {when} 过期",
        "The certificate of payment gateway {host} expires {when}", "无需操作。", "Nothing to do.",
        "提醒支付服务商更换证书", "Remind the payment provider to renew it", ref="5.3#18",
    ),
    "gateway.unreachable": Advice(
        _F, "无法连接支付网关", "Payment gateway not reachable", "无法连接支付网关 {host}: {why}",
        "Cannot reach payment gateway {host}: {why}", "刷卡可能失败, 请联系技术支持。",
        "Card payments may fail; call support.", "检查 DNS、防火墙、代理和 TLS 版本",
        "Check DNS, firewall, proxy and TLS versions", ref="5.3#22",
    ),
    "clock.offset": Advice(
        _W, "电脑时间不准", "Clock off", "本机时钟与服务器相差 {offset}",
        "The till's clock is {offset} off the relay's", "刷卡可能失败, 请联系技术支持。",
        "Card payments may fail; call support.", "重新同步时间 (偏差超过 1 小时需确认)",
        "Resync the clock (confirm first if over 1 h)", script="resync-clock", risk="A",
        ref="5.3#18",
    ),
    "clock.implausible": Advice(
        _C, "电脑时间错误", "Clock implausible", "本机时间为 {when}, 可能是主板电池没电",
        "The till's clock reads {when}: likely a dead CMOS battery", "请不要收款, 联系技术支持。",
        "Don't take card payments; call support.", "同步时间; 更换主板电池",
        "Resync the clock; replace the CMOS battery", script="resync-clock", risk="A", ref="5.3#19",
    ),
    "disk.low": Advice(
        _W, "磁盘空间不足", "Disk space low", "{mount} 仅剩 {free} ({percent}% 已用)",
        "{mount} has only {free} free ({percent}% used)", "请联系技术支持。", "Call support.",
        "清理临时文件 (不要碰数据库和备份)", "Clean temp folders (never the database or backups)",
        script="clean-temp-folders", risk="A", ref="5.4#25",
    ),
    "disk.full": Advice(
        _C, "磁盘已满", "Disk full", "{mount} 仅剩 {free} ({percent}% 已用)",
        "{mount} has only {free} free ({percent}% used)", "请联系技术支持, 收银数据可能无法保存。",
        "Call support: sales may fail to save.", "立即清理临时文件和旧日志",
        "Clean temp folders and old logs now", script="clean-temp-folders", risk="A", ref="5.4#25",
    ),
    "memory.low": Advice(
        _W, "内存不足", "Memory low", "可用内存仅 {available} (共 {total})",
        "Only {available} of {total} memory available", "收银软件可能变慢。",
        "The POS may be slow.", "找出占用内存的程序; 营业结束后重启收银软件",
        "Find what uses memory; restart the POS after closing", ref="5.4#30",
    ),
    "pos.not_running": Advice(
        _F, "收银软件未运行", "POS not running", "未找到收银软件进程 ({names})",
        "No POS process is running ({names})", "请重新打开收银软件。",
        "Start the POS application again.", "启动收银软件服务", "Start the POS service",
        script="restart-pos-service", risk="B", ref="5.4#26",
    ),
    "pos.service_stopped": Advice(
        _F, "收银服务已停止", "POS service stopped", "服务 {name} 的状态为 {state}",
        "Service {name} is {state}", "请联系技术支持。", "Call support.", "启动该服务 (非交易时)",
        "Start the service (outside a sale)", script="restart-pos-service", risk="B", ref="5.4#26",
    ),
    "pos.duplicate_instances": Advice(
        _F, "收银软件重复运行", "POS running twice", "收银软件同时运行了 {count} 个 (进程 {pids})",
        "{count} POS instances run at once (pids {pids})", "请关闭多余的收银窗口, 只保留一个。",
        "Close the extra POS window; keep one.", "停止较新的实例 (交易中绝不停止)",
        "Stop the newer instance (never during a sale)", ref="5.4#27",
    ),
    "pos.database_locked": Advice(
        _F, "数据库被锁定", "POS database locked", "日志中出现 {count} 次数据库锁定 ({sample})",
        "The log shows the database locked {count} time(s) ({sample})",
        "保存失败时请不要重复操作, 联系技术支持。", "If saving fails, don't retry; call support.",
        "找出占用数据库的进程; 切勿删除 -wal/-shm/-journal 文件",
        "Find who holds the database; never delete -wal/-shm/-journal files", ref="5.4#27",
    ),
    "pos.database_held": Advice(
        _W, "数据库被多个程序打开", "POS database open in several programs",
        "{path} 被 {holders} 打开", "{path} is open in {holders}", "请联系技术支持。",
        "Call support.",
        "停止多余的进程或服务 (交易中绝不停止收银软件); 切勿删除 -wal/-shm/-journal 文件",
        "Stop the extra process or service (never the POS during a sale); never delete "
        "-wal/-shm/-journal files",
        ref="5.4#27",
    ),
    "pos.database_unreadable": Advice(
        _W, "数据库文件无法检查", "POS database file unreadable", "无法检查 {path}: {why}",
        "{path} could not be checked: {why}", "无需操作。", "Nothing to do.",
        "核对 POS 档案中的数据库路径", "Check the database path in the POS profile", ref="5.4#27",
    ),
    "pos.database_corrupt": Advice(
        _C, "数据库损坏", "POS database corrupt", "日志中出现数据库损坏 ({sample})",
        "The log reports a corrupt database ({sample})", "请停止收银并联系技术支持。",
        "Stop selling and call support.", "停止收银软件后复制数据库检查; 从备份恢复",
        "Check a copy with the POS stopped; restore from backup", ref="5.4#28",
    ),
    "pos.database_down": Advice(
        _F, "数据库服务未运行", "POS database down", "数据库服务或进程未运行 ({what})",
        "The database service or process is not running ({what})", "请联系技术支持。",
        "Call support.", "启动数据库服务; 检查数据文件是否接近 10 GB 上限",
        "Start the database service; check the data file against the 10 GB cap", ref="5.4#29",
    ),
    "pos.log_errors": Advice(
        _W, "收银软件日志有错误", "POS log has errors",
        "{path} 有 {count} 行错误, 最近一条: {sample}",
        "{path} has {count} error line(s); the newest: {sample}", "无需操作。", "Nothing to do.",
        "查看最近的错误行", "Read the recent error lines", ref="—",
    ),
    "pos.log_unreadable": Advice(
        _W, "收银软件日志无法读取", "POS log unreadable", "无法读取 {path}: {why}", "{path}: {why}",
        "无需操作。", "Nothing to do.", "核对 POS 档案中的日志路径",
        "Check the log path in the POS profile", ref="—",
    ),
    "pos.data_disk_low": Advice(
        _F, "收银数据磁盘空间不足", "POS data disk low", "{path} 仅剩 {free}",
        "{path} has only {free} free", "请联系技术支持, 收银数据可能无法保存。",
        "Call support: sales may fail to save.", "清理临时文件 (不要碰数据库和备份)",
        "Clean temp folders (never the database or backups)", script="clean-temp-folders", risk="A",
        ref="5.4#25",
    ),
    "pos.data_path_unreadable": Advice(
        _W, "收银数据目录无法读取", "POS data folder unreadable", "无法读取 {path}: {why}",
        "{path}: {why}", "无需操作。", "Nothing to do.", "核对 POS 档案中的数据路径",
        "Check the data path in the POS profile", ref="—",
    ),
    "pos.sale_open": Advice(
        _I, "正在交易", "Sale open", "收银软件正在交易 ({why})", "A sale is open ({why})",
        "无需操作。", "Nothing to do.", "交易结束前不要运行 B 类脚本",
        "Run no class-B script until the sale ends", ref="§7",
    ),
}
# fmt: on


@dataclass(frozen=True)
class Finding:
    """One coded finding: what is wrong, the evidence, and what to do (docs/findings.md)."""

    code: str
    severity: Severity
    section: str
    subject: str
    detail: Dict[str, str]
    evidence: Dict[str, Any] = field(default_factory=dict)

    @property
    def advice(self) -> Advice:
        return ADVICE[self.code]

    def to_dict(self) -> Dict[str, Any]:
        """The finding as JSON-ready data (docs/findings.md#json); keys are stable."""
        a = self.advice
        return {
            "code": self.code,
            "severity": self.severity.value,
            "section": self.section,
            "subject": self.subject,
            "title": {"zh": a.title_zh, "en": a.title_en},
            "detail": dict(self.detail),
            "cashier": {"zh": a.cashier_zh, "en": a.cashier_en},
            "technician": {"zh": a.tech_zh, "en": a.tech_en},
            "script": {"id": a.script, "risk": a.risk} if a.script else None,
            "ref": a.ref,
            "evidence": dict(self.evidence),
        }


class _Safe(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return "?"


def _clip(value: Any, limit: int = 160) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _finding(
    code: str,
    where: str,
    subject: str = "",
    evidence: Optional[Dict[str, Any]] = None,
    severity: Optional[Severity] = None,
    **words: Any,
) -> Finding:
    a = ADVICE[code]
    values = _Safe({k: _clip(v) for k, v in words.items()})
    detail = {"zh": a.detail_zh.format_map(values), "en": a.detail_en.format_map(values)}
    return Finding(code, severity or a.severity, where, subject, detail, dict(evidence or {}))


# --- human units for detail text ----------------------------------------------------------------


def mb(n: Any) -> str:
    """Bytes as "512 MB" or "3.2 GB"."""
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "?"
    if abs(n) >= 1024**3:
        return f"{n / 1024**3:.1f} GB"
    return f"{n / 1024**2:.0f} MB"


def span(seconds: float) -> str:
    """A duration as "45 s", "12 min", "3 h", "5 days"."""
    s = abs(seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.0f} h"
    return f"{s / 86400:.0f} days"


def ago(then: float, now: float) -> str:
    """``then`` relative to ``now``: "3 min ago" or "in 5 days"."""
    return f"{span(now - then)} ago" if then <= now else f"in {span(then - now)}"


# --- thresholds (reference §5) ------------------------------------------------------------------

DISK_WARN_PERCENT = 90.0
DISK_WARN_FREE = 2 * 1024**3
DISK_CRIT_PERCENT = 98.0
MEMORY_WARN_FRACTION = 0.10
CLOCK_WARN_S = 60.0
CLOCK_FAULT_S = 3600.0
TLS_WARN_DAYS = 14.0
JOB_STUCK_S = 300.0
#: before 2020-01-01 the till's clock is wrong, not the world (a reset CMOS clock, §5.3 #19)
PLAUSIBLE_SINCE = 1577836800.0
_LOCKED = re.compile(r"SQLITE_BUSY|database is locked", re.IGNORECASE)
_CORRUPT = re.compile(r"SQLITE_CORRUPT|database disk image is malformed", re.IGNORECASE)


def _num(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _dicts(value: Any) -> Iterator[Dict[str, Any]]:
    """The dict rows of a list; anything else in it is garbage and raises (→ unreadable)."""
    if value is None:
        return
    if not isinstance(value, list):
        raise TypeError("expected a list")
    for row in value:
        if not isinstance(row, dict):
            raise TypeError("expected a map in the list")
        yield row


# --- one evaluator per section ------------------------------------------------------------------

_PRINTER_FLAGS = (
    "unrecoverable_error",
    "cover_open",
    "paper_out",
    "cutter_error",
    "recoverable_error",
    "auto_recoverable_error",
    "waiting_online_recovery",
    "paper_near_end",
)
_UNREACHABLE = ("no_reply", "unplugged", "not_found", "timeout")


def _printers(data: Dict[str, Any], now: float) -> List[Finding]:
    out: List[Finding] = []
    for p in _dicts(data.get("printers")):
        name = str(p.get("name") or p.get("target") or "?")
        target = str(p.get("target") or "")
        outcome = p.get("outcome")
        ev: Dict[str, Any] = {"target": target, "outcome": outcome}
        if p.get("replies"):
            ev["replies"] = p["replies"]  # the status bytes, hex, by DLE EOT n
        if p.get("cached"):
            ev["age_s"] = p.get("age_s")
        sec = "printers"
        if outcome == "skipped":
            out.append(
                _finding(
                    "printer.skipped_sale_open", sec, name, ev, name=name, why=p.get("detail", "")
                )
            )
        elif outcome in _UNREACHABLE:
            why = p.get("detail") or outcome
            out.append(
                _finding("printer.unreachable", sec, name, ev, name=name, target=target, why=why)
            )
        elif outcome == "held":
            holders = ", ".join(
                f"{h.get('name')}({h.get('pid')})" for h in _dicts(p.get("held_by"))
            )
            ev["held_by"] = p.get("held_by")
            out.append(
                _finding("printer.port_held", sec, name, ev, name=name, holders=holders or "?")
            )
        elif outcome == "ambiguous":
            out.append(
                _finding("printer.usb_ambiguous", sec, name, ev, name=name, why=p.get("detail"))
            )
        elif outcome == "permission_denied":
            out.append(_finding("printer.permission_denied", sec, name, ev, name=name))
        elif outcome in ("ok", "partial"):
            status = p.get("status") or {}
            if not isinstance(status, dict):
                raise TypeError("printer status is not a map")
            problems = p.get("problems") or []
            flags = [f for f in _PRINTER_FLAGS if status.get(f) or f in problems]
            for flag in flags:
                code = (
                    "printer.waiting_recovery"
                    if flag == "waiting_online_recovery"
                    else ("printer." + flag)
                )
                out.append(_finding(code, sec, name, ev, name=name))
            offline = status.get("online") is False or "offline" in problems
            if offline and not flags:
                out.append(_finding("printer.offline", sec, name, ev, name=name))
            if outcome == "partial":
                out.append(
                    _finding(
                        "printer.unreadable",
                        sec,
                        name,
                        ev,
                        name=name,
                        why="some status requests got no valid reply",
                    )
                )
        else:  # garbage, error, or an outcome this agent does not know
            out.append(
                _finding(
                    "printer.unreadable", sec, name, ev, name=name, why=p.get("detail") or outcome
                )
            )
        if p.get("renumbered"):
            resolved = p.get("resolved") or {}
            ev = dict(ev, configured=p.get("configured"), resolved=resolved)
            usb = f"{resolved.get('usb_id')}" + (
                f":{resolved['serial_number']}" if resolved.get("serial_number") else ""
            )
            out.append(
                _finding(
                    "printer.port_renumbered",
                    sec,
                    name,
                    ev,
                    name=name,
                    usb=usb,
                    new=resolved.get("device"),
                    old=p.get("configured"),
                )
            )
    return out


def _print_queue(data: Dict[str, Any], now: float) -> List[Finding]:
    out: List[Finding] = []
    ev: Dict[str, Any]
    sec = "print_queue"
    for p in _dicts(data.get("printers")):
        name = str(p.get("name") or "?")
        reasons = [str(r) for r in p.get("reasons") or []]
        ev = {"state": p.get("state"), "reasons": reasons}
        if p.get("state") == "disabled":
            why = (" (" + reasons[0] + ")") if reasons else ""
            out.append(_finding("queue.disabled", sec, name, ev, name=name, why=why))
        elif p.get("state") == "offline":
            out.append(_finding("queue.offline", sec, name, ev, name=name))
    by_queue: Dict[str, List[Dict[str, Any]]] = {}
    for job in _dicts(data.get("jobs")):
        by_queue.setdefault(str(job.get("queue") or "?"), []).append(job)
    for queue, jobs in list(by_queue.items()):
        # a queue is stuck when its oldest job waits for minutes; the jobs behind it wait too
        times = [t for t in (_num(j.get("submitted_at")) for j in jobs) if t is not None]
        old = bool(times) and now - min(times) >= JOB_STUCK_S
        if not old and not any(j.get("stuck") for j in jobs):
            del by_queue[queue]
    for queue, jobs in by_queue.items():
        times = [t for t in (_num(j.get("submitted_at")) for j in jobs) if t is not None]
        oldest = min(times) if times else None
        ev = {
            "queue": queue,
            "jobs": [str(j.get("id")) for j in jobs][:20],
            "oldest_submitted_at": oldest,
            "oldest_age_s": None if oldest is None else round(now - oldest, 1),
        }
        age = ago(oldest, now) if oldest is not None else "(time unknown)"
        out.append(_finding("queue.jobs_stuck", sec, queue, ev, count=len(jobs), age=age))
    return out


def _serial(data: Dict[str, Any], now: float) -> List[Finding]:
    out: List[Finding] = []
    ev: Dict[str, Any]
    for port in _dicts(data.get("ports")):
        held = list(_dicts(port.get("held_by")))
        if len(held) > 1:  # on Linux a second open succeeds silently and steals bytes (§0.1)
            holders = ", ".join(f"{h.get('name')}({h.get('pid')})" for h in held)
            device = str(port.get("device"))
            ev = {"device": device, "usb_id": port.get("usb_id"), "held_by": held}
            out.append(
                _finding("serial.port_shared", "serial", device, ev, device=device, holders=holders)
            )
    return out


def _network(data: Dict[str, Any], now: float) -> List[Finding]:
    out: List[Finding] = []
    ev: Dict[str, Any]
    sec = "network"
    nics = [n for n in _dicts(data.get("interfaces")) if not n.get("loopback")]
    if nics and not any(n.get("up") for n in nics):
        ev = {"interfaces": [n.get("name") for n in nics]}
        out.append(_finding("network.link_down", sec, "", ev))
    for nic in nics:
        if nic.get("up") and nic.get("apipa"):
            addrs = [a.get("address") for a in _dicts(nic.get("addresses"))]
            apipa = next((a for a in addrs if str(a).startswith("169.254.")), "169.254.x.x")
            ev = {"interface": nic.get("name"), "addresses": addrs}
            out.append(
                _finding(
                    "network.no_dhcp",
                    sec,
                    str(nic.get("name")),
                    ev,
                    name=nic.get("name"),
                    address=apipa,
                )
            )
    relay = data.get("relay")
    if relay is not None:
        if not isinstance(relay, dict):
            raise TypeError("relay is not a map")
        host, port = relay.get("host"), relay.get("port")
        dns, tcp, tls = relay.get("dns") or {}, relay.get("tcp"), relay.get("tls")
        if dns.get("ok") is False:
            out.append(
                _finding(
                    "network.dns_failed",
                    sec,
                    str(host),
                    {"dns": dns},
                    host=host,
                    why=dns.get("error"),
                )
            )
        elif isinstance(tcp, dict) and tcp.get("ok") is False:
            out.append(
                _finding(
                    "network.relay_unreachable",
                    sec,
                    str(host),
                    {"tcp": tcp},
                    host=host,
                    port=port,
                    why=tcp.get("error"),
                )
            )
        if isinstance(tls, dict):
            out.extend(_tls(tls, str(host), now))
    for gw in _dicts(data.get("payment_gateways")):
        host = f"{gw.get('host')}:{gw.get('port')}"
        dns, tcp, tls = gw.get("dns") or {}, gw.get("tcp") or {}, gw.get("tls") or {}
        failed = next((part for part in (dns, tcp, tls) if part.get("ok") is False), None)
        if failed is not None:
            out.append(
                _finding(
                    "gateway.unreachable",
                    sec,
                    host,
                    {"gateway": gw},
                    host=host,
                    why=failed.get("error"),
                )
            )
            continue
        after = _num(tls.get("not_after"))
        if after is not None and after - now < TLS_WARN_DAYS * 86400:
            code = "gateway.tls_expired" if after <= now else "gateway.tls_expiring"
            ev = {"gateway": gw, "days_left": round((after - now) / 86400, 1)}
            out.append(_finding(code, sec, host, ev, host=host, when=ago(after, now)))
    clock = data.get("clock")
    if isinstance(clock, dict):
        offset = _num(clock.get("offset_s"))
        if offset is not None and abs(offset) > CLOCK_WARN_S:
            sev = Severity.FAULT if abs(offset) > CLOCK_FAULT_S else None
            direction = "behind" if offset > 0 else "ahead"
            out.append(
                _finding(
                    "clock.offset",
                    sec,
                    "",
                    {"clock": clock},
                    severity=sev,
                    offset=f"{span(offset)} ({direction})",
                )
            )
    return out


def _tls(tls: Dict[str, Any], host: str, now: float) -> List[Finding]:
    if tls.get("ok") is False:
        return [
            _finding(
                "tls.handshake_failed",
                "network",
                host,
                {"tls": tls},
                host=host,
                why=tls.get("error"),
            )
        ]
    after = _num(tls.get("not_after"))
    if after is None:
        return []
    ev = {"tls": tls, "days_left": round((after - now) / 86400, 1)}
    if after <= now:
        return [_finding("tls.expired", "network", host, ev, host=host, when=ago(after, now))]
    if after - now < TLS_WARN_DAYS * 86400:
        return [_finding("tls.expiring", "network", host, ev, host=host, when=ago(after, now))]
    return []


def _system(data: Dict[str, Any], now: float) -> List[Finding]:
    out: List[Finding] = []
    ev: Dict[str, Any]
    sec = "system"
    for disk in _dicts(data.get("disks")):
        percent, free = _num(disk.get("percent")), _num(disk.get("free"))
        if percent is None or free is None:
            continue  # an unreadable mount (its error is in the raw data)
        mount = str(disk.get("mount"))
        ev = {"mount": mount, "free": free, "percent": percent, "total": disk.get("total")}
        words: Dict[str, Any] = {"mount": mount, "free": mb(free), "percent": f"{percent:.0f}"}
        if percent >= DISK_CRIT_PERCENT:
            out.append(_finding("disk.full", sec, mount, ev, **words))
        elif percent >= DISK_WARN_PERCENT or free < DISK_WARN_FREE:
            out.append(_finding("disk.low", sec, mount, ev, **words))
    mem = data.get("memory") or {}
    total, avail = _num(mem.get("total")), _num(mem.get("available"))
    if total and avail is not None and avail < total * MEMORY_WARN_FRACTION:
        ev = {"available": avail, "total": total, "top_by_memory": _top(data)}
        out.append(_finding("memory.low", sec, "", ev, available=mb(avail), total=mb(total)))
    return out


def _top(data: Dict[str, Any]) -> List[Any]:
    procs = data.get("processes") or {}
    top = procs.get("top_by_memory") if isinstance(procs, dict) else None
    return [{"name": p.get("name"), "pid": p.get("pid"), "rss": p.get("rss")} for p in _dicts(top)][
        :5
    ]


def _pos(data: Dict[str, Any], now: float, profile: Optional[PosProfile]) -> List[Finding]:
    out: List[Finding] = []
    ev: Dict[str, Any]
    sec = "pos"
    procs = list(_dicts(data.get("processes")))
    names = ", ".join(profile.process_names) if profile is not None else ""
    if data.get("running") is False:
        out.append(_finding("pos.not_running", sec, "", {"running": False}, names=names or "?"))
    if len(procs) > 1:
        pids = ", ".join(str(p.get("pid")) for p in procs)
        ev = {"processes": procs}
        out.append(_finding("pos.duplicate_instances", sec, "", ev, count=len(procs), pids=pids))
    services = data.get("services") or {}
    for name, state in sorted(services.items()):
        if state not in ("running", "active"):
            out.append(
                _finding(
                    "pos.service_stopped", sec, str(name), {"state": state}, name=name, state=state
                )
            )
    database = data.get("database") or {}
    if database.get("up") is False:
        what = ", ".join(f"{k}={v}" for k, v in (database.get("service") or {}).items())
        out.append(
            _finding(
                "pos.database_down", sec, "", {"database": database}, what=what or "process missing"
            )
        )
    dbfile = database.get("file")
    if isinstance(dbfile, dict):
        path = str(dbfile.get("path"))
        if not dbfile.get("ok"):
            out.append(
                _finding(
                    "pos.database_unreadable",
                    sec,
                    path,
                    {"file": dbfile},
                    path=path,
                    why=dbfile.get("error"),
                )
            )
        else:
            held = list(_dicts(dbfile.get("holders")))
            if len(held) > 1:  # two processes on one SQLite file: "database is locked" (§5 #27)
                holders = ", ".join(
                    f"{h.get('name')}({h.get('pid')})"
                    + (f" [{'; '.join(map(str, h['locks']))}]" if h.get("locks") else "")
                    for h in held
                )
                out.append(
                    _finding(
                        "pos.database_held",
                        sec,
                        path,
                        {"holders": held},
                        path=path,
                        holders=holders,
                    )
                )
    for log in _dicts(data.get("logs")):
        path = str(log.get("path"))
        if not log.get("ok"):
            out.append(
                _finding(
                    "pos.log_unreadable", sec, path, {"path": path}, path=path, why=log.get("error")
                )
            )
            continue
        recent = [str(line) for line in log.get("recent_errors") or []]
        locked = [line for line in recent if _LOCKED.search(line)]
        corrupt = [line for line in recent if _CORRUPT.search(line)]
        ev = {"path": path, "lines": (corrupt or locked or recent)[-3:]}
        if corrupt:
            out.append(_finding("pos.database_corrupt", sec, path, ev, sample=corrupt[-1]))
        if locked:
            out.append(
                _finding("pos.database_locked", sec, path, ev, count=len(locked), sample=locked[-1])
            )
        count = _num(log.get("error_count")) or 0
        if count and not locked and not corrupt:
            out.append(
                _finding(
                    "pos.log_errors",
                    sec,
                    path,
                    ev,
                    path=path,
                    count=int(count),
                    sample=recent[-1] if recent else "",
                )
            )
    for disk in _dicts(data.get("disk")):
        path = str(disk.get("path"))
        if not disk.get("ok"):
            out.append(
                _finding(
                    "pos.data_path_unreadable",
                    sec,
                    path,
                    {"path": path},
                    path=path,
                    why=disk.get("error"),
                )
            )
        elif disk.get("low"):
            free = (_num(disk.get("free_mb")) or 0) * 1024**2
            ev = {"path": path, "free_mb": disk.get("free_mb")}
            out.append(_finding("pos.data_disk_low", sec, path, ev, path=path, free=mb(free)))
    if data.get("sale_open"):
        why = data["sale_open"]
        out.append(_finding("pos.sale_open", sec, "", {"sale_open": why}, why=why))
    return out


_Evaluator = Callable[[Dict[str, Any], float], List[Finding]]
_EVALUATORS: Dict[str, _Evaluator] = {
    "printers": _printers,
    "print_queue": _print_queue,
    "serial": _serial,
    "network": _network,
    "system": _system,
}


def _section(
    name: str, section: Any, profile: Optional[PosProfile], now: float
) -> Tuple[List[Finding], bool]:
    """Findings of one section and whether its data could be read."""
    if not isinstance(section, dict):
        return [
            _finding("collector.unreadable", name, name, {}, section=name, why="not a section")
        ], False
    if not section.get("ok"):
        error = section.get("error")
        error = error if isinstance(error, dict) else {"message": str(error)}
        if name == "pos" and profile is None:
            return [_finding("pos.not_configured", name, "", {"error": error})], True
        why = f"{error.get('type', 'error')}: {error.get('message', '')}"
        return [
            _finding("collector.unreadable", name, name, {"error": error}, section=name, why=why)
        ], False
    data = section.get("data")
    if not isinstance(data, dict) or not data:
        return [
            _finding(
                "collector.unreadable", name, name, {}, section=name, why="empty or truncated reply"
            )
        ], False
    try:
        if name == "pos":
            return _pos(data, now, profile), True
        evaluator = _EVALUATORS.get(name)
        return (evaluator(data, now) if evaluator else []), True
    except (TypeError, KeyError, AttributeError, ValueError) as exc:  # garbage in the data
        return [
            _finding(
                "collector.unreadable",
                name,
                name,
                {},
                section=name,
                why=f"malformed data ({type(exc).__name__})",
            )
        ], False


def _sections(report: Mapping[str, Any]) -> Mapping[str, Any]:
    sections = report["sections"] if "sections" in report else report
    return sections if isinstance(sections, Mapping) else {}


def evaluate(report: Mapping[str, Any], profile: Optional[PosProfile], now: float) -> List[Finding]:
    """The findings of a diagnostics report, most severe first.

    Args:
        report: ``{"sections": {name: section}, "profile_error"?: str}`` (or the sections alone).
        profile: the POS profile the report was collected with, if any.
        now: the current time (epoch seconds) that ages and expiries are measured against.

    Returns:
        The findings; a section that is missing, failed or malformed gives an "unreadable" one.
    """
    findings: List[Finding] = []
    if now < PLAUSIBLE_SINCE:
        findings.append(
            _finding("clock.implausible", "system", "", {"now": now}, when=f"{now:.0f} (epoch)")
        )
    if report.get("profile_error"):
        findings.append(_finding("pos.profile_invalid", "pos", "", {}, why=report["profile_error"]))
    for name, section in _sections(report).items():
        findings.extend(_section(str(name), section, profile, now)[0])
    findings.sort(key=lambda f: -f.severity.rank)  # stable: report order within a severity
    return findings


def section_status(findings: List[Finding], readable: bool = True) -> str:
    """A section's status from its findings: ``ok``, a severity, or ``unreadable``."""
    if not readable:
        return "unreadable"
    worst = max((f.severity for f in findings), key=lambda s: s.rank, default=None)
    return "ok" if worst is None else worst.value


def annotate(report: Dict[str, Any], profile: Optional[PosProfile], now: float) -> Dict[str, Any]:
    """Add ``status`` and ``findings`` to each section of ``report`` (in place) and return it.

    The raw ``ok``/``data``/``error`` of each section stay as they were (docs/findings.md#json).
    """
    sections = report.get("sections", report)
    for name, section in list(sections.items()):
        found, readable = _section(str(name), section, profile, now)
        if not isinstance(section, dict):
            section = sections[name] = {"ok": False, "data": None}
        found.sort(key=lambda f: -f.severity.rank)
        section["status"] = section_status(found, readable)
        section["findings"] = [f.to_dict() for f in found]
    extra = []
    if now < PLAUSIBLE_SINCE or report.get("profile_error"):
        extra = [
            f.to_dict()
            for f in evaluate(
                {"sections": {}, "profile_error": report.get("profile_error")}, profile, now
            )
        ]
    if "sections" in report:
        report["schema"] = SCHEMA
        report["findings"] = extra  # report-wide findings (clock, profile); the rest per section
    return report
