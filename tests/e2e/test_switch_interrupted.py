"""An interrupted provider switch (issue 17 attack F1): two real relay processes, real agent
processes killed (``os._exit``) at each step of the switch, or the swap refused by the disk
(``retired`` a plain file). The next ``posassist-agent run`` or a retried ``switch-provider``
finishes the switch from ``switch.new/``: the identity the new relay accepted is never deleted,
the old relay is told once, no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.e2e.cli import ROOT, ok, py
from tests.e2e.test_switch_provider import (  # noqa: F401 - fixtures
    Provider,
    _journal,
    providers,
    till,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow  # two relay processes and an agent per test

#: Run switch-provider with a fault: ``os._exit(137)`` when the named step is reached
#: (mid-swap: after ``calls`` file replaces once the old relay was told; the first writes
#: the journal, then the swap's moves).
KILLER = """
import os, sys
from posassist.agent import handover
step, calls = sys.argv[1], int(sys.argv[2])
real_tell, real_replace = handover.tell_old_relay, os.replace
count = [0]
told_it = []
async def tell(identity, timeout):
    if step == "before-tell":
        os._exit(137)
    told = await real_tell(identity, timeout)
    told_it.append(True)
    if step == "after-tell":
        os._exit(137)
    return told
def replace(a, b):
    count[0] += len(told_it)  # the replaces after the old relay was told
    if step == "mid-swap" and count[0] > calls:
        os._exit(137)
    return real_replace(a, b)
handover.tell_old_relay = tell
handover.os.replace = replace
from posassist.agent.__main__ import main
sys.exit(main(sys.argv[3:]))
"""


def _killed_switch(data: Path, token: str, step: str, calls: int = 0) -> None:
    args = ["switch-provider", "--data", str(data), "--token", token, "--yes"]
    done = subprocess.run(
        [sys.executable, "-c", KILLER, step, str(calls), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 137, done.stdout + done.stderr


def _device(data: Path) -> str:
    return str(json.loads((data / "agent.json").read_text())["device_id"])


def _staged_device(data: Path) -> str:
    return str(json.loads((data / "switch.new" / "agent.json").read_text())["device_id"])


def _finished(data: Path, old: Provider, new: Provider, old_device: str, new_device: str) -> None:
    assert not (data / "switch.new").exists()
    assert _device(data) == new_device
    retired = data / "retired" / old_device
    assert json.loads((retired / "agent.json").read_text())["device_id"] == old_device
    assert (retired / "agent.key").exists()
    assert json.loads((retired / "handover.json").read_text())["told"] == "told"
    assert old.devices()[old_device][1] == "handed_over"
    assert json.loads((data / "settings.json").read_text())["time_zone"] == "Asia/Shanghai"
    ok(py("agent", "run", "--once", "--data", str(data)))  # the new relay takes the new one
    assert new.devices()[new_device][1] == "active"


@pytest.mark.parametrize(
    ("step", "calls", "resume"),
    [
        ("before-tell", 0, "run"),
        ("after-tell", 0, "run"),
        ("after-tell", 0, "switch"),
        ("mid-swap", 1, "run"),
        ("mid-swap", 3, "switch"),
        ("mid-swap", 5, "run"),
    ],
)
def test_a_switch_killed_at_any_step_is_finished_by_the_next_run(
    providers: tuple[Provider, Provider],  # noqa: F811 - the fixture
    till: Path,  # noqa: F811
    step: str,
    calls: int,
    resume: str,
) -> None:
    old, new = providers
    old_device = _device(till)
    token = new.token()
    _killed_switch(till, token, step, calls)
    new_device = _staged_device(till)
    assert new_device != old_device
    if resume == "run":
        out = ok(py("agent", "run", "--once", "--data", str(till)))
        assert "finished the interrupted provider switch" in out
    else:  # the same (used) token again: no second token needed
        out = ok(py("agent", "switch-provider", "--data", str(till), "--token", token, "--yes"))
        assert f"moved to the new provider as device {new_device}" in out
    _finished(till, old, new, old_device, new_device)
    assert [r["outcome"] for r in _journal(till) if r["action"] == "provider.switch"] == ["ok"]


def test_a_swap_the_disk_refuses_is_a_clear_error_and_finished_once_fixed(
    providers: tuple[Provider, Provider],  # noqa: F811 - the fixture
    till: Path,  # noqa: F811
) -> None:
    old, new = providers
    old_device = _device(till)
    (till / "retired").write_text("x")  # the attack's reproduction A
    done = py("agent", "switch-provider", "--data", str(till), "--token", new.token(), "--yes")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "the provider switch did not finish" in done.stderr
    assert "更换服务商未完成" in done.stderr
    new_device = _staged_device(till)  # kept, not deleted
    again = py("agent", "run", "--once", "--data", str(till))
    assert "Traceback" not in again.stdout + again.stderr
    assert "the provider switch did not finish" in again.stdout + again.stderr
    assert _staged_device(till) == new_device
    (till / "retired").unlink()  # the operator fixes the cause
    out = ok(py("agent", "run", "--once", "--data", str(till)))
    assert "finished the interrupted provider switch" in out
    _finished(till, old, new, old_device, new_device)
