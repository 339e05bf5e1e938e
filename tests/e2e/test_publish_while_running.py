"""Scripts that just work (issue 17): the approvers publish while the relay runs, in the README's
order, and the relay serves it at once; a re-publish too; a replaced repository is not served."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from posassist.console.scripts_repo import init_repository
from tests.agent.test_verify import PASS, add, approve, manifest
from tests.e2e.cli import Technician, ok, provision, start_agent, start_relay, stop
from tests.e2e.test_vetted_scripts import enroll

if TYPE_CHECKING:
    from pathlib import Path


def _get(url: str, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url.replace("ws://", "http://") + path, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_repository_published_while_the_relay_runs_is_served_without_a_restart(
    tmp_path: Path,
) -> None:
    relay_dir = tmp_path / "relay"
    store = provision(relay_dir)
    log = tmp_path / "relay.log"
    served_dir = tmp_path / "relay-link"  # operators often link the data directory elsewhere
    served_dir.symlink_to(relay_dir)
    with log.open("w") as out:
        relay, url = start_relay(served_dir, log=out)  # nothing published yet
    agent = None
    try:
        assert _get(url, "/v1/scripts/metadata/timestamp.json")[0] == 404

        # the approvers publish now; a risk A script needs one approver, also on the first publish
        repo = init_repository(tmp_path / "approvers", ["alice", "bob"], PASS)
        script = manifest("printer-status")
        script.update({"risk": "A", "unattended": True, "consent": False})
        add(repo, tmp_path, script, body=b"echo first version\n")
        approve(repo, "alice")
        repo.publish(relay_dir)
        status, body = _get(url, "/v1/scripts/metadata/timestamp.json")
        assert status == 200
        assert body == (relay_dir / "scripts" / "metadata" / "timestamp.json").read_bytes()
        assert _get(url, "/v1/scripts/metadata/../keys/timestamp.pem")[0] == 404
        assert _get(url, "/v1/scripts/targets/low/..%2F..%2Fkeys/timestamp.pem")[0] == 404
        # a link inside the repository is never followed
        (relay_dir / "scripts" / "targets" / "link.pem").symlink_to(
            relay_dir / "scripts" / "keys" / "timestamp.pem"
        )
        assert _get(url, "/v1/scripts/targets/link.pem")[0] == 404

        till = tmp_path / "till"
        ok(enroll(relay_dir, store, url, till, repo.root_hash()))
        agent, device = start_agent(till)
        tech = Technician(tmp_path / "tech").login(url)
        ran = tech("run", device, "printer-status", "--version", "1.0.0", "--unattended")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "first version" in ran.stdout

        # a re-publish (a new version) while it runs: listed and run, still no restart
        newer = dict(script, version="1.0.1")
        add(repo, tmp_path, newer, body=b"echo second version\n")
        approve(repo, "alice")
        repo.publish(relay_dir)
        assert "1.0.1" in ok(tech("scripts", "list"))
        ran = tech("run", device, "printer-status", "--version", "1.0.1", "--unattended")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "second version" in ran.stdout

        # someone replaces the repository (new keys) under the running relay: not served
        other = init_repository(tmp_path / "intruder", ["mallory"], PASS, high_risk_threshold=1)
        evil = dict(script, version="6.6.6")
        add(other, tmp_path, evil, body=b"echo replaced\n")
        approve(other, "mallory")
        other.publish(relay_dir)
        assert _get(url, "/v1/scripts/metadata/timestamp.json")[0] == 503
        assert "not serving the script repository" in log.read_text()
        ran = tech("run", device, "printer-status", "--version", "6.6.6", "--unattended")
        assert ran.returncode == 1
        assert "replaced" not in ran.stdout
    finally:
        if agent is not None:
            stop(agent)  # type: ignore[arg-type]
        stop(relay)
