"""Two real agent processes holding one device identity (a cloned till image) against a real
relay: they back off instead of replacing each other in a loop, the relay audits
``agent.flapping`` with both addresses, counts it in /metrics, and `posassist devices` flags it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from aiohttp import ClientSession

from posassist.relay.audit import Outcome
from posassist.relay.config import RelayConfig
from posassist.relay.storage import open_storage
from tests.e2e.cli import ROOT, Technician, invite, ok, provision, py, start_relay, stop

if TYPE_CHECKING:
    from pathlib import Path

#: Seconds the two clones run. Without the agent's back-off they replace each other about
#: twice a second (a fresh backoff's first wait is under 1 s), so ~24 times; with it, waits
#: grow 1, 1, 2, 2, 4, 4, 8… s along one chain (one clone is connected at a time), ~8 times.
RUN_FOR = 12.0
MAX_REPLACEMENTS = 16


async def _replacements(data: Path) -> float:
    metrics_url = (data / "metrics.url").read_text()  # its own listener, not the agents' port
    async with ClientSession() as http, http.get(metrics_url) as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith("posassist_relay_agent_replacements_total "):
            return float(line.split()[1])
    raise AssertionError("no replacements counter in /metrics")


async def _flapping_records(data: Path) -> list[dict[str, object]]:
    config = RelayConfig.load(data)
    storage = open_storage(config.database)
    try:
        return [
            {"target": r.target, "outcome": r.outcome, **r.detail}
            async for r in storage.records()
            if r.action == "agent.flapping"
        ]
    finally:
        await storage.close()


def _agent(till: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "posassist.agent", "run", "--data", str(till)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_two_tills_with_one_identity_back_off_and_are_flagged(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    store = provision(data)
    proc, url = start_relay(data, "--flap-threshold", "3", "--flap-window", "60")
    clones: list[subprocess.Popen[str]] = []
    try:
        till = tmp_path / "till"
        ok(py("agent", "enroll", invite(data, store, url), "--data", str(till)))
        shutil.copytree(till, tmp_path / "clone")  # the cloned disk image
        device_id = json.loads((till / "agent.json").read_text())["device_id"]
        clones = [_agent(till), _agent(tmp_path / "clone")]
        with contextlib.suppress(subprocess.TimeoutExpired):  # a measuring period, not a wait
            clones[0].wait(timeout=RUN_FOR)  # for an event: a clone that exits fails below
        assert all(clone.poll() is None for clone in clones), "an agent exited"
        replaced = asyncio.run(_replacements(data))
        assert 4 <= replaced <= MAX_REPLACEMENTS, replaced

        tech = Technician(tmp_path / "tech").login(url)
        listed = ok(tech("devices"))
        assert device_id in listed
        assert "FLAPPING" in listed
        assert "两台电脑在使用同一个设备身份" in listed
    finally:
        for clone in clones:
            stop(clone)
        stop(proc)
    outputs = "".join(clone.communicate()[0] or "" for clone in clones if clone.stdout)
    assert "another connection with this device identity replaced ours" in outputs
    records = asyncio.run(_flapping_records(data))
    assert len(records) == 1, records  # once per window, not once per replacement
    (record,) = records
    assert record["target"] == f"device:{device_id}"
    assert record["outcome"] == Outcome.FAILED
    assert record["addresses"] == ["127.0.0.1"]  # both clones connect from here
    assert int(record["replacements"]) == 4  # type: ignore[call-overload]
