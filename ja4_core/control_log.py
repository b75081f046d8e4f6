"""Reading the control topic from outside a worker (``stream-scorer status``, tests, demo).

The topic is read from the start to the end and handed to :func:`.control.latest_valid`,
the same choice a starting replica makes: what is reported is what a replica would serve,
and a message that cannot be read or verified is counted, never fatal.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

from ja4_core.control import ControlLedger, ControlRecord, latest_valid, to_dict
from ja4_core.settings import Settings


def read_control_records(settings: Settings, timeout_s: float = 10.0) -> Iterator[ControlRecord]:
    """Every record of the control topic, partition by partition in offset order, up to the
    end of each partition (a throw-away consumer: no group membership, no commits)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from ja4_core.kafka_security import confluent_config

    topic = settings.topic_control
    consumer = Consumer({**confluent_config(settings), "group.id": f"ja4-status-reader-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "earliest"})
    try:
        # All topics: a metadata request naming a missing topic may auto-create it.
        meta = consumer.list_topics(timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return
        partitions = sorted(meta.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        # The end of a partition is librdkafka's partition-EOF event rather than a watermark
        # read up front: on the embedded broker a watermark read just after a produce may
        # lag the records already fetchable.
        pending = set(partitions)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                continue
            offset = msg.offset()
            yield ControlRecord(msg.value(), msg.key(), msg.partition() or 0, -1 if offset is None else offset)
    finally:
        consumer.close()


def read_control(settings: Settings, timeout_s: float = 10.0) -> ControlLedger:
    """The latest valid message per model (verified with this process's signing keys) and
    the refusals, as a starting replica would choose."""
    return latest_valid(read_control_records(settings, timeout_s), settings.signing_keys,
                        max_future_skew_s=settings.control_max_future_skew_s)


def latest_control_messages(settings: Settings, timeout_s: float = 10.0) -> dict[str, dict[str, Any]]:
    """The latest valid message per model, as a dict of its fields."""
    return {model: to_dict(chosen.message) for model, chosen in read_control(settings, timeout_s).latest.items()}
