"""client/files.py, the one way to make a private folder or file: 0700 / 0600 under umask 022."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from posassist.client.files import private_dir, write_private
from tests.conftest import mode

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("umask_022")


def test_private_dir_makes_every_missing_level_0700_and_leaves_an_existing_one(
    tmp_path: Path,
) -> None:
    existing = tmp_path / "shared"
    existing.mkdir(mode=0o755)
    made = private_dir(existing / "a" / "b")
    assert made == existing / "a" / "b"
    assert mode(existing / "a") == mode(existing / "a" / "b") == 0o700
    assert mode(existing) == 0o755  # not ours: it keeps its mode
    assert private_dir(made) == made  # again: nothing to do


def test_private_dir_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("kept")
    with pytest.raises(NotADirectoryError):
        private_dir(tmp_path / "f")
    assert (tmp_path / "f").read_text() == "kept"


def test_write_private_is_0600_replaces_at_once_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state.json"
    write_private(path, "one")
    assert (path.read_text(), mode(path), mode(path.parent)) == ("one", 0o600, 0o700)
    path.chmod(0o644)  # an older, too open copy is replaced by a private one
    write_private(path, b"two")
    assert (path.read_bytes(), mode(path)) == (b"two", 0o600)
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_write_private_exclusive_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "agent.key"
    write_private(path, b"first", exclusive=True)
    assert mode(path) == 0o600
    with pytest.raises(FileExistsError):
        write_private(path, b"second", exclusive=True)
    assert path.read_bytes() == b"first"
