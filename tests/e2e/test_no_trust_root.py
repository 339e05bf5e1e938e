"""A till enrolled without the script repository's trust root says so (issue 17): in its own
``diag``, and in the technician's ``posassist diag``, with the remedy (``trust-root``, no new
identity); after ``trust-root`` with the approvers' hash it runs scripts as the same device."""

from __future__ import annotations

from typing import TYPE_CHECKING

from posassist.agent.findings import evaluate
from posassist.console.scripts_repo import init_repository
from tests.agent.test_verify import PASS, add, approve, manifest
from tests.e2e.cli import Technician, invite, ok, provision, py, start_agent, start_relay, stop

if TYPE_CHECKING:
    from pathlib import Path

REMEDY = "posassist-agent trust-root --data <DIR> --root-hash <HASH>"


def _host(script_root: object) -> dict[str, object]:
    return {"sections": {"host": {"ok": True, "data": {"script_root": script_root}}}}


def test_no_trust_root_is_a_finding_only_for_an_enrolled_till_without_one() -> None:
    (found,) = evaluate(_host({"enrolled": True, "pinned": False}), None, 1.8e9)
    assert found.code == "host.no_trust_root"
    assert "every script run is refused" in found.detail["en"]
    assert "每个脚本都会被拒绝" in found.detail["zh"]
    for quiet in ({"enrolled": True, "pinned": True}, {"enrolled": False, "pinned": False}, "x"):
        assert [f.code for f in evaluate(_host(quiet), None, 1.8e9)] == []


def test_till_without_trust_root_says_so_and_trust_root_fixes_it_keeping_its_identity(
    tmp_path: Path,
) -> None:
    relay_dir = tmp_path / "relay"
    store = provision(relay_dir)
    repo = init_repository(tmp_path / "approvers", ["alice", "bob"], PASS)
    script = manifest("printer-status")
    script.update({"risk": "A", "unattended": True, "consent": False})
    add(repo, tmp_path, script, body=b"echo fixed\n")
    approve(repo, "alice")
    repo.publish(relay_dir)
    relay, url = start_relay(relay_dir)
    agent = None
    try:
        till = tmp_path / "till"
        ok(py("agent", "enroll", invite(relay_dir, store, url), "--data", str(till)))  # no hash
        offline = py("agent", "diag", "--offline", "--data", str(till))
        assert "This till can run no script: no trust root" in offline.stdout
        assert "本机不能运行维修脚本" in offline.stdout
        assert REMEDY in offline.stdout

        agent, device = start_agent(till)
        tech = Technician(tmp_path / "tech").login(url)
        seen = tech("diag", device)
        assert "This till can run no script: no trust root" in seen.stdout, seen.stdout
        assert "trust-root" in seen.stdout
        refused = tech("run", device, "printer-status", "--version", "1.0.0", "--unattended")
        assert refused.returncode != 0
        stop(agent)
        agent = None

        # the remedy: the approvers' hash, on the same till, the same identity
        ok(py("agent", "trust-root", "--data", str(till), "--root-hash", repo.root_hash()))
        offline = py("agent", "diag", "--offline", "--data", str(till))
        assert "no trust root" not in offline.stdout
        agent, again = start_agent(till)
        assert again == device
        ran = tech("run", device, "printer-status", "--version", "1.0.0", "--unattended")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "fixed" in ran.stdout
    finally:
        if agent is not None:
            stop(agent)  # type: ignore[arg-type]
        stop(relay)
