"""``python -m benchmarks.suite``'s start (benchmarks/suite.py ``main``), with nothing measured:
a missing plotting library is said before any measuring, and a ``--quick`` smoke run never
writes where a real run's results go (README.md#benchmarks)."""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from benchmarks import suite

ROOT = Path(__file__).resolve().parents[1]


def not_measured(args: Any) -> suite.Results:
    raise AssertionError("the suite started measuring")


def test_the_suite_says_how_to_get_matplotlib_before_it_measures_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec

    def without_matplotlib(name: str, *args: Any) -> Any:
        return None if name == "matplotlib" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_matplotlib)
    monkeypatch.setattr(suite, "run", not_measured)
    with pytest.raises(SystemExit) as exited:
        suite.main(["--quick"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "matplotlib is missing (the [bench] extra)" in err
    assert "make bench" in err


def test_a_quick_run_writes_to_a_temporary_folder_and_says_it_is_a_smoke_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    measured = json.loads((ROOT / "benchmarks/results/2026-12-06.json").read_text())
    for key in ("fanout", "baseline_fanout"):
        measured[key] = {int(n): v for n, v in measured[key].items()}

    def pretend(args: Any) -> suite.Results:
        return suite.Results(**{**measured, "settings": vars(args).copy()})

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # plots stubbed
    monkeypatch.setattr(suite, "run", pretend)
    monkeypatch.setattr(suite, "plots", lambda res, out: [])
    assert suite.main(["--quick"]) == 0
    out = Path(capsys.readouterr().out.split("written to ", 1)[1].split()[0])
    try:
        assert out.parent == Path(tempfile.gettempdir())
        assert out != suite.RESULTS
        text = (out / "2026-12-06.md").read_text()
        assert text.startswith("# Capacity suite, 2026-12-06: a `--quick` smoke run")
        assert "≤ 70 (missed) |" in text  # 70.8 MB idle in that run
    finally:
        for written in out.iterdir():
            written.unlink()
        out.rmdir()
