"""Reads by key coalesced: many handlers asking at once cost one storage call, not one each.

A restarted relay signs in thousands of agents a second, and each sign-in reads its device (and
its policy) from the database: one hop to a reader thread and back each, which cost as much as
the Ed25519 check itself (docs/notes/16b-status.md). :class:`Batcher` gathers the keys asked for
while a read is in flight and reads them together next, so a storm costs one hop per batch.

Nothing is cached: every answer comes from a read that started after it was asked for, so a
device revoked (committed) before its agent asks is seen revoked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

__all__ = ["MAX_BATCH", "Batcher"]

log = logging.getLogger("posassist.relay")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Keys read in one storage call at most (well under SQLite's bound parameters).
MAX_BATCH = 256


class Batcher(Generic[K, V]):
    """``await get(key)``: the value ``read_many`` gives for ``key``, or None if it gives none.

    One ``read_many`` call runs at a time; keys asked for meanwhile wait for the next, which
    starts as soon as the last ends (at most :data:`MAX_BATCH` keys each). An error of a read
    is raised to every caller whose key was in it, and the next batch is read all the same.
    """

    __slots__ = ("_reading", "_waiting", "max_batch", "read_many")

    def __init__(
        self,
        read_many: Callable[[Sequence[K]], Awaitable[dict[K, V]]],
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be 1 or more")
        self.read_many = read_many
        self.max_batch = max_batch
        #: key → the callers waiting for it, in the order they asked (a dict keeps it)
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._reading: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V | None:
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._reading is None:
            self._reading = asyncio.create_task(self._read_all(), name="batched reads")
        return await future

    async def _read_all(self) -> None:
        try:
            while self._waiting:
                await asyncio.sleep(0)  # let the handlers runnable now ask too
                keys = list(self._waiting)[: self.max_batch]
                batch = {key: self._waiting.pop(key) for key in keys}
                try:
                    values = await self.read_many(keys)
                except Exception as exc:  # each caller gets the read's error
                    for futures in batch.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                except BaseException:  # cancelled: so are the callers of this batch
                    for futures in batch.values():
                        for future in futures:
                            future.cancel()
                    raise
                for key, futures in batch.items():
                    value = values.get(key)
                    for future in futures:
                        if not future.done():  # its caller may have been cancelled
                            future.set_result(value)
        finally:
            self._reading = None
            if self._waiting:  # cancelled with callers still waiting: they are cancelled too
                for futures in self._waiting.values():
                    for future in futures:
                        future.cancel()
                self._waiting.clear()
