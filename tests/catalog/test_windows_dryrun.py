"""Windows catalog paths, dry run: this machine has no Windows, so the runner's command line is
built with platform="windows" (absolute interpreter path, parameters as separate argv items or
env), the Python scripts' Windows command plans are checked item by item, and the PowerShell
texts are checked for string-built commands. Nothing here starts a Windows tool."""

from __future__ import annotations

import importlib.util
import ntpath
import re
import sys
import types
from typing import Any

import pytest

import posassist.agent.scripts.process as process
from posassist.agent.scripts.process import interpreter_argv, minimal_env
from posassist.protocol.manifest import validate_params

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
    assert module("collect-log-bundle", "log_bundle.py").SOURCES["windows"] == {
        "pos": "C:\\POS\\logs"
    }
    # fix-printer-port has no fixed path: the POS profile names the file (docs/scripts.md#profile)
    from posassist.agent.profile import load_profile, profile_env

    env = profile_env(load_profile("windows-sqlexpress"))
    assert env["POSASSIST_PROFILE_CONFIG"] == "C:\\POS\\config\\pos.ini"


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
