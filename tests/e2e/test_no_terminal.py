"""No terminal to ask on (readme-walk F11): `posassist login` without --password-file and
`posassist-scripts init|sign` without a passphrase, stdin not a terminal, say so in one line and
exit 2, like `posassist-relay user password` (the same class, client/errors.py NoTerminal); they
read nothing from stdin and change nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

from tests.e2e.cli import ROOT

if TYPE_CHECKING:
    from pathlib import Path

LINE = "error: no terminal to ask on: {how} / 没有可输入密码的终端，请用文件提供"


def _run(module: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "POSASSIST_SCRIPTS_PASSPHRASE"}
    env["POSASSIST_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        input="a-secret-on-stdin\n",  # a pipe, not a terminal: never read as the secret
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line(result: subprocess.CompletedProcess[str], how: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [LINE.format(how=how)], result.stderr


def test_login_without_a_password_file_or_terminal_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # nothing listens there: it must stop before it tries
    result = _run(
        "posassist.console",
        *("login", "--relay", "ws://127.0.0.1:9", "--user", "li.wei"),
        home=home,
    )
    _one_line(result, "give --password-file or set $POSASSIST_PASSWORD")
    assert not home.exists()  # no session folder, no session


def test_scripts_init_and_sign_without_a_passphrase_or_terminal_are_one_line(
    tmp_path: Path,
) -> None:
    how = "give --passphrase-file or set $POSASSIST_SCRIPTS_PASSPHRASE"
    repo = tmp_path / "repo"
    cli = "posassist.console.scripts_cli"
    init = _run(cli, "init", str(repo), "--approver", "alice", "--approver", "bob", home=tmp_path)
    _one_line(init, how)
    assert not repo.exists()

    phrase = tmp_path / "phrase"
    phrase.write_text("a long enough passphrase\n")
    made = _run(
        cli,
        *("init", str(repo), "--approver", "alice", "--approver", "bob"),
        *("--passphrase-file", str(phrase)),
        home=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    sign = _run(cli, "sign", str(repo), "--key", str(repo / "keys" / "alice.pem"), home=tmp_path)
    _one_line(sign, how)
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
