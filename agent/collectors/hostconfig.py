"""Host configuration the POS depends on (reference §5): the time zone against the store's, USB
disconnects (Linux kernel journal), and on Windows the WinHTTP proxy, TLS 1.2 for WinHTTP (Windows
7) and devices whose driver failed (Code 10/28). Parsers are pure and tested on documented text.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from posassist.agent.collectors.printqueue import parse_wmic_list

if TYPE_CHECKING:
    from pathlib import Path

    from posassist.agent.diagnostics import DiagContext

__all__ = [
    "collect",
    "linux_time_zone",
    "parse_pnputil_problems",
    "parse_reg_dword",
    "parse_usb_disconnects",
    "parse_winhttp_proxy",
    "parse_wmic_problems",
]

_USB_DISCONNECT = re.compile(r"\busb (?P<port>\d+-[\d.]+): USB disconnect\b")


def linux_time_zone(localtime: str = "/etc/localtime") -> Optional[str]:
    """The IANA name the till's /etc/localtime points at (``Asia/Shanghai``), or None."""
    target = os.path.realpath(localtime)
    marker = "/zoneinfo/"
    if marker not in target:
        return None
    return target.split(marker, 1)[1]


def parse_winhttp_proxy(text: str) -> Dict[str, Any]:
    """``netsh winhttp show proxy``: ``{"direct": bool, "server", "bypass"}``."""
    out: Dict[str, Any] = {"direct": "Direct access" in text, "server": None, "bypass": None}
    for line in text.splitlines():
        key, sep, value = line.partition(" :")
        if not sep:
            continue
        if key.strip().startswith("Proxy Server"):
            out["server"] = value.strip()
        elif key.strip().startswith("Bypass List"):
            out["bypass"] = value.strip()
    return out


def parse_reg_dword(text: str, name: str) -> Optional[int]:
    """The value of REG_DWORD ``name`` in ``reg query`` output, or None when absent."""
    match = re.search(rf"^\s*{re.escape(name)}\s+REG_DWORD\s+0x([0-9a-fA-F]+)\s*$", text, re.M)
    return int(match.group(1), 16) if match else None


def parse_pnputil_problems(text: str) -> List[Dict[str, Any]]:
    """``pnputil /enum-devices /problem`` (Windows 10 1903+): devices and their problem code."""
    devices: List[Dict[str, Any]] = []
    current: Dict[str, Any] = {}
    for line in [*text.splitlines(), ""]:
        key, sep, value = line.partition(":")
        if not line.strip():
            if current.get("instance_id"):
                devices.append(current)
            current = {}
            continue
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "Instance ID":
            current["instance_id"] = value
        elif key == "Device Description":
            current["name"] = value
        elif key == "Problem Code":
            code = value.split()[0] if value else ""
            current["problem_code"] = int(code) if code.isdigit() else None
            current["problem"] = value
    return devices


def parse_wmic_problems(text: str) -> List[Dict[str, Any]]:
    """``wmic path Win32_PnPEntity where "ConfigManagerErrorCode<>0" get … /format:list`` (7)."""
    out = []
    for rec in parse_wmic_list(text):
        code = rec.get("ConfigManagerErrorCode", "")
        out.append(
            {
                "instance_id": rec.get("DeviceID", ""),
                "name": rec.get("Name", ""),
                "problem_code": int(code) if code.isdigit() else None,
                "problem": code,
            }
        )
    return out


def parse_usb_disconnects(text: str) -> Dict[str, int]:
    """Kernel ``usb 1-3: USB disconnect, device number 5`` lines, counted by USB port path."""
    counts: Dict[str, int] = {}
    for match in _USB_DISCONNECT.finditer(text):
        counts[match.group("port")] = counts.get(match.group("port"), 0) + 1
    return counts


def _run(argv: List[str], timeout: float = 3.0) -> Optional[str]:
    """A read-only tool by absolute path (never a shell); its output, or None if it failed."""
    if not os.path.isabs(argv[0]) or not os.path.exists(argv[0]):
        return None
    env = dict(os.environ, LC_ALL="C", LANG="C")
    try:
        done = subprocess.run(
            argv, capture_output=True, timeout=timeout, check=False, env=env,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.decode("utf-8", "replace") if done.returncode == 0 else None


def _windows() -> Dict[str, Any]:  # pragma: no cover - Windows only; parsers tested on text
    system32 = os.path.join(os.environ.get("SystemRoot", r"C:\Windows"), "System32")
    out: Dict[str, Any] = {}
    zone = _run([os.path.join(system32, "tzutil.exe"), "/g"])
    out["time_zone"] = zone.strip() if zone else None
    proxy = _run([os.path.join(system32, "netsh.exe"), "winhttp", "show", "proxy"])
    out["winhttp_proxy"] = parse_winhttp_proxy(proxy) if proxy is not None else None
    key = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Internet Settings\WinHttp"
    reg = _run([os.path.join(system32, "reg.exe"), "query", key, "/v", "DefaultSecureProtocols"])
    out["winhttp_secure_protocols"] = parse_reg_dword(reg or "", "DefaultSecureProtocols")
    out["windows_release"] = __import__("platform").release()
    pnputil = _run([os.path.join(system32, "pnputil.exe"), "/enum-devices", "/problem"])
    if pnputil is not None:
        out["device_problems"] = parse_pnputil_problems(pnputil)
    else:  # Windows 7: no /enum-devices
        wmic = os.path.join(system32, "wbem", "WMIC.exe")
        text = _run([wmic, "path", "Win32_PnPEntity", "where", "ConfigManagerErrorCode<>0",
                     "get", "ConfigManagerErrorCode,DeviceID,Name", "/format:list"])  # fmt: skip
        out["device_problems"] = parse_wmic_problems(text) if text is not None else None
    return out


def script_root(data_dir: Path) -> Dict[str, bool]:
    """Whether this till is enrolled and holds the script repository's trust root (without it
    every script run is refused: ``posassist-agent trust-root``, docs/scripts.md)."""
    return {
        "enrolled": (data_dir / "agent.json").is_file(),
        "pinned": (data_dir / "scripts" / "root.json").is_file(),
    }


def collect(ctx: DiagContext, journalctl: Optional[str] = None) -> Dict[str, Any]:
    """The till's time zone (and the store's, from settings), and the platform's own signals."""
    data: Dict[str, Any] = {"expected_time_zone": ctx.settings.time_zone or None}
    if ctx.data_dir is not None:
        data["script_root"] = script_root(ctx.data_dir)
    if sys.platform == "win32":  # pragma: no cover - Windows only
        data.update(_windows())
        return data
    data["time_zone"] = linux_time_zone()
    tool = journalctl or next(
        (p for p in ("/usr/bin/journalctl", "/bin/journalctl") if os.path.exists(p)), None
    )
    if tool is not None:
        kernel = _run([tool, "--no-pager", "-q", "-k", "--since", "-24h", "-n", "5000"])
        data["usb_disconnects"] = parse_usb_disconnects(kernel or "")
    return data
