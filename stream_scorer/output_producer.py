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
only after that (at-least-once). A batch that was not wholly confirmed raises
:class:`DeliveryFailed` naming the records that failed; :meth:`OutputProducer.send_with_retries`
sends only those again, after a doubling backoff, and raises :class:`DeliveryExhausted` once
the attempts of its :class:`RetryPolicy` are spent. The broker does not create a topic on our
behalf (``allow.auto.create.topics`` off): the worker creates its topics at start, and a DLQ or
scores topic deleted later is a delivery failure, not a topic silently re-made with the
broker's defaults.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Producer

from ja4_core.kafka_security import confluent_config
from ja4_core.settings import Settings

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
    """The broker did not confirm some records of the batch (the batch must not be acked).

    ``failed`` holds exactly those records (the others were confirmed: sending them again
    would write them twice), ``error`` the first error reported."""

    def __init__(self, failed: list[Output], error: KafkaError | None) -> None:
        super().__init__(f"broker did not confirm {len(failed)} record(s): {error}")
        self.failed = failed
        self.error = error

    def topics(self) -> dict[str, int]:
        """Failed records per topic (for the metrics and the log)."""
        counts: dict[str, int] = {}
        for out in self.failed:
            counts[out.topic] = counts.get(out.topic, 0) + 1
        return counts


class DeliveryExhausted(DeliveryFailed):
    """Every attempt of the :class:`RetryPolicy` failed: this process cannot deliver the batch,
    so it must stop without acking it or committing past it."""


#: Exit code of a worker that could not deliver a batch's outputs (sysexits' EX_TEMPFAIL:
#: restarted once the cause is gone, it resumes from the last committed offset).
EXIT_DELIVERY_FAILED = 75


@dataclass
class DeliveryHealth:
    """Whether a worker delivers its outputs: ``ok``, ``retrying`` or ``failed``."""

    retrying: bool = False       #: a batch's unconfirmed records wait for their next attempt
    failed: str | None = None    #: why the worker is stopping (set once, never cleared)

    @property
    def state(self) -> str:
        return "failed" if self.failed is not None else "retrying" if self.retrying else "ok"


#: The backoff between attempts doubles up to this (seconds).
MAX_RETRY_BACKOFF_S = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``attempts`` sends of a batch's records, the first retry after
    ``first_backoff_s``, each later one after twice the wait before (at most 30 s).

    >>> [RetryPolicy(6, 4.0).backoff(n) for n in range(1, 6)]
    [4.0, 8.0, 16.0, 30.0, 30.0]
    """

    attempts: int
    first_backoff_s: float

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 = the second attempt)."""
        return min(self.first_backoff_s * 2 ** (retry - 1), MAX_RETRY_BACKOFF_S)


#: Called before each retry with the failure, the retry's number and the wait before it.
OnRetry = Callable[[DeliveryFailed, int, float], None]


class _Batch:
    """Counts the delivery reports of one batch and resolves its future on the loop."""

    __slots__ = ("loop", "future", "outputs", "pending", "failed", "error", "lock")

    def __init__(self, loop: asyncio.AbstractEventLoop, outputs: Sequence[Output]) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.outputs = outputs
        self.pending = len(outputs)
        self.failed: list[int] = []  # indexes into ``outputs``
        self.error: KafkaError | None = None
        self.lock = threading.Lock()

    def on_delivery(self, index: int, err: KafkaError | None, _msg: Any) -> None:  # poll thread
        with self.lock:
            if err is not None:
                self.failed.append(index)
                if self.error is None:
                    self.error = err
            self.pending -= 1
            done = self.pending == 0
        if done:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if self.future.done():
            return
        if self.failed:
            failed = [self.outputs[i] for i in sorted(self.failed)]
            self.future.set_exception(DeliveryFailed(failed, self.error))
        else:
            self.future.set_result(None)


def producer_config(settings: Settings, max_request_size: int, linger_ms: int) -> dict[str, Any]:
    """librdkafka settings of the output producer."""
    return {**confluent_config(settings), "acks": "all", "enable.idempotence": True,
            "partitioner": "murmur2_random", "linger.ms": linger_ms,
            "message.max.bytes": max(max_request_size, 1_000_000),
            "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1_048_576,
            "allow.auto.create.topics": False,
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

        Raises :class:`DeliveryFailed` naming the records that were not confirmed (after
        librdkafka's own retries, bounded by ``delivery.timeout.ms``)."""
        if not outputs:
            return
        batch = _Batch(asyncio.get_running_loop(), outputs)
        produce = self._producer.produce
        on_delivery = batch.on_delivery
        partial = functools.partial
        for index, out in enumerate(outputs):
            # One partial per record (~0.1 us, a few % of ``produce``): its delivery report
            # must say which record failed, so that only those are sent again.
            cb = partial(on_delivery, index)
            while True:
                try:
                    produce(out.topic, out.value, out.key, headers=out.headers, on_delivery=cb)  # type: ignore[arg-type]
                    break
                except BufferError:  # local queue full: let deliveries drain, then retry
                    await asyncio.sleep(0.01)
                except KafkaException as exc:  # refused before queueing (too large, unknown topic)
                    cb(exc.args[0] if exc.args else KafkaError(KafkaError._FAIL), None)
                    break
        await batch.future

    async def send_with_retries(self, outputs: Sequence[Output], policy: RetryPolicy,
                                on_retry: OnRetry | None = None) -> None:
        """:meth:`send_batch`, then send only the records that were not confirmed again, up to
        ``policy.attempts`` sends in all with a doubling backoff between them.

        Raises :class:`DeliveryExhausted` (with the records still unconfirmed) when the last
        attempt failed too."""
        pending: Sequence[Output] = outputs
        for attempt in range(1, policy.attempts + 1):
            try:
                await self.send_batch(pending)
                return
            except DeliveryFailed as exc:
                if attempt >= policy.attempts:
                    raise DeliveryExhausted(exc.failed, exc.error) from exc
                delay = policy.backoff(attempt)
                if on_retry is not None:
                    on_retry(exc, attempt, delay)
                pending = exc.failed
                await asyncio.sleep(delay)

    def close(self, timeout: float = 30.0) -> int:
        """Flush what is queued, stop the poll thread; return the records left undelivered."""
        left = self._producer.flush(timeout)
        self._stop.set()
        self._poller.join(timeout=2 * POLL_S + 1)
        return left
