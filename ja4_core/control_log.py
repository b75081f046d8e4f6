"""The one reader of the control topic from outside a worker: ``stream-scorer status``,
``stream-trainer status`` (through ``trainer.publish.read_control_latest``), tests and the demo.
It gives the latest champion of each model and its live challenger, if any.

The topic is read from the start to the end and handed to :func:`.control.latest_valid`,
the same choice a starting replica makes: what is reported is what a replica would serve,
and a message that cannot be read or verified is counted, never fatal. Kafka that cannot be
reached, or a partition that cannot be read, raises :class:`ControlReadError`.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

from ja4_core.control import ControlLedger, ControlMessage, ControlRecord, latest_valid, to_dict
from ja4_core.errors import Ja4StreamError
from ja4_core.retrain_request import is_retrain_request
from ja4_core.settings import Settings

log = logging.getLogger(__name__)

#: librdkafka's own log lines (a "Connection refused" every few hundred ms while Kafka is down)
#: go here instead of raw to stderr; the caller reports a failure itself, in one line.
_RDKAFKA_LOG = logging.getLogger("ja4_core.librdkafka")


class ControlReadError(Ja4StreamError):
    """The control topic could not be read (Kafka unreachable, a partition read error)."""


def read_control_records(settings: Settings, timeout_s: float = 10.0) -> Iterator[ControlRecord]:
    """Every record of the control topic, partition by partition in offset order, up to the
    end of each partition (a throw-away consumer: no group membership, no commits)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    from ja4_core.kafka_security import confluent_config

    if not log.isEnabledFor(logging.DEBUG):
        _RDKAFKA_LOG.setLevel(logging.CRITICAL)
    topic = settings.topic_control
    consumer = Consumer({**confluent_config(settings), "logger": _RDKAFKA_LOG,
                         "group.id": f"ja4-control-reader-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "earliest"})
    try:
        # All topics: a metadata request naming a missing topic may auto-create it.
        try:
            metadata = consumer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise ControlReadError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from None
        meta = metadata.topics.get(topic)
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
                raise ControlReadError(f"reading {topic!r}: {err}")
            offset = msg.offset()
            yield ControlRecord(msg.value(), msg.key(), msg.partition() or 0, -1 if offset is None else offset)
        if pending:
            log.warning("control topic %s: partitions %s not read to the end within %.0fs", topic, sorted(pending),
                        timeout_s)
    finally:
        consumer.close()


def read_control(settings: Settings, timeout_s: float = 10.0) -> ControlLedger:
    """The latest valid message per model (verified with this process's signing keys) and
    the refusals, as a starting replica would choose. Retrain requests
    (:mod:`.retrain_request`) are not model announcements: left out, as a replica leaves them."""
    records = (r for r in read_control_records(settings, timeout_s) if not is_retrain_request(r.value))
    return latest_valid(records, settings.signing_keys, max_future_skew_s=settings.control_max_future_skew_s)


def latest_control_messages(settings: Settings, timeout_s: float = 10.0) -> dict[str, dict[str, Any]]:
    """The latest valid message per model, as a dict of its fields."""
    return {model: to_dict(chosen.message) for model, chosen in read_control(settings, timeout_s).latest.items()}


@dataclass(frozen=True)
class ControlEntry:
    """The latest valid message of one model (what a starting replica would serve), or,
    when there is none, the last refused message of that key and why it was refused."""

    key: str
    partition: int
    offset: int
    message: ControlMessage | None
    error: str | None = None
    value: bytes | None = None
    #: Messages of the whole topic refused, by reason (``malformed``, ``signature``, ``future``...).
    refused: dict[str, int] = field(default_factory=dict)
    #: The ``shadow`` message of the live challenger (what a starting replica loads beside
    #: the champion), or None (see :meth:`.control.ControlLedger.live_challenger`).
    challenger: ControlMessage | None = None


def read_control_latest(settings: Settings, timeout_s: float = 10.0) -> dict[str, ControlEntry]:
    """The latest valid control message per model under the replicas' own rule
    (:func:`read_control`); a key whose messages were all refused gets an entry with the last
    refusal."""
    ledger = read_control(settings, timeout_s)
    refused = dict(ledger.refused)
    latest: dict[str, ControlEntry] = {}
    for key, (rec, exc) in ledger.last_refused.items():
        latest[key] = ControlEntry(key, rec.partition, rec.offset, None, f"{exc.reason}: {exc}", rec.value, refused)
    for model, chosen in ledger.latest.items():
        rec = chosen.record
        live = ledger.live_challenger(model)
        latest[model] = ControlEntry(model, rec.partition, rec.offset, chosen.message, None, rec.value, refused,
                                     live.message if live else None)
    return latest
