"""Faust transport tuning that Faust does not expose as settings.

Faust creates its aiokafka consumer with a hard-coded ``fetch_max_wait_ms=1500``. A broker
may hold a fetch that long when a partition has little data (Tansu does, even with data
waiting), which puts a floor of about 1.5 s under end-to-end latency however small
``SCORER_BATCH_WAIT_MS`` is. We lower it to the batch wait: a record then waits at most
about one batch wait at the broker and one in the batch.
"""

from __future__ import annotations

from typing import Any

_patched: dict[str, int] = {}


def limit_fetch_wait(max_wait_ms: int) -> None:
    """Make every Faust worker consumer in this process use ``fetch_max_wait_ms <= max_wait_ms``."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    _patched["ms"] = max(1, int(max_wait_ms))
    if getattr(AIOKafkaConsumerThread, "_ja4_fetch_patched", False):
        return
    original = AIOKafkaConsumerThread._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        # aiokafka reads this attribute when it builds its Fetcher in start().
        consumer._fetch_max_wait_ms = min(consumer._fetch_max_wait_ms, _patched["ms"])
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer
    AIOKafkaConsumerThread._ja4_fetch_patched = True
