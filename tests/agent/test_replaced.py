"""A 4002 close (another connection of this device replaced ours) is a failure for the agent:
``ReplacedError``, and its back-off keeps growing instead of starting again (docs/relay.md#
flapping-agents). Against a real relay on 127.0.0.1; the rival is played by the test."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from posassist.agent.config import Identity
from posassist.agent.errors import ReplacedError
from posassist.agent.run import run_agent
from tests.relay.harness import Agent, start_relay, wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


async def test_a_replaced_agent_raises_replaced_error_and_keeps_its_backoff(
    tmp_path: Path,
) -> None:
    relay = await start_relay(tmp_path)
    try:
        device_id, key = await relay.enrol()
        identity = Identity(device_id, relay.ws, key)
        series: list[list[float]] = []  # one list per backoff iterator the agent made
        opens: list[object] = []
        failures: list[BaseException] = []

        def delays() -> Iterator[float]:
            taken: list[float] = []
            series.append(taken)

            def gen() -> Iterator[float]:
                n = 0
                while True:
                    taken.append(0.05 * 2**n)
                    yield taken[-1]
                    n += 1

            return gen()

        async def on_open(opened: object) -> None:
            opens.append(opened)

        stop = asyncio.Event()
        agent = asyncio.ensure_future(
            run_agent(identity, stop, delays=delays, on_open=on_open, on_failure=failures.append)
        )
        try:
            for round_ in range(1, 4):
                await wait_until(lambda r=round_: len(opens) == r)  # type: ignore[misc]
                await wait_until(lambda: relay.state.router.agent(device_id) is not None)
                async with Agent(relay, device_id, key):  # the clone connects: ours is replaced
                    await wait_until(lambda r=round_: len(failures) == r)  # type: ignore[misc]
            assert all(isinstance(exc, ReplacedError) for exc in failures)
            assert ReplacedError.close_code == 4002
            # one backoff iterator all along, its waits growing: never reset by a replacement
            assert len(series) == 1
            assert series[0][:3] == [0.05, 0.1, 0.2]
        finally:
            stop.set()
            await asyncio.wait_for(agent, 10)
    finally:
        await relay.server.close()
