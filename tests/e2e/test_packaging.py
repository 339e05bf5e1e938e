"""What gets installed: import names under ``posassist`` only, and an agent wheel for tills.

The whole system installs as ``posassist`` (Python 3.11); a till installs ``posassist-agent``
(Python 3.8+) with only the agent's dependencies and only the ``posassist-agent`` command.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from scripts.build_agent_wheel import build

ROOT = Path(__file__).resolve().parents[2]
PY38 = ROOT / ".venv38" / "bin" / "python"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
#: What only the relay and the console need; none of it may reach a till.
SERVER_ONLY = {"aiohttp", "sqlalchemy", "asyncpg", "alembic", "uvloop", "prometheus-client"}


def _names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split("[")[0].split(">")[0].split("<")[0].strip() for r in requirements}


def test_installed_posassist_exposes_no_generic_top_level_module(tmp_path: Path) -> None:
    code = (
        "import importlib.util, sys\n"
        "bad = [m for m in ('protocol', 'agent', 'console', 'relay', 'client')"
        " if importlib.util.find_spec(m) is not None]\n"
        "import posassist.relay.app, posassist.console.__main__, posassist.agent.run\n"
        "print(bad)\n"
    )
    # From a folder that is not the checkout, as a user's shell would be.
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_package_folder_is_installed() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    found = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *relative)))
    assert found - listed == set(), "add these to [tool.setuptools] packages"


def test_agent_distribution_is_the_agent_with_its_own_dependencies_only() -> None:
    agent = PYPROJECT["tool"]["posassist"]["agent"]
    assert set(agent["scripts"]) == {"posassist-agent"}
    assert all(p.split(".")[1] in ("protocol", "client", "agent") for p in agent["packages"])
    assert _names(agent["dependencies"]) & SERVER_ONLY == set()
    # everything the agent needs, the whole system has too (the demo runs an agent)
    assert _names(agent["dependencies"]) - {"tomli"} <= _names(PYPROJECT["project"]["dependencies"])


@pytest.mark.slow
@pytest.mark.py38
def test_agent_wheel_installs_on_python38_without_relay_or_console(tmp_path: Path) -> None:
    if not PY38.exists():
        pytest.fail(f"{PY38} is missing: `make test` builds it from Python 3.8 (docs/windows7.md)")
    wheel = build(tmp_path / "dist")
    venv = tmp_path / "till-venv"
    subprocess.run([str(PY38), "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(ROOT / "constraints-py38.txt"),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    assert (venv / "bin" / "posassist-agent").exists()
    assert not (venv / "bin" / "posassist-relay").exists()
    assert not (venv / "bin" / "posassist").exists()
    frozen = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.lower()
    installed = {line.split("==")[0].replace("_", "-") for line in frozen.split()}
    assert installed & SERVER_ONLY == set()
    code = (
        "import importlib, importlib.util, pkgutil, sys\n"
        "assert sys.version_info[:2] == (3, 8)\n"
        "import posassist\n"
        "names = [i.name for i in pkgutil.walk_packages(posassist.__path__, 'posassist.')]\n"
        "for name in names:\n"
        "    if not name.endswith('__main__'):\n"
        "        importlib.import_module(name)\n"
        "assert importlib.util.find_spec('posassist.relay') is None\n"
        "assert importlib.util.find_spec('posassist.console') is None\n"
        "assert importlib.util.find_spec('protocol') is None\n"
        "print(sorted({n.split('.')[1] for n in names}))\n"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-W", "ignore", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['agent', 'client', 'protocol']"
    helped = subprocess.run(
        [str(venv / "bin" / "posassist-agent"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0, helped.stderr
    assert "enroll" in helped.stdout


#: Which of our packages each package may import (docs/packaging.md).
MAY_IMPORT = {
    "protocol": set(),
    "client": {"protocol"},
    "agent": {"protocol", "client"},
    "console": {"protocol", "client"},
    "relay": {"protocol", "client"},
}


def _our_imports(path: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found |= {n.split(".")[1] for n in names if n.startswith("posassist.")}
    return found


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_package_imports_only_what_it_may(package: str) -> None:
    wrong = {
        f"{path.relative_to(ROOT)} imports posassist.{name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in _our_imports(path) - MAY_IMPORT[package] - {package}
    }
    assert wrong == set()


def test_a_built_relay_wheel_holds_the_web_consoles_templates_and_htmx(tmp_path: Path) -> None:
    """readme-walk 15 L9: setuptools warned that relay/web/static and relay/web/templates "would
    be ignored"; a relay installed from a wheel (not editable) must still serve its pages."""
    import zipfile

    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    assert "would be ignored" not in built.stdout + built.stderr
    (wheel,) = tmp_path.glob("posassist-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    web = ROOT / "relay" / "web"
    wanted = {
        f"posassist/relay/web/{path.relative_to(web).as_posix()}"
        for folder in ("static", "templates")
        for path in (web / folder).iterdir()
        if path.is_file()
    }
    assert "posassist/relay/web/static/htmx.min.js" in wanted
    assert "posassist/relay/web/templates/base.html" in wanted
    assert wanted - names == set(), "missing from the wheel"
