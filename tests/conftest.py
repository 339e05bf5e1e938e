"""Shared test settings: hypothesis profiles (CI runs the byte fuzzers with 10,000 examples), and
an explicit umask 022 for tests of file modes."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

settings.register_profile("ci", max_examples=10_000, deadline=None, database=None)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask (022), set explicitly: a folder or file the product makes must be private
    because the product asked for it, not because the test runner's umask happened to be 077.
    Subprocesses started meanwhile inherit it."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    """The permission bits of ``path`` (0o700, 0o600, …)."""
    return stat.S_IMODE(path.stat().st_mode)
