"""A relay that goes away (1001: it restarts) has its agents back within seconds: the agent
switches to the short, jittered schedule (agent/backoff.py ``after_going_away``) instead of
starting its doubling backoff again, and any other close keeps the normal schedule. Against a
real relay on 127.0.0.1 (tests/relay/harness.py); the relay's shutdown path sends the 1001."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from posassist.agent.config import Identity
from posassist.agent.errors import GoingAwayError
from posassist.agent.run import run_agent
from posassist.relay.app import close_sockets
from tests.relay.harness import start_relay, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


class Schedules:
    """Records which schedule the agent asked for, and makes each wait short."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def delays(self) -> Iterator[float]:
        self.made.append("backoff")
        return self._every(0.05)

    def going_away(self, then: Iterator[float]) -> Iterator[float]:
        self.made.append("going_away")
        return self._every(0.01)

    @staticmethod
    def _every(seconds: float) -> Iterator[float]:
        while True:
            yield seconds


async def test_an_agent_told_going_away_reconnects_on_the_short_schedule(tmp_path: Path) -> None:
    relay = await start_relay(tmp_path)
    try:
        device_id, key = await relay.enrol()
        schedules = Schedules()
        opens: list[object] = []
        failures: list[BaseException] = []

        async def on_open(opened: object) -> None:
            opens.append(opened)

        stop = asyncio.Event()
        agent = asyncio.ensure_future(
            run_agent(
                Identity(device_id, relay.ws, key),
                stop,
                delays=schedules.delays,
                going_away=schedules.going_away,
                on_open=on_open,
                on_failure=failures.append,
            )
        )
        try:
            await wait_until(lambda: relay.state.router.agent(device_id) is not None)
            await close_sockets(relay.server.app)  # what a relay shutting down says: 1001
            await wait_until(lambda: len(opens) == 2)
            await wait_until(lambda: relay.state.router.agent(device_id) is not None)
            # the first schedule; then the short one (made with a fresh normal one to go on with)
            assert schedules.made == ["backoff", "backoff", "going_away"]
            assert failures == []  # going away is not a failure
            # another close (the relay drops the link without a word) keeps the normal schedule
            link = relay.state.router.agent(device_id)
            assert link is not None
            link.ws._req.transport.abort()  # type: ignore[attr-defined]
            await wait_until(lambda: len(opens) == 3)
            assert schedules.made[3:] == ["backoff"]
        finally:
            stop.set()
            await asyncio.wait_for(agent, 10)
    finally:
        await relay.server.close()


def test_going_away_error_carries_the_close_code() -> None:
    assert GoingAwayError.close_code == 1001
    assert "重启" in GoingAwayError.public_reason_zh
