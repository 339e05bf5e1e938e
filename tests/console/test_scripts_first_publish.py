"""The first publish after ``posassist-scripts init`` needs only the signatures of what was added
(issue 17: it failed "below threshold: high-risk was signed by 1/2 keys" for a risk A script)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from posassist.console.scripts_cli import main
from tests.agent.test_verify import PASS
from tests.e2e.cli import ROOT

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def key_args(tmp_path: Path) -> list[str]:
    phrase = tmp_path / "phrase"
    phrase.write_text(PASS.decode() + "\n")
    return ["--passphrase-file", str(phrase), "--key"]


def test_first_publish_of_a_low_risk_script_needs_one_approver(
    tmp_path: Path, key_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, relay = str(tmp_path / "repo"), tmp_path / "relay"
    assert main(["init", repo, "--approver", "alice", "--approver", "bob", *key_args[:2]]) == 0
    assert main(["add", repo, str(ROOT / "catalog" / "clean-temp-folders")]) == 0
    assert main(["sign", repo, *key_args, f"{repo}/keys/alice.pem"]) == 0
    capsys.readouterr()
    assert main(["status", repo]) == 0
    assert "BELOW THRESHOLD" not in capsys.readouterr().out
    assert main(["publish", repo, "--to", str(relay)]) == 0
    assert (relay / "scripts" / "metadata" / "timestamp.json").is_file()


def test_a_high_risk_script_still_needs_two_approvers(
    tmp_path: Path, key_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, relay = str(tmp_path / "repo"), tmp_path / "relay"
    assert main(["init", repo, "--approver", "alice", "--approver", "bob", *key_args[:2]]) == 0
    assert main(["add", repo, str(ROOT / "catalog" / "fix-printer-port")]) == 0
    assert main(["sign", repo, *key_args, f"{repo}/keys/alice.pem"]) == 0
    capsys.readouterr()
    assert main(["publish", repo, "--to", str(relay)]) == 1
    assert "high-risk was signed by 1/2 keys" in capsys.readouterr().err
    assert not (relay / "scripts" / "metadata" / "timestamp.json").exists()
    assert main(["sign", repo, *key_args, f"{repo}/keys/bob.pem"]) == 0
    assert main(["publish", repo, "--to", str(relay)]) == 0


def test_signing_twice_signs_nothing_and_a_stranger_key_is_refused(
    tmp_path: Path, key_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = str(tmp_path / "repo")
    assert main(["init", repo, "--approver", "alice", "--approver", "bob", *key_args[:2]]) == 0
    assert main(["init", str(tmp_path / "other"), "--approver", "eve", *key_args[:2],
                 "--high-risk-threshold", "1"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["sign", repo, *key_args, f"{repo}/keys/bob.pem"]) == 0
    assert capsys.readouterr().out == "signed: low-risk\n"  # high-risk: init signed it
    assert main(["sign", repo, *key_args, f"{repo}/keys/bob.pem"]) == 0
    assert "signed: nothing (already signed)" in capsys.readouterr().out
    assert main(["sign", repo, *key_args, str(tmp_path / "other" / "keys" / "eve.pem")]) != 0
    assert "may sign no role" in capsys.readouterr().err
