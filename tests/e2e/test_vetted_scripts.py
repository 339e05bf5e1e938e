"""Vetted scripts end to end, with real processes: approvers sign, the relay serves, the agent
verifies before it runs, the technician watches the output; refusals are audited."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from tuf.api.metadata import Metadata, TargetFile, Targets

from posassist.console.scripts_repo import init_repository
from tests.agent.test_verify import PASS, add, approve, manifest, online_signer, relay_republish
from tests.e2e.cli import Technician, invite, ok, provision, py, start_agent, start_relay, stop

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path


def enroll(
    relay_dir: Path, store: str, url: str, till: Path, root_hash: str | None
) -> subprocess.CompletedProcess[str]:
    """``posassist-agent enroll`` with a fresh token, and the approvers' root hash if given."""
    extra = ["--root-hash", root_hash] if root_hash else []
    return py("agent", "enroll", invite(relay_dir, store, url), "--data", str(till), *extra)


def test_signed_script_runs_and_unsigned_ones_are_refused_and_audited(tmp_path: Path) -> None:
    relay_dir = tmp_path / "relay"
    store = provision(relay_dir)
    # the approvers' offline repository: one low-risk script, signed by one approver, published
    repo = init_repository(tmp_path / "approvers", ["alice", "bob"], PASS)
    script = manifest("printer-status")
    marker = tmp_path / "ran.txt"
    add(repo, tmp_path, script, body=f"echo hello from the till; echo ran > {marker}\n".encode())
    approve(repo, "alice", "bob")
    repo.publish(relay_dir)
    relay, url = start_relay(relay_dir)
    agent = None
    try:
        token = invite(relay_dir, store, url)
        till = tmp_path / "till"
        ok(py("agent", "enroll", token, "--data", str(till), "--root-hash", repo.root_hash()))
        assert (till / "scripts" / "root.json").exists()  # pinned at enrolment
        agent, device = start_agent(till)
        tech = Technician(tmp_path / "tech").login(url)

        # the risk-B script needs the merchant's consent: with no help window yet, "deny unless
        # unattended-ok" applies, so an attended run is refused and nothing runs
        denied = tech("run", device, "printer-status", "--version", "1.0.0")
        assert denied.returncode == 1
        assert "refused" in denied.stdout
        assert not marker.exists()

        # a version nobody signed: refused before anything runs, and audited by the relay
        unsigned = tech("run", device, "printer-status", "--version", "9.9.9")
        assert unsigned.returncode == 1
        assert "not-found" in unsigned.stdout
        assert not marker.exists()

        # a script the relay slipped in with its own online keys: refused by the agent
        md = Metadata[Targets].from_bytes(
            (relay_dir / "scripts" / "metadata" / "1.low-risk.json").read_bytes()
        )
        raw = manifest("backdoor")
        raw["unattended"] = True
        raw["consent"] = False
        published = relay_dir / "scripts"
        for name, body in {"run.sh": f"echo pwned > {marker}\n".encode(), "lib.sh": b""}.items():
            target = TargetFile.from_data(f"low/backdoor/1.0.0/{name}", body, ["sha256"])
            target.unrecognized_fields["custom"] = {"posassist-manifest": raw}
            md.signed.targets[target.path] = target
            folder = published / "targets" / "low" / "backdoor" / "1.0.0"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{target.hashes['sha256']}.{name}").write_bytes(body)
        md.signed.version += 1
        md.signatures.clear()
        for role in ("snapshot", "timestamp"):
            md.sign(online_signer(published, role), append=True)
        relay_republish(published, "low-risk", md)
        forged = tech("run", device, "backdoor", "--version", "1.0.0", "--unattended")
        assert forged.returncode == 1
        assert "unsigned" in forged.stdout
        assert not marker.exists()
    finally:
        if agent is not None:
            stop(agent)  # type: ignore[arg-type]
        stop(relay)
    verify = ok(py("relay", "audit", "verify", "--data", str(relay_dir)))
    assert "intact" in verify
    import asyncio

    from posassist.relay.storage import open_storage

    async def refusals() -> list[tuple[str, object]]:
        storage = open_storage(f"sqlite:///{relay_dir / 'relay.db'}")
        try:
            # a run's steps: the agent's own detail is under "agent", apart from the relay's
            return [
                (r.action, _said(r.detail).get("reason") or _said(r.detail).get("code"))
                async for r in storage.records()
                if str(r.outcome) == "refused"
            ]
        finally:
            await storage.close()

    refused = asyncio.run(refusals())
    # every refusal reached the relay's audit chain with its reason
    assert ("script.run.refused", "not-found") in refused
    assert ("script.run.refused", "unsigned") in refused
    assert any(
        action == "script.run.refused" and reason not in ("not-found", "unsigned")
        for action, reason in refused
    )  # the consent refusal, from the runner


def test_unattended_low_risk_script_runs_and_streams_its_output(tmp_path: Path) -> None:
    relay_dir = tmp_path / "relay"
    store = provision(relay_dir)
    repo = init_repository(tmp_path / "approvers", ["alice", "bob"], PASS)
    script = manifest("printer-status")
    script.update({"risk": "A", "unattended": True, "consent": False})
    add(repo, tmp_path, script, body=b"echo hello from the till\necho 'line two'\n")
    approve(repo, "alice", "bob")
    repo.publish(relay_dir)
    relay, url = start_relay(relay_dir)
    agent = None
    try:
        till = tmp_path / "till"
        ok(enroll(relay_dir, store, url, till, repo.root_hash()))
        agent, device = start_agent(till)
        tech = Technician(tmp_path / "tech").login(url)
        listing = ok(tech("scripts", "list"))
        assert "printer-status" in listing
        assert "1.0.0" in listing
        assert "Printer status / 打印机状态" in listing
        ran = tech("run", device, "printer-status", "--version", "1.0.0", "--unattended")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "[verified] signatures verified / 签名已验证: risk A; approvals 1" in ran.stdout
        assert "started (job" in ran.stdout
        assert "hello from the till\nline two\n" in ran.stdout
        assert "succeeded (exit 0" in ran.stdout
    finally:
        if agent is not None:
            stop(agent)  # type: ignore[arg-type]
        stop(relay)
    import asyncio

    from posassist.relay.storage import open_storage

    async def actions() -> list[tuple[str, str]]:
        storage = open_storage(f"sqlite:///{relay_dir / 'relay.db'}")
        try:
            return [(r.action, str(r.outcome)) async for r in storage.records()]
        finally:
            await storage.close()

    recorded = asyncio.run(actions())
    assert ("script.run", "ok") in recorded
    assert ("script.run.verified", "ok") in recorded
    assert ("script.run.finished", "ok") in recorded


def test_technician_restores_a_backup_byte_for_byte(tmp_path: Path) -> None:
    relay_dir = tmp_path / "relay"
    store = provision(relay_dir)
    till = tmp_path / "till"
    config = till / "pos" / "config.ini"
    original = "[printer]\r\nport = COM3\r\n打印机=收银\r\n".encode("gbk") + b"\x00\xff"
    repo = init_repository(tmp_path / "approvers", ["alice", "bob"], PASS)
    script = manifest("set-port")
    script.update(
        {"risk": "B", "unattended": True, "consent": False, "backup": ["${DATA}/pos/config.ini"]}
    )
    add(repo, tmp_path, script, body=f"printf 'port = COM9\\n' > {config}\n".encode())
    approve(repo, "alice", "bob")
    repo.publish(relay_dir)
    relay, url = start_relay(relay_dir)
    agent = None
    try:
        ok(enroll(relay_dir, store, url, till, repo.root_hash()))
        config.parent.mkdir(parents=True)
        config.write_bytes(original)
        agent, device = start_agent(till)
        tech = Technician(tmp_path / "tech").login(url)
        ran = tech("run", device, "set-port", "--version", "1.0.0", "--unattended")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "[backup_made]" in ran.stdout
        assert config.read_bytes() == b"port = COM9\n"  # the run succeeded: its change stays
        backup_id = ran.stdout.split(", backup ")[1].split(")")[0]

        restored = tech("restore", device, backup_id)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "[restored]" in restored.stdout
        assert config.read_bytes() == original  # byte for byte
        bad = tech("restore", device, "../../etc")
        assert bad.returncode == 1
        assert config.read_bytes() == original
    finally:
        if agent is not None:
            stop(agent)  # type: ignore[arg-type]
        stop(relay)


def _said(detail: dict[str, object]) -> dict[str, object]:
    """What the agent said in an audited step (under "agent"), or the record's own detail."""
    agent = detail.get("agent")
    return agent if isinstance(agent, dict) else detail


@pytest.mark.slow
def test_a_run_that_outlives_its_route_is_reconciled_from_the_agent(tmp_path: Path) -> None:
    # docs/protocol.md#request-lifetime-relay, with real processes: a script silent for longer
    # than the relay's request timeout ends "outcome unknown" for the technician; its late end on
    # the same connection reconciles the job. A second run is cut short by the agent being
    # killed: the agent's results file, read by its next process, answers the relay's job.query.
    import json
    import time

    relay_dir = tmp_path / "relay"
    store = provision(relay_dir)
    repo = init_repository(tmp_path / "approvers", ["alice", "bob"], PASS)
    script = manifest("printer-status")
    script.update({"risk": "A", "unattended": True, "consent": False})
    add(repo, tmp_path, script, body=b"echo going\nsleep 6\necho done\n")
    approve(repo, "alice", "bob")
    repo.publish(relay_dir)
    # the script's own run timeout (30 s) is past what this relay holds a request for
    relay, url = start_relay(relay_dir, "--request-timeout", "2", "--max-run-timeout", "0")
    agent = None
    till = tmp_path / "till"
    results = till / "scripts" / "results.json"
    try:
        ok(enroll(relay_dir, store, url, till, repo.root_hash()))
        agent, device = start_agent(till)
        tech = Technician(tmp_path / "tech").login(url)
        ran = tech("run", device, "printer-status", "--version", "1.0.0", "--unattended")
        assert ran.returncode != 0
        assert "outcome_unknown" in ran.stdout + ran.stderr or "outcome unknown" in (
            ran.stdout + ran.stderr
        )
        deadline = time.monotonic() + 30
        while "succeeded" not in _statuses(results):
            assert time.monotonic() < deadline, "the run's end was not recorded on the till"
            time.sleep(0.1)
        # the second run: the agent dies while it runs
        second = tech("run", device, "printer-status", "--version", "1.0.0", "--unattended")
        assert second.returncode != 0
        stop(agent)
        assert "running" in _statuses(results)
        agent, _ = start_agent(till)
        deadline = time.monotonic() + 30
        while len(_reconciled(relay_dir)) < 2:
            assert time.monotonic() < deadline, "the relay did not reconcile both runs"
            time.sleep(0.2)
    finally:
        if agent is not None:
            stop(agent)
        stop(relay)
    first, second_run = _reconciled(relay_dir)
    assert (first["status"], first["via"]) == ("succeeded", "late reply")
    assert (second_run["status"], second_run["via"]) == ("failed", "job.query")
    assert "interrupted" in str(second_run["error"])
    assert "intact" in ok(py("relay", "audit", "verify", "--data", str(relay_dir)))
    assert json.loads(results.read_text())["format"] == 2  # still readable by the next agent


def _statuses(results: Path) -> list[str]:
    import json

    try:
        return [entry["status"] for entry in json.loads(results.read_text())["results"]]
    except (FileNotFoundError, ValueError):
        return []


def _reconciled(relay_dir: Path) -> list[dict[str, object]]:
    import asyncio

    from posassist.relay.storage import open_storage

    async def read() -> list[dict[str, object]]:
        storage = open_storage(f"sqlite:///{relay_dir / 'relay.db'}")
        try:
            return [
                dict(r.detail)
                async for r in storage.records()
                if r.action == "script.run.reconciled"
            ]
        finally:
            await storage.close()

    return asyncio.run(read())


@pytest.mark.slow
def test_a_run_survives_the_relay_dying_and_its_end_is_reconciled(tmp_path: Path) -> None:
    # docs/protocol.md#request-lifetime-relay, with real processes: the relay is killed while a
    # script runs. The run is the agent's script service's, not its connection's: it goes on to
    # its end. The restarted relay marks the job unknown, asks the reconnected agent (again at
    # each heartbeat while it still runs) and reconciles it to what really happened.
    import signal
    import socket
    import subprocess
    import sys
    import time

    relay_dir = tmp_path / "relay"
    store = provision(relay_dir)
    repo = init_repository(tmp_path / "approvers", ["alice", "bob"], PASS)
    script = manifest("printer-status")
    script.update({"risk": "A", "unattended": True, "consent": False})
    began, marker = tmp_path / "began.txt", tmp_path / "done.txt"
    body = f"echo going > {began}\nsleep 4\necho done > {marker}\n"
    add(repo, tmp_path, script, body=body.encode())
    approve(repo, "alice", "bob")
    repo.publish(relay_dir)
    with socket.socket() as probe:  # a fixed port, so the restarted relay is where the till looks
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve = ("--port", str(port), "--heartbeat", "1")
    relay, url = start_relay(relay_dir, *serve)
    agent = run = None
    till = tmp_path / "till"
    results = till / "scripts" / "results.json"
    try:
        ok(enroll(relay_dir, store, url, till, repo.root_hash()))
        agent, device = start_agent(till, "--max-backoff", "1")
        tech = Technician(tmp_path / "tech").login(url)
        flags = ("--version", "1.0.0", "--unattended")
        run = subprocess.Popen(
            [sys.executable, "-m", "posassist.console", "run", device, "printer-status", *flags],
            env=tech.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not began.exists():  # verified (fetched from the relay) and running
            assert time.monotonic() < deadline, "the run did not start on the till"
            time.sleep(0.05)
        assert _statuses(results) == ["running"]
        relay.send_signal(signal.SIGKILL)  # mid-run: the agent's connection drops
        assert relay.wait(timeout=10) == -signal.SIGKILL
        stop(relay)  # its pipes closed
        relay, _ = start_relay(relay_dir, *serve)
        deadline = time.monotonic() + 40
        while not _reconciled(relay_dir):
            assert time.monotonic() < deadline, "the relay did not reconcile the run"
            time.sleep(0.2)
    finally:
        if run is not None:
            run.kill()
            run.wait(timeout=15)
        if agent is not None:
            stop(agent)  # type: ignore[arg-type]
        stop(relay)
    (reconciled,) = _reconciled(relay_dir)
    assert (reconciled["status"], reconciled["via"]) == ("succeeded", "job.query"), reconciled
    assert marker.read_text() == "done\n"  # the script ran to its end, not cut short
    assert _statuses(results) == ["succeeded"]
    assert "intact" in ok(py("relay", "audit", "verify", "--data", str(relay_dir)))
