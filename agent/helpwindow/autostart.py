"""The desktop session's autostart entry that opens the help window at log-in.

Python 3.8, stdlib only: an XDG autostart ``.desktop`` file on Linux, a ``.cmd`` in the user's
Startup folder on Windows (the latter not run on Windows yet; docs/helpwindow.md).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Mapping, Optional

from ..errors import ConfigError

__all__ = ["autostart_entry", "write_autostart"]

_DESKTOP_SPECIAL = re.compile(r'(["`$\\])')


def _desktop_arg(arg: str) -> str:
    # Desktop Entry Specification, "The Exec key": quote, and escape " ` $ \ inside quotes
    return '"' + _DESKTOP_SPECIAL.sub(r"\\\1", arg) + '"'


def autostart_entry(
    data_dir: Path,
    lang: str,
    *,
    python: Optional[str] = None,
    platform: str = sys.platform,
    env: Optional[Mapping[str, str]] = None,
) -> tuple[Path, str]:
    """Where the entry goes and what it holds, for this user (``env``: the environment)."""
    env = env if env is not None else {}
    python = python or sys.executable
    argv = [python, "-m", "posassist.agent", "help", "--data", str(data_dir), "--lang", lang]
    if platform == "win32":
        appdata = env.get("APPDATA")
        if not appdata:
            raise ConfigError("APPDATA is not set: no Startup folder to put the entry in")
        folder = Path(appdata, "Microsoft", "Windows", "Start Menu", "Programs", "Startup")
        if any('"' in a or "%" in a for a in argv):
            raise ConfigError('a path with " or % can not go in a Startup .cmd file')
        windowed = str(Path(python).with_name("pythonw.exe"))
        line = " ".join(f'"{a}"' for a in [windowed, *argv[1:]])
        return folder / "posassist-help.cmd", f'@start "" {line}\r\n'
    home = env.get("XDG_CONFIG_HOME") or (env.get("HOME", "") and env["HOME"] + "/.config")
    if not home:
        raise ConfigError("neither XDG_CONFIG_HOME nor HOME is set: no autostart folder")
    exec_line = " ".join(_desktop_arg(a) for a in argv)
    body = (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Name=获取帮助 / Get help (posassist)\n"
        f"Exec={exec_line}\n"
        "Terminal=false\n"
        "X-GNOME-Autostart-enabled=true\n"
    )
    return Path(home, "autostart", "posassist-help.desktop"), body


def write_autostart(data_dir: Path, lang: str, env: Mapping[str, str]) -> Path:
    """Write this user's autostart entry; its path."""
    path, body = autostart_entry(data_dir.resolve(), lang, env=env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        body.encode("utf-8")
    )  # as written: no newline translation (3.8 has no newline=)
    return path
