"""agent/ and protocol/ stay importable on Python 3.8, the newest Python a Windows 7 till runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.cli import invite, provision, start_relay, stop
from tests.protocol.samples import SAMPLES

ROOT = Path(__file__).resolve().parents[2]
VERMIN = str(Path(sys.executable).with_name("vermin"))
SOURCES = [p for d in ("agent", "client", "protocol") for p in sorted((ROOT / d).rglob("*.py"))] + [
    ROOT / "tests" / "fakes" / "simprinter.py"
]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_parses_with_python38_grammar(path: Path) -> None:
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 8))


def test_vermin_finds_nothing_newer_than_python38() -> None:
    result = subprocess.run(
        [
            VERMIN,
            "-t=3.8-",
            "--no-tips",
            "--violations",
            "agent",
            "client",
            "protocol",
            "tests/fakes/simprinter.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_vermin_would_catch_a_python39_feature(tmp_path: Path) -> None:
    (tmp_path / "new.py").write_text("x = 'ab'.removeprefix('a')\n")
    result = subprocess.run(
        [VERMIN, "-t=3.8-", "--no-tips", "--violations", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0


PY38 = ROOT / ".venv38" / "bin" / "python"


def run38(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    if not PY38.exists():
        pytest.fail(f"{PY38} is missing: `make test` builds it from Python 3.8 (docs/windows7.md)")
    return subprocess.run(
        [str(PY38), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.py38
def test_agent_imports_round_trips_and_probes_a_printer_under_python38() -> None:
    code = (
        "import sys, pkgutil, importlib\n"
        "assert sys.version_info[:2] == (3, 8), sys.version\n"
        "import posassist.agent as agent, posassist.client as client\n"
        "import posassist.protocol as protocol\n"
        "for pkg in (agent, client, protocol):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if not info.name.endswith('__main__'):\n"
        "            importlib.import_module(info.name)\n"
        "from posassist.protocol import Codec\n"
        "from tests.protocol.samples import SAMPLES\n"
        "codec = Codec()\n"
        "for s in SAMPLES:\n"
        "    assert codec.encode(codec.decode(codec.encode(s))) == codec.encode(s), s.TAG\n"
        "from tests.fakes.simprinter import SimPrinter\n"
        "from posassist.agent.collectors.escpos import probe_tcp\n"
        "with SimPrinter() as printer:\n"
        "    assert probe_tcp(*printer.start_tcp()).outcome.value == 'ok'\n"
        "from posassist.agent.facts import gather\n"
        "from posassist.protocol import DeviceFacts\n"
        "facts = DeviceFacts(facts=gather(None)).facts\n"
        "assert facts['python'].startswith('3.8.'), facts\n"
        "print('ok', len(SAMPLES))\n"
    )
    result = run38("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {len(SAMPLES)}"


@pytest.mark.py38
def test_agent_under_python38_enrols_and_authenticates_with_relay(tmp_path: Path) -> None:
    relay_dir = tmp_path / "relay"
    store = provision(relay_dir)
    relay, url = start_relay(relay_dir)
    try:
        agent_dir = str(tmp_path / "till")
        enrolled = run38(
            "-m", "posassist.agent", "enroll", invite(relay_dir, store, url), "--data", agent_dir
        )
        assert enrolled.returncode == 0, enrolled.stderr
        assert "enrolled as device dev_" in enrolled.stdout
        result = run38("-m", "posassist.agent", "run", "--data", agent_dir, "--once")
        assert result.returncode == 0, result.stderr
        assert "connected to relay" in result.stdout
    finally:
        stop(relay)


@pytest.mark.py38
def test_script_runner_under_python38_kills_a_hung_script_and_restores_its_backup(
    tmp_path: Path,
) -> None:
    (tmp_path / "v").mkdir()
    config = tmp_path / "config.ini"
    config.write_bytes(b"port=COM3\x00")
    (tmp_path / "v" / "main.py").write_text(
        "import subprocess, sys, time\n"
        f"open({str(config)!r}, 'wb').write(b'half')\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print('hung', flush=True)\n"
        "time.sleep(600)\n"
    )
    code = (
        "import asyncio, json, sys\n"
        "from pathlib import Path\n"
        "from posassist.agent.scripts.backup import BackupStore\n"
        "from posassist.agent.scripts.runner import ScriptRunner\n"
        "from posassist.protocol.manifest import parse_manifest\n"
        "t = {'zh': 'x', 'en': 'x'}\n"
        "m = parse_manifest({'id': 'hang', 'version': '1.0.0', 'title': t, 'description': t,\n"
        "    'changes': t, 'platforms': ['linux'], 'interpreter': 'python', 'entry': 'main.py',\n"
        "    'files': ['main.py'], 'risk': 'B', 'consent': False, 'timeout': 1,\n"
        f"    'max_output': 1024, 'backup': [{str(config)!r}], 'expected_duration': 1}})\n"
        f"root = Path({str(tmp_path)!r})\n"
        "out = []\n"
        "async def keep(chunk):\n"
        "    out.append(chunk.data)\n"
        "async def main():\n"
        "    runner = ScriptRunner(backups=BackupStore(root / 'backups'))\n"
        "    return await runner.run(m, root / 'v', {}, on_output=keep)\n"
        "r = asyncio.run(main())\n"
        "assert sys.version_info[:2] == (3, 8)\n"
        "print(json.dumps([r.status, r.restore.verified, b''.join(out).decode()]))\n"
    )
    result = run38("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '["timed_out", true, "hung\\n"]'
    assert config.read_bytes() == b"port=COM3\x00"


@pytest.mark.py38
def test_agent_under_python38_starts_without_the_cryptography_deprecation_warning(
    tmp_path: Path,
) -> None:
    # the control: importing cryptography under 3.8 does warn (so the test can fail)
    warned = run38("-c", "from posassist.protocol.signing import Ed25519PrivateKey")
    assert "CryptographyDeprecationWarning" in warned.stderr
    # the agent's entry point silences that warning only: its one line of error stays alone
    result = run38("-m", "posassist.agent", "run", "--data", str(tmp_path / "none"), "--once")
    assert result.returncode == 2
    assert "Warning" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: agent configuration error")
    # other warnings are not filtered
    other = run38(
        "-c",
        "import warnings, posassist.agent.__main__\n"
        "warnings.warn('another deprecation', UserWarning)\n"
        "warnings.warn('Python 3.8 is no longer supported by the Python core team', "
        "DeprecationWarning)\n",
    )
    assert "UserWarning: another deprecation" in other.stderr, other.stderr
    assert "DeprecationWarning: Python 3.8 is no longer supported" in other.stderr  # not ours
    assert "CryptographyDeprecationWarning" not in other.stderr
