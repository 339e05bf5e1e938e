"""Shared test settings: hypothesis profiles (CI runs the byte fuzzers with 10,000 examples), an
explicit umask 022 for tests of file modes, and the root logger put back after every test."""

from __future__ import annotations

import logging
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


@pytest.fixture(autouse=True)
def _root_logger_put_back() -> Iterator[None]:
    """A command's ``main()`` called in-process installs its log handler on the root logger
    (relay/logs.py ``configure_logging``) writing to the stderr pytest captured for that test;
    left there, a later test in the same worker logs into a closed file, and "--- Logging
    error --- Traceback" lands in that test's captured stderr (which failed CLI tests that
    check for no traceback, depending on how xdist spread the tests)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
