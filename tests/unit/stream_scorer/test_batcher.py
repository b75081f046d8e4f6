"""The batching queue between the stream and the scoring loop (pure asyncio, no broker)."""

from __future__ import annotations

import asyncio
import time

import pytest

from stream_scorer.batcher import Batcher, Closed


def run(coro):
    return asyncio.run(coro)


def test_a_full_batch_is_handed_out_at_once() -> None:
    async def main():
        b: Batcher[int] = Batcher(3, max_wait_s=10.0, max_pending=10)
        for i in range(7):
            await b.put(i)
        t0 = time.monotonic()
        got = [await b.get(), await b.get()]
        return got, time.monotonic() - t0, len(b)

    got, took, left = run(main())
    assert got == [[0, 1, 2], [3, 4, 5]] and left == 1
    assert took < 1.0  # neither batch waited for the 10 s timeout


def test_a_partial_batch_closes_when_its_oldest_item_waited_max_wait() -> None:
    async def main():
        b: Batcher[int] = Batcher(100, max_wait_s=0.2)
        await b.put(1)
        t0 = time.monotonic()
        getter = asyncio.ensure_future(b.get())
        await asyncio.sleep(0.1)
        await b.put(2)  # a later item does not extend the oldest one's deadline
        batch = await getter
        return batch, time.monotonic() - t0

    batch, took = run(main())
    assert batch == [1, 2]
    assert 0.15 <= took < 1.0


def test_an_item_that_already_waited_is_handed_out_without_more_waiting() -> None:
    async def main():
        b: Batcher[int] = Batcher(100, max_wait_s=0.1)
        await b.put(1)
        await asyncio.sleep(0.15)  # e.g. the previous batch took long to score
        t0 = time.monotonic()
        return await b.get(), time.monotonic() - t0

    batch, took = run(main())
    assert batch == [1] and took < 0.05


def test_put_blocks_at_max_pending_until_a_batch_is_taken() -> None:
    async def main():
        b: Batcher[int] = Batcher(2, max_wait_s=0.0, max_pending=4)
        for i in range(4):
            await b.put(i)
        blocked = asyncio.ensure_future(b.put(4))
        await asyncio.sleep(0.05)
        was_blocked = not blocked.done()
        first = await b.get()
        await asyncio.wait_for(blocked, 1.0)
        return was_blocked, first, len(b)

    was_blocked, first, left = run(main())
    assert was_blocked and first == [0, 1] and left == 3


def test_close_hands_out_what_is_queued_then_raises() -> None:
    async def main():
        b: Batcher[int] = Batcher(10, max_wait_s=10.0)
        await b.put(1)
        await b.put(2)
        getter = asyncio.ensure_future(b.get())
        await asyncio.sleep(0.05)
        b.close()
        first = await asyncio.wait_for(getter, 1.0)  # not held for the 10 s wait
        with pytest.raises(Closed):
            await b.get()
        with pytest.raises(Closed):
            await b.put(3)
        return first

    assert run(main()) == [1, 2]


def test_order_is_kept_and_nothing_is_lost_under_concurrency() -> None:
    async def main():
        b: Batcher[int] = Batcher(7, max_wait_s=0.001, max_pending=20)
        got: list[int] = []

        async def consume():
            while True:
                try:
                    batch = await b.get()
                except Closed:
                    return
                assert 1 <= len(batch) <= 7
                got.extend(batch)
                await asyncio.sleep(0)

        task = asyncio.ensure_future(consume())
        for i in range(2000):
            await b.put(i)
            if i % 97 == 0:
                await asyncio.sleep(0.002)
        b.close()
        await asyncio.wait_for(task, 10)
        return got

    assert run(main()) == list(range(2000))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        Batcher(0, 1.0)
    with pytest.raises(ValueError):
        Batcher(1, -1.0)


def test_batches_are_bounded_in_bytes_as_well_as_items() -> None:
    async def main():
        b: Batcher[str] = Batcher(1000, max_wait_s=10.0, max_batch_bytes=100)
        for name in "abcde":
            await b.put(name, 40)
        t0 = time.monotonic()
        first = await b.get()  # 120 bytes were queued: the batch closed without the 10 s wait
        second = await b.get()
        return first, second, time.monotonic() - t0, b.nbytes

    first, second, took, left = run(main())
    assert first == ["a", "b"] and second == ["c", "d"] and left == 40
    assert took < 1.0


def test_an_item_larger_than_the_byte_bound_goes_alone() -> None:
    async def main():
        b: Batcher[str] = Batcher(1000, max_wait_s=0.0, max_batch_bytes=100)
        await b.put("big", 500)
        blocked = asyncio.ensure_future(b.put("small", 1))  # 500 bytes queued: back-pressure
        await asyncio.sleep(0.02)
        assert not blocked.done()
        first = await b.get()
        await asyncio.wait_for(blocked, 1.0)
        return first, await b.get()

    assert run(main()) == (["big"], ["small"])


def test_put_blocks_at_twice_the_byte_bound() -> None:
    async def main():
        b: Batcher[int] = Batcher(1000, max_wait_s=0.0, max_batch_bytes=100)
        for i in range(4):
            await b.put(i, 50)  # 200 bytes queued = 2 x max_batch_bytes
        blocked = asyncio.ensure_future(b.put(4, 50))
        await asyncio.sleep(0.05)
        was_blocked = not blocked.done()
        await b.get()
        await asyncio.wait_for(blocked, 1.0)
        return was_blocked

    assert run(main())
