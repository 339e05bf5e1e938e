"""Sign-ins read their devices together (relay/batching.py): concurrent asks cost one read, an
ask made while a read is in flight is answered by a read that starts after it (a revocation
committed before it is seen), errors reach every caller of their batch and no one else."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from posassist.relay.batching import Batcher

if TYPE_CHECKING:
    from collections.abc import Sequence


class Store:
    """A dict read the way the database is: later, in a batch; each read is recorded."""

    def __init__(self, values: dict[str, int]) -> None:
        self.values = values
        self.reads: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next = False
        self.started = asyncio.Event()  # a read has begun

    async def read_many(self, keys: Sequence[str]) -> dict[str, int]:
        self.reads.append(list(keys))
        self.started.set()
        found = {k: self.values[k] for k in keys if k in self.values}  # the read's snapshot
        failing, self.fail_next = self.fail_next, False
        await self.gate.wait()
        if failing:
            raise OSError("database unreachable")
        return found


async def test_concurrent_asks_are_one_read_and_missing_keys_are_none() -> None:
    store = Store({f"d{i}": i for i in range(50)})
    batcher = Batcher(store.read_many)
    keys = [f"d{i}" for i in range(50)] + ["d3", "nope"]
    values = await asyncio.gather(*(batcher.get(k) for k in keys))
    assert values == [*range(50), 3, None]
    assert len(store.reads) == 1
    assert sorted(store.reads[0]) == sorted(set(keys))  # a key asked twice is read once


async def test_asks_during_a_read_wait_for_the_next_read_which_sees_newer_data() -> None:
    store = Store({"dev": 1})
    batcher = Batcher(store.read_many)
    store.gate.clear()
    first = asyncio.ensure_future(batcher.get("dev"))
    await store.started.wait()  # the first read has begun
    store.values["dev"] = 2  # e.g. revoked, committed after that read began
    second = asyncio.ensure_future(batcher.get("dev"))
    store.gate.set()
    assert await first == 1
    assert await second == 2  # not answered by the read that started before it was asked
    assert store.reads == [["dev"], ["dev"]]


async def test_batches_are_at_most_max_batch_keys() -> None:
    store = Store({f"d{i}": i for i in range(10)})
    batcher = Batcher(store.read_many, max_batch=4)
    values = await asyncio.gather(*(batcher.get(f"d{i}") for i in range(10)))
    assert values == list(range(10))
    assert [len(r) for r in store.reads] == [4, 4, 2]


async def test_a_failed_read_reaches_its_callers_and_the_next_batch_is_read() -> None:
    store = Store({"a": 1, "b": 2})
    batcher = Batcher(store.read_many)
    store.gate.clear()
    store.fail_next = True
    failing = asyncio.ensure_future(batcher.get("a"))
    await store.started.wait()
    later = asyncio.ensure_future(batcher.get("b"))
    store.gate.set()
    with pytest.raises(OSError, match="unreachable"):
        await failing
    assert await later == 2
    assert await batcher.get("a") == 1  # nothing stuck after the failure


async def test_a_cancelled_caller_does_not_spoil_the_others() -> None:
    store = Store({"a": 1})
    batcher = Batcher(store.read_many)
    store.gate.clear()
    gone = asyncio.ensure_future(batcher.get("a"))
    stays = asyncio.ensure_future(batcher.get("a"))
    await store.started.wait()
    gone.cancel()
    store.gate.set()
    assert await stays == 1
    assert gone.cancelled()


def test_a_batch_must_hold_one_key_at_least() -> None:
    async def nothing(keys: Sequence[str]) -> dict[str, int]:
        return {}

    with pytest.raises(ValueError, match="max_batch"):
        Batcher(nothing, max_batch=0)
