"""Windows catalog paths, dry run: this machine has no Windows, so the runner's command line is
built with platform="windows" (absolute interpreter path, parameters as separate argv items or
env), the Python scripts' Windows command plans are checked item by item, and the PowerShell
texts are checked for string-built commands. Nothing here starts a Windows tool."""

from __future__ import annotations

import importlib.util
import json
import ntpath
import re
import sys
import types
from typing import Any

import pytest

import posassist.agent.scripts.process as process
from posassist.agent.scripts.process import interpreter_argv, minimal_env
from posassist.protocol.manifest import ParamError, validate_params

from .conftest import CATALOG, SCRIPT_IDS, Catalog, load

POWERSHELL = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
PS_HEAD = [POWERSHELL, "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-File"]


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """agent.scripts.process sees a Windows file system (ntpath, C:\\Windows, files present)."""
    path = types.SimpleNamespace(join=ntpath.join, isabs=ntpath.isabs, isfile=lambda p: True)
    fake_os = types.SimpleNamespace(path=path, environ={"SystemRoot": r"C:\Windows"})
    monkeypatch.setattr(process, "os", fake_os)


def command_line(script_id: str, params: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    manifest, _ = load(script_id)
    tail, env = validate_params(manifest, params)
    process.check_cmd_argv(manifest, tail)
    argv = [*interpreter_argv(manifest, manifest.entry, platform="windows"), *tail]
    return argv, minimal_env(r"C:\Windows\Temp\posassist-run-1", env, platform="windows")


def test_usb_reset_windows_command_line(windows: None) -> None:
    instance = r"USB\VID_1A86&PID_7523\5&2C8E1B2&0&2"
    argv, env = command_line("reset-usb-serial-windows", {"instance_id": instance})
    assert argv == [*PS_HEAD, "reset_usb_serial.ps1"]  # the id never meets a command line
    assert env["POSASSIST_PARAM_INSTANCE_ID"] == instance
    assert env["PATH"].startswith(r"C:\Windows\System32;")


def test_spooler_reset_windows_command_line(windows: None) -> None:
    argv, env = command_line("spooler-reset-windows", {})
    assert argv == [*PS_HEAD, "spooler_reset.ps1"]
    assert not [k for k in env if k.startswith("POSASSIST_PARAM_")]


def test_cross_platform_python_command_line_on_windows(windows: None) -> None:
    argv, _ = command_line("drawer-kick-test", {"serial": "COM3", "pin": "5"})
    assert argv == [
        sys.executable, "-I", "-B", "-X", "utf8", "escpos_tool.py",
        "--action", "drawer", "--baud", "9600", "--pin", "5", "--pulse-ms", "100",
        "--serial", "COM3", "--tcp-port", "9100",
    ]  # fmt: skip


def test_linux_only_scripts_are_refused_on_windows(windows: None) -> None:
    from posassist.agent.errors import ScriptRefusedError

    for script_id in ("cups-clear-queue", "restart-pos-service", "reset-usb-serial"):
        manifest, _ = load(script_id)
        with pytest.raises(ScriptRefusedError):
            interpreter_argv(manifest, manifest.entry, platform="windows")


async def test_windows_only_scripts_are_refused_here_by_the_real_runner(catalog: Catalog) -> None:
    run = await catalog.run("spooler-reset-windows", {})
    assert run.status == "refused"
    assert run.result.refusal is not None
    assert run.result.refusal.code == "wrong_platform"


def module(script_id: str, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"catalog_{name}", CATALOG / script_id / name)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.dont_write_bytecode, before = True, sys.dont_write_bytecode
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = before
    return mod


def test_clock_resync_windows_plan() -> None:
    plan = module("resync-clock", "resync_clock.py").windows_plan("C:\\Windows")
    assert plan == [
        [r"C:\Windows\System32\net.exe", "start", "w32time"],
        [r"C:\Windows\System32\w32tm.exe", "/resync", "/rediscover"],
        [r"C:\Windows\System32\w32tm.exe", "/query", "/status"],
    ]


def test_dns_flush_windows_plan() -> None:
    plan = module("flush-dns", "flush_dns.py").plan("windows", "D:\\WINNT\\")
    assert plan == [r"D:\WINNT\System32\ipconfig.exe", "/flushdns"]


def test_temp_cleaning_windows_folders_are_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = module("clean-temp-folders", "clean_temp.py")
    monkeypatch.setenv("SystemRoot", r"C:\Windows")
    assert mod.folder_path("windows", "windows_temp") == r"C:\Windows\Temp"
    assert mod.folder_path("windows", "pos_temp") == r"C:\POS\temp"
    assert mod.folder_path("windows", "tmp") is None  # a Linux key means nothing on Windows


def test_windows_log_and_config_locations() -> None:
    # no fixed POS log folder: the POS profile names its logs (docs/scripts.md#profile)
    assert module("collect-log-bundle", "log_bundle.py").SOURCES["windows"] == {}
    # fix-printer-port has no fixed path: the POS profile names the file (docs/scripts.md#profile)
    from posassist.agent.profile import load_profile, profile_env

    env = profile_env(load_profile("windows-sqlexpress"))
    assert env["POSASSIST_PROFILE_CONFIG"] == "C:\\POS\\config\\pos.ini"
    assert json.loads(env["POSASSIST_PROFILE_LOG_DIRS"]) == ["C:\\POS\\logs"]


PS_SCRIPTS = sorted(
    (sid, name) for sid in SCRIPT_IDS for name in load(sid)[0].files if name.endswith(".ps1")
)
FORBIDDEN = re.compile(
    r"Invoke-Expression|\biex\b|Start-Process|-ArgumentList|\[scriptblock\]|"
    r"cmd(\.exe)?\s+/c|Invoke-Command|\.Invoke\(|-EncodedCommand|ExpandString",
    re.IGNORECASE,
)


@pytest.mark.parametrize(("script_id", "name"), PS_SCRIPTS)
def test_powershell_scripts_build_no_commands_from_strings(script_id: str, name: str) -> None:
    text = (CATALOG / script_id / name).read_text(encoding="utf-8")
    assert not FORBIDDEN.search(text)
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        for call in re.finditer(r"(?:^|[;{(]\s*)&\s*(\S+)", code):
            assert re.fullmatch(r"\$[A-Za-z_]+", call.group(1)), line  # & $absolutePath only
    # parameters arrive as environment variables only, never through $args
    assert "$args" not in text.lower()
    manifest, _ = load(script_id)
    for p in manifest.params:
        assert f"$env:POSASSIST_PARAM_{p.name.upper()}" in text


def test_powershell_call_targets_are_absolute_system32_paths() -> None:
    text = (CATALOG / "reset-usb-serial-windows" / "reset_usb_serial.ps1").read_text()
    assert "$pnputil = Join-Path $env:SystemRoot 'System32\\pnputil.exe'" in text


# --- the §5 remediations added for issue 14: Windows plans and parsers on documented output ----

WINDOWS_FIXTURES = CATALOG.parent / "tests" / "fixtures" / "windows"


def fixture_text(name: str) -> str:
    return (WINDOWS_FIXTURES / name).read_bytes().decode("utf-8")


def test_time_zone_windows_plan_takes_the_stores_iana_name_or_a_windows_id() -> None:
    mod = module("set-time-zone", "set_time_zone.py")
    assert mod.windows_id("Asia/Shanghai") == "China Standard Time"
    assert mod.windows_id("PRC") == "China Standard Time"
    assert mod.windows_id("Tokyo Standard Time") == "Tokyo Standard Time"
    assert mod.windows_id("Europe/Atlantis") is None
    assert mod.windows_plan("C:\\Windows", "China Standard Time") == [
        [r"C:\Windows\System32\tzutil.exe", "/g"],
        [r"C:\Windows\System32\tzutil.exe", "/s", "China Standard Time"],  # one argv item
        [r"C:\Windows\System32\tzutil.exe", "/g"],
    ]
    from posassist.agent.findings import WINDOWS_ZONES

    for windows_zone, iana in WINDOWS_ZONES.items():  # the agent's table and the script's agree
        assert mod.windows_id(iana) == windows_zone


def test_database_service_start_reads_sc_query() -> None:
    mod = module("start-database-service", "start_service.py")
    assert mod.state(fixture_text("sc-query-stopped.txt")) == "STOPPED"
    assert mod.state(fixture_text("sc-query-running.txt")) == "RUNNING"
    assert mod.state(fixture_text("sc-query-missing.txt")) is None
    assert mod.plan("C:\\Windows\\", "MSSQL$SQLEXPRESS") == {
        "query": [r"C:\Windows\System32\sc.exe", "query", "MSSQL$SQLEXPRESS"],
        "start": [r"C:\Windows\System32\sc.exe", "start", "MSSQL$SQLEXPRESS"],
    }
    manifest, _ = load("start-database-service")
    assert validate_params(manifest, {})[0] == ["--service", "MSSQL$SQLEXPRESS", "--wait", "60"]
    for bad in ("Spooler", "MSSQL$X Y", "MSSQL$SQLEXPRESS & net stop spooler"):
        with pytest.raises(ParamError):
            validate_params(manifest, {"service": bad})


def test_proxy_reset_backs_up_first_and_reads_netsh_as_the_agent_does() -> None:
    from posassist.agent.collectors.hostconfig import parse_winhttp_proxy

    mod = module("proxy-reset-windows", "proxy_reset.py")
    for name in ("netsh-winhttp-proxy.txt", "netsh-winhttp-direct.txt"):
        text = fixture_text(name)
        assert mod.parse_winhttp_proxy(text) == parse_winhttp_proxy(text)
    assert mod.parse_winhttp_proxy(fixture_text("netsh-winhttp-proxy.txt"))["server"] == (
        "10.0.0.1:8080"
    )
    backup = mod.backup_path("C:\\ProgramData", "20261206-093000")
    assert backup == r"C:\ProgramData\posassist\backups\winhttp-proxy-20261206-093000.reg"
    plan = mod.plan("C:\\Windows", backup)
    assert plan["export"] == [
        r"C:\Windows\System32\reg.exe", "export",
        r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Internet Settings\Connections",
        backup, "/y",
    ]  # fmt: skip
    assert plan["reset"] == [r"C:\Windows\System32\netsh.exe", "winhttp", "reset", "proxy"]
    source = (CATALOG / "proxy-reset-windows" / "proxy_reset.py").read_text(encoding="utf-8")
    assert source.index('run(steps["export"])') < source.index('run(steps["reset"])')


def test_usb_selective_suspend_plan_and_readback() -> None:
    mod = module("usb-suspend-off-windows", "usb_suspend.py")
    assert mod.parse_query(fixture_text("powercfg-usb-suspend.txt")) == {"AC": 1, "DC": 1}
    plan = mod.plan("C:\\Windows")
    setting = [
        "SCHEME_CURRENT",
        "2a737441-1930-4402-8d77-b2bebba308a3",
        "48e6b7a6-50f5-4782-a5d4-53bb8f07e226",
    ]
    powercfg = r"C:\Windows\System32\powercfg.exe"
    assert plan["query"] == [powercfg, "/QUERY", *setting]
    assert plan["set"] == [
        [powercfg, "/SETACVALUEINDEX", *setting, "0"],
        [powercfg, "/SETDCVALUEINDEX", *setting, "0"],
        [powercfg, "/SETACTIVE", "SCHEME_CURRENT"],
    ]


def test_duplicate_pos_on_windows_reads_tasklist_and_never_forces() -> None:
    mod = module("stop-duplicate-pos", "stop_duplicate.py")
    table = mod.parse_tasklist(fixture_text("tasklist-csv.txt"))
    assert mod.instances(table, ["pos.exe"]) == [4120, 5312]  # names compare as Windows does
    plan = mod.windows_plan("C:\\Windows", 5312)
    assert plan["stop"] == [r"C:\Windows\System32\taskkill.exe", "/PID", "5312"]
    assert "/F" not in plan["stop"]
    assert plan["list"] == [r"C:\Windows\System32\tasklist.exe", "/FO", "CSV", "/NH"]


def test_printer_resume_passes_the_name_only_through_the_environment(windows: None) -> None:
    argv, env = command_line("printer-resume-windows", {"printer": "POS-80 收据"})
    assert argv == [*PS_HEAD, "printer_resume.ps1"]
    assert env["POSASSIST_PARAM_PRINTER"] == "POS-80 收据"
    text = (CATALOG / "printer-resume-windows" / "printer_resume.ps1").read_text(encoding="utf-8")
    assert "-Filter" not in text  # the printer is found by comparing names, never by a query


def test_new_windows_scripts_are_refused_on_linux_and_linux_ones_on_windows(windows: None) -> None:
    from posassist.agent.errors import ScriptRefusedError

    for script_id in ("modemmanager-ignore", "usb-power-always-on", "cups-enable-queue"):
        manifest, _ = load(script_id)
        with pytest.raises(ScriptRefusedError):
            interpreter_argv(manifest, manifest.entry, platform="windows")
