"""Reading the control topic from outside a worker (``stream-scorer status``, tests, demo)."""

from __future__ import annotations

from typing import Any

import orjson

from .settings import Settings


def latest_control_messages(settings: Settings, timeout_s: float = 10.0) -> dict[str, dict[str, Any]]:
    """The latest JSON message per key on the control topic (read from the start to the end)."""
    from confluent_kafka import Consumer, TopicPartition

    from .kafka_config import confluent_config

    consumer = Consumer({**confluent_config(settings), "group.id": "ja4-status-reader",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    latest: dict[str, dict[str, Any]] = {}
    try:
        meta = consumer.list_topics(settings.topic_control, timeout=timeout_s)
        topic = meta.topics.get(settings.topic_control)
        if topic is None or topic.error is not None or not topic.partitions:
            return {}
        tps = []
        for p in topic.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(settings.topic_control, p), timeout=timeout_s)
            if high > low:
                tps.append((TopicPartition(settings.topic_control, p, low), high))
        if not tps:
            return {}
        consumer.assign([tp for tp, _ in tps])
        remaining = {tp.partition: high for tp, high in tps}
        import time

        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            try:
                doc = orjson.loads(msg.value() or b"null")
            except orjson.JSONDecodeError:
                doc = None
            if isinstance(doc, dict):
                key = (msg.key() or b"").decode(errors="replace") or str(doc.get("model"))
                latest[key] = doc
            if msg.offset() + 1 >= remaining.get(msg.partition(), 0):
                remaining.pop(msg.partition(), None)
    finally:
        consumer.close()
    return latest
