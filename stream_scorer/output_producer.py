"""The producer of score records and DLQ entries: librdkafka (confluent-kafka), not Faust's.

Why not ``app.producer``: every record through Faust's producer goes through aiokafka's
pure-Python path (a future, a partitioner call, an accumulator append): about 50-100 us of
event-loop time per record, more than the model costs per record, so the worker's one event
loop capped the throughput. librdkafka's ``produce`` is a C call of about 1-2 us; its delivery
reports arrive on a poll thread and complete one asyncio future per batch.

Guarantees kept: ``acks=all`` and idempotence (a retried send is not written twice); keyed
records go to ``murmur2(key) % partitions``, the partitioner of the Java client, aiokafka and
Faust, so a key lands on the same partition whoever produced it; :meth:`OutputProducer.send_batch`
resolves only when the broker confirmed every record of the batch, so the agent acks its input
only after that (at-least-once).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from confluent_kafka import KafkaError, KafkaException, Producer

from .kafka_config import confluent_config
from .settings import Settings

#: Seconds a poll waits for delivery reports (only bounds how fast ``close`` returns).
POLL_S = 0.05


@dataclass(frozen=True)
class Output:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


class DeliveryFailed(Exception):
    """The broker did not confirm a record of the batch (the batch must not be acked)."""


class _Batch:
    """Counts the delivery reports of one batch and resolves its future on the loop."""

    __slots__ = ("loop", "future", "pending", "error", "lock")

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.pending = n
        self.error: KafkaError | None = None
        self.lock = threading.Lock()

    def on_delivery(self, err: KafkaError | None, _msg: Any) -> None:  # poll thread
        with self.lock:
            if err is not None and self.error is None:
                self.error = err
            self.pending -= 1
            done = self.pending == 0
        if done:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(DeliveryFailed(f"broker did not confirm a record: {self.error}"))
        else:
            self.future.set_result(None)


def producer_config(settings: Settings, max_request_size: int, linger_ms: int) -> dict[str, Any]:
    """librdkafka settings of the output producer."""
    return {**confluent_config(settings), "acks": "all", "enable.idempotence": True,
            "partitioner": "murmur2_random", "linger.ms": linger_ms,
            "message.max.bytes": max(max_request_size, 1_000_000),
            "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1_048_576,
            "client.id": f"{settings.scorer_app_id}-output"}


class OutputProducer:
    """A librdkafka producer whose batches are awaited from asyncio."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="output-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(POLL_S)

    async def send_batch(self, outputs: Sequence[Output]) -> None:
        """Produce every record; return when the broker confirmed all of them.

        Raises :class:`DeliveryFailed` if any record was not confirmed (after librdkafka's own
        retries, bounded by ``delivery.timeout.ms``)."""
        if not outputs:
            return
        batch = _Batch(asyncio.get_running_loop(), len(outputs))
        produce = self._producer.produce
        cb = batch.on_delivery
        for out in outputs:
            while True:
                try:
                    produce(out.topic, out.value, out.key, headers=out.headers, on_delivery=cb)
                    break
                except BufferError:  # local queue full: let deliveries drain, then retry
                    await asyncio.sleep(0.01)
                except KafkaException as exc:  # refused before queueing (e.g. too large)
                    cb(exc.args[0] if exc.args else KafkaError(KafkaError._FAIL), None)
                    break
        await batch.future

    def close(self, timeout: float = 30.0) -> int:
        """Flush what is queued, stop the poll thread; return the records left undelivered."""
        left = self._producer.flush(timeout)
        self._stop.set()
        self._poller.join(timeout=2 * POLL_S + 1)
        return left
