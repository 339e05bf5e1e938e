"""``posassist-relay`` refuses a ``--data`` folder that ``init`` never set up (issue 15: a
mistyped ``--data`` silently created a new, empty database): one line naming
``posassist-relay init``, exit 2, and no folder, database or identity created; ``init`` itself
still sets a new folder up, and the commands then work on it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.e2e.cli import ADMIN_PASSWORD, ok, py

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

COMMANDS = [
    ["serve", "--port", "0"],
    ["user", "create", "--username", "li.wei", "--role", "viewer", "--scope", "root"],
    ["user", "password", "admin"],
    ["user", "unlock", "admin"],
    ["organisation", "create", "--name", "Acme"],
    ["merchant", "create", "--name", "Noodles", "--organisation", "org_x"],
    ["store", "create", "--name", "Main St", "--merchant", "mer_x"],
    ["enrolment", "create", "--store", "sto_x", "--relay-url", "ws://127.0.0.1:9"],
    ["device", "list"],
    ["device", "revoke", "dev_x"],
]


def _relay(data: Path, command: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    """``posassist-relay COMMAND --data DATA``, the verb's arguments after the data folder."""
    verb = 1 if command[0] == "serve" else 2
    return py("relay", *command[:verb], "--data", str(data), *command[verb:], *extra)


def _refused(result: subprocess.CompletedProcess[str], data: Path) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: not a relay data directory: ")
    assert f"run `posassist-relay init --data {data}` first" in line
    assert line.endswith("请先运行 posassist-relay init")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_folder_that_does_not_exist_is_refused_and_not_created(
    tmp_path: Path, command: list[str]
) -> None:
    data = tmp_path / "typo" / "relay"
    _refused(_relay(data, command), data)
    assert list(tmp_path.iterdir()) == []  # not even the parent


@pytest.mark.parametrize(
    "command", [COMMANDS[0], COMMANDS[1], COMMANDS[8]], ids=["serve", "user", "device"]
)
def test_an_empty_folder_or_one_without_its_database_is_refused_and_left_as_it_was(
    tmp_path: Path, command: list[str]
) -> None:
    data = tmp_path / "relay"
    data.mkdir()
    _refused(_relay(data, command), data)
    assert list(data.iterdir()) == []
    (data / "relay.json").write_text('{"relay_id": "relay-0000"}')  # an identity, no database
    _refused(_relay(data, command), data)
    assert [p.name for p in data.iterdir()] == ["relay.json"]


def test_a_postgresql_relay_needs_its_folder_set_up_too(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    result = py(
        "relay", "device", "list", "--data", str(data),
        database="postgresql://127.0.0.1:9/nowhere",  # never reached: refused before
    )  # fmt: skip
    _refused(result, data)
    assert not data.exists()


def test_init_sets_a_new_folder_up_and_the_commands_then_work(tmp_path: Path) -> None:
    data = tmp_path / "new" / "relay"
    (tmp_path / "admin.pw").write_text(ADMIN_PASSWORD)
    pw = str(tmp_path / "admin.pw")
    assert "relay initialised in" in ok(
        py("relay", "init", "--data", str(data), "--admin-password-file", pw)
    )
    assert (data / "relay.db").is_file()
    org = ok(py("relay", "organisation", "create", "--data", str(data), "--name", "Acme"))
    assert org.startswith("org_")
    assert ok(py("relay", "device", "list", "--data", str(data))) == ""
