"""Install, upgrade or remove the posassist agent on a Windows till from the offline bundle.

Run by install.cmd / uninstall.cmd with the till's own Python 3.8+ (standard library only; Windows
7 SP1 to 11, 32- and 64-bit). Nothing is changed before the bundle's hashes and the data folder
are checked. docs/install-windows.md; tested on Linux with the Windows tools recorded
(tests/e2e/test_windows_bundle.py), never yet run on Windows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

SERVICE = "posassist-agent"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
#: Free space the data folder needs: the outbox, logs, backups of a script run.
MIN_FREE_BYTES = 200 * 1024 * 1024
#: Well-known SIDs, so that a Chinese Windows (本地系统, Administrators 的中文名) reads them too.
SYSTEM_SID = "*S-1-5-18"
ADMINISTRATORS_SID = "*S-1-5-32-544"
#: What the service does when the agent stops with an error: restart after 5 s, 10 s, then 60 s;
#: the count starts again after a day without failures (sc.exe failure).
FAILURE_ACTIONS = "restart/5000/restart/10000/restart/60000"
FAILURE_RESET_SECONDS = 86400
HELP_NAME = "获取帮助 Get help (posassist)"
_SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")
_CMD_UNSAFE = re.compile(r'["%^&|<>\r\n]')

Runner = Callable[[List[str]], None]


class InstallError(Exception):
    """A refusal for the person at the till, in Chinese and English; exit status 2."""

    def __init__(self, zh: str, en: str) -> None:
        super().__init__(f"{zh} / {en}")
        self.zh = zh
        self.en = en


# -- the bundle ------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_bundle(root: Path) -> Dict[str, object]:
    """The bundle's manifest, once every file it lists has its recorded SHA-256, no file
    anywhere in the bundle is unlisted and none is a symbolic link; else InstallError naming
    the first bad file. Reads, changes nothing."""
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InstallError(
            f"安装包缺少或损坏了 {MANIFEST}: 请重新下载",
            f"the bundle's {MANIFEST} is missing or unreadable ({exc}): download it again",
        ) from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != MANIFEST_FORMAT
        or not isinstance(manifest.get("version"), str)
        or not isinstance(files, dict)
        or not files
    ):
        raise InstallError(
            f"{MANIFEST} 格式不对: 请重新下载安装包",
            f"{MANIFEST} is not a format-{MANIFEST_FORMAT} manifest: download the bundle again",
        )
    for name, digest in sorted(files.items()):
        parts = Path(name).parts
        if (
            not isinstance(digest, str)
            or not _SHA256.match(digest)
            or Path(name).is_absolute()
            or ".." in parts
            or "\\" in name
            or ":" in name
            or not parts
        ):
            raise InstallError(
                f"{MANIFEST} 中的条目无效: {name!r}",
                f"{MANIFEST} has an invalid entry: {name!r}",
            )
        path = root / name
        if not path.is_file():
            raise InstallError(
                f"安装包不完整, 缺少 {name}: 请重新下载",
                f"the bundle is incomplete, {name} is missing: download it again",
            )
        if sha256_file(path) != digest:
            raise InstallError(
                f"安装包已损坏或被改动: {name} 的校验值不符, 未安装任何东西",
                f"the bundle is corrupted or altered: {name} does not match its SHA-256;"
                " nothing was installed",
            )
    listed = set(files) | {MANIFEST}
    for top, dirs, names in os.walk(str(root)):  # never follows a symlink
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")  # Python's own, never imported
        for entry in sorted(dirs + names):
            path = Path(top) / entry
            name = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise InstallError(
                    f"安装包中有符号链接 {name}, 未安装任何东西",
                    f"the bundle holds a symbolic link, {name}; nothing was installed",
                )
            if entry in names and name not in listed:
                raise InstallError(
                    f"安装包中有未登记的文件 {name}, 未安装任何东西",
                    f"the bundle holds {name}, which its manifest does not list; "
                    "nothing was installed",
                )
    return manifest


def wheel_platform(pointer_size: Optional[int] = None) -> str:
    """``win32`` or ``win_amd64``: the wheels that fit this Python (its bits, not the OS's)."""
    size = pointer_size if pointer_size is not None else struct.calcsize("P")
    return "win_amd64" if size == 8 else "win32"


# -- the till --------------------------------------------------------------------------------


def preflight_data(data: Path, min_free: int = MIN_FREE_BYTES) -> bool:
    """Make sure ``data`` is a folder we can write, with room; True if it was made here.

    On failure a folder made here is removed again and InstallError says what to fix.
    """
    created = not data.exists()
    probe = data / ".posassist-install-probe"
    try:
        data.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
        free = shutil.disk_usage(str(data)).free
    except OSError as exc:
        _undo_data(data, created, probe)
        raise InstallError(
            f"无法写入数据文件夹 {data} ({exc.strerror or exc}): 请换一个可写的文件夹"
            " (--data) 或腾出磁盘空间, 未安装任何东西",
            f"can not write the data folder {data} ({exc.strerror or exc}): choose a writable"
            " folder (--data) or free some disk space; nothing was installed",
        ) from None
    if free < min_free:
        _undo_data(data, created, probe)
        raise InstallError(
            f"{data} 所在磁盘只剩 {free // 2**20} MB, 至少需要 {min_free // 2**20} MB,"
            " 未安装任何东西",
            f"the disk of {data} has {free // 2**20} MB free, at least {min_free // 2**20} MB"
            " are needed; nothing was installed",
        )
    return created


def _undo_data(data: Path, created: bool, probe: Path) -> None:
    try:
        if probe.exists():
            probe.unlink()
        if created and data.is_dir():
            shutil.rmtree(str(data))
    except OSError:
        pass


def acl_commands(data: Path, desktop_user: str) -> List[List[str]]:
    """icacls: the data folder (the till's identity) for SYSTEM and Administrators only; its
    ``link`` folder (the help window's port and per-start secret) readable by the desktop user."""
    return [
        [
            "icacls",
            str(data),
            "/inheritance:r",
            "/grant:r",
            f"{SYSTEM_SID}:(OI)(CI)F",
            f"{ADMINISTRATORS_SID}:(OI)(CI)F",
        ],
        ["icacls", str(data / "link"), "/grant", f"{desktop_user}:(OI)(CI)RX"],
    ]


def service_commands(python: Path, install_dir: Path, data: Path, exists: bool) -> List[List[str]]:
    """sc.exe: the service (created, or reconfigured on an upgrade) starts at boot and is
    restarted when the agent stops with an error (failureflag: not only on a crash)."""
    bin_path = subprocess.list2cmdline(
        [str(python), str(install_dir / "posassist_service.py"), "--data", str(data)]
    )
    if exists:
        first = ["sc.exe", "config", SERVICE, "binPath=", bin_path, "start=", "auto"]
    else:
        first = [
            "sc.exe",
            "create",
            SERVICE,
            "binPath=",
            bin_path,
            "start=",
            "auto",
            "DisplayName=",
            "posassist agent",
        ]
    return [
        first,
        ["sc.exe", "description", SERVICE, "posassist 收银台远程协助 / posassist store agent"],
        [
            "sc.exe",
            "failure",
            SERVICE,
            "reset=",
            str(FAILURE_RESET_SECONDS),
            "actions=",
            FAILURE_ACTIONS,
        ],
        ["sc.exe", "failureflag", SERVICE, "1"],
    ]


def shortcut_paths(env: Dict[str, str]) -> List[Path]:
    """The all-users start menu entry and the all-users autostart entry of "get help"."""
    programdata = env.get("PROGRAMDATA") or env.get("ALLUSERSPROFILE")
    if not programdata:
        raise InstallError(
            "找不到 PROGRAMDATA 环境变量: 无法放开始菜单快捷方式",
            "PROGRAMDATA is not set: no start menu to put the shortcut in",
        )
    programs = Path(programdata, "Microsoft", "Windows", "Start Menu", "Programs")
    return [programs / "posassist" / f"{HELP_NAME}.lnk", programs / "StartUp" / f"{HELP_NAME}.lnk"]


_SHORTCUT_VBS = """\
Set sh = CreateObject("WScript.Shell")
Set lnk = sh.CreateShortcut(WScript.Arguments(0))
lnk.TargetPath = WScript.Arguments(1)
lnk.WorkingDirectory = WScript.Arguments(2)
lnk.Description = WScript.Arguments(3)
lnk.WindowStyle = 7
lnk.Save
"""


def launcher_files(python: Path, install_dir: Path, data: Path) -> Dict[str, str]:
    """The small files in the install folder: the agent's command, the help window's starter."""
    for path in (python, install_dir, data):
        if _CMD_UNSAFE.search(str(path)) or not str(path).isascii():
            raise InstallError(
                f"路径只能用英文字母和数字等字符: {path}",
                f'the path must be plain ASCII without " % ^ & | < >: {path}',
            )
    pythonw = python.with_name("pythonw.exe")
    launch = install_dir / "launch.py"
    return {
        "posassist-agent.cmd": f'@"{python}" "{launch}" %*\r\n',
        "get-help.cmd": (
            f'@start "" "{pythonw}" "{launch}" help --data "{data}"\r\n'  # no console stays open
        ),
        "shortcut.vbs": _SHORTCUT_VBS.replace("\n", "\r\n"),
    }


def pip_command(python: Path, bundle: Path, platform: str, target: Path, version: str) -> List[str]:
    """pip (from its wheel in the bundle) installs the agent from the bundle's wheels only."""
    wheels = bundle / "wheels" / platform
    pips = sorted(wheels.glob("pip-*.whl"))
    if not pips:
        raise InstallError("安装包中缺少 pip", f"the bundle has no pip wheel in {wheels}")
    major, minor = sys.version_info[:2]
    return [
        str(python),
        str(pips[-1] / "pip"),
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-index",
        "--no-cache-dir",
        "--find-links",
        str(wheels),
        "--target",
        str(target),
        # the tags of the wheels this bundle carries: a Windows Python of these matches them
        # anyway, and the same command can be checked on Linux
        "--only-binary=:all:",
        "--platform",
        platform,
        "--python-version",
        f"{major}.{minor}",
        "--implementation",
        "cp",
        "--abi",
        f"cp{major}{minor}",
        f"posassist-agent=={version}",
    ]


def run_command(argv: List[str]) -> None:
    """Run one Windows tool; InstallError with its own words if it fails."""
    # pip reads only its command line: no pip.ini or PIP_* variable of the till's
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        said = (done.stdout + done.stderr).strip()[-500:]
        raise InstallError(
            f"命令失败 ({done.returncode}): {argv[0]} {said}",
            f"command failed ({done.returncode}): {' '.join(argv[:3])} … {said}",
        )


def service_exists(run: Runner) -> bool:
    try:
        run(["sc.exe", "query", SERVICE])
    except InstallError:
        return False
    return True


def stop_service(run: Runner) -> None:
    """Stop the service if it runs (an upgrade); ``net stop`` waits for it to stop."""
    try:
        run(["net", "stop", SERVICE])
    except InstallError:
        pass  # not running


def install(
    bundle: Path,
    install_dir: Path,
    data: Path,
    desktop_user: str,
    env: Dict[str, str],
    run: Runner = run_command,
    python: Optional[Path] = None,
    platform: Optional[str] = None,
) -> str:
    """Install or upgrade; the data folder (the till's identity) is kept. Returns the version."""
    python = python or Path(sys.executable)
    platform = platform or wheel_platform()
    manifest = verify_bundle(bundle)
    version = str(manifest["version"])
    files = launcher_files(python, install_dir, data)
    links = shortcut_paths(env)
    created = preflight_data(data)
    staging = install_dir / "lib.new"
    try:
        if staging.exists():
            shutil.rmtree(str(staging))
        install_dir.mkdir(parents=True, exist_ok=True)
        run(pip_command(python, bundle, platform, staging, version))
    except (InstallError, OSError) as exc:
        shutil.rmtree(str(staging), ignore_errors=True)
        if created:
            shutil.rmtree(str(data), ignore_errors=True)
        if isinstance(exc, InstallError):
            raise
        raise InstallError(
            f"无法写入安装文件夹 {install_dir}: {exc}", f"can not write {install_dir}: {exc}"
        ) from None
    # From here the new files are complete: stop the old agent, swap, register, start.
    upgrade = service_exists(run)
    if upgrade:
        if not wait_for_scripts(install_dir, data, UNINSTALL_WAIT, run, python, "upgrade"):
            _say(
                "脚本仍在运行, 停止服务时将取消它并恢复备份",
                "a script still runs: stopping the service cancels it and restores its backup",
            )
        stop_service(run)
    lib, old = install_dir / "lib", install_dir / "lib.old"
    shutil.rmtree(str(old), ignore_errors=True)
    try:
        if lib.exists():
            os.replace(str(lib), str(old))
    except OSError as exc:  # Windows: a file in it is open (the help window still runs)
        shutil.rmtree(str(staging), ignore_errors=True)
        if upgrade:
            run(["net", "start", SERVICE])  # the old version serves on
        raise InstallError(
            f"程序文件正被使用 ({exc.strerror or exc}): 请关闭 获取帮助 窗口后重新安装;"
            " 原版本继续运行",
            f"the program files are in use ({exc.strerror or exc}): close the Get help"
            " window and install again; the old version runs on",
        ) from None
    os.replace(str(staging), str(lib))
    shutil.rmtree(str(old), ignore_errors=True)
    for name in ("launch.py", "posassist_service.py"):
        shutil.copyfile(str(bundle / name), str(install_dir / name))
    for name, text in files.items():
        (install_dir / name).write_bytes(text.encode("ascii"))
    (data / "link").mkdir(exist_ok=True)
    for argv in acl_commands(data, desktop_user):
        run(argv)
    for argv in service_commands(python, install_dir, data, upgrade):
        run(argv)
    for link in links:
        link.parent.mkdir(parents=True, exist_ok=True)
        run(
            [
                "cscript.exe",
                "//nologo",
                str(install_dir / "shortcut.vbs"),
                str(link),
                str(install_dir / "get-help.cmd"),
                str(install_dir),
                HELP_NAME,
            ]
        )
    if (data / "agent.json").exists():
        run(["net", "start", SERVICE])  # enrolled: start now (a new till starts after enroll)
    return version


#: Seconds an uninstall waits for a vetted script that is running to finish (``--wait``).
UNINSTALL_WAIT = 300.0


def wait_for_scripts(
    install_dir: Path,
    data: Path,
    wait: float,
    run: Runner,
    python: Optional[Path] = None,
    purpose: str = "uninstall",
) -> bool:
    """Before the service stops: the installed agent waits (``wait-idle``) for a script that
    runs to finish, at most ``wait`` seconds, and records it in the till's audit.log. False if
    one still runs: stopping the service then cancels it cleanly (its processes killed, its
    backup restored; docs/agent.md#uninstall-while-a-script-runs)."""
    launch = install_dir / "launch.py"
    if not launch.exists() or not (data / "agent.json").exists():
        return True  # no agent installed, or never enrolled: nothing can run
    try:
        run(
            [
                str(python or Path(sys.executable)),
                str(launch),
                "wait-idle",
                "--data",
                str(data),
                "--timeout",
                f"{wait:g}",
                "--for",
                purpose,
            ]
        )
    except InstallError:
        return False
    return True


def uninstall(
    install_dir: Path,
    data: Path,
    env: Dict[str, str],
    purge: bool,
    run: Runner = run_command,
    wait: float = UNINSTALL_WAIT,
    python: Optional[Path] = None,
) -> None:
    """Stop and remove the service, the shortcuts and the program; keep the data folder (the
    till's identity: a reinstall carries on as the same device) unless ``purge``. A script
    that runs is waited for first, up to ``wait`` seconds, then cancelled by the stop."""
    if service_exists(run):
        if not wait_for_scripts(install_dir, data, wait, run, python):
            _say(
                "脚本仍在运行, 停止服务时将取消它并恢复备份",
                "a script still runs: stopping the service cancels it and restores its backup",
            )
        stop_service(run)
        run(["sc.exe", "delete", SERVICE])
    for link in shortcut_paths(env):
        if link.exists():
            link.unlink()
    menu = shortcut_paths(env)[0].parent
    if menu.is_dir() and not any(menu.iterdir()):
        menu.rmdir()
    shutil.rmtree(str(install_dir), ignore_errors=True)
    if purge:
        shutil.rmtree(str(data), ignore_errors=True)


def _say(zh: str, en: str) -> None:
    try:
        print(f"{zh} / {en}", flush=True)
    except (OSError, UnicodeError):
        print(en, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    env = dict(os.environ)
    programfiles = env.get("PROGRAMFILES", r"C:\Program Files")
    programdata = env.get("PROGRAMDATA", r"C:\ProgramData")
    parser = argparse.ArgumentParser(prog="installer.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("install", "uninstall", "verify"))
    parser.add_argument("--install-dir", type=Path, default=Path(programfiles, "posassist"))
    parser.add_argument("--data", type=Path, default=Path(programdata, "posassist"))
    parser.add_argument(
        "--desktop-user",
        default=env.get("USERNAME", ""),
        help="the merchant's Windows account, whose help window may reach the agent",
    )
    parser.add_argument("--purge", action="store_true", help="uninstall: also delete the data")
    parser.add_argument(
        "--wait",
        type=float,
        default=UNINSTALL_WAIT,
        help="uninstall: seconds to wait for a running script before cancelling it",
    )
    args = parser.parse_args(argv)
    bundle = Path(__file__).resolve().parent
    try:
        if sys.version_info < (3, 8):
            raise InstallError("需要 Python 3.8 或更新版本", "Python 3.8 or newer is needed")
        if args.command == "verify":
            version = str(verify_bundle(bundle)["version"])
            _say(f"安装包完整 ({version})", f"the bundle is intact ({version})")
        elif args.command == "install":
            if not args.desktop_user:
                raise InstallError("请用 --desktop-user 指定收银员的账户", "give --desktop-user")
            version = install(bundle, args.install_dir, args.data, args.desktop_user, env)
            _say(
                f"已安装 posassist 代理 {version}; 数据在 {args.data}",
                f"installed the posassist agent {version}; its data is in {args.data}",
            )
        else:
            uninstall(args.install_dir, args.data, env, args.purge, wait=args.wait)
            kept = "" if args.purge else f"; {args.data} kept"
            _say("已卸载 posassist 代理", f"uninstalled the posassist agent{kept}")
    except InstallError as exc:
        _say(exc.zh, exc.en)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
