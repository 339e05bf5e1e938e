"""Build the till packages: a Linux ``.deb`` and a Windows offline bundle (``.zip``).

``python scripts/build_packages.py [--out DIR]`` (what ``make package`` runs) prints the paths it
wrote. Both carry the agent's own wheel (scripts/build_agent_wheel.py) and the wheels of its
dependencies, downloaded by platform tags from PyPI, so a till installs with no network:

- ``posassist-agent_<version>_amd64.deb``: installs into /opt/posassist, builds its own Python
  environment there from the wheels (the system's python3), and a hardened systemd unit
  (packaging/debian/); docs/install-linux.md.
- ``posassist-agent-<version>-win-offline.zip``: wheels for CPython 3.8 on win32 and win_amd64
  (pinned for Windows 7: packaging/windows/constraints-win7.txt), a manifest of SHA-256 hashes
  that installer.py checks before it changes anything, install.cmd and uninstall.cmd;
  docs/install-windows.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the checkout

from scripts.build_agent_wheel import build as build_agent_wheel

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
#: pip itself rides in both packages (it installs the rest offline); 24.3.1 is the last pip that
#: runs on Python 3.8.
PIP = "pip==24.3.1"
#: the Debian python3 the .deb is built for (Debian 12 "bookworm": 3.11)
DEB_PYTHON = (3, 11)
DEB_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
WIN_PLATFORMS = ("win32", "win_amd64")
WIN_PYTHON = (3, 8)


def version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"])


def debian_version(v: str) -> str:
    """PEP 440 to Debian: a pre-release sorts before its release (0.1.0.dev0 -> 0.1.0~dev0)."""
    for marker in (".dev", "a", "b", "rc"):
        if marker in v:
            head, _, tail = v.partition(marker)
            return f"{head}~{marker.lstrip('.')}{tail}"
    return v


def download(
    agent_wheel: Path,
    dest: Path,
    python: tuple[int, int],
    platforms: tuple[str, ...],
    constraints: Path,
    pip_python: str = sys.executable,
) -> None:
    """The agent's dependencies (binary wheels only) for one target, and pip.

    ``pip_python`` runs pip: pip evaluates environment markers (``python_version<'3.9'``) for the
    interpreter it runs in, whatever ``--python-version`` says, so the Windows wheels for 3.8 are
    chosen by a Python 3.8.
    """
    dest.mkdir(parents=True, exist_ok=True)
    tags = [arg for platform in platforms for arg in ("--platform", platform)]
    subprocess.run(
        [
            pip_python,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            *tags,
            "--python-version",
            f"{python[0]}.{python[1]}",
            "--implementation",
            "cp",
            "--abi",
            f"cp{python[0]}{python[1]}",
            "--abi",
            "abi3",
            "--abi",
            "none",
            "-c",
            str(constraints),
            "-d",
            str(dest),
            str(agent_wheel),
            PIP,
        ],
        check=True,
        timeout=600,
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_deb(agent_wheel: Path, out: Path, work: Path, revision: int = 1) -> Path:
    v = version()
    deb_version = f"{debian_version(v)}-{revision}"  # the package's own revision, for rebuilds
    root = work / "deb"
    wheels = root / "opt" / "posassist" / "wheels"
    download(agent_wheel, wheels, DEB_PYTHON, DEB_PLATFORMS, ROOT / "constraints.txt")
    src = PACKAGING / "debian"
    unit = root / "lib" / "systemd" / "system" / "posassist-agent.service"
    unit.parent.mkdir(parents=True)
    shutil.copyfile(src / "posassist-agent.service", unit)
    shutil.copyfile(
        ROOT / "docs" / "install-linux.md", root / "opt" / "posassist" / "README.install"
    )
    (root / "usr" / "bin").mkdir(parents=True)
    os.symlink("/opt/posassist/venv/bin/posassist-agent", root / "usr" / "bin" / "posassist-agent")
    control = root / "DEBIAN"
    control.mkdir()
    size_kb = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) // 1024
    major, minor = DEB_PYTHON
    (control / "control").write_text(
        "Package: posassist-agent\n"
        f"Version: {deb_version}\n"
        "Architecture: amd64\n"
        "Maintainer: posassist <posassist@example.invalid>\n"
        f"Depends: python3 (>= {major}.{minor}), python3 (<< {major}.{minor + 1}), passwd\n"
        f"Installed-Size: {size_kb}\n"
        "Section: admin\n"
        "Priority: optional\n"
        "Homepage: https://example.invalid/posassist\n"
        "Description: posassist store agent: remote assistance for a POS till\n"
        " Collects POS, printer and serial-port diagnostics and runs only vetted,\n"
        " signed remediation scripts; connects out to a posassist relay. Installs\n"
        " into /opt/posassist with its own Python environment and a systemd unit.\n",
        encoding="utf-8",
    )
    for name in ("preinst", "postinst", "prerm", "postrm"):
        text = (src / name).read_text(encoding="utf-8").replace("@VERSION@", v)
        (control / name).write_text(text, encoding="utf-8")
        (control / name).chmod(0o755)
    deb = out / f"posassist-agent_{deb_version}_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)],
        check=True,
        timeout=300,
        stdout=subprocess.DEVNULL,
    )
    return deb


def build_windows_bundle(agent_wheel: Path, out: Path, work: Path, python38: str) -> Path:
    v = version()
    name = f"posassist-agent-{v}-win"
    root = work / name
    constraints = PACKAGING / "windows" / "constraints-win7.txt"
    for platform in WIN_PLATFORMS:
        download(
            agent_wheel, root / "wheels" / platform, WIN_PYTHON, (platform,), constraints, python38
        )
    for file in ("installer.py", "launch.py", "posassist_service.py", "install.cmd"):
        shutil.copyfile(PACKAGING / "windows" / file, root / file)
    shutil.copyfile(PACKAGING / "windows" / "uninstall.cmd", root / "uninstall.cmd")
    shutil.copyfile(ROOT / "docs" / "install-windows.md", root / "README.md")
    files = {
        path.relative_to(root).as_posix(): _sha256(path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }
    manifest = {"format": 1, "version": v, "python": "3.8", "files": files}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    bundle = out / f"{name}-offline.zip"
    bundle.unlink(missing_ok=True)
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                z.write(path, f"{name}/{path.relative_to(root).as_posix()}")
    return bundle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where (default dist/)")
    parser.add_argument("--skip-deb", action="store_true", help="only the Windows bundle")
    parser.add_argument("--skip-windows", action="store_true", help="only the .deb")
    parser.add_argument(
        "--deb-revision",
        type=int,
        default=1,
        help="the .deb's revision (a rebuild of the same agent version: 1, 2, …)",
    )
    parser.add_argument(
        "--python38",
        default=os.environ.get("PYTHON38", ""),
        help="a Python 3.8 with pip, to choose the Windows wheels (default $PYTHON38)",
    )
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="posassist-package-") as tmp:
        work = Path(tmp)
        wheel = build_agent_wheel(work / "agent")
        shutil.copyfile(wheel, out / wheel.name)
        built = [out / wheel.name]
        if not args.skip_deb:
            built.append(build_deb(wheel, out, work, args.deb_revision))
        if not args.skip_windows:
            if not args.python38:
                parser.error("no Python 3.8: give --python38 or PYTHON38 (docs/windows7.md)")
            built.append(build_windows_bundle(wheel, out, work, args.python38))
    sums = "".join(f"{_sha256(p)}  {p.name}\n" for p in built)
    (out / "SHA256SUMS").write_text(sums, encoding="utf-8")
    for path in built:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
