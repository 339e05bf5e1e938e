"""relay/scripts_repo.py: the relay serves only a repository whose root chains from the first one
it served, and an empty repository serves."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import urllib.request
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

from posassist.console.scripts_repo import ScriptRepository, init_repository
from posassist.relay.scripts_repo import (
    FIRST_ROOT,
    UntrustedRootError,
    add_script_routes,
    anchored_root_hash,
)
from tests.agent.test_verify import PASS, approve

if TYPE_CHECKING:
    from pathlib import Path


def approvers(path: Path) -> ScriptRepository:
    repo = init_repository(path, ["alice"], PASS, high_risk_threshold=1)
    approve(repo, "alice")
    return repo


def test_first_root_is_recorded_and_a_replaced_repository_is_refused(tmp_path: Path) -> None:
    published = approvers(tmp_path / "ours").publish(tmp_path / "relay")
    first = anchored_root_hash(published)
    anchor = tmp_path / "relay" / FIRST_ROOT
    assert anchor.stat().st_mode & 0o777 == 0o600
    assert first == hashlib.sha256(anchor.read_bytes()).hexdigest()
    # whoever holds the data directory publishes a repository of their own
    shutil.rmtree(published)
    approvers(tmp_path / "theirs").publish(tmp_path / "relay")
    with pytest.raises(UntrustedRootError, match="is not after"):
        anchored_root_hash(published)
    with pytest.raises(UntrustedRootError):
        add_script_routes(web.Application(), published)


def test_a_root_with_a_higher_version_but_other_keys_is_refused(tmp_path: Path) -> None:
    published = approvers(tmp_path / "ours").publish(tmp_path / "relay")
    anchored_root_hash(published)
    theirs = approvers(tmp_path / "theirs")
    theirs.rotate_key("timestamp", b"unused")  # their root 2, signed by their root key only
    approve(theirs, "root")
    shutil.rmtree(published)
    theirs.publish(tmp_path / "relay")
    with pytest.raises(UntrustedRootError, match="previous root"):
        anchored_root_hash(published)


def test_a_rotated_root_signed_by_the_previous_root_is_served(tmp_path: Path) -> None:
    ours = approvers(tmp_path / "ours")
    published = ours.publish(tmp_path / "relay")
    anchored_root_hash(published)
    ours.rotate_key("root", PASS)  # root 2: signed by the old and the new root key
    [old_key] = (ours.path / "keys").glob("root.*.old.pem")
    ours.sign(old_key.read_bytes(), PASS, ["root"])
    approve(ours, "root")
    ours.publish(tmp_path / "relay")
    assert anchored_root_hash(published) == ours.root_hash()
    # a missing step in the chain is refused
    (published / "metadata" / "2.root.json").unlink()
    with pytest.raises(UntrustedRootError, match="missing"):
        anchored_root_hash(published)


def test_no_repository_has_no_root_hash(tmp_path: Path) -> None:
    assert anchored_root_hash(tmp_path / "scripts") is None
    assert not (tmp_path / FIRST_ROOT).exists()


async def test_an_empty_repository_publishes_and_serves(tmp_path: Path) -> None:
    published = approvers(tmp_path / "ours").publish(tmp_path / "relay")
    assert not any((published / "targets").iterdir())
    app = web.Application()
    add_script_routes(app, published)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        url = f"http://{host}:{port}/v1/scripts/metadata/timestamp.json"
        with await asyncio.to_thread(urllib.request.urlopen, url, None, 5) as answer:
            assert json.loads(answer.read())["signed"]["_type"] == "timestamp"
    finally:
        await runner.cleanup()
