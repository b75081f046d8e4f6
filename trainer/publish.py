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
from dataclasses import dataclass
from typing import Any

from stream_scorer.control import ControlMessage, build_activate, parse_control
from stream_scorer.errors import ControlError, Ja4StreamError
from stream_scorer.kafka_config import confluent_config
from stream_scorer.settings import Settings

log = logging.getLogger(__name__)

#: Seconds to wait for the broker to confirm an announcement.
PUBLISH_TIMEOUT_S = 30.0


class PublishError(Ja4StreamError):
    """The control message could not be published or its delivery was not confirmed."""


def kafka_config(settings: Settings) -> dict[str, Any]:
    """librdkafka configuration (bootstrap servers + security) for the trainer's clients.

    The mapping of ``KAFKA_SECURITY_PROTOCOL`` / ``KAFKA_SASL_*`` / ``KAFKA_SSL_*`` to librdkafka
    keys lives in one place for the whole product, :func:`stream_scorer.kafka_config.confluent_config`;
    this is the trainer's entry to it (and what its unit test pins down).

    >>> from stream_scorer.settings import load_settings
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
    """Create the control topic (compacted, one partition) unless it exists; True if created."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = settings.topic_control
    admin = AdminClient({**_client_config(settings), "socket.timeout.ms": int(timeout * 1000)})
    try:
        # All topics, not list_topics(topic=...): a metadata request naming a missing topic
        # may auto-create it on the broker, with default partitions and no compaction.
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise PublishError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from None
    meta = metadata.topics.get(topic)
    if meta is not None and meta.error is None and meta.partitions:
        return False
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=-1,
                                            config={"cleanup.policy": "compact"})],
                                  operation_timeout=timeout, request_timeout=timeout)
    try:
        futures[topic].result(timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if getattr(err, "code", lambda: None)() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise PublishError(f"cannot create control topic {topic!r}: {exc}") from None
    log.info("created control topic %s (cleanup.policy=compact)", topic)
    return True


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
    """The latest message of one key: parsed, or the reason it was refused."""

    key: str
    partition: int
    offset: int
    message: ControlMessage | None
    error: str | None = None
    value: bytes | None = None


def read_control_latest(settings: Settings, timeout: float = 10.0) -> dict[str, ControlEntry]:
    """The latest control message per key, read from the beginning to the end of every
    partition (a throw-away consumer: no group membership, no commits)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    topic = settings.topic_control
    consumer = Consumer({**_client_config(settings), "group.id": f"stream-trainer-status-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "earliest"})
    latest: dict[str, ControlEntry] = {}
    try:
        try:
            metadata = consumer.list_topics(timeout=timeout)  # all topics: see ensure_control_topic
        except KafkaException as exc:
            raise PublishError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from None
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return {}
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
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise PublishError(f"reading {topic!r}: {msg.error()}")
            key = (msg.key() or b"").decode("utf-8", "replace")
            if msg.value() is None:  # tombstone: the key was deleted
                latest.pop(key, None)
                continue
            try:
                parsed, error = parse_control(msg.value(), settings.signing_keys), None
            except ControlError as exc:
                parsed, error = None, str(exc)
            latest[key] = ControlEntry(key, msg.partition(), msg.offset(), parsed, error, msg.value())
        if pending:
            log.warning("control topic %s: partitions %s not read to the end within %.0fs", topic, sorted(pending), timeout)
    finally:
        consumer.close()
    return latest
