"""The web console's words in Chinese (first) and English: one table, looked up by key."""

from __future__ import annotations

import re

__all__ = [
    "CHOICES",
    "PARAMS",
    "WORDS",
    "choice_words",
    "finished_detail",
    "job_error",
    "one_language",
    "param_words",
    "word",
    "word_or",
]

WORDS: dict[str, tuple[str, str]] = {
    "title": ("posassist 技术员控制台", "posassist technician console"),
    "sign_in": ("登录", "Sign in"),
    "sign_out": ("退出", "Sign out"),
    "username": ("用户名", "Username"),
    "password": ("密码", "Password"),
    "signed_in_as": ("当前用户", "Signed in as"),
    "bad_credentials": ("用户名或密码错误", "Invalid username or password"),
    "rate_limited": ("请求过于频繁, 请稍后再试", "Too many requests; try again later"),
    "fleet": ("设备", "Fleet"),
    "tickets": ("工单", "Tickets"),
    "alerts": ("告警", "Alerts"),
    "audit": ("审计日志", "Audit log"),
    "search": ("搜索门店、商户、主机名或设备号", "Search store, merchant, host or device id"),
    "filter": ("筛选", "Filter"),
    "all": ("全部", "All"),
    "online": ("在线", "Online"),
    "offline": ("离线", "Offline"),
    "problems": ("有问题", "Problems"),
    "revoked": ("已注销", "Revoked"),
    "handed_over": ("已转移", "Handed over"),
    "handed_over_at": ("转移到其他服务商", "Moved to another provider"),
    "device": ("设备", "Device"),
    "host": ("主机名", "Host"),
    "state": ("状态", "State"),
    "last_seen": ("最后在线", "Last seen"),
    "never": ("从未", "never"),
    "version": ("客户端版本", "Agent version"),
    "health": ("健康", "Health"),
    "health_ok": ("正常", "OK"),
    "health_info": ("提示", "Notice"),
    "health_warning": ("警告", "Warning"),
    "health_critical": ("严重", "Critical"),
    "health_unknown": ("未知", "Unknown"),
    "no_devices": ("没有符合条件的设备", "No devices match"),
    "no_devices_yet": (
        "还没有设备。先为门店生成登记码, 再在收银机上运行 posassist-agent enroll。",
        "No devices yet. Create an enrolment token for a store, then run posassist-agent "
        "enroll on the till.",
    ),
    "ask_an_admin": ("请管理员生成登记码。", "Ask an admin for an enrolment token."),
    "no_open_tickets": ("没有未关闭的工单", "No open tickets"),
    "show_closed_tickets": ("显示全部工单, 含已关闭的", "Show all tickets, closed ones too"),
    "show_open_tickets": ("只显示未关闭的工单", "Show open tickets only"),
    "devices_count": ("台设备", "devices"),
    "live": ("实时更新", "Live"),
    "facts": ("设备信息", "Facts"),
    "merchant": ("商户", "Merchant"),
    "store": ("门店", "Store"),
    "timezone": ("时区", "Time zone"),
    "enrolled": ("登记时间", "Enrolled"),
    "device_id": ("设备号", "Device id"),
    "printers": ("小票打印机", "Receipt printers"),
    "open_alerts": ("未解决的告警", "Open alerts"),
    "no_open_alerts": ("没有未解决的告警", "No open alerts"),
    "diagnostics": ("最近的诊断", "Latest diagnostics"),
    "diagnostics_from": ("来自工单", "from ticket"),
    "no_diagnostics": (
        "还没有诊断报告 (门店提交工单时附带)",
        "No diagnostics yet (a store's ticket carries them)",
    ),
    "no_problems": ("没有发现问题", "No problems found"),
    "cashier_step": ("收银员", "Cashier"),
    "technician_step": ("技术员", "Technician"),
    "fix_script": ("修复脚本", "Fix script"),
    "jobs": ("任务记录", "Jobs"),
    "no_jobs": ("没有任务", "No jobs"),
    "kind": ("类型", "Kind"),
    "status": ("状态", "Status"),
    "requested_by": ("发起人", "Requested by"),
    "created": ("创建", "Created"),
    "finished": ("结束", "Finished"),
    "error": ("错误", "Error"),
    "ticket_history": ("工单记录", "Tickets"),
    "no_tickets": ("没有工单", "No tickets"),
    "opened": ("开启", "Opened"),
    "severity": ("级别", "Severity"),
    "check": ("检查项", "Check"),
    "summary": ("摘要", "Summary"),
    "acknowledged": ("已确认", "Acknowledged"),
    "acknowledge": ("确认", "Acknowledge"),
    "sla_response": ("响应时限", "Response due"),
    "sla_resolve": ("解决时限", "Resolve due"),
    "breached": ("已超时", "breached"),
    "code": ("编号", "Code"),
    "category": ("类别", "Category"),
    "description": ("描述", "Description"),
    "technician": ("技术员", "Technician"),
    "verify": ("校验审计链", "Verify the chain"),
    "verify_ok": ("审计链完整", "The audit chain is intact"),
    "verify_bad": ("审计链被改动", "The audit chain was altered"),
    "actor": ("操作者", "Actor"),
    "action": ("操作", "Action"),
    "target": ("对象", "Target"),
    "outcome": ("结果", "Outcome"),
    "time": ("时间", "Time"),
    "older": ("更早", "Older"),
    "not_found": ("找不到或无权查看", "Not found, or not yours to see"),
    "back": ("返回", "Back"),
    "language": ("English", "中文"),
    "open": ("未解决", "Open"),
    "page_error": ("出错了", "Something went wrong"),
    "run_script": ("运行脚本", "Run a script"),
    "diagnose_now": ("立即诊断", "Diagnose now"),
    "restore_backup": ("恢复备份", "Restore the backup"),
    "restoring": ("恢复备份", "Restoring backup"),
    "diagnostics_now": ("诊断结果", "Diagnostics"),
    "waiting_report": ("等待设备的诊断报告…", "Waiting for the device's report…"),
    "run": ("运行", "Run"),
    "unattended": (
        "无人值守运行 (收银台无人确认; 脚本清单允许)",
        "Run unattended (nobody at the till to consent; the manifest allows it)",
    ),
    "no_scripts": ("服务器没有已发布的脚本", "No scripts are published on this relay"),
    "script": ("脚本", "Script"),
    "risk": ("风险等级", "Risk class"),
    "needs_consent": ("需要商户确认", "Needs the merchant's consent"),
    "params": ("参数", "Parameters"),
    "param_error": ("参数无效, 没有运行", "Invalid parameters; nothing ran"),
    "no_run_role": ("你的角色不能运行脚本", "Your role may not run scripts"),
    "job": ("任务", "Job"),
    "consent": ("商户确认", "Consent"),
    "consent_asked": ("等待商户确认", "waiting for the merchant"),
    "consent_granted": ("商户已同意", "approved by the merchant"),
    "consent_denied": ("商户拒绝", "denied by the merchant"),
    "output": ("输出", "Output"),
    "no_output": ("还没有输出", "No output yet"),
    "no_output_done": ("没有输出", "No output"),
    "no_reason": ("设备没有说明原因", "the till gave no reason"),
    "restored_already": ("此备份已恢复", "This backup has been restored"),
    "category_printer": ("打印机", "printer"),
    "category_cash_drawer": ("钱箱", "cash drawer"),
    "category_scanner": ("扫码枪", "scanner"),
    "category_pos_software": ("收银软件", "POS software"),
    "category_network": ("网络", "network"),
    "category_other": ("其他", "other"),
    "outcome_ok": ("成功", "ok"),
    "outcome_refused": ("被拒绝", "refused"),
    "outcome_failed": ("失败", "failed"),
    "kind_script.run": ("运行脚本", "script run"),
    "kind_diag.request": ("诊断", "diagnosis"),
    "kind_script.restore": ("恢复备份", "restore"),
    "steps": ("步骤", "Steps"),
    "running": ("运行中", "running"),
    "exit_code": ("退出码", "exit code"),
    "step_verified": ("已验证签名", "verified"),
    "step_refused": ("被设备拒绝", "refused by the device"),
    "step_backup_made": ("已备份", "backed up"),
    "step_restored": ("已恢复", "restored"),
    "step_restore_failed": ("恢复失败", "restore failed"),
    "step_started": ("已开始", "started"),
    "admin": ("管理", "Administration"),
    "enrolment_tokens": ("登记码", "Enrolment tokens"),
    "enrolment_token": ("登记码", "Enrolment token"),
    "enrolment_how": (
        "在收银机上运行 posassist-agent enroll 并扫描或粘贴此登记码; 只能使用一次。",
        "On the till, run posassist-agent enroll and scan or paste this token; it works once.",
    ),
    "shown_once": ("登记码只显示这一次。", "The token is shown this once only."),
    "valid_hours": ("有效期 (小时)", "Valid for (hours)"),
    "create_token": ("生成登记码", "Create a token"),
    "created_by": ("创建人", "Created by"),
    "no_actions_inactive": (
        "该设备已注销或已转移, 不能再诊断、运行脚本或恢复备份",
        "This till is revoked or moved to another provider: it can't be diagnosed, run or restored",
    ),
    "expires": ("过期时间", "Expires"),
    "token_id": ("登记码编号", "Token id"),
    "token_unused": ("未使用", "unused"),
    "token_used": ("已使用", "used"),
    "token_expired": ("已过期", "expired"),
    "token_revoked": ("已撤销", "revoked"),
    "revoke": ("撤销", "Revoke"),
    "revoke_device": ("注销此设备", "Revoke this device"),
    "delete_device": (
        "删除此设备 (保留作业和审计记录)",
        "Delete this device (jobs and audit kept)",
    ),
    "stores": ("门店", "Stores"),
    "name": ("名称", "Name"),
    "hours": ("营业时间", "Opening hours"),
    "always_open": ("全天营业 (每天 24 小时)", "Open around the clock, every day"),
    "weekday": ("星期", "Day"),
    "day_closed": ("休息", "Closed"),
    "opens": ("开门", "Opens"),
    "closes": ("关门 (00:00 = 午夜)", "Closes (00:00 = midnight)"),
    "closed_dates": ("休息日 (日期, 逗号分隔)", "Closed dates (comma-separated)"),
    "day_mon": ("周一", "Mon"),
    "day_tue": ("周二", "Tue"),
    "day_wed": ("周三", "Wed"),
    "day_thu": ("周四", "Thu"),
    "day_fri": ("周五", "Fri"),
    "day_sat": ("周六", "Sat"),
    "day_sun": ("周日", "Sun"),
    "save": ("保存", "Save"),
    "create": ("创建", "Create"),
    "new_store": ("新门店", "New store"),
    "new_merchant": ("新商户", "New merchant"),
    "organisation": ("组织", "Organisation"),
    "users": ("用户", "Users"),
    "role": ("角色", "Role"),
    "scope": ("范围", "Scope"),
    "scope_id": ("范围对象", "Scope node"),
    "new_user": ("新用户", "New user"),
    "disabled": ("已停用", "disabled"),
    "locked": ("已锁定", "locked out"),
    "failed_tries": ("次登录失败", "failed tries"),
    "user_delete": ("删除", "Delete"),
    "user_more": ("改名 / 重设密码", "Rename / reset password"),
    "new_username": ("新用户名", "New username"),
    "new_password": ("新密码 (至少 10 个字符)", "New password (10 characters or more)"),
    "old_password": ("当前密码", "Current password"),
    "reset_password": ("重设密码", "Reset the password"),
    "your_password": ("修改我的密码", "Change my password"),
    "change_password": ("修改密码", "Change password"),
    "account": ("我的账号", "My account"),
    "organisations": ("组织和商户", "Organisations and merchants"),
    "new_organisation": ("新组织", "New organisation"),
    "rename": ("改名", "Rename"),
    "delete": ("删除", "Delete"),
    "delete_store": ("删除此门店", "Delete this store"),
    "no_stores_yet": (
        "还没有门店: 先在下方创建商户和门店, 再生成登记码。",
        "No stores yet: create a merchant and a store below, then a token.",
    ),
    "nothing_changed": ("没有做任何更改。", "Nothing was changed."),
    "role_admin": ("管理员", "admin"),
    "role_technician": ("技术员", "technician"),
    "role_viewer": ("只读", "viewer"),
    "role_merchant": ("商户", "merchant"),
    "scope_root": ("全部", "everything"),
    "scope_organisation": ("组织", "organisation"),
    "scope_merchant": ("商户", "merchant"),
    "scope_store": ("门店", "store"),
    "active": ("正常", "active"),
    "user_disable": ("停用", "Disable"),
    "user_enable": ("启用", "Enable"),
    "user_unlock": ("解锁", "Unlock"),
    "user_revoke-tokens": ("全部退出登录", "Sign out everywhere"),
    "ticket_new": ("新工单", "new"),
    "ticket_accepted": ("已接单", "accepted"),
    "ticket_in_progress": ("处理中", "in progress"),
    "ticket_waiting_merchant": ("等待商户回复", "waiting for the merchant"),
    "ticket_reopened": ("重新打开", "reopened"),
    "ticket_resolved": ("已解决", "resolved"),
    "ticket_closed": ("已关闭", "closed"),
    "job_pending": ("等待中", "pending"),
    "job_running": ("运行中", "running"),
    "job_succeeded": ("成功", "succeeded"),
    "job_failed": ("失败", "failed"),
    "job_timed_out": ("超时", "timed out"),
    "job_unknown": ("结果未知", "outcome unknown"),
    "job_cancelled": ("已取消", "cancelled"),
    "cancel_run": ("取消运行", "Cancel the run"),
    "fact_hostname": ("主机名", "Host name"),
    "fact_os": ("操作系统", "Operating system"),
    "fact_os_release": ("系统版本", "OS release"),
    "fact_os_version": ("系统内部版本", "OS version"),
    "fact_distribution": ("发行版", "Distribution"),
    "fact_machine": ("架构", "Machine"),
    "fact_python": ("Python", "Python"),
    "fact_agent_version": ("客户端自报版本", "Agent's own version"),
    "fact_pos_profile": ("收银软件配置", "POS profile"),
    "fact_pos_name": ("收银软件", "POS application"),
    # a destructive form's confirmation step (relay/web/admin.py _confirmation)
    "confirm_question": ("确定吗? 此操作会立即生效。", "Are you sure? This takes effect at once."),
    "confirm_yes": ("确定", "Yes, do it"),
    "confirm_no": ("取消", "Cancel"),
    "confirm_device_revoked": ("注销此设备?", "Revoke this device?"),
    "confirm_device_deleted": ("删除此设备?", "Delete this device?"),
    "confirm_token_revoked": ("撤销此登记码?", "Revoke this enrolment token?"),
    "confirm_user_disable": ("停用此用户?", "Disable this user?"),
    "confirm_user_revoke-tokens": ("让此用户在所有地方退出登录?", "Sign this user out everywhere?"),
    "confirm_user_delete": ("删除此用户?", "Delete this user?"),
    "confirm_deleted": ("删除?", "Delete?"),
    # a form's result, shown after its redirect (``?done=KEY``)
    "done_org_made": ("已创建组织", "Organisation created"),
    "done_merchant_made": ("已创建商户", "Merchant created"),
    "done_store_made": ("已创建门店", "Store created"),
    "done_user_made": ("已创建用户", "User created"),
    "done_saved": ("已保存", "Saved"),
    "done_renamed": ("已改名", "Renamed"),
    "done_deleted": ("已删除", "Deleted"),
    "done_password_reset": (
        "已重设密码, 该用户已在所有地方退出登录",
        "Password reset; the user is signed out everywhere",
    ),
    "done_password_changed": (
        "你的密码已修改, 其他地方的登录已退出",
        "Your password is changed; your other sign-ins are ended",
    ),
    "done_user_disable": ("已停用用户", "User disabled"),
    "done_user_enable": ("已启用用户", "User enabled"),
    "done_user_unlock": ("已解锁用户", "User unlocked"),
    "done_user_revoke-tokens": ("该用户已在所有地方退出登录", "User signed out everywhere"),
    "done_user_delete": ("已删除用户", "User deleted"),
    "done_token_revoked": ("已撤销登记码", "Enrolment token revoked"),
    "done_device_revoked": ("设备已注销", "Device revoked"),
    "done_device_deleted": (
        "设备已删除 (保留作业和审计记录)",
        "Device deleted (jobs and audit kept)",
    ),
    "done_acknowledged": ("已确认告警", "Alert acknowledged"),
}


def word(key: str, lang: str) -> str:
    """``key`` in ``lang`` (``zh`` or ``en``); an unknown key shows as itself."""
    pair = WORDS.get(key)
    if pair is None:
        return key
    return pair[1] if lang == "en" else pair[0]


#: The agent's fixed end sentences (agent/scripts/service.py, results.py), English only.
_RESTORED = re.compile(r"restored (\d+), removed (\d+), unchanged (\d+)")
_AGENT_SENTENCES = {
    "interrupted: the agent stopped while the script ran": "中断: 脚本运行时收银助手停止了",
}


def finished_detail(detail: str, lang: str) -> str:
    """A run's end ``detail`` from the till in the page's language: the agent's fixed English
    sentences (a restore's counts, an interrupted run) get their Chinese; anything else (the
    agent's own words, already bilingual where it has them) is shown as sent."""
    if lang == "en":
        return detail
    counts = _RESTORED.fullmatch(detail)
    if counts is not None:
        restored, removed, unchanged = counts.groups()
        return f"已恢复 {restored} 个文件, 删除 {removed} 个, {unchanged} 个未变"
    return _AGENT_SENTENCES.get(detail, detail)


_STATUS_ERROR = re.compile(r"([a-z_]+):\s*(.*)", re.S)


def job_error(error: str | None, lang: str) -> str:
    """A job's stored error (``status: detail``, relay/handlers/jobs.py) in the page's
    language: the status as a word, the detail as the till sent it, or "gave no reason" when it
    sent none (never a bare ``failed:``)."""
    if not error:
        return ""
    match = _STATUS_ERROR.fullmatch(error.strip())
    if match is None or f"job_{match.group(1)}" not in WORDS:
        return error
    status, detail = match.groups()
    detail = finished_detail(detail, lang) if detail else word("no_reason", lang)
    return f"{word('job_' + status, lang)}: {detail}"


#: A script parameter's label and a hint of what to type, by the name the catalog's manifests
#: give it (they carry no titles of their own): zh label, en label, zh hint, en hint. A name
#: not here shows as itself.
PARAMS: dict[str, tuple[str, str, str, str]] = {
    "port": ("串口", "Serial port", "例如 COM3 或 /dev/ttyUSB0", "e.g. COM3 or /dev/ttyUSB0"),
    "address": (
        "网络地址",
        "Network address",
        "IP:端口, 例如 192.168.1.50:9100; 串口和网络地址填一个",
        "IP:port, e.g. 192.168.1.50:9100; fill in the serial port or this",
    ),
    "host": ("打印机地址", "Printer address", "IP 或主机名, 例如 192.168.1.50", "IP or host name"),
    "tcp_port": ("网络端口", "TCP port", "通常为 9100", "usually 9100"),
    "serial": ("串口", "Serial port", "例如 COM3 或 /dev/ttyUSB0", "e.g. COM3 or /dev/ttyUSB0"),
    "baud": ("波特率", "Baud rate", "", ""),
    "action": ("操作", "Action", "", ""),
    "pin": ("钱箱针脚", "Drawer pin", "", ""),
    "pulse_ms": ("脉冲 (毫秒)", "Pulse (ms)", "", ""),
    "folder": ("文件夹", "Folder", "", ""),
    "days": ("天数", "Days", "早于此天数的文件", "files older than this"),
    "max_files": ("最多文件数", "Most files", "", ""),
    "dry_run": ("只检查, 不删除", "Dry run: list, delete nothing", "", ""),
    "source": ("日志来源", "Log source", "", ""),
    "max_kb": ("最大大小 (KB)", "Largest size (KB)", "", ""),
    "queue": ("打印队列", "Print queue", "", ""),
    "cancel_jobs": ("取消队列中的打印任务", "Cancel the queued jobs", "", ""),
    "check_host": ("检查的主机名", "Host name to check", "", ""),
    "kind": ("类型", "Kind", "", ""),
    "usb_vendor": ("USB 厂商号", "USB vendor id", "4 位十六进制, 例如 04b8", "4 hex digits"),
    "usb_product": ("USB 产品号", "USB product id", "4 位十六进制", "4 hex digits"),
    "mode": ("方式", "Mode", "", ""),
    "printer": ("打印机名称", "Printer name", "", ""),
    "instance_id": ("设备实例 ID", "Device instance id", "", ""),
    "device": ("设备", "Device", "例如 /dev/ttyUSB0", "e.g. /dev/ttyUSB0"),
    "wait": ("等待 (秒)", "Wait (s)", "", ""),
    "unit": ("服务", "Service", "", ""),
    "max_step": ("最大调整 (秒)", "Largest step (s)", "", ""),
    "zone": ("时区", "Time zone", "例如 Asia/Shanghai", "e.g. Asia/Shanghai"),
    "service": ("服务", "Service", "", ""),
    "process_id": ("进程号", "Process id", "", ""),
}

#: Enum values of the catalog's parameters in words (zh, en); others show as themselves.
CHOICES: dict[str, tuple[str, str]] = {
    "status": ("查询状态", "ask its status"),
    "receipt": ("打印测试小票", "print a test receipt"),
    "drawer": ("打开钱箱", "open the drawer"),
    "clear-buffers": ("清空缓冲区", "clear its buffers"),
    "restart-line": ("重启连接", "restart the line"),
    "pos": ("收银软件", "POS application"),
    "cups": ("CUPS 打印", "CUPS printing"),
}


def param_words(name: str, lang: str) -> tuple[str, str]:
    """A script parameter's (label, hint) in ``lang``; an unknown name is its own label."""
    zh, en, zh_hint, en_hint = PARAMS.get(name, (name, name, "", ""))
    return (en, en_hint) if lang == "en" else (zh, zh_hint)


def choice_words(value: str, lang: str) -> str:
    pair = CHOICES.get(value)
    return value if pair is None else (pair[1] if lang == "en" else pair[0])


_CJK = re.compile(r"[\u3000-\u9fff\uff00-\uffef]")


def one_language(text: str, lang: str) -> str:
    """A bilingual ``中文 / English`` text (an alert's summary, as the relay's checks write it)
    in the page's language only; text not made that way is shown whole."""
    zh, sep, en = text.partition(" / ")
    if not sep or not _CJK.search(zh) or _CJK.search(en):
        return text
    return en if lang == "en" else zh


def word_or(prefix: str, value: str, lang: str) -> str:
    """``prefix + value`` in words if the table has it, else ``value`` as it is."""
    key = prefix + value
    return word(key, lang) if key in WORDS else value
