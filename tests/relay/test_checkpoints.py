"""The running relay anchors its audit log: it signs the head at start and every interval,
keeps working past rows someone slipped in past the head, and says so when its database
disagrees with its signed checkpoints."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa
from aiohttp.test_utils import TestServer

from posassist.relay.app import create_app
from posassist.relay.audit import VerifyFailure, verify_store
from posassist.relay.checkpoints import read_checkpoints
from posassist.relay.state import STATE
from tests.relay.harness import PASSWORD, start_relay

if TYPE_CHECKING:
    from pathlib import Path

    from tests.relay.harness import Relay


def _checkpoints(relay: Relay) -> list[int]:
    config = relay.state.config
    key = config.checkpoint_key_path.read_bytes()
    from posassist.protocol import signing

    public = signing.private_key_from_pem(key).public_key()
    return [c.seq for c in read_checkpoints(config.checkpoint_file_path, public).checkpoints]


async def _wait_signed(relay: Relay) -> int:
    """Wait until the newest checkpoint covers the head; return the head's seq."""
    async with asyncio.timeout(10):
        while True:
            head = (await relay.state.storage.head()).seq
            if _checkpoints(relay)[-1] == head:
                return head
            await asyncio.sleep(0.02)


async def test_relay_signs_the_head_at_start_and_while_it_moves(tmp_path: Path) -> None:
    relay = await start_relay(tmp_path, audit_checkpoint_interval=0.05)
    try:
        config = relay.state.config
        assert oct(config.checkpoint_key_path.stat().st_mode & 0o777) == "0o600"
        actions = [a for a, _, _ in await relay.audit_actions()]
        assert actions[:3] == ["relay.init", "relay.start", "audit.checkpoint"]  # served fresh
        relay.clock.offset = 10**6  # the relay's clock, not the machine's, dates records
        status, _ = await relay.post("/v1/login", {"username": "admin", "password": PASSWORD})
        assert status == 200
        head = await _wait_signed(relay)
        records = [r async for r in relay.state.storage.records()]
        assert records[head - 1].action == "audit.checkpoint"
        assert records[head - 1].at > time.time() + 10**5
        assert records[head - 2].action == "user.login"
        # An idle relay signs nothing new: the head stays on its own checkpoint record.
        count = len(_checkpoints(relay))
        before = await relay.state.storage.head()
        await asyncio.sleep(0.3)  # six intervals: nothing to sign, so nothing is appended
        assert (await relay.state.storage.head()) == before
        assert len(_checkpoints(relay)) == count
        assert (await verify_store(relay.state.storage, checkpoints=[])).ok
    finally:
        await relay.server.close()


async def test_a_stray_row_past_the_head_does_not_stop_sign_in(tmp_path: Path) -> None:
    relay = await start_relay(tmp_path)
    try:
        storage = relay.state.storage
        head = await storage.head()

        def slip_in(conn: sa.Connection) -> None:
            conn.execute(
                sa.text(
                    "INSERT INTO audit (seq, at, actor, action, target, outcome, detail, "
                    "prev_hash, hash) VALUES (:seq, 1.0, 'x', 'y', 'z', 'ok', '{}', :h, :h)"
                ),
                {"seq": head.seq + 1, "h": b"\x01" * 32},
            )

        await storage.run_write(slip_in)
        for _ in range(3):
            status, body = await relay.post(
                "/v1/login", {"username": "admin", "password": PASSWORD}
            )
            assert status == 200, body  # not 409: the relay keeps working
        result = await verify_store(storage)
        assert (result.ok, result.first_bad_seq) == (False, head.seq + 1)
        assert result.reason in (VerifyFailure.HASH_MISMATCH, VerifyFailure.PREV_HASH_MISMATCH)
    finally:
        await relay.server.close()


async def test_a_restart_on_a_rewritten_database_is_audited_as_failed(tmp_path: Path) -> None:
    relay = await start_relay(tmp_path)
    await relay.server.close()  # (a clean stop signs the head last)
    last = _checkpoints(relay)[-1]
    engine = sa.create_engine(relay.state.config.database)
    with engine.begin() as conn:  # the database rewritten while the relay is down
        conn.execute(
            sa.text("UPDATE audit SET hash = :h WHERE seq = :s"), {"h": b"\x02" * 32, "s": last}
        )
    engine.dispose()
    again = TestServer(create_app(relay.state.config), host="127.0.0.1")
    await again.start_server()  # the same data directory, checkpoint key and file
    try:
        state = again.app[STATE]
        actions = [(r.action, r.outcome) async for r in state.storage.records()]
        assert ("audit.anchor", "failed") in actions
    finally:
        await again.close()
