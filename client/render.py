"""Render a diagnostics report as text: findings first (what is wrong, what to do), then each
section's raw readings in human units. The one renderer, used by the offline report and the console.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone, tzinfo
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from posassist.client.units import ago, mb, span
from posassist.protocol.text import printable

__all__ = [
    "CONSENT_WORDS",
    "DAYS",
    "HEADINGS",
    "STATUS",
    "audit_detail",
    "audit_target",
    "consent_line",
    "device_label",
    "render_findings",
    "render_report",
    "result_line",
    "weekly_hours",
    "when",
]

HEADINGS: Dict[str, str] = {
    "system": "系统 / System",
    "network": "网络 / Network",
    "serial": "串口与USB设备 / Serial and USB devices",
    "printers": "小票打印机 / Receipt printers",
    "pos": "收银软件 / POS application",
    "print_queue": "打印队列 / Print queue",
    "host": "主机设置 / Host settings",
    "scale": "电子秤 / Scales",
    "scanner": "扫码枪 / Scanners",
}


#: A section's status (from its findings) as shown in its heading.
STATUS: Dict[str, str] = {
    "ok": "OK 正常",
    "info": "INFO 提示",
    "warning": "WARNING 警告",
    "fault": "FAULT 故障",
    "critical": "CRITICAL 严重",
    "unreadable": "UNREADABLE 无法读取",
}
_SEVERITY_RANK = {"critical": 4, "fault": 3, "warning": 2, "info": 1}


def _mb(n: Any) -> str:
    return mb(n)


def when(epoch: Any, tz: Optional[tzinfo] = None, now: Optional[float] = None) -> str:
    """An epoch time as ``2026-12-05 15:04 (3 min ago)`` in ``tz`` (the store's; local if None)."""
    if isinstance(epoch, bool) or not isinstance(epoch, (int, float)):
        return "?"
    try:
        moment = datetime.fromtimestamp(epoch, tz or timezone.utc)
    except (OverflowError, OSError, ValueError):
        return "?"
    if tz is None:
        moment = moment.astimezone()
    text = moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return f"{text} ({ago(epoch, now)})" if now is not None else text


def _s(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _map(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a map, else an empty one: peer data of the wrong shape shows as blank."""
    return value if isinstance(value, Mapping) else {}


def render_findings(findings: Iterable[Any], script_words: bool = True) -> List[str]:
    """Findings (``Finding.to_dict()`` maps), most severe first, as indented lines.

    Each: severity and title in both languages, the detail, the next step for the cashier and for
    the technician, and the catalog script that fixes it with its risk class.
    """
    rows = [f for f in findings if isinstance(f, Mapping)]
    rows.sort(key=lambda f: -_SEVERITY_RANK.get(str(f.get("severity")), 0))
    if not rows:
        return ["  没有发现问题 / No problems found"]
    out: List[str] = []
    for f in rows:
        title = _map(f.get("title"))
        detail = _map(f.get("detail"))
        cashier = _map(f.get("cashier"))
        tech = _map(f.get("technician"))
        mark = STATUS.get(str(f.get("severity")), _s(f.get("severity")).upper())
        subject = f" [{_s(f['subject'])}]" if f.get("subject") else ""
        head = f"{_s(title.get('zh'))} / {_s(title.get('en'))}{subject}"
        out.append(f"  [{mark}] {head}  ({_s(f.get('code'))})")
        out.append(f"      {_s(detail.get('zh'))}")
        out.append(f"      {_s(detail.get('en'))}")
        out.append(f"      收银员 / cashier: {_s(cashier.get('zh'))} / {_s(cashier.get('en'))}")
        out.append(f"      技术员 / technician: {_s(tech.get('zh'))} / {_s(tech.get('en'))}")
        script = f.get("script")
        if script_words and isinstance(script, Mapping) and script.get("id"):
            fix = (
                f"{_s(script.get('id'))} (risk class {_s(script.get('risk'))}; version: "
                "posassist scripts list; parameters: docs/scripts.md)"
            )
            out.append(f"      修复脚本 / fix: {fix}")
    return out


def all_findings(report: Mapping[str, Any]) -> List[Any]:
    """Every finding of an annotated report: report-wide ones, then each section's."""
    top = report.get("findings")
    found = list(top) if isinstance(top, (list, tuple)) else []
    sections = report.get("sections", report)
    for section in sections.values() if isinstance(sections, Mapping) else ():
        if isinstance(section, Mapping):
            more = section.get("findings")
            found.extend(more if isinstance(more, (list, tuple)) else [])
    return found


def _lines(
    name: str, data: Dict[str, Any], now: Optional[float], tz: Optional[tzinfo]
) -> List[str]:
    out: List[str] = []
    if name == "system":
        os_info = data.get("os", {})
        out.append(
            f"OS: {os_info.get('distribution') or os_info.get('system')} "
            f"{os_info.get('release')} ({os_info.get('machine')}, {os_info.get('bits')}-bit)"
        )
        out.append(f"uptime 运行时间: {data.get('uptime_s', 0) / 3600:.1f} h")
        if data.get("boot_time"):
            out.append(f"booted 开机: {when(data['boot_time'], tz, now)}")
        mem = data.get("memory", {})
        out.append(f"memory 内存: {_mb(mem.get('available'))} free of {_mb(mem.get('total'))}")
        for disk in data.get("disks", []):
            out.append(
                f"disk 磁盘 {disk.get('mount')}: {_mb(disk.get('free'))} free "
                f"({disk.get('percent')}% used)"
            )
        procs = data.get("processes", {})
        top = ", ".join(
            f"{p.get('name')}({_mb(p.get('rss'))})" for p in procs.get("top_by_memory", [])[:5]
        )
        out.append(f"processes 进程: {procs.get('count')}; top: {top}")
    elif name == "network":
        for nic in data.get("interfaces", []):
            if nic.get("loopback"):
                continue
            addrs = ", ".join(a["address"] for a in nic.get("addresses", []))
            flag = " APIPA(no DHCP 未获取地址)" if nic.get("apipa") else ""
            out.append(f"{nic.get('name')}: {'up' if nic.get('up') else 'DOWN 断开'} {addrs}{flag}")
        relay = data.get("relay")
        if relay:
            dns, tcp = relay.get("dns", {}), relay.get("tcp")
            dns_text = "ok" if dns.get("ok") else f"FAILED {dns.get('error')}"
            if tcp is None:
                tcp_text = "-"
            elif tcp.get("ok"):
                tcp_text = f"{tcp.get('connect_ms')} ms"
            else:
                tcp_text = f"FAILED {tcp.get('error')}"
            out.append(
                f"relay 服务器 {relay.get('host')}:{relay.get('port')}: "
                f"DNS {dns_text}, TCP {tcp_text}"
            )
            tls = relay.get("tls")
            if isinstance(tls, dict) and tls.get("ok"):
                out.append(
                    f"TLS {tls.get('version')} certificate 证书 expires 到期: "
                    f"{when(tls.get('not_after'), tz, now)}"
                )
            elif isinstance(tls, dict):
                out.append(f"TLS FAILED 失败: {tls.get('error')}")
        clock = data.get("clock")
        if isinstance(clock, dict):
            out.append(
                f"clock offset vs relay 时钟偏差: {clock.get('offset_s')} s "
                f"(from {clock.get('samples')} heartbeat(s))"
            )
    elif name == "serial":
        for port in data.get("ports", []):
            known = port.get("known") or {}
            held = ", ".join(f"{h['name']}({h['pid']})" for h in port.get("held_by", []))
            out.append(
                f"{port.get('device')} {port.get('usb_id') or ''} "
                f"{known.get('vendor', '')} {known.get('product', '')}"
                + (f" held by 占用: {held}" if held else "")
            )
        if not data.get("ports"):
            out.append("no serial ports 没有串口")
    elif name == "printers":
        for p in data.get("printers", []):
            problems = ", ".join(p.get("problems", [])) or p.get("detail", "")
            out.append(
                f"{p.get('name')} [{p.get('target')}]: {p.get('outcome')} {problems}"
                + (" (cached 缓存)" if p.get("cached") else "")
            )
        if data.get("note"):
            out.append(data["note"])
    elif name == "pos":
        out.append(f"profile 配置: {data.get('display_name')}")
        running = human_value("", data.get("running"), now, tz)
        out.append(f"running 运行中: {running} ({data.get('instances')} instance(s))")
        out.append(f"sale open 正在交易: {data.get('sale_open') or 'no 否'}")
        for proc in data.get("processes") or []:
            history = proc.get("rss_history") or []
            trend = f" ({len(history)} samples 次采样)" if len(history) > 1 else ""
            who = f"{proc.get('name')} ({proc.get('pid')})"
            out.append(f"process 进程 {who}: {_mb(proc.get('rss'))}{trend}")
        dbfile = (data.get("database") or {}).get("file")
        if isinstance(dbfile, dict):
            if dbfile.get("ok"):
                held = ", ".join(
                    f"{h.get('name')}({h.get('pid')})" for h in dbfile.get("holders") or []
                )
                out.append(
                    f"database 数据库 {dbfile.get('path')}: {_mb(dbfile.get('size'))}"
                    + (f", held by 占用: {held}" if held else "")
                )
            else:
                out.append(f"database 数据库 {dbfile.get('path')}: {dbfile.get('error')}")
        for log in data.get("logs", []):
            if log.get("ok"):
                out.append(f"log 日志 {log['path']}: {log['error_count']} error line(s)")
                out.extend("    " + line for line in log.get("recent_errors", [])[-5:])
            else:
                out.append(f"log 日志 {log['path']}: {log.get('error')}")
        for disk in data.get("disk", []):
            if disk.get("ok"):
                low = " LOW 空间不足" if disk.get("low") else ""
                free = _mb(disk["free_mb"] * 1048576)
                out.append(f"data 数据 {disk['path']}: {free} free{low}")
    elif name == "print_queue":
        for p in data.get("printers", []):
            out.append(f"{p.get('name')}: {p.get('state')} {'; '.join(p.get('reasons', []))}")
        jobs = data.get("jobs", [])
        out.append(f"jobs 任务: {len(jobs)}")
        for job in jobs[:10]:
            at = job.get("submitted_at")
            submitted = when(at, tz, now) if at is not None else job.get("submitted")
            out.append(f"    {job.get('id')} {job.get('status') or ''} submitted {submitted}")
    elif name == "host":
        zone = data.get("time_zone") or "?"
        expected = data.get("expected_time_zone")
        out.append(f"time zone 时区: {zone}" + (f" (store 门店: {expected})" if expected else ""))
        for port, count in sorted((data.get("usb_disconnects") or {}).items()):
            out.append(f"USB {port}: {count} disconnect(s) in 24 h 次断开")
        proxy = data.get("winhttp_proxy")
        if isinstance(proxy, dict):
            server = "direct 直连" if proxy.get("direct") else proxy.get("server")
            out.append(f"WinHTTP proxy 代理: {server}")
        for dev in data.get("device_problems") or []:
            out.append(f"device 设备 {dev.get('name')}: problem {dev.get('problem')}")
    elif name in ("scale", "scanner"):
        for row in data.get("scales", data.get("scanners", [])):
            heard = (
                f"{row.get('bytes')} bytes, {row.get('frames', row.get('scans'))} frame(s)"
                if row.get("outcome") == "ok"
                else row.get("detail") or ""
            )
            out.append(
                f"{row.get('name')} [{row.get('target')}]: {row.get('outcome')} "
                f"in {row.get('listen_s')} s; {heard}"
            )
    else:  # a collector this renderer has no words for: its readings, in human units
        out.extend(walk(data, 0, now, tz))
    return out


#: Keys whose integer values are byte counts, shown in MB/GB.
_BYTE_KEYS = ("rss", "free", "total", "available", "used", "size", "bytes_read")
#: Keys whose epoch values are shown as times (``*_at``, ``*_time``, certificate and file times).
_TIME_KEYS = ("not_after", "not_before", "started", "modified", "since")


def human_value(key: str, item: Any, now: Optional[float], tz: Optional[tzinfo]) -> str:
    """A raw reading in human units: times, byte counts, long durations, yes/no; never raises."""
    if isinstance(item, bool) or item is None:
        return {True: "yes 是", False: "no 否", None: "—"}[item]
    if not isinstance(item, (int, float)):
        return _s(item)
    try:
        if (key.endswith(("_at", "_time")) or key in _TIME_KEYS) and item > 1e9:
            return when(item, tz, now)
        if key in _BYTE_KEYS or key.endswith("_bytes"):
            return _mb(item)
        if key.endswith("_mb"):
            return _mb(item * 1048576)
        if key.endswith("_s") and abs(item) >= 90:
            return f"{item} s ({span(item)})"
    except (ArithmeticError, OSError, ValueError):  # inf, nan, out of range: shown as it is
        pass
    return str(item)


def _detail_words(key: str, value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k} {_detail_words(str(k), v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(v, str) for v in value):
            return f"{value[0]}-{value[1]}"  # a span, as opening hours are
        return ", ".join(_detail_words(key, v) for v in value) or "-"
    return human_value(key, value, None, None)


def audit_detail(detail: Any) -> str:
    """An audit record's ``detail`` in words (``posassist audit`` and the web console's audit
    page): times and sizes in human units, lists and mappings spelled out, never a repr."""
    if not isinstance(detail, dict):
        return "" if detail is None else _detail_words("", detail)
    return ", ".join(f"{k}: {_detail_words(str(k), v)}" for k, v in detail.items())


def device_label(store_name: Any, facts: Any, device_id: Any) -> str:
    """A till for people: ``人民路店 / till-1`` (its store's name and its host name, the id
    when it has reported none)."""
    host = facts.get("hostname") if isinstance(facts, Mapping) else None
    return f"{_s(store_name or '-')} / {_s(host or device_id)}"


def audit_target(target: Any, names: Mapping[str, str]) -> Tuple[str, str]:
    """An audit record's ``target`` (``store:sto_…``, ``device:dev_…``) as (words, id): the kind
    and the name ``names`` gives the whole target (``store 人民路店``), and the id beside it;
    a target without a known name is itself, with no id beside it."""
    text = str(target or "")
    name = names.get(text)
    if not name:
        return text, ""
    kind, _, node = text.partition(":")
    return f"{kind} {name}", node


def walk(value: Any, depth: int, now: Optional[float], tz: Optional[tzinfo]) -> List[str]:
    """Nested readings as indented ``key: value`` lines (lists cut at 20, each item marked);
    the fallback for readings the section renderers have no words for."""
    pad = "  " * depth
    out: List[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            key = _s(key)
            if isinstance(item, (Mapping, list, tuple)):
                out.append(f"{pad}{key}:")
                out.extend(walk(item, depth + 1, now, tz))
            else:
                out.append(f"{pad}{key}: {human_value(key, item, now, tz)}")
    elif isinstance(value, (list, tuple)):
        for item in value[:20]:
            if isinstance(item, (Mapping, list, tuple)):
                inner = walk(item, depth + 1, now, tz)
                if inner:  # "- " marks where each item starts
                    inner[0] = f"{pad}- {inner[0].lstrip()}"
                out.extend(inner)
            else:
                out.append(f"{pad}- {human_value('', item, now, tz)}")
        if len(value) > 20:
            out.append(f"{pad}… {len(value) - 20} more")
    else:
        out.append(f"{pad}{human_value('', value, now, tz)}")
    return out


#: What JSON leaves raw with ``ensure_ascii=False`` that a terminal acts on: DEL, the C1 controls
#: (8-bit CSI/OSC) and the bidirectional overrides and isolates (C0 controls JSON escapes itself).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_json(data: Any) -> str:
    """``data`` as indented JSON for a terminal: Chinese stays readable, and every character a
    terminal would act on is written as a ``\\uXXXX`` escape (the same text to a JSON reader)."""
    text = json.dumps(data, ensure_ascii=False, indent=2)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def render_report(
    report: Mapping[str, Any], now: Optional[float] = None, tz: Optional[tzinfo] = None
) -> str:
    """An annotated report (``findings.annotate``) as text: findings first, raw sections after.

    Args:
        report: ``{"sections": …, "findings"?: …}``, or the sections alone.
        now: the time ages are measured from ("3 min ago"); usually the report's collection time.
        tz: the store's time zone for absolute times; the local zone when None.
    """
    sections: Any = report.get("sections", report)
    if not isinstance(sections, Mapping):  # the device's word: maybe not a map at all
        sections = {}
    blocks = ["== 诊断结论 / Findings\n" + "\n".join(render_findings(all_findings(report)))]
    for name, section in sections.items():
        if not isinstance(section, Mapping):
            continue
        title = HEADINGS.get(name, name) if isinstance(name, str) else _s(name)
        status = section.get("status") or ("ok" if section.get("ok") else "unreadable")
        mark = STATUS.get(str(status), str(status))
        elapsed = section.get("elapsed_ms")
        took = f", {elapsed} ms" if isinstance(elapsed, (int, float)) else ""
        head = f"== {title}  [{mark}{took}]"
        data = section.get("data")
        if section.get("ok") and isinstance(data, dict):
            try:
                body = _lines(name, data, now, tz)
            except (TypeError, KeyError, AttributeError, ValueError, ArithmeticError, OSError):
                # malformed raw data from the device (ArithmeticError: huge numbers)
                body = ["(raw data unreadable 原始数据无法读取)"]
        else:
            error = section.get("error")
            # the collector's words, not its exception's class name (readme-walk F8)
            if isinstance(error, Mapping):
                body = [f"读取失败 / could not read: {_s(error.get('message'))}"]
            else:
                body = [f"读取失败 / could not read: {_s(error)}"] if error else []
        blocks.append("\n".join([head] + ["  " + line for line in body]))
    # device, log and profile text reaches a terminal: no escape sequence, control or bidi
    # override survives (attack 14 F3), as in the console's renderer
    return printable("\n\n".join(blocks))


#: What a consent answer means to the technician (issue 12): decision -> (Chinese, English);
#: ``{timeout}`` is the seconds the merchant had.
CONSENT_WORDS: Dict[str, Tuple[str, str]] = {
    "granted": ("商户已同意", "approved by the merchant"),
    "denied": ("商户拒绝", "denied by the merchant"),
    "timed_out": ("{timeout} 秒内无应答", "no answer in {timeout} s"),
    "no_window": ("收银台没有打开帮助窗口", "no window open"),
}


#: The week as a store's opening hours name it (relay/hours.py's JSON form), Monday first.
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def weekly_hours(weekly: Mapping[str, Any]) -> str:
    """A store's weekly opening hours (``{"mon": [["09:00", "21:00"]], …}``) in one line, days
    in week order and neighbours with equal hours run together: ``mon-fri 09:00-21:00; sat
    10:00-18:00``. Days it does not name (closed) are left out."""
    groups: List[Tuple[List[str], str]] = []
    for day in DAYS:
        spans = weekly.get(day)
        if not isinstance(spans, list) or not spans:
            continue
        times = " ".join(f"{a}-{b}" for a, b in spans)
        if groups and groups[-1][1] == times and groups[-1][0][-1] == DAYS[DAYS.index(day) - 1]:
            groups[-1][0].append(day)
        else:
            groups.append(([day], times))
    return "; ".join(
        (days[0] if len(days) == 1 else f"{days[0]}-{days[-1]}") + f" {times}"
        for days, times in groups
    )


#: A printer's status bits (the catalog's escpos tools' ``problems``), in words.
PRINTER_PROBLEMS: Dict[str, str] = {
    "paper_end": "缺纸 / paper out",
    "paper_end_stop": "因缺纸停止打印 / stopped for want of paper",
    "near_end": "纸将用完 / paper nearly out",
    "offline": "脱机 / offline",
    "cover_open": "上盖打开 / cover open",
    "error": "打印机报错 / printer error",
    "autocutter": "切刀故障 / cutter error",
    "recoverable": "可恢复错误 / recoverable error",
    "unrecoverable": "不可恢复错误 / unrecoverable error",
    "auto_recoverable": "自动恢复中的错误 / error it recovers from itself",
    "waiting_recovery": "等待恢复 / waiting for recovery",
    "feed_button": "进纸键按下 / feed button held",
}


def result_line(text: str) -> Optional[str]:
    """A script's ``RESULT {json}`` line in words (the catalog's printer tools end with one):
    what it found, then its action; None when the line is not one. The numbers stay in the
    lines the script printed before it."""
    if not text.startswith("RESULT {"):
        return None
    try:
        result = json.loads(text[len("RESULT ") :])
    except ValueError:
        return None
    if not isinstance(result, dict):
        return None
    parts = []
    if "printer" in result:
        parts.append(f"printer {result['printer']}")
    problems = result.get("problems")
    if isinstance(problems, list):
        words = [PRINTER_PROBLEMS.get(str(p), str(p)) for p in problems]
        parts.append("; ".join(words) if words else "no problem found / 未发现问题")
    rest = {
        k: v
        for k, v in result.items()
        if k not in ("printer", "problems") and isinstance(v, (str, int, float, bool))
    }
    parts.extend(f"{k}={v}" for k, v in sorted(rest.items()))
    return "result / 结果: " + " · ".join(parts)


def consent_line(step: str, detail: Mapping[str, Any]) -> Optional[str]:
    """A ``consent_asked``/``consent_answered`` step in words, or None for any other step:
    ``[consent] denied by the merchant / 商户拒绝 (desktop user / 桌面用户 cashier)``; the
    detail's ``timeout`` gives "no answer in 120 s". The caller makes the line printable (it
    quotes the agent)."""
    if step == "consent_asked":
        seconds = _seconds(detail.get("timeout"))
        return (
            f"[consent] 等待商户确认 ({seconds} 秒) / asking the merchant ({seconds} s): "
            f"{_s(detail.get('script'))} {_s(detail.get('version'))}".rstrip()
        )
    if step != "consent_answered":
        return None
    decision = str(detail.get("decision"))
    zh, en = CONSENT_WORDS.get(decision, (decision, decision))
    seconds = _seconds(detail.get("timeout"))
    text = f"[consent] {en.format(timeout=seconds)} / {zh.format(timeout=seconds)}"
    if decision == "no_window":  # what to do next
        text += (
            " — ask the merchant to open 获取帮助 on the till, or phone them"
            " / 请商户打开获取帮助窗口或电话联系"
        )
    if detail.get("answered_by"):  # the till's desktop account that clicked
        text += f" (desktop user / 桌面用户 {_s(detail['answered_by'])})"
    return text


def _seconds(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.0f}"
    return "?"
