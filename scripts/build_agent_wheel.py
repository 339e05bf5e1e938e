"""Build the store agent's own wheel, ``posassist-agent``, from this checkout.

``python scripts/build_agent_wheel.py [--out DIR]`` prints the wheel's path. Tills install this
wheel (Python 3.8+, Windows 7 to 11 and Linux): the agent and only what it imports
(``posassist.protocol``, ``posassist.client``), with only the agent's dependencies and only the
``posassist-agent`` command. Its metadata lives in pyproject.toml under ``[tool.posassist.agent]``;
the version and package data come from ``[project]`` and ``[tool.setuptools]``. docs/packaging.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def agent_pyproject(full: dict[str, Any]) -> str:
    """The pyproject.toml of the agent's distribution, derived from the repository's own."""
    project = full["project"]
    tool = full["tool"]
    agent = tool["posassist"]["agent"]
    setuptools = tool["setuptools"]
    package_dir = {
        name: folder
        for name, folder in setuptools["package-dir"].items()
        if any(package == name or package.startswith(name + ".") for package in agent["packages"])
    }
    package_data = {
        name: files
        for name, files in setuptools["package-data"].items()
        if name == "*" or name in agent["packages"]
    }

    def toml(value: object) -> str:
        return json.dumps(value, ensure_ascii=False)  # JSON strings and arrays are TOML too

    lines = [
        "[build-system]",
        f"requires = {toml(full['build-system']['requires'])}",
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f"name = {toml(agent['name'])}",
        f"version = {toml(project['version'])}",
        'description = "posassist store agent: POS diagnostics and vetted fixes for a till."',
        f"requires-python = {toml(agent['requires-python'])}",
        f"dependencies = {toml(agent['dependencies'])}",
        "",
        "[project.scripts]",
        *(f"{toml(name)} = {toml(target)}" for name, target in agent["scripts"].items()),
        "",
        "[tool.setuptools]",
        f"packages = {toml(agent['packages'])}",
        "",
        "[tool.setuptools.package-dir]",
        *(f"{toml(name)} = {toml(folder)}" for name, folder in package_dir.items()),
        "",
        "[tool.setuptools.package-data]",
        *(f"{toml(name)} = {toml(files)}" for name, files in package_data.items()),
        "",
    ]
    return "\n".join(lines)


def build(out: Path) -> Path:
    """Build the wheel into ``out`` and return its path."""
    full = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    folders = set(full["tool"]["setuptools"]["package-dir"].values())
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="posassist-agent-") as tmp:
        project = Path(tmp)
        text = agent_pyproject(full)
        (project / "pyproject.toml").write_text(text, encoding="utf-8")
        wanted = tomllib.loads(text)["tool"]["setuptools"]["package-dir"].values()
        for folder in sorted(set(wanted) & folders):
            shutil.copytree(
                ROOT / folder,
                project / folder,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        before = set(out.glob("*.whl"))
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), tmp],
            check=True,
            timeout=600,
        )
    built = sorted(set(out.glob("posassist_agent-*.whl")) - before) or sorted(
        out.glob("posassist_agent-*.whl")
    )
    if not built:
        raise RuntimeError(f"pip wheel wrote no posassist_agent wheel to {out}")
    return built[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where (default dist/)")
    args = parser.parse_args()
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
