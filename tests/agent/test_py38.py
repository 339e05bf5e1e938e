"""agent/ must import on Python 3.8 (Windows 7 tills): vermin on the source, a real 3.8 run."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = [
    "agent.errors",
    "agent.redact",
    "agent.logtail",
    "agent.simprinter",
    "agent.collectors.escpos",
    "agent.collectors.serialports",
]


def find_python38() -> str | None:
    found = shutil.which("python3.8")
    candidates = [found] if found else []
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))
    for path in candidates:
        if path and os.access(path, os.X_OK):
            probe = subprocess.run([path, "-c", "pass"], capture_output=True, check=False)
            if probe.returncode == 0:
                return path
    return None


def test_agent_source_needs_nothing_newer_than_python_38():
    vermin = os.path.join(os.path.dirname(sys.executable), "vermin")
    if not os.path.exists(vermin):
        pytest.skip("vermin not installed")
    out = subprocess.run(
        [vermin, "-t=3.8-", "--no-tips", "--violations", os.path.join(ROOT, "agent")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout


@pytest.mark.skipif(find_python38() is None, reason="no Python 3.8 interpreter here")
def test_agent_modules_import_and_run_on_python_38():
    # protocol/ is not yet 3.8-clean (dataclass slots/kw_only, msgpack at import), so only its
    # error tree, which agent/ needs, is put beside agent/ for this check.
    python38 = find_python38()
    assert python38 is not None
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(os.path.join(ROOT, "agent"), os.path.join(tmp, "agent"))
        os.mkdir(os.path.join(tmp, "protocol"))
        open(os.path.join(tmp, "protocol", "__init__.py"), "w").close()
        shutil.copy(os.path.join(ROOT, "protocol", "errors.py"), os.path.join(tmp, "protocol"))
        code = (
            f"import importlib\nfor m in {MODULES!r}: importlib.import_module(m)\n"
            "from agent.simprinter import SimPrinter\n"
            "from agent.collectors.escpos import probe_tcp\n"
            "with SimPrinter() as s:\n"
            "    print(probe_tcp(*s.start_tcp()).outcome.value)\n"
        )
        out = subprocess.run(
            [python38, "-c", code],
            cwd=tmp,
            env={"PYTHONPATH": tmp},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
