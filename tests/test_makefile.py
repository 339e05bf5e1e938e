"""``make test``'s Python 3.8 leg (docs/windows7.md#the-python-38-leg), run through the real
Makefile: without a Python 3.8 it runs everything else and ends by saying the leg was skipped and
how to run it; with ``CI=true`` it fails before any test. The real ``test`` target runs, with a
stand-in ``python`` that only prints what it was asked (the suite itself is never run here) and the
venvs taken as built (``make -o``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILT = ("-o", ".venv/.installed-stamp", "-o", ".venv38/.installed-stamp")  # never (re)built here
HOWTO = "to run it: make test PYTHON38=/path/to/python3.8 (docs/windows7.md#the-python-38-leg)"


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine without Python 3.8: an empty home (no pyenv), no PYTHON38,
    no CI; and a ``bin/python`` that prints its arguments instead of running pytest."""
    if not shutil.which("make"):
        pytest.fail("make is missing: it is the project's entry point (README)")
    stand_in = tmp_path / "bin" / "python"
    stand_in.parent.mkdir()
    stand_in.write_text('#!/bin/sh\necho "[python] $*"\n')
    stand_in.chmod(0o755)
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON38", "CI", "MAKEFLAGS")}
    env["HOME"] = str(tmp_path / "home")
    env["STAND_IN_BIN"] = str(stand_in.parent)
    return env


#: A system Python 3.8 the Makefile's search would find even with an empty home: where there
#: is one, the machine without it is made as an operator would, by an empty PYTHON38.
SYSTEM_38 = [p for p in ("/usr/bin/python3.8", "/usr/local/bin/python3.8") if Path(p).exists()]
NO_38 = ("PYTHON38=",) if SYSTEM_38 else ()


def make(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    if not any(arg.startswith("PYTHON38=") for arg in args):
        args = (*NO_38, *args)
    return subprocess.run(
        ["make", "--no-print-directory", *BUILT, *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_makefile_finds_no_python38_on_this_machine(machine: dict[str, str]) -> None:
    shown = make(machine, "--eval", "show-38: ; @echo [$(PYTHON38)]", "show-38")
    assert shown.stdout == "[]\n", shown


def test_without_python38_make_test_runs_everything_else_and_ends_saying_so(
    machine: dict[str, str],
) -> None:
    result = make(machine, "test", f"BIN={machine['STAND_IN_BIN']}")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    runs = [line for line in lines if line.startswith("[python] -m pytest")]
    assert len(runs) == 2, result.stdout
    assert "tests/protocol" in runs[0]  # protocol/'s coverage pass: no 3.8 needed
    assert runs[1].endswith("-m not py38 tests"), runs[1]  # the rest of the suite, without the leg
    assert lines[0].startswith("note: no Python 3.8 found: the Python 3.8 leg will be skipped")
    assert lines[-2:] == [
        "SKIPPED: the Python 3.8 leg did not run (no Python 3.8 found): the agent was not tested",
        f"under the tills' Python (tests marked py38, .venv38); {HOWTO}",
    ], result.stdout
    assert result.stderr == ""


def test_in_ci_make_test_without_python38_fails_before_any_test(machine: dict[str, str]) -> None:
    result = make(dict(machine, CI="true"), "test", f"BIN={machine['STAND_IN_BIN']}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "[python]" not in result.stdout  # no test ran
    assert result.stderr.startswith(
        "error: no Python 3.8 found, and CI (CI=true) requires the Python 3.8 leg; " + HOWTO
    ), result.stderr


def test_the_ci_script_requires_the_leg() -> None:
    assert 'export CI="${CI:-true}"' in (ROOT / ".ci" / "run").read_text()


def test_with_python38_make_test_runs_the_leg_too(machine: dict[str, str]) -> None:
    stand_in = machine["STAND_IN_BIN"]
    for ci in ("", "true"):
        result = make(
            dict(machine, CI=ci), "test", f"BIN={stand_in}", f"PYTHON38={stand_in}/python"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        runs = [line for line in result.stdout.splitlines() if line.startswith("[python]")]
        assert runs[-1].endswith("--durations=15 tests"), runs  # every test, the py38 ones too
        assert "not py38" not in result.stdout
        assert result.stdout.splitlines()[-1] == f"the Python 3.8 leg ran ({stand_in}/python)"
