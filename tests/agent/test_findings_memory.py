"""POS memory growth across reports (§5 #30): a real process named like the POS allocates between
reports; the pos collector keeps its RSS history and the finding appears only for steady growth."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from posassist.agent.collectors import pos
from posassist.agent.diagnostics import DiagContext
from posassist.agent.findings import evaluate
from posassist.agent.profile import parse_profile
from posassist.agent.settings import Settings

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="comm from argv[0]")

LEAKY = """
import sys
held = []
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "grow":
        held.append(bytearray(40 * 1024 * 1024))  # touched: it is resident
    elif line.strip() == "free":
        held.clear()
    print("ok", flush=True)
"""


class FakePos:
    """A python process whose name (comm) is ``leaky-pos``, growing or freeing on request."""

    def __init__(self, tmp_path: Path) -> None:
        exe = tmp_path / "leaky-pos"
        os.symlink(os.path.realpath(sys.executable), exe)  # comm is the exec'd file's name
        self.proc = subprocess.Popen(
            [str(exe), "-c", LEAKY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def do(self, what: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        assert self._line() == "ok"  # done before the next report is collected

    def close(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=10)


def _ctx(tmp_path: Path) -> DiagContext:
    profile = parse_profile('name = "leaky"\n[process]\nnames = ["leaky-pos"]\n', tmp_path)
    return DiagContext(Settings(), tmp_path, profile)


def _codes(ctx: DiagContext) -> list[str]:
    report = {"sections": {"pos": {"ok": True, "data": pos.collect(ctx)}}}
    return [f.code for f in evaluate(report, ctx.profile, time.time())]


def test_a_pos_process_that_keeps_growing_is_a_finding(tmp_path: Path) -> None:
    fake = FakePos(tmp_path)
    try:
        ctx = _ctx(tmp_path)
        assert "pos.not_running" not in _codes(ctx)
        for _ in range(3):
            fake.do("grow")
            codes = _codes(ctx)
        assert "pos.memory_growing" in codes
        data = pos.collect(ctx)
        (proc,) = data["processes"]
        assert proc["pid"] == fake.proc.pid
        assert len(proc["rss_history"]) == 5
        rss = [r for _, r in proc["rss_history"]]
        assert rss[3] - rss[0] >= 100 * 1024 * 1024
    finally:
        fake.close()


def test_memory_that_is_freed_again_is_not_a_leak(tmp_path: Path) -> None:
    fake = FakePos(tmp_path)
    try:
        ctx = _ctx(tmp_path)
        _codes(ctx)
        for step in ("grow", "grow", "free", "grow"):
            fake.do(step)
            codes = _codes(ctx)
        assert "pos.memory_growing" not in codes
    finally:
        fake.close()


def test_too_few_samples_or_small_growth_are_not_a_leak() -> None:
    def report(history: list[list[float]]) -> dict[str, object]:
        procs = [{"pid": 1, "name": "pos.exe", "started": 1.0, "rss_history": history}]
        return {"sections": {"pos": {"ok": True, "data": {"running": True, "processes": procs}}}}

    mb = 1024 * 1024
    three = [[0, 100 * mb], [60, 300 * mb], [120, 500 * mb]]
    assert evaluate(report(three), None, 1e9 * 2) == []
    small = [[0, 400 * mb], [60, 420 * mb], [120, 440 * mb], [180, 460 * mb]]
    assert evaluate(report(small), None, 1e9 * 2) == []
    steady = [[0, 100 * mb], [600, 160 * mb], [1200, 220 * mb], [1800, 300 * mb]]
    (finding,) = evaluate(report(steady), None, 1e9 * 2)
    assert finding.code == "pos.memory_growing"
    assert finding.detail["en"] == "pos.exe (pid 1) grew from 100 MB to 300 MB over 30 min"
