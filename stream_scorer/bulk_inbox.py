"""Where the worker's consumer hands whole fetched batches to the scoring agent.

One :class:`BulkInbox` per bulk topic (the features topic), owned by the app
(:class:`stream_scorer.app.ScorerApp`). The agent opens it with its
:class:`~.batcher.Batcher` when it starts and closes it when it stops; the consumer
(:class:`~.bulk_consumer.BulkConsumer`) waits for room (:meth:`BulkInbox.wait_room`) and
then puts one partition's fetched messages at once (:meth:`BulkInbox.put_nowait`): a
partition's messages enter in offset order, whole or not at all. While no agent has it open
(before the model is active, while a restarted agent starts) the consumer waits, so nothing
fetched is skipped.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, Sequence

from faust.types import Message

from stream_scorer.batcher import Batcher


class BulkInbox:
    """The features topic's hand-off point (see the module docstring)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._batcher: Batcher[Message] | None = None
        self._changed = asyncio.Event()  # opened or closed

    @property
    def is_open(self) -> bool:
        return self._batcher is not None

    def open(self, batcher: Batcher[Message]) -> None:
        """From now on the consumer's messages go to ``batcher``."""
        self._batcher = batcher
        self._changed.set()

    def close(self, batcher: Batcher[Message]) -> None:
        """``batcher`` takes nothing more (a newer one opened since is left alone)."""
        if self._batcher is batcher:
            self._batcher = None
            self._changed.set()

    def has_room(self) -> bool:
        return self._batcher is not None and self._batcher.has_room()

    async def wait_room(self) -> None:
        """Return once an open batcher has room (the caller races this with the flow's suspension)."""
        while not self.has_room():
            batcher = self._batcher
            if batcher is None or batcher.closed:
                self._changed.clear()
                await self._changed.wait()
            else:
                await batcher.wait_room()

    def put_nowait(self, messages: Sequence[Message], sizes: Sequence[int]) -> None:
        """Queue one partition's messages, in offset order; only after :meth:`has_room` was true
        with no ``await`` in between (so the batch cannot be half queued)."""
        assert self._batcher is not None, "put_nowait without room"
        self._batcher.put_many_nowait(messages, sizes)


class BulkApp(Protocol):
    """An app with bulk inboxes (:class:`stream_scorer.app.ScorerApp`): topic name -> inbox."""

    bulk_inboxes: dict[str, BulkInbox]
