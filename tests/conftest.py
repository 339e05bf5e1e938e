"""Shared test settings: hypothesis profiles (CI runs the byte fuzzers with 10,000 examples), the
order parallel runs start tests in (the long ones first), an explicit umask 022 for tests of file
modes, and the root logger put back after every test."""

from __future__ import annotations

import logging
import os
import stat
import time
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, start the long tests first on every worker.

    ``--dist worksteal`` gives each of the N workers a contiguous 1/N of the collection, and an
    idle worker takes the tail of the busiest one's queue. A long test that sits late in its
    worker's share (or is taken by a worker that has just run out) sets the run's wall time;
    so each share is made to begin with its part of the ``slow`` tests, then of the other
    end-to-end tests, and the quick ones follow, to be stolen at the end.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1 and len(items) >= workers:
        items[:] = _long_first(items, workers)


def _long_first(items: Sequence[pytest.Item], workers: int) -> list[pytest.Item]:
    """``items`` reordered so that each of ``workers`` contiguous shares (sized the way xdist's
    scheduler cuts them) starts with an even part of the long tests. Tests that share a module-
    or class-scoped fixture stay together, so each worker builds it at most once."""
    sizes = []
    left = len(items)
    for i in range(workers):  # xdist: len(pending) // nodes_remaining, one node after another
        sizes.append(left // (workers - i))
        left -= sizes[-1]
    units: dict[object, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(_unit(item), []).append(item)
    heavy = [u for u in units.values() if _weight(u) == 2] + [
        u for u in units.values() if _weight(u) == 1
    ]
    shares: list[list[pytest.Item]] = [[] for _ in range(workers)]
    for unit in heavy:  # each to the share with the fewest long tests so far
        min(shares, key=len).extend(unit)
    if any(len(share) > size for share, size in zip(shares, sizes, strict=True)):
        return list(items)  # too many long tests to spread: keep the collection's order
    taken = {id(item) for share in shares for item in share}
    light = iter([item for item in items if id(item) not in taken])
    for share, size in zip(shares, sizes, strict=True):
        share.extend(next(light) for _ in range(size - len(share)))
    return [item for share in shares for item in share]


def _unit(item: pytest.Item) -> object:
    """What must run on one worker with ``item``: its module if it uses a fixture scoped wider
    than a function (and narrower than the session), else the test alone."""
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    if any(d[-1].scope in ("class", "module", "package") for d in defs):
        return item.path
    return item


def _weight(unit: list[pytest.Item]) -> int:
    """2 for a unit holding a ``slow`` test, 1 for other end-to-end tests, 0 for the rest."""
    if any(item.get_closest_marker("slow") for item in unit):
        return 2
    return 1 if any("e2e" in item.path.parts for item in unit) else 0


# --- where the suite's CPU goes (POSASSIST_TEST_CPU=FILE): one JSON line per test -----------
# user+sys seconds of this worker and of the children it waited for (a relay or agent it ran),
# setup to teardown: `make test` time on two cores is the suite's CPU, not its wall clock.
_CPU_LOG = os.environ.get("POSASSIST_TEST_CPU")


if _CPU_LOG:

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        import json

        before, start = os.times(), time.monotonic()
        yield
        after = os.times()
        spent = {
            "own": after.user + after.system - before.user - before.system,
            "children": after.children_user
            + after.children_system
            - before.children_user
            - before.children_system,
        }
        with open(_CPU_LOG, "a", encoding="utf-8") as log:
            log.write(
                json.dumps({"test": item.nodeid, "wall": time.monotonic() - start, **spent}) + "\n"
            )
