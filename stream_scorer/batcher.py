"""A bounded batching queue between Faust's stream and the scoring loop.

Why not Faust's ``take``/``noack_take``: while the caller holds a batch, ``take`` stops
adding to its buffer, so Faust's own per-message work (about 200 us a message) and our scoring
run one after the other. With this queue the agent keeps reading the stream while the previous
batch is scored and produced, and the two costs overlap.

Batching rule: a batch is handed out as soon as ``max_batch`` items or ``max_batch_bytes``
bytes are queued, or when its oldest item has waited ``max_wait_s`` (so an item waits at most
``max_wait_s`` for its batch to close, however slowly others arrive). A batch holds at most
``max_batch`` items and, unless its first item alone is larger, ``max_batch_bytes`` bytes: the
byte bound keeps batches of large envelopes (1,000 records a message) as small in memory and
time as batches of single records. ``put`` blocks once twice that much is queued:
back-pressure to the stream, so memory stays bounded and Kafka keeps what we have not read.

The bulk path (:mod:`.bulk_consumer`) hands over a whole fetched partition batch at once:
:meth:`Batcher.wait_room` waits for room under the same bounds, then
:meth:`Batcher.put_many_nowait` queues the batch whole (at most one fetch beyond the bound),
so a batch is either queued entire or not at all.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from itertools import repeat
from typing import Generic, Sequence, TypeVar

T = TypeVar("T")


class Closed(Exception):
    """``get`` on a closed and drained batcher."""


class Batcher(Generic[T]):
    def __init__(self, max_batch: int, max_wait_s: float, max_pending: int | None = None,
                 max_batch_bytes: int = 1 << 62) -> None:
        if max_batch < 1 or max_wait_s < 0 or max_batch_bytes < 1:
            raise ValueError("max_batch and max_batch_bytes must be >= 1 and max_wait_s >= 0")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_pending = max(max_pending or 2 * max_batch, max_batch)
        self.max_batch_bytes = max_batch_bytes
        self.max_pending_bytes = 2 * max_batch_bytes
        self._items: deque[tuple[float, int, T]] = deque()
        self._bytes = 0
        self._changed = asyncio.Event()   # an item was added, or the batcher was closed
        self._space = asyncio.Event()     # room below max_pending
        self._space.set()
        self._closed = False
        self._want = 1  # queue length at which a waiting ``get`` must be woken
        #: ``time.monotonic()`` at which the oldest item of the last batch handed out was added
        self.last_oldest: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def nbytes(self) -> int:
        return self._bytes

    def _full(self) -> bool:
        return len(self._items) >= self.max_pending or self._bytes >= self.max_pending_bytes

    async def put(self, item: T, nbytes: int = 0) -> None:
        while self._full() and not self._closed:
            self._space.clear()
            await self._space.wait()
        if self._closed:
            raise Closed("batcher is closed")
        self._items.append((time.monotonic(), nbytes, item))
        self._bytes += nbytes
        # wake ``get`` only when it can act, not per item
        if len(self._items) >= self._want or self._bytes >= self.max_batch_bytes:
            self._changed.set()

    def has_room(self) -> bool:
        """Open and below its bounds: :meth:`put_many_nowait` would not overfill it."""
        return not self._closed and not self._full()

    async def wait_room(self) -> None:
        """Return once there is room or the batcher is closed (see :meth:`has_room`)."""
        while self._full() and not self._closed:
            self._space.clear()
            await self._space.wait()

    def put_many_nowait(self, items: Sequence[T], sizes: Sequence[int]) -> None:
        """Queue ``items`` (``sizes`` their bytes) at once, in order, without waiting: the
        caller waited for room (:meth:`wait_room`), so the bounds are exceeded by at most these."""
        if self._closed:
            raise Closed("batcher is closed")
        self._items.extend(zip(repeat(time.monotonic()), sizes, items))
        self._bytes += sum(sizes)
        if len(self._items) >= self._want or self._bytes >= self.max_batch_bytes:
            self._changed.set()

    def close(self) -> None:
        """No more items: ``get`` hands out what is queued at once, then raises :class:`Closed`."""
        self._closed = True
        self._changed.set()
        self._space.set()

    async def get(self) -> list[T]:
        """The next batch (at least one item), by the rule in the module docstring."""
        while not self._items:
            if self._closed:
                raise Closed("batcher is closed and drained")
            self._want = 1
            self._changed.clear()
            await self._changed.wait()
        self._want = self.max_batch
        while len(self._items) < self.max_batch and self._bytes < self.max_batch_bytes and not self._closed:
            left = self._items[0][0] + self.max_wait_s - time.monotonic()
            if left <= 0:
                break
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                break
        batch: list[T] = []
        size = 0
        items = self._items
        self.last_oldest = items[0][0]
        while items and len(batch) < self.max_batch and (not batch or size + items[0][1] <= self.max_batch_bytes):
            _, nbytes, item = items.popleft()
            batch.append(item)
            size += nbytes
        self._bytes -= size
        if not self._full():
            self._space.set()
        return batch
