"""ScriptService keeps the rollback floor moving: it refreshes the metadata when asked (after a
connect) and periodically, so a till sees a retirement without running anything."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any, cast

import pytest

from posassist.agent.config import Identity, write_identity
from posassist.agent.enrol import trust_root
from posassist.agent.errors import ConfigError, UntrustedRootError
from posassist.agent.scripts.service import ScriptService
from posassist.console.scripts_repo import LOW
from posassist.protocol.signing import generate_private_key
from tests.agent import test_verify
from tests.agent.test_verify import Served, approve

served = test_verify.served  # the fixture: a signed repository on the relay's routes

if TYPE_CHECKING:
    from pathlib import Path

    from posassist.agent.scripts.runner import ScriptRunner


def service(served: Served, till: Path) -> ScriptService:
    (till / "scripts").mkdir(parents=True)
    (till / "scripts" / "root.json").write_bytes(served.root)
    relay_url = "ws://" + served.base.split("://", 1)[1]
    return ScriptService(till, relay_url, cast("ScriptRunner", None), root_hash=served.root_hash)


async def wait_for_version(till: Path, role: str, version: int) -> None:
    snapshot = till / "scripts" / "cache" / "metadata" / "snapshot.json"
    deadline = time.monotonic() + 20
    while True:
        if snapshot.is_file():
            meta: dict[str, Any] = json.loads(snapshot.read_bytes())["signed"]["meta"]
            if meta[f"{role}.json"]["version"] >= version:
                return
        assert time.monotonic() < deadline, f"{role} never reached version {version}"
        await asyncio.sleep(0.02)


async def test_service_refreshes_periodically_and_sees_a_retirement(
    served: Served, tmp_path: Path
) -> None:
    till = tmp_path / "till"
    scripts = service(served, till)
    stop = asyncio.Event()
    task = asyncio.ensure_future(scripts.keep_fresh(stop, interval=0.1))
    try:
        await wait_for_version(till, LOW, 1)
        served.repo.retire("printer-status", "1.0.0")
        approve(served.repo, "alice", "root")
        served.publish()
        await wait_for_version(till, LOW, 2)  # nothing ran: the periodic refresh saw it
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_service_refreshes_when_asked_after_a_connect(served: Served, tmp_path: Path) -> None:
    till = tmp_path / "till"
    scripts = service(served, till)
    stop = asyncio.Event()
    task = asyncio.ensure_future(scripts.keep_fresh(stop, interval=3600))
    try:
        await asyncio.sleep(0)  # keep_fresh is waiting
        assert not (till / "scripts" / "cache" / "metadata" / "snapshot.json").exists()
        scripts.refresh_soon()
        await wait_for_version(till, LOW, 1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    # the blocking method, in a worker thread as the agent runs it (the relay shares this loop)
    assert (await asyncio.to_thread(scripts.refresh))[LOW] == 1


async def test_trust_root_installs_only_the_root_the_approvers_name(
    served: Served, tmp_path: Path
) -> None:
    till = tmp_path / "till"
    relay_url = "ws://" + served.base.split("://", 1)[1]
    write_identity(till, Identity("dev_x", relay_url, generate_private_key()), {"root_hash": None})
    with pytest.raises(ConfigError):
        await asyncio.to_thread(trust_root, till, "not-a-hash")
    with pytest.raises(UntrustedRootError):
        await asyncio.to_thread(trust_root, till, "0" * 64)  # not what the relay serves
    assert not (till / "scripts" / "root.json").exists()
    await asyncio.to_thread(trust_root, till, served.root_hash.upper())
    assert (till / "scripts" / "root.json").read_bytes() == served.root
    assert json.loads((till / "agent.json").read_text())["root_hash"] == served.root_hash
    await asyncio.to_thread(trust_root, till, served.root_hash)  # again: nothing changes
    with pytest.raises(UntrustedRootError, match="already trusts"):
        await asyncio.to_thread(trust_root, till, "1" * 64)
    assert (till / "scripts" / "root.json").read_bytes() == served.root
