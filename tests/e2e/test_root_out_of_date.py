"""readme-walk F21: a store handed the approvers' root hash before they published a newer root
(a retirement, a key change) is told the hash is out of date, not that the token is wrong; a
hash of another repository is still "not the one named". Either way nothing is enrolled, and
the token stays unused: the same token enrols with the current hash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from posassist.console.scripts_repo import init_repository
from tests.agent.test_verify import PASS, approve
from tests.e2e.cli import invite, ok, provision, py, start_relay, stop

if TYPE_CHECKING:
    from pathlib import Path


def test_an_older_root_hash_is_out_of_date_and_another_repositorys_is_not_named(
    tmp_path: Path,
) -> None:
    relay_dir = tmp_path / "relay"
    store = provision(relay_dir)
    repo = init_repository(tmp_path / "approvers", ["alice", "bob"], PASS)
    approve(repo, "alice", "bob")
    repo.publish(relay_dir)
    old_hash = repo.root_hash()
    repo.rotate_key("timestamp", b"unused")  # needs a new root, version 2
    repo.sign((repo.path / "keys" / "root.pem").read_bytes(), PASS)
    repo.publish(relay_dir)
    new_hash = repo.root_hash()
    assert new_hash != old_hash
    stranger = init_repository(tmp_path / "elsewhere", ["carol", "dave"], PASS).root_hash()

    relay, url = start_relay(relay_dir)
    try:
        token = invite(relay_dir, store, url)
        till = tmp_path / "till"
        for given, words in (
            (old_hash, "the script repository root hash is out of date: it names root version 1;"
                       " the approvers have published version 2 since"),
            (stranger, "the script repository root is not the one the approvers named"),
        ):  # fmt: skip
            refused = py("agent", "enroll", token, "--data", str(till), "--root-hash", given)
            assert refused.returncode == 3, refused.stdout + refused.stderr
            (line,) = refused.stderr.splitlines()
            assert line.startswith("error: " + words), line
            assert not till.exists() or not any(till.iterdir())  # nothing enrolled
        old_line = py("agent", "enroll", token, "--data", str(till), "--root-hash", old_hash)
        assert "脚本库根哈希已过期" in old_line.stderr
        assert "posassist-scripts root-hash" in old_line.stderr
        # the token was never used: with the current hash it enrols
        ok(py("agent", "enroll", token, "--data", str(till), "--root-hash", new_hash))
        assert (till / "scripts" / "root.json").is_file()
    finally:
        stop(relay)
