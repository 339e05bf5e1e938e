"""The relay is not trusted (issue 11): attacks from outside, through the CLIs and HTTP, on the
till's trust anchor and on a retirement; each fails, runs nothing, and leaves its audit record."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from typing import TYPE_CHECKING, Any

import pytest
from tuf.api.metadata import Metadata

from posassist.console.scripts_repo import init_repository
from posassist.relay.scripts_repo import FIRST_ROOT
from posassist.relay.storage import open_storage
from tests.agent.test_verify import PASS, add, approve, manifest, relay_republish
from tests.e2e.cli import Technician, invite, ok, provision, py, start_agent, start_relay, stop

if TYPE_CHECKING:
    from pathlib import Path


def _reason(detail: Any) -> Any:
    """A refusal's reason: the relay's own, or the agent's step detail (kept under ``agent``)."""
    agent = detail.get("agent") if isinstance(detail.get("agent"), dict) else {}
    return detail.get("reason") or detail.get("code") or agent.get("reason") or agent.get("code")


def audit(relay_dir: Path) -> list[tuple[str, str, str, Any]]:
    async def records() -> list[tuple[str, str, str, Any]]:
        storage = open_storage(f"sqlite:///{relay_dir / 'relay.db'}")
        try:
            return [
                (r.action, str(r.outcome), r.target, _reason(r.detail))
                async for r in storage.records()
            ]
        finally:
            await storage.close()

    return asyncio.run(records())


def scripts(*args: str) -> str:
    return ok(py("console.scripts_cli", *args))


def test_a_replaced_repository_is_refused_by_the_relay_and_by_a_new_till(tmp_path: Path) -> None:
    relay_dir = tmp_path / "relay"
    store = provision(relay_dir)
    marker = tmp_path / "ran.txt"
    repo = init_repository(tmp_path / "approvers", ["alice", "bob"], PASS)
    approve(repo, "alice", "bob")
    repo.publish(relay_dir)
    approvers_hash = scripts("root-hash", str(repo.path))  # handed to the store out of band
    relay, url = start_relay(relay_dir)  # the relay records the first root it serves
    stop(relay)
    assert (relay_dir / FIRST_ROOT).is_file()

    # whoever holds the relay's data directory publishes a repository of their own
    shutil.rmtree(relay_dir / "scripts")
    evil = init_repository(tmp_path / "attacker", ["mallory"], PASS, high_risk_threshold=1)
    script = manifest("printer-status")
    script.update({"risk": "A", "unattended": True, "consent": False})
    add(evil, tmp_path, script, body=f"echo pwned > {marker}\n".encode())
    approve(evil, "mallory")
    evil.publish(relay_dir)

    # the relay makes no token for it and does not serve it
    refused = py("relay", "enrolment", "create", "--data", str(relay_dir), "--store", store,
                 "--relay-url", url)  # fmt: skip
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "not the one this relay was set up with" in refused.stderr
    assert refused.stdout == ""  # no token printed
    served = py("relay", "serve", "--data", str(relay_dir), "--port", "0")
    assert served.returncode == 3, served.stderr
    assert ("enrolment.create", "refused", f"store:{store}", "untrusted-root") in audit(relay_dir)

    # the attacker holds the directory: they drop the relay's record too, and it serves theirs
    (relay_dir / FIRST_ROOT).unlink()
    relay, url = start_relay(relay_dir)
    agent = None
    try:
        token = invite(relay_dir, store, url)  # carries the attacker's root hash
        till = tmp_path / "till"
        enrolled = py("agent", "enroll", token, "--data", str(till), "--root-hash", approvers_hash)
        assert enrolled.returncode == 3, enrolled.stdout + enrolled.stderr
        assert "root" in enrolled.stderr
        assert not (till / "agent.key").exists()
        assert not (till / "scripts" / "root.json").exists()
        # the root was checked first: the token was never used, no device exists
        assert ok(py("relay", "device", "list", "--data", str(relay_dir))) == ""

        # a till enrolled without the approvers' hash trusts no root: it runs nothing ...
        other = tmp_path / "other"
        out = ok(py("agent", "enroll", token, "--data", str(other)))
        assert "trust-root" in out
        assert not (other / "scripts" / "root.json").exists()
        # ... and can't be given the attacker's root later: trust-root checks the approvers' hash
        trusted = py("agent", "trust-root", "--data", str(other), "--root-hash", approvers_hash)
        assert trusted.returncode == 3, trusted.stdout + trusted.stderr
        assert not (other / "scripts" / "root.json").exists()
        agent, device = start_agent(other)
        tech = Technician(tmp_path / "tech").login(url)
        run = tech("run", device, "printer-status", "--version", "1.0.0", "--unattended")
        assert run.returncode != 0, run.stdout
        assert not marker.exists()
    finally:
        if agent is not None:
            stop(agent)  # type: ignore[arg-type]
        stop(relay)
    assert not marker.exists()
    recorded = audit(relay_dir)
    # only the till without a root enrolled; the refused one never reached /v1/enrol
    assert [(a, o) for a, o, _t, _r in recorded if a == "device.enrol"] == [("device.enrol", "ok")]
    assert any(a.startswith("script.run") and o != "ok" for a, o, _t, _r in recorded)


def wait_for_low_risk(till: Path, version: int) -> None:
    snapshot = till / "scripts" / "cache" / "metadata" / "snapshot.json"
    deadline = time.monotonic() + 30
    while True:
        if snapshot.is_file():
            meta = json.loads(snapshot.read_bytes())["signed"]["meta"]
            if meta["low-risk.json"]["version"] >= version:
                return
        assert time.monotonic() < deadline, "the till did not refresh its metadata"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_retired_version_rolled_back_by_the_relay_never_runs(tmp_path: Path) -> None:
    relay_dir = tmp_path / "relay"
    store = provision(relay_dir)
    marker = tmp_path / "ran.txt"
    repo = init_repository(tmp_path / "approvers", ["alice", "bob"], PASS)
    script = manifest("printer-status")
    script.update({"risk": "A", "unattended": True, "consent": False})
    script["params"] = {"note": {"type": "string", "max_length": 16}}
    add(repo, tmp_path, script, body=f'echo "$@" > {marker}\n'.encode())
    approve(repo, "alice", "bob")
    repo.publish(relay_dir)
    phrase = tmp_path / "phrase"
    phrase.write_bytes(PASS + b"\n")
    relay, url = start_relay(relay_dir)
    agents = []
    try:
        seen = tmp_path / "seen"
        ok(py("agent", "enroll", invite(relay_dir, store, url), "--data", str(seen),
              "--root-hash", scripts("root-hash", str(repo.path))))  # fmt: skip
        agent, device = start_agent(seen)
        agents.append(agent)
        wait_for_low_risk(seen, 1)  # refreshed on connect
        tech = Technician(tmp_path / "tech").login(url)
        run = ("run", device, "printer-status", "--version", "1.0.0", "--unattended")

        # option injection: a value starting with '-' is refused before anything runs
        injected = tech(*run, "--param", "note=-x")
        assert injected.returncode == 1, injected.stdout
        assert "parameter 'note' may not start with '-'" in injected.stderr  # the relay's words
        assert "不能以 '-' 开头" in injected.stderr
        assert not marker.exists()
        ok(tech(*run, "--param", "note=fine"))
        assert marker.read_text() == "--note fine\n"
        marker.unlink()

        # the approvers retire it, through their tool; the root key's holder signs too
        scripts("retire", str(repo.path), "printer-status", "1.0.0")
        for name in ("alice", "root"):
            scripts("sign", str(repo.path), "--key", str(repo.path / "keys" / f"{name}.pem"),
                    "--passphrase-file", str(phrase))  # fmt: skip
        scripts("publish", str(repo.path), "--to", str(relay_dir))
        new_hash = scripts("root-hash", str(repo.path))
        # the till reconnects (a restart, a network blip): it refreshes and sees the retirement
        stop(agent)
        agent, device = start_agent(seen)
        agents.append(agent)
        wait_for_low_risk(seen, 2)

        # the relay points low-risk back at version 1, which lists the retired version, with
        # its online snapshot and timestamp keys
        published = relay_dir / "scripts"
        v1 = Metadata.from_bytes((published / "metadata" / "1.low-risk.json").read_bytes())
        relay_republish(published, "low-risk", v1)

        late = tmp_path / "late"  # enrolled after the retirement, with the approvers' new hash
        ok(py("agent", "enroll", invite(relay_dir, store, url), "--data", str(late),
              "--root-hash", new_hash))  # fmt: skip
        late_agent, late_device = start_agent(late)
        agents.append(late_agent)
        for target in (device, late_device):
            refused = tech("run", target, "printer-status", "--version", "1.0.0", "--unattended")
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert "rollback" in refused.stdout
            assert not marker.exists()
    finally:
        for agent in agents:
            stop(agent)
        stop(relay)
    assert not marker.exists()
    records = audit(relay_dir)
    # the '-x' parameter: the relay refused it against the published manifest, before any job
    # (the till's own refusal of it is tests/agent/test_runner.py's)
    assert ("script.run", "refused", f"device:{device}", "invalid_params") in records
    refusals = [(t, r) for a, o, t, r in records if a == "script.run.refused"]
    assert (f"device:{device}", "rollback") in refusals
    assert (f"device:{late_device}", "rollback") in refusals
