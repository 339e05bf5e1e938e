"""The words of every finding code (docs/findings.md): severity, zh-CN and English title and
detail, next steps for the cashier and the technician, and the catalog script that fixes it.
"""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

__all__ = ["ADVICE", "CATALOG", "THIS_PLATFORM", "Advice", "Severity", "script_for"]

#: The platform this process runs on, in the catalog manifests' words.
THIS_PLATFORM = "windows" if sys.platform == "win32" else "linux"


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


#: Each catalog script's platforms and risk class, as its manifest says (catalog/*/manifest.json;
#: tests/catalog/test_remediations.py keeps them equal), so a finding never advises a script
#: the till cannot run.
CATALOG: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "clean-temp-folders": (("linux", "windows"), "A"),
    "collect-log-bundle": (("linux", "windows"), "A"),
    "cups-clear-queue": (("linux",), "B"),
    "cups-enable-queue": (("linux",), "A"),
    "drawer-kick-test": (("linux", "windows"), "C"),
    "fix-printer-port": (("linux", "windows"), "C"),
    "flush-dns": (("linux", "windows"), "A"),
    "modemmanager-ignore": (("linux",), "B"),
    "printer-recover": (("linux", "windows"), "B"),
    "printer-resume-windows": (("windows",), "B"),
    "printer-status-test": (("linux", "windows"), "B"),
    "proxy-reset-windows": (("windows",), "B"),
    "reset-usb-serial": (("linux",), "B"),
    "reset-usb-serial-windows": (("windows",), "B"),
    "restart-pos-service": (("linux",), "B"),
    "restart-print-service": (("linux",), "B"),
    "resync-clock": (("linux", "windows"), "A"),
    "set-time-zone": (("linux", "windows"), "B"),
    "spooler-reset-windows": (("windows",), "B"),
    "start-database-service": (("windows",), "A"),
    "stop-duplicate-pos": (("linux", "windows"), "B"),
    "usb-power-always-on": (("linux",), "B"),
    "usb-suspend-off-windows": (("windows",), "B"),
}

#: The script that does on a platform what an advised one does on the other, where one exists.
EQUIVALENT: Dict[str, Dict[str, str]] = {
    "windows": {
        "reset-usb-serial": "reset-usb-serial-windows",
        "restart-print-service": "spooler-reset-windows",
        "cups-clear-queue": "spooler-reset-windows",
        "cups-enable-queue": "printer-resume-windows",
        "usb-power-always-on": "usb-suspend-off-windows",
    },
    "linux": {
        "reset-usb-serial-windows": "reset-usb-serial",
        "printer-resume-windows": "cups-enable-queue",
        "usb-suspend-off-windows": "usb-power-always-on",
    },
}


def script_for(advice: Advice, platform: str = THIS_PLATFORM) -> Optional[Tuple[str, str]]:
    """The catalog script (id, risk) that fixes ``advice``'s finding on ``platform``: the advised
    one when it runs there, else its equivalent there, else None (the technician's words say
    what to do by hand)."""
    for script in (advice.script, EQUIVALENT.get(platform, {}).get(advice.script, "")):
        if script and platform in CATALOG.get(script, ((), ""))[0]:
            return script, CATALOG[script][1]
    return None


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
    "printer.not_configured": Advice(
        _I, "未配置小票打印机", "No receipt printer configured",
        "settings.json 中没有打印机, 因此未检查打印机",
        "settings.json names no printer: none was checked",
        "无需操作。", "Nothing to do.",
        "运行 posassist-agent configure 发现打印机并写入 settings.json (docs/agent.md)",
        "Run posassist-agent configure to discover printers and write settings.json "
        "(docs/agent.md)",
        ref="—",
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
        "Printer {name} is offline", "请检查打印机指示灯、上盖和纸卷; 打印机恢复前钱箱也打不开。",
        "Check the printer's lights, cover and paper; the cash drawer won't open until it is back.",
        "查看脱机原因 (DLE EOT 2/3); 钱箱指令 (ESC p) 会排队到打印机恢复",
        "Read the offline cause (DLE EOT 2/3); a drawer kick (ESC p) is queued until it is back",
        ref="5.1#5",
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
    "printer.usb_wedged": Advice(
        _F, "USB 打印机无响应", "USB printer enumerated but silent",
        "打印机 {name} 在 {device} (USB {usb}) 上, 但不回应状态查询",
        "Printer {name} is present on {device} (USB {usb}) but does not answer status requests",
        "请关闭打印机电源再打开。", "Switch the printer off and on again.",
        "远程软件重插该 USB 串口 (Linux 解绑/重新绑定驱动); 无效则检查电源和线缆",
        "Re-plug the USB-serial port in software (Linux: driver unbind/bind); if that fails, "
        "check power and cable",
        script="reset-usb-serial", risk="B", ref="5.2#14",
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
    "queue.spooler_stopped": Advice(
        _F, "打印服务未运行", "Print spooler not running",
        "Windows 打印服务 (Spooler) 的状态为 {state}", "The Windows Print Spooler is {state}",
        "小票打印不出来, 请联系技术支持。", "Receipts cannot print; call support.",
        "重启打印服务并把卡住的文件移到隔离目录 (队列里可能有未打印的单据, 先确认)",
        "Restart the spooler, moving stuck spool files to quarantine (the queue may hold "
        "unprinted tickets: confirm first)",
        script="spooler-reset-windows", risk="B", ref="5.1#1",
    ),
    "queue.spool_files_stuck": Advice(
        _F, "打印缓存文件卡住", "Spool files stuck",
        "打印缓存目录里有 {count} 个文件, 最早的已有 {age}",
        "{count} file(s) in the spool folder, the oldest {age} old",
        "小票可能打印不出来, 请联系技术支持。", "Receipts may not print; call support.",
        "停止打印服务, 把缓存文件移到隔离目录 (不要删除), 再启动",
        "Stop the spooler, move the spool files to quarantine (never delete), start it again",
        script="spooler-reset-windows", risk="B", ref="5.1#1",
    ),
    "queue.cups_stopped": Advice(
        _F, "打印服务未运行", "CUPS not running", "CUPS 打印服务没有运行",
        "The CUPS scheduler is not running", "小票打印不出来, 请联系技术支持。",
        "Receipts cannot print; call support.", "启动 CUPS (systemctl start cups)",
        "Start CUPS (systemctl start cups)", script="restart-print-service",
        risk="B", ref="5.1#1",
    ),
    "queue.no_spooler": Advice(
        _I, "本机没有打印队列服务", "No print spooler on this till",
        "未安装 CUPS (找不到 lpstat): 打印机直接连接 (网口或串口) 时属正常",
        "CUPS is not installed (no lpstat): normal when the printers are reached directly "
        "(network or serial)", "无需操作。", "Nothing to do.",
        "若收银软件通过打印队列打印, 请安装 CUPS",
        "If the POS prints through a queue, install CUPS", ref="5.1#1",
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
        "在打印机设置中取消脱机使用", "Untick Use Printer Offline",
        script="printer-resume-windows", risk="B", ref="5.1#3",
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
    "peripheral.skipped_sale_open": Advice(
        _I, "交易中, 未检测设备", "Sale open: device not checked",
        "正在交易 ({why}), 未检测 {name}", "A sale is open ({why}); {name} was not checked",
        "无需操作。", "Nothing to do.", "交易结束后再检测", "Check again after the sale", ref="§7",
    ),
    "peripheral.port_held": Advice(
        _I, "设备端口被占用, 未检测", "Device port in use: not checked",
        "{name} 的端口 {target} 正被其他程序使用, 未监听",
        "The port {target} of {name} is in use by another program; not listened to", "无需操作。",
        "Nothing to do.", "关闭收银软件后再检测 (非营业时间)",
        "Check again with the POS closed (outside opening hours)", ref="5.1#9",
    ),
    "peripheral.unreachable": Advice(
        _F, "设备端口无法打开", "Device port cannot be opened",
        "{name} 的端口 {target} 无法打开: {why}",
        "The port {target} of {name} cannot be opened: {why}", "请检查设备电源和连接线。",
        "Check the device's power and cable.", "核对端口名 (USB 串口按 VID:PID:序列号)",
        "Check the port name (USB-serial by VID:PID:serial)", ref="5.2#17",
    ),
    "scale.no_data": Advice(
        _F, "电子秤没有数据", "Scale sends no data", "{name} 在 {seconds} 秒内没有发送任何数据",
        "{name} sent nothing in {seconds} s", "请检查电子秤是否开机、连接线是否插好。",
        "Check the scale is on and its cable is in.",
        "核对波特率/校验位 (7E1 或 8N1) 与收银软件配置; 切勿远程归零或去皮",
        "Check baud and parity (7E1 vs 8N1) against the POS config; never zero or tare remotely",
        ref="5.2#17",
    ),
    "scale.unreadable": Advice(
        _F, "电子秤数据无法识别", "Scale data unreadable",
        "{name} 发送了 {bytes} 字节, 但没有可识别的 {protocol} 数据帧",
        "{name} sent {bytes} bytes but no {protocol} frame could be read", "请联系技术支持。",
        "Call support.", "核对波特率/校验位和协议设置",
        "Check baud rate, parity and the protocol setting", ref="5.2#17",
    ),
    "scale.bad_checksum": Advice(
        _W, "电子秤数据校验错误", "Scale frames fail their checksum",
        "{name}: {bad} 帧校验错误, {good} 帧正常",
        "{name}: {bad} frame(s) failed the checksum, {good} passed", "请联系技术支持。",
        "Call support.", "检查连接线和干扰; 核对校验位设置",
        "Check the cable and interference; check the parity setting", ref="5.2#17",
    ),
    "scale.motion_stuck": Advice(
        _W, "电子秤一直不稳定", "Scale never settles", "{name} 的 {frames} 帧全部显示 \"不稳定\"",
        "All {frames} frames from {name} show motion", "请确认秤盘上没有东西碰到、秤放平稳。",
        "Make sure nothing touches the pan and the scale stands level.",
        "检查秤的放置和振动; 仍不稳定则报修",
        "Check placement and vibration; if it persists, open a repair ticket", ref="5.2#17",
    ),
    "scale.overload": Advice(
        _W, "电子秤超载或超出范围", "Scale over range", "{name} 报告超出量程",
        "{name} reports a weight out of range", "请取下秤盘上的物品。",
        "Take the items off the pan.", "确认秤盘清空后再检测", "Check again with the pan empty",
        ref="5.2#17",
    ),
    "scanner.silent": Advice(
        _F, "扫码枪没有数据", "Scanner sends nothing",
        "{name} 在 {seconds} 秒的测试时间内没有发送数据",
        "{name} sent nothing during the {seconds} s test window",
        "请再扫一次测试条码; 如果扫码枪会响但收银软件没反应, 请联系技术支持。",
        "Scan the test barcode again; if it beeps but the POS shows nothing, call support.",
        "检查后缀 (CR) 和接口模式 (HID 键盘模式不是串口); 不要改写扫码枪配置",
        "Check the suffix (CR) and interface mode (HID keyboard mode is not serial); don't "
        "rewrite its configuration",
        ref="5.2#16",
    ),
    "serial.prober_interference": Advice(
        _W, "系统服务在探测串口设备", "A system service probes the serial device",
        "{probers} 打开过 {tty} ({count} 次): 打印机可能打出乱码, 电子秤可能卡住",
        "{probers} opened {tty} ({count} time(s)): a printer may print junk, a scale may stall",
        "如果打印乱码或电子秤卡住, 请联系技术支持。",
        "If receipts print junk or the scale stalls, call support.",
        "用 udev 规则 ENV{ID_MM_DEVICE_IGNORE}=\"1\" 排除该 VID:PID, 或停用 ModemManager",
        "Exclude the VID:PID with a udev rule ENV{ID_MM_DEVICE_IGNORE}=\"1\", or disable "
        "ModemManager",
        script="modemmanager-ignore", risk="B", ref="5.2#15",
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
    "host.time_zone_wrong": Advice(
        _F, "时区设置错误", "Wrong time zone", "本机时区为 {actual}, 门店应为 {expected}",
        "The till's time zone is {actual}; the store's is {expected}",
        "小票和日结报表上的时间可能不对, 请联系技术支持。",
        "Times on receipts and Z-reports may be wrong; call support.",
        "改正时区 (tzutil /s 或 timedatectl set-timezone), 营业结束后进行",
        "Set the time zone (tzutil /s or timedatectl set-timezone), after closing",
        script="set-time-zone", risk="B", ref="5.3#20",
    ),
    "host.usb_disconnects": Advice(
        _W, "USB 设备频繁断开", "USB device keeps disconnecting",
        "USB 端口 {port} 在 24 小时内断开了 {count} 次",
        "USB port {port} disconnected {count} times in 24 h",
        "请检查 USB 线是否插紧, 尽量不用 USB 集线器。",
        "Check the USB cable is firmly in; avoid USB hubs.",
        "关闭 USB 选择性暂停 (autosuspend); 更换线缆或端口",
        "Turn off USB selective suspend (autosuspend); change the cable or port",
        script="usb-power-always-on", risk="B", ref="5.2#13",
    ),
    "host.winhttp_proxy": Advice(
        _W, "系统设置了 WinHTTP 代理", "WinHTTP proxy is set",
        "WinHTTP 使用代理 {server}: 只有收银软件的 HTTPS 可能失败",
        "WinHTTP goes through the proxy {server}: only the POS's HTTPS may fail",
        "如果只有收银软件连不上网, 请联系技术支持。",
        "If only the POS cannot get online, call support.",
        "确认代理是否应存在; 否则 netsh winhttp reset proxy",
        "Check the proxy is meant to be there; else netsh winhttp reset proxy",
        script="proxy-reset-windows", risk="B", ref="5.3#24",
    ),
    "host.winhttp_no_tls12": Advice(
        _F, "系统默认未启用 TLS 1.2", "TLS 1.2 not enabled for WinHTTP",
        "Windows 7 的 WinHTTP 默认不用 TLS 1.2 (DefaultSecureProtocols = {value})",
        "Windows 7's WinHTTP does not default to TLS 1.2 (DefaultSecureProtocols = {value})",
        "支付网关停用旧协议后刷卡会失败, 请联系技术支持。",
        "Card payments fail once the gateway drops old TLS; call support.",
        "安装 KB3140245 并设置 DefaultSecureProtocols = 0xA00 (变更管理)",
        "Install KB3140245 and set DefaultSecureProtocols = 0xA00 (change control)", ref="5.3#23",
    ),
    "host.no_trust_root": Advice(
        _W, "本机不能运行维修脚本: 没有脚本库信任根", "This till can run no script: no trust root",
        "登记时没有提供脚本库根哈希, 技术人员的每个脚本都会被拒绝",
        "Enrolled without the script repository's root hash: every script run is refused",
        "远程维修脚本暂时不能用, 请联系技术支持。",
        "Remote fixes by script are not available yet; call support.",
        "向审批人索取根哈希 (posassist-scripts root-hash), 在本机运行 posassist-agent "
        "trust-root --data <数据目录> --root-hash <哈希>; 无需重新登记 (docs/scripts.md)",
        "Get the root hash from the approvers (posassist-scripts root-hash), then on the till "
        "posassist-agent trust-root --data <DIR> --root-hash <HASH>; no new enrolment "
        "(docs/scripts.md)",
    ),
    "host.device_driver_failed": Advice(
        _F, "设备驱动失败", "Device driver failed", "{name}: 问题代码 {problem}",
        "{name}: problem code {problem}", "请联系技术支持。", "Call support.",
        "更换 USB 串口转换器 (FTDI 或正品 PL2303) 或固定旧版驱动; CH340 需安装驱动",
        "Replace the USB-serial adapter (FTDI or genuine PL2303) or pin an older driver; CH340 "
        "needs its driver",
        ref="5.2#12",
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
    "system.update_or_av_busy": Advice(
        _W, "杀毒或系统更新占用 CPU", "Antivirus or Windows Update hogging the CPU",
        "{name} (进程 {pid}) 平均占用 {share}% 的 CPU",
        "{name} (pid {pid}) averages {share}% of a CPU", "高峰时段收银可能变慢。",
        "The POS may lag at peak hours.", "把扫描和更新安排在营业时间外; 为收银目录申请杀毒排除",
        "Schedule scans and updates outside opening hours; request AV exclusions for the POS "
        "folders",
        ref="5.4#31",
    ),
    "memory.low": Advice(
        _W, "内存不足", "Memory low", "可用内存仅 {available} (共 {total})",
        "Only {available} of {total} memory available", "收银软件可能变慢。",
        "The POS may be slow.", "找出占用内存的程序; 营业结束后重启收银软件",
        "Find what uses memory; restart the POS after closing", ref="5.4#30",
    ),
    "system.cpu_sustained": Advice(
        _W, "CPU 持续满载", "CPU busy for a long time",
        "CPU 占用在 {span} 内一直不低于 {percent}% (最高进程: {top})",
        "The CPU stayed at or above {percent}% for {span} (top process: {top})",
        "收银可能变慢; 请关闭不用的程序。", "The POS may lag; close programs you don't need.",
        "查看最忙的进程; 把扫描和更新安排在营业时间外",
        "Look at the busiest process; schedule scans and updates outside opening hours",
        ref="5.4#31",
    ),
    "pos.restarting": Advice(
        _F, "收银软件反复重启", "POS keeps restarting",
        "{names} 在一小时内重启了 {count} 次", "{names} restarted {count} time(s) within an hour",
        "如果收银软件反复退出, 请联系技术支持。", "If the POS keeps closing, call support.",
        "查看收银日志和系统事件日志中的崩溃记录; 检查数据库和磁盘",
        "Read the POS log and the system event log for crashes; check its database and disk",
        ref="5.4#27",
    ),
    "pos.memory_growing": Advice(
        _W, "收银软件内存持续增长", "POS memory keeps growing",
        "{name} (进程 {pid}) 的内存在 {span} 内从 {first} 增长到 {last}",
        "{name} (pid {pid}) grew from {first} to {last} over {span}",
        "收银软件可能越来越慢; 营业结束后请重启收银软件。",
        "The POS may get slower; restart it after closing.",
        "营业结束后计划重启收银软件 (绝不在营业中); 把内存记录交给软件厂商",
        "Schedule a POS restart after closing (never mid-shift); send the samples to the vendor",
        script="restart-pos-service", risk="B", ref="5.4#30",
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
        "Stop the newer instance (never during a sale)", script="stop-duplicate-pos",
        risk="B", ref="5.4#27",
    ),
    "pos.database_locked": Advice(
        _F, "数据库被锁定", "POS database locked", "日志中出现 {count} 次数据库锁定 ({sample})",
        "The log shows the database locked {count} time(s) ({sample})",
        "保存失败时请不要重复操作, 联系技术支持。", "If saving fails, don't retry; call support.",
        "找出占用数据库的进程; 切勿删除 -wal/-shm/-journal 文件",
        "Find who holds the database; never delete -wal/-shm/-journal files", ref="5.4#27",
    ),
    "pos.database_near_cap": Advice(
        _W, "数据库接近容量上限", "POS database near its size cap",
        "{path} 已有 {size}, 上限 {cap}", "{path} holds {size} of its {cap} cap",
        "请联系技术支持, 数据库满后将无法保存销售。",
        "Call support: once full, sales cannot be saved.",
        "由技术员归档旧数据 (SQL Server Express 每库 10 GB)",
        "Archive old data (a technician; SQL Server Express caps each database at 10 GB)",
        ref="5.4#29",
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
        _C, "数据库损坏", "POS database corrupt", "数据库可能已损坏 ({sample})",
        "The database looks corrupt ({sample})", "请停止收银并联系技术支持。",
        "Stop selling and call support.", "停止收银软件后复制数据库检查; 从备份恢复",
        "Check a copy with the POS stopped; restore from backup", ref="5.4#28",
    ),
    "pos.database_down": Advice(
        _F, "数据库服务未运行", "POS database down", "数据库服务或进程未运行 ({what})",
        "The database service or process is not running ({what})", "请联系技术支持。",
        "Call support.", "启动数据库服务; 检查数据文件是否接近 10 GB 上限",
        "Start the database service; check the data file against the 10 GB cap",
        script="start-database-service", risk="A", ref="5.4#29",
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
