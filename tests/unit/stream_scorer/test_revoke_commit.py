"""The worker's consumer commits every ack of a revoked partition before Faust drops them.

Faust's revoke drops the acked offsets no commit holds yet; the worker commits first
(``BulkConsumer.on_partitions_revoked``). Its batches in flight go on meanwhile, so an ack can
arrive while that commit awaits the broker: one commit then leaves it to be dropped, and the
partition's next owner scores those records again (50 duplicates in a CI run of the rebalance
test, ``tests/integration/test_bulk_delivery.py``, where the broker is real). Here the broker's
round trip is one turn of the loop during which the pipeline acks a batch, so the test says
exactly what is committed before the drop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from stream_scorer import bulk_consumer
from stream_scorer.bulk_consumer import BulkConsumer

P0, P1 = TP("features", 0), TP("features", 1)


class _Pipeline:
    """Acks the given batches of offsets, one each time a commit awaits the broker."""

    def __init__(self, consumer: BulkConsumer, batches: list[dict[TP, list[int]]]) -> None:
        self.consumer, self.batches = consumer, list(batches)

    def ack_next(self) -> None:
        if self.batches:
            for tp, offsets in self.batches.pop(0).items():
                self.consumer._acked[tp].extend(offsets)  # noqa: SLF001 - what Faust's ``ack`` appends to


def _consumer(monkeypatch: pytest.MonkeyPatch, late_batches: list[dict[TP, list[int]]],
              commit_ok: bool = True) -> tuple[BulkConsumer, dict]:
    """A BulkConsumer with Faust's ack bookkeeping only; its commit takes the acks present
    when it starts, and the pipeline acks the next late batch while it awaits the broker."""
    consumer = BulkConsumer.__new__(BulkConsumer)
    consumer._acked = defaultdict(list)  # noqa: SLF001
    consumer.log = logging.getLogger("test.revoke")  # type: ignore[misc]
    pipeline = _Pipeline(consumer, late_batches)
    seen: dict = {"committed": defaultdict(list), "commits": 0, "dropped": None}

    async def commit() -> bool:
        taken = {tp: list(offsets) for tp, offsets in consumer._acked.items() if offsets}  # noqa: SLF001
        for tp, offsets in taken.items():
            del consumer._acked[tp][: len(offsets)]  # noqa: SLF001 - as Faust's ``_new_offset``
        pipeline.ack_next()  # a batch is confirmed while the commit is on its way
        await asyncio.sleep(0)
        for tp, offsets in taken.items():
            seen["committed"][tp].extend(offsets)
        seen["commits"] += 1
        return commit_ok and bool(taken)

    async def faust_revoke(self: BulkConsumer, revoked: set[TP]) -> None:
        seen["dropped"] = {tp: list(self._acked.get(tp) or []) for tp in revoked}  # noqa: SLF001 - what Faust pops

    consumer.commit = commit  # type: ignore[method-assign]
    monkeypatch.setattr(faust_aiokafka.Consumer, "on_partitions_revoked", faust_revoke)
    return consumer, seen


def test_an_ack_that_arrives_during_the_commit_is_committed_before_the_drop(monkeypatch) -> None:
    consumer, seen = _consumer(monkeypatch, [{P0: [10, 11], P1: [7]}])
    consumer._acked[P0].extend([8, 9])  # noqa: SLF001 - acked before the rebalance began
    asyncio.run(consumer.on_partitions_revoked({P0, P1}))
    assert seen["dropped"] == {P0: [], P1: []}, "nothing acked is left for Faust to drop"
    assert seen["committed"] == {P0: [8, 9, 10, 11], P1: [7]}
    assert seen["commits"] == 2


def test_with_nothing_in_flight_one_commit_suffices(monkeypatch) -> None:
    consumer, seen = _consumer(monkeypatch, [])
    consumer._acked[P0].extend([3])  # noqa: SLF001
    asyncio.run(consumer.on_partitions_revoked({P0}))
    assert seen["commits"] == 1 and seen["dropped"] == {P0: []} and seen["committed"] == {P0: [3]}


def test_acks_during_every_commit_end_after_the_bounded_rounds_and_say_so(monkeypatch, caplog) -> None:
    rounds = bulk_consumer.REVOKE_COMMIT_ROUNDS
    consumer, seen = _consumer(monkeypatch, [{P0: [n]} for n in range(1, rounds + 3)])
    consumer._acked[P0].append(0)  # noqa: SLF001
    with caplog.at_level(logging.WARNING, logger="test.revoke"):
        asyncio.run(consumer.on_partitions_revoked({P0}))
    assert seen["commits"] == rounds
    assert seen["dropped"] == {P0: [rounds]}, "the ack of the last commit's round trip"
    assert "1 acked messages of revoked partitions not committed" in caplog.text


def test_a_commit_that_failed_is_not_repeated(monkeypatch) -> None:
    """A rebalance during an outage: the commit fails (Faust's commit then returns False); the
    rebalance must not wait on more of them (a cluster-restart fault test stalled so)."""
    consumer, seen = _consumer(monkeypatch, [{P0: [5]}, {P0: [6]}], commit_ok=False)
    consumer._acked[P0].extend([4])  # noqa: SLF001
    asyncio.run(consumer.on_partitions_revoked({P0}))
    assert seen["commits"] == 1 and seen["dropped"] == {P0: [5]}
