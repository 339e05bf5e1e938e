"""Render a diagnostics report as text for ``posassist-agent diag --offline``: Chinese and English
headings, one block per section, the values a technician reads first.
"""

from __future__ import annotations

from typing import Any, Dict, List

__all__ = ["HEADINGS", "render_report"]

HEADINGS: Dict[str, str] = {
    "system": "系统 / System",
    "network": "网络 / Network",
    "serial": "串口与USB设备 / Serial and USB devices",
    "printers": "小票打印机 / Receipt printers",
    "pos": "收银软件 / POS application",
    "print_queue": "打印队列 / Print queue",
}


def _mb(n: Any) -> str:
    return f"{n / 1048576:.0f} MB" if isinstance(n, (int, float)) else "?"


def _lines(name: str, data: Dict[str, Any]) -> List[str]:
    out: List[str] = []
    if name == "system":
        os_info = data.get("os", {})
        out.append(
            f"OS: {os_info.get('distribution') or os_info.get('system')} "
            f"{os_info.get('release')} ({os_info.get('machine')}, {os_info.get('bits')}-bit)"
        )
        out.append(f"uptime 运行时间: {data.get('uptime_s', 0) / 3600:.1f} h")
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
            if relay.get("tls"):
                out.append(f"TLS certificate 证书: {relay['tls']}")
        if data.get("clock"):
            out.append(f"clock offset vs relay 时钟偏差: {data['clock']['offset_s']} s")
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
        out.append(f"running 运行中: {data.get('running')} ({data.get('instances')} instance(s))")
        out.append(f"sale open 正在交易: {data.get('sale_open') or 'no 否'}")
        for log in data.get("logs", []):
            if log.get("ok"):
                out.append(f"log 日志 {log['path']}: {log['error_count']} error line(s)")
                out.extend("    " + line for line in log.get("recent_errors", [])[-5:])
            else:
                out.append(f"log 日志 {log['path']}: {log.get('error')}")
        for disk in data.get("disk", []):
            if disk.get("ok"):
                low = " LOW 空间不足" if disk.get("low") else ""
                out.append(f"data 数据 {disk['path']}: {disk['free_mb']} MB free{low}")
    elif name == "print_queue":
        for p in data.get("printers", []):
            out.append(f"{p.get('name')}: {p.get('state')} {'; '.join(p.get('reasons', []))}")
        out.append(f"jobs 任务: {len(data.get('jobs', []))}")
    else:
        out.append(str(data)[:500])
    return out


def render_report(sections: Dict[str, Any]) -> str:
    """The report as text, one block per section; failures show the typed error."""
    blocks = []
    for name, section in sections.items():
        title = HEADINGS.get(name, name)
        mark = "OK 正常" if section.get("ok") else "FAILED 失败"
        head = f"== {title}  [{mark}, {section.get('elapsed_ms')} ms]"
        if section.get("ok"):
            body = _lines(name, section.get("data") or {})
        else:
            error = section.get("error", {})
            body = [f"{error.get('type')}: {error.get('message')}"]
        blocks.append("\n".join([head] + ["  " + line for line in body]))
    return "\n\n".join(blocks)
