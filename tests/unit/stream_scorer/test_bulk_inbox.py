"""The hand-off of whole fetched batches from the consumer to the agent's batcher (pure asyncio).

Before the bulk path (00575e1) neither :mod:`stream_scorer.bulk_inbox` nor the batcher's
``wait_room``/``put_many_nowait`` existed: the agent put messages into the batcher one by one.
"""

from __future__ import annotations

import asyncio

import pytest

from stream_scorer.batcher import Batcher, Closed
from stream_scorer.bulk_inbox import BulkInbox


def run(coro):
    return asyncio.run(coro)


def test_a_fetch_is_queued_whole_in_order_beyond_the_bound() -> None:
    """Room is checked once; the whole partition batch goes in, in order (bounded overshoot)."""
    async def main():
        b: Batcher[int] = Batcher(4, max_wait_s=0.0, max_pending=4)
        assert b.has_room()
        b.put_many_nowait(list(range(6)), [1] * 6)
        full = not b.has_room()
        return full, await b.get(), await b.get(), b.nbytes

    full, first, second, left = run(main())
    assert full, "six queued items are above the bound of four"
    assert first == [0, 1, 2, 3] and second == [4, 5] and left == 0


def test_wait_room_returns_once_a_batch_is_taken_or_the_batcher_closes() -> None:
    async def main():
        b: Batcher[int] = Batcher(2, max_wait_s=0.0, max_pending=2)
        b.put_many_nowait([1, 2, 3], [0, 0, 0])
        waiter = asyncio.ensure_future(b.wait_room())
        await asyncio.sleep(0.05)
        blocked = not waiter.done()
        await b.get()
        await b.get()
        await asyncio.wait_for(waiter, 1.0)
        b.put_many_nowait([4, 5, 6], [0, 0, 0])
        closing = asyncio.ensure_future(b.wait_room())
        await asyncio.sleep(0.01)
        b.close()
        await asyncio.wait_for(closing, 1.0)
        return blocked, b.has_room()

    blocked, room_after_close = run(main())
    assert blocked and not room_after_close


def test_put_many_on_a_closed_batcher_raises() -> None:
    async def main():
        b: Batcher[int] = Batcher(2, max_wait_s=0.0)
        b.close()
        b.put_many_nowait([1], [0])

    with pytest.raises(Closed):
        run(main())


def test_bytes_bound_the_room_too() -> None:
    async def main():
        b: Batcher[bytes] = Batcher(1000, max_wait_s=0.0, max_batch_bytes=100)
        b.put_many_nowait([b"x" * 150, b"y" * 60], [150, 60])
        return b.has_room(), [len(x) for x in await b.get()], b.has_room()

    before, batch, after = run(main())
    assert not before and batch == [150] and after


def test_inbox_waits_while_closed_and_hands_over_to_the_open_batcher() -> None:
    """No batcher open (model not active yet, agent restarting): the consumer waits, nothing is dropped."""
    async def main():
        inbox = BulkInbox("features")
        assert not inbox.has_room()
        waiter = asyncio.ensure_future(inbox.wait_room())
        await asyncio.sleep(0.05)
        waited = not waiter.done()
        b: Batcher[object] = Batcher(10, max_wait_s=0.0)
        inbox.open(b)
        await asyncio.wait_for(waiter, 1.0)
        inbox.put_nowait(["m1", "m2"], [1, 1])  # type: ignore[list-item]
        got = await b.get()
        inbox.close(b)
        return waited, got, inbox.has_room(), inbox.is_open

    waited, got, room, is_open = run(main())
    assert waited and got == ["m1", "m2"]
    assert not room and not is_open


def test_closing_an_old_batcher_leaves_the_new_one_open() -> None:
    async def main():
        inbox = BulkInbox("features")
        old: Batcher[object] = Batcher(10, max_wait_s=0.0)
        new: Batcher[object] = Batcher(10, max_wait_s=0.0)
        inbox.open(old)
        inbox.open(new)
        inbox.close(old)
        return inbox.has_room()

    assert run(main())


def test_a_full_batcher_makes_the_inbox_wait_until_room() -> None:
    async def main():
        inbox = BulkInbox("features")
        b: Batcher[object] = Batcher(2, max_wait_s=0.0, max_pending=2)
        inbox.open(b)
        inbox.put_nowait(["a", "b", "c"], [0, 0, 0])  # type: ignore[list-item]
        waiter = asyncio.ensure_future(inbox.wait_room())
        await asyncio.sleep(0.05)
        waited = not waiter.done()
        await b.get()
        await b.get()
        await asyncio.wait_for(waiter, 1.0)
        return waited

    assert run(main())
