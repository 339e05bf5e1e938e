"""Host configuration (§5 #12, #13, #20, #23, #24): the time zone against the store's, USB
disconnects from the kernel journal, and Windows parsers on documented text (never run there)."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import pytest

from posassist.agent.collectors import hostconfig
from posassist.agent.diagnostics import DiagContext
from posassist.agent.errors import ConfigError
from posassist.agent.findings import Severity, evaluate, same_zone
from posassist.agent.settings import Settings, parse_settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "windows"


def _text(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode("utf-8")


def _found(data: dict[str, Any]) -> dict[str, Any]:
    report = {"sections": {"host": {"ok": True, "data": data}}}
    return {f.code: f for f in evaluate(report, None, time.time())}


def test_time_zone_names_compare_across_windows_and_iana() -> None:
    assert same_zone("China Standard Time", "Asia/Shanghai")
    assert same_zone("Asia/Chongqing", "Asia/Shanghai")
    assert not same_zone("Etc/UTC", "Asia/Shanghai")
    assert not same_zone("Tokyo Standard Time", "China Standard Time")


def test_a_till_in_the_wrong_time_zone(tmp_path: Path) -> None:
    zoneinfo = tmp_path / "usr" / "share" / "zoneinfo" / "Etc"
    zoneinfo.mkdir(parents=True)
    (zoneinfo / "UTC").write_bytes(b"TZif")
    (tmp_path / "localtime").symlink_to(zoneinfo / "UTC")
    assert hostconfig.linux_time_zone(str(tmp_path / "localtime")) == "Etc/UTC"
    assert hostconfig.linux_time_zone(str(tmp_path / "nowhere")) is None
    found = _found({"time_zone": "Etc/UTC", "expected_time_zone": "Asia/Shanghai"})
    wrong = found["host.time_zone_wrong"]
    assert wrong.severity is Severity.FAULT
    assert "Etc/UTC; the store's is Asia/Shanghai" in wrong.detail["en"]
    assert _found({"time_zone": "China Standard Time", "expected_time_zone": "Asia/Shanghai"}) == {}
    assert _found({"time_zone": "Etc/UTC", "expected_time_zone": None}) == {}


def test_the_store_time_zone_setting_is_checked() -> None:
    assert parse_settings({"time_zone": "Asia/Shanghai"}).time_zone == "Asia/Shanghai"
    for bad in (5, "Asia/Shanghai; rm -rf /", "x" * 65):
        with pytest.raises(ConfigError, match="time_zone"):
            parse_settings({"time_zone": bad})


def test_usb_disconnects_from_the_kernel_journal(tmp_path: Path) -> None:
    lines = (
        "".join(
            f"Dec 05 0{i}:00:00 till kernel: usb 1-3: USB disconnect, device number {i + 4}\n"
            for i in range(4)
        )
        + "Dec 05 06:00:00 till kernel: usb 1-4: USB disconnect, device number 2\n"
    )
    journal = tmp_path / "journalctl"
    journal.write_text(f"#!/bin/sh\necho \"$@\" > '{tmp_path}/argv'\ncat <<'EOF'\n{lines}EOF\n")
    journal.chmod(journal.stat().st_mode | stat.S_IEXEC)
    ctx = DiagContext(Settings(time_zone="Asia/Shanghai"))
    data = hostconfig.collect(ctx, journalctl=str(journal))
    assert "-k" in (tmp_path / "argv").read_text().split()
    assert data["usb_disconnects"] == {"1-3": 4, "1-4": 1}
    found = _found(data)
    assert found["host.usb_disconnects"].subject == "1-3"  # once is not "keeps disconnecting"
    assert "4 times in 24 h" in found["host.usb_disconnects"].detail["en"]


def test_windows_winhttp_proxy_and_tls12_parsers() -> None:
    proxy = hostconfig.parse_winhttp_proxy(_text("netsh-winhttp-proxy.txt"))
    assert proxy == {"direct": False, "server": "10.0.0.1:8080", "bypass": "(none)"}
    direct = hostconfig.parse_winhttp_proxy(_text("netsh-winhttp-direct.txt"))
    assert direct["direct"] is True
    name = "DefaultSecureProtocols"
    assert hostconfig.parse_reg_dword(_text("reg-defaultsecureprotocols.txt"), name) == 0xA00
    assert hostconfig.parse_reg_dword(_text("reg-defaultsecureprotocols-tls10.txt"), name) == 0xA0
    assert hostconfig.parse_reg_dword("ERROR: The system was unable to find", name) is None
    found = _found(
        {"windows_release": "7", "winhttp_secure_protocols": 0xA0, "winhttp_proxy": proxy}
    )
    assert "0xa0" in found["host.winhttp_no_tls12"].detail["en"]
    assert "10.0.0.1:8080" in found["host.winhttp_proxy"].detail["en"]
    assert "host.winhttp_no_tls12" in _found({"windows_release": "7"})  # not set at all
    fine = {"windows_release": "7", "winhttp_secure_protocols": 0xA00, "winhttp_proxy": direct}
    assert _found(fine) == {}
    assert _found({"windows_release": "10", "winhttp_secure_protocols": None}) == {}


def test_windows_devices_whose_driver_failed() -> None:
    modern = hostconfig.parse_pnputil_problems(_text("pnputil-problem.txt"))
    legacy = hostconfig.parse_wmic_problems(_text("wmic-pnpentity-problem.txt"))
    assert [(d["problem_code"], d["name"]) for d in modern] == [
        (10, "Prolific USB-to-Serial Comm Port (COM4)"),
        (28, "USB2.0-Serial"),
    ]
    assert [d["problem_code"] for d in legacy] == [10, 28]
    report = {"sections": {"host": {"ok": True, "data": {"device_problems": modern}}}}
    found = evaluate(report, None, time.time())
    assert [f.code for f in found] == ["host.device_driver_failed"] * 2
    assert "problem code 10 (0xA) [CM_PROB_FAILED_START]" in found[0].detail["en"]
    assert hostconfig.parse_pnputil_problems("") == []
