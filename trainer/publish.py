"""Announcing model versions on the control topic (confluent-kafka): the trainer's only Kafka code.

The control topic is log-compacted with key = model name, so the latest ``activate`` per
model survives forever and a starting replica finds it. We create it (one partition,
``cleanup.policy=compact``) when it is missing, publish only after the bundle and ``CURRENT``
are on disk, and wait for the broker's acknowledgement: an unconfirmed announcement raises
:class:`PublishError` and the caller keeps the version "unpublished" to retry later.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

from ja4_core.control import ControlMessage, ControlRecord, build_activate, latest_valid
from ja4_core.errors import Ja4StreamError
from ja4_core.kafka_security import confluent_config
from ja4_core.settings import Settings

log = logging.getLogger(__name__)

#: Seconds to wait for the broker to confirm an announcement.
PUBLISH_TIMEOUT_S = 30.0


class PublishError(Ja4StreamError):
    """The control message could not be published or its delivery was not confirmed."""


def kafka_config(settings: Settings) -> dict[str, Any]:
    """librdkafka configuration (bootstrap servers + security) for the trainer's clients.

    The mapping of ``KAFKA_SECURITY_PROTOCOL`` / ``KAFKA_SASL_*`` / ``KAFKA_SSL_*`` to librdkafka
    keys lives in one place for the whole product, :func:`ja4_core.kafka_security.confluent_config`;
    this is the trainer's entry to it (and what its unit test pins down).

    >>> from ja4_core.settings import load_settings
    >>> kafka_config(load_settings({}))
    {'bootstrap.servers': 'localhost:9092', 'security.protocol': 'PLAINTEXT'}
    """
    return confluent_config(settings)


#: librdkafka's own log lines (e.g. a "Connection refused" every few hundred ms while Kafka is
#: down) go here instead of raw to stderr; the trainer reports failures itself, in one line.
_RDKAFKA_LOG = logging.getLogger("trainer.librdkafka")


def _client_config(settings: Settings) -> dict[str, Any]:
    if not log.isEnabledFor(logging.DEBUG):
        _RDKAFKA_LOG.setLevel(logging.CRITICAL)
    return {**kafka_config(settings), "logger": _RDKAFKA_LOG}


def issued_by() -> str:
    return f"trainer@{socket.gethostname()}"


def ensure_control_topic(settings: Settings, timeout: float = 10.0) -> bool:
    """Create the control topic unless it exists (compacted, one partition, the replication of
    :mod:`ja4_core.kafka_admin`, the helper every process uses); True if created."""
    from ja4_core.kafka_admin import TopicError, control_topic, ensure_topics

    try:
        return bool(ensure_topics(settings, [control_topic(settings)], timeout=timeout))
    except TopicError as exc:
        raise PublishError(str(exc)) from None


@dataclass(frozen=True)
class Published:
    topic: str
    partition: int
    offset: int
    value: bytes


def publish_activate(settings: Settings, *, model: str, version: str, uri: str, manifest_sha256: str,
                     rollback: bool = False, timeout: float = PUBLISH_TIMEOUT_S) -> Published:
    """Publish one ``activate`` (signed when ``CONTROL_SIGNING_KEY`` is set) and wait for the
    broker's acknowledgement; raise :class:`PublishError` on failure or timeout."""
    from confluent_kafka import KafkaException, Producer

    ensure_control_topic(settings, timeout=min(timeout, 10.0))
    value = build_activate(model=model, version=version, uri=uri, manifest_sha256=manifest_sha256,
                           issued_by=issued_by(), signing_key=settings.control_signing_key, rollback=rollback)
    producer = Producer({**_client_config(settings), "acks": "all", "enable.idempotence": True,
                         "message.timeout.ms": int(timeout * 1000), "linger.ms": 0})
    outcome: dict[str, Any] = {}

    def on_delivery(err: Any, msg: Any) -> None:
        outcome["err"] = err
        outcome["msg"] = msg

    try:
        producer.produce(settings.topic_control, key=model.encode(), value=value, on_delivery=on_delivery)
    except (KafkaException, BufferError) as exc:
        raise PublishError(f"cannot publish to {settings.topic_control!r}: {exc}") from None
    deadline = time.monotonic() + timeout + 5.0
    while "msg" not in outcome and "err" not in outcome and time.monotonic() < deadline:
        producer.poll(0.2)
    producer.flush(1.0)
    if "err" not in outcome:
        raise PublishError(f"no delivery confirmation from Kafka within {timeout:.0f}s for {model}/{version}")
    if outcome["err"] is not None:
        raise PublishError(f"publishing {model}/{version} to {settings.topic_control!r} failed: {outcome['err']}")
    msg = outcome["msg"]
    log.info("announced %s/%s on %s [%d] at offset %d%s", model, version, settings.topic_control,
             msg.partition(), msg.offset(), " (rollback)" if rollback else "")
    return Published(settings.topic_control, msg.partition(), msg.offset(), value)


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


def read_control_latest(settings: Settings, timeout: float = 10.0) -> dict[str, ControlEntry]:
    """The latest valid control message per model under the replicas' own rule
    (:func:`ja4_core.control.latest_valid`), read from the beginning to the end of every
    partition (a throw-away consumer: no group membership, no commits); a key whose
    messages were all refused gets an entry with the last refusal."""
    records = list(_read_control_records(settings, timeout))
    ledger = latest_valid(records, settings.signing_keys, max_future_skew_s=settings.control_max_future_skew_s)
    refused = dict(ledger.refused)
    latest: dict[str, ControlEntry] = {}
    for key, (rec, exc) in ledger.last_refused.items():
        latest[key] = ControlEntry(key, rec.partition, rec.offset, None, f"{exc.reason}: {exc}", rec.value, refused)
    for model, chosen in ledger.latest.items():
        rec = chosen.record
        latest[model] = ControlEntry(model, rec.partition, rec.offset, chosen.message, None, rec.value, refused)
    return latest


def _read_control_records(settings: Settings, timeout: float) -> Iterator[ControlRecord]:
    """Every record of the control topic, in offset order per partition."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    topic = settings.topic_control
    consumer = Consumer({**_client_config(settings), "group.id": f"stream-trainer-status-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "earliest"})
    try:
        try:
            metadata = consumer.list_topics(timeout=timeout)  # all topics: see ensure_control_topic
        except KafkaException as exc:
            raise PublishError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from None
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return
        partitions = sorted(meta.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        # End of a partition = librdkafka's partition-EOF event, not a watermark read up front:
        # it is reached after every record of the last fetched batch, whatever the broker's
        # bookkeeping of offsets inside batches.
        pending = set(partitions)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise PublishError(f"reading {topic!r}: {msg.error()}")
            offset = msg.offset()
            yield ControlRecord(msg.value(), msg.key(), msg.partition() or 0, -1 if offset is None else offset)
        if pending:
            log.warning("control topic %s: partitions %s not read to the end within %.0fs", topic, sorted(pending), timeout)
    finally:
        consumer.close()
