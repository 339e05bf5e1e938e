"""console.scripts_repo and the posassist-scripts CLI: keys, staging, thresholds, publish."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import pytest

from posassist.console.scripts_cli import main
from posassist.console.scripts_repo import ScriptRepoError, ScriptRepository, init_repository
from tests.agent.test_verify import PASS, add, approve, manifest
from tests.conftest import mode

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def phrase_file(tmp_path: Path) -> Path:
    path = tmp_path / "phrase"
    path.write_text(PASS.decode() + "\n")
    return path


@pytest.mark.usefixtures("umask_022")
def test_cli_init_add_sign_status_publish(
    tmp_path: Path, phrase_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo_dir, relay = tmp_path / "repo", tmp_path / "relay"
    assert main(["init", str(repo_dir), "--approver", "alice", "--approver", "bob",
                 "--passphrase-file", str(phrase_file)]) == 0  # fmt: skip
    folder = tmp_path / "fix-port"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest("fix-port", risk="C")))
    (folder / "run.sh").write_text("echo fixed\n")
    (folder / "lib.sh").write_text("true\n")
    assert main(["add", str(repo_dir), str(folder)]) == 0
    assert "needs 2 approver signatures" in capsys.readouterr().out
    key = ["--passphrase-file", str(phrase_file), "--key"]
    assert main(["sign", str(repo_dir), *key, str(repo_dir / "keys" / "alice.pem")]) == 0
    assert main(["status", str(repo_dir)]) == 1
    out = capsys.readouterr().out
    # v2: init signed the empty v1 with every approver's key (issue 17)
    assert "high-risk  v2    1/2 BELOW THRESHOLD" in out
    assert "may still sign: bob" in out
    assert main(["publish", str(repo_dir), "--to", str(relay)]) == 1
    assert "high-risk was signed by 1/2 keys" in capsys.readouterr().err
    assert not (relay / "scripts" / "metadata" / "timestamp.json").exists()
    assert main(["sign", str(repo_dir), *key, str(repo_dir / "keys" / "bob.pem")]) == 0
    assert main(["status", str(repo_dir)]) == 0
    assert main(["publish", str(repo_dir), "--to", str(relay)]) == 0
    out = capsys.readouterr().out
    published_root = (relay / "scripts" / "metadata" / "root.json").read_bytes()
    assert f"root hash (enrolment tokens): {hashlib.sha256(published_root).hexdigest()}" in out
    for role in ("snapshot", "timestamp"):
        assert (relay / "scripts" / "keys" / f"{role}.pem").stat().st_mode & 0o077 == 0
    # readme-walk F20: a new --to folder may become a relay's data dir: it is made private
    for folder in (relay, relay / "scripts", relay / "scripts" / "metadata"):
        assert mode(folder) == 0o700, folder
    for folder in (repo_dir / "keys", repo_dir / "keys" / "online"):  # readme-walk F2
        assert mode(folder) == 0o700, folder


def test_people_keys_are_encrypted_and_online_keys_are_not(tmp_path: Path) -> None:
    repo = init_repository(tmp_path / "r", ["alice", "bob"], PASS)
    for name in ("root", "targets", "alice", "bob"):
        assert b"ENCRYPTED PRIVATE KEY" in (repo.path / "keys" / f"{name}.pem").read_bytes()
    for name in ("snapshot", "timestamp"):
        pem = (repo.path / "keys" / "online" / f"{name}.pem").read_bytes()
        assert b"BEGIN PRIVATE KEY" in pem
    with pytest.raises(ScriptRepoError, match="passphrase"):
        repo.sign((repo.path / "keys" / "alice.pem").read_bytes(), b"wrong")


def test_init_refuses_without_passphrase_or_enough_approvers(tmp_path: Path) -> None:
    with pytest.raises(ScriptRepoError, match="passphrase"):
        init_repository(tmp_path / "a", ["alice", "bob"], b"")
    with pytest.raises(ScriptRepoError, match="need 2 approvers"):
        init_repository(tmp_path / "b", ["alice"], PASS)


def test_add_refuses_invalid_manifest_and_duplicate_version(tmp_path: Path) -> None:
    repo = init_repository(tmp_path / "r", ["alice", "bob"], PASS)
    add(repo, tmp_path, manifest("printer-status"))
    with pytest.raises(ScriptRepoError, match="already staged"):
        repo.stage("low-risk", manifest("printer-status"), {"run.sh": b""})
    with pytest.raises(ScriptRepoError, match="bad manifest"):
        repo.stage("low-risk", {**manifest("x-y"), "risk": "Z"}, {"run.sh": b""})


def test_rotated_approver_key_replaces_the_old_one(tmp_path: Path) -> None:
    repo = init_repository(tmp_path / "r", ["alice", "bob"], PASS)
    old = (repo.path / "keys" / "alice.pem").read_bytes()
    repo.rotate_key("alice", b"alice's own phrase")
    assert not repo.status()[1].complete  # targets changed: its key holder signs again
    repo.sign((repo.path / "keys" / "targets.pem").read_bytes(), PASS)
    add(repo, tmp_path, manifest("printer-status"))
    with pytest.raises(ScriptRepoError, match="no role"):
        repo.sign(old, PASS)
    repo.sign((repo.path / "keys" / "alice.pem").read_bytes(), b"alice's own phrase")
    approve(repo, "bob")
    repo.publish(tmp_path / "relay")


def test_rotated_timestamp_key_needs_a_new_root_signed(tmp_path: Path) -> None:
    repo = init_repository(tmp_path / "r", ["alice", "bob"], PASS)
    approve(repo, "alice", "bob")
    first = repo.root_hash()
    repo.rotate_key("timestamp", b"unused")
    with pytest.raises(ScriptRepoError, match="below threshold"):
        repo.publish(tmp_path / "relay")
    repo.sign((repo.path / "keys" / "root.pem").read_bytes(), PASS)
    out = repo.publish(tmp_path / "relay")
    assert repo.root_hash() != first
    assert (out / "metadata" / "2.root.json").is_file()
    assert ScriptRepository(repo.path).load_root().signed.version == 2


def test_renew_gives_expiring_roles_a_new_expiry_and_approvers_sign_again(
    tmp_path: Path, phrase_file: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    repo = init_repository(tmp_path / "repo", ["alice", "bob"], PASS)
    add(repo, tmp_path, manifest("printer-status"))
    approve(repo, "alice", "bob")
    later = datetime.now(UTC) + timedelta(days=80)  # approver roles (90 days) expire soon
    assert repo.renew(now=later) == ["high-risk", "low-risk"]
    low = repo.load("low-risk").signed
    assert low.version == 2
    assert low.expires > later + timedelta(days=80)
    with pytest.raises(ScriptRepoError, match="below threshold"):
        repo.publish(tmp_path / "relay")  # nobody signed the renewed roles yet
    assert repo.renew(now=datetime.now(UTC)) == []
    assert main(["renew", str(repo.path)]) == 0  # nothing expiring: nothing changes
    assert main(["renew", str(repo.path), "--role", "targets"]) == 0
    assert repo.load("targets").signed.version == 2
    approve(repo, "alice", "bob")
    key = ["--passphrase-file", str(phrase_file), "--key", str(repo.path / "keys" / "targets.pem")]
    assert main(["sign", str(repo.path), *key]) == 0
    repo.publish(tmp_path / "relay")
    with pytest.raises(ScriptRepoError, match="unknown role"):
        repo.renew(["snapshot"])
