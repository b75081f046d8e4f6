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
from dataclasses import dataclass
from typing import Any

from ja4_core import control_log
from ja4_core.control import build_control, control_key
from ja4_core.control_log import ControlEntry
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
    return publish_control(settings, "activate", model=model, version=version, uri=uri,
                           manifest_sha256=manifest_sha256, rollback=rollback, timeout=timeout)


def publish_control(settings: Settings, msg_type: str, *, model: str, version: str, uri: str,
                    manifest_sha256: str, rollback: bool = False, timeout: float = PUBLISH_TIMEOUT_S) -> Published:
    """Publish one ``activate``, ``shadow`` or ``retire`` (see :mod:`ja4_core.control`) with
    its Kafka key, and wait for the broker's acknowledgement (:class:`PublishError` if not)."""
    from confluent_kafka import KafkaException, Producer

    ensure_control_topic(settings, timeout=min(timeout, 10.0))
    value = build_control(msg_type, model=model, version=version, uri=uri, manifest_sha256=manifest_sha256,
                          issued_by=issued_by(), signing_key=settings.control_signing_key, rollback=rollback)
    producer = Producer({**_client_config(settings), "acks": "all", "enable.idempotence": True,
                         "message.timeout.ms": int(timeout * 1000), "linger.ms": 0})
    outcome: dict[str, Any] = {}

    def on_delivery(err: Any, msg: Any) -> None:
        outcome["err"] = err
        outcome["msg"] = msg

    try:
        producer.produce(settings.topic_control, key=control_key(msg_type, model), value=value,
                         on_delivery=on_delivery)
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
    log.info("announced %s %s/%s on %s [%d] at offset %d%s", msg_type, model, version, settings.topic_control,
             msg.partition(), msg.offset(), " (rollback)" if rollback else "")
    return Published(settings.topic_control, msg.partition(), msg.offset(), value)


def read_control_latest(settings: Settings, timeout: float = 10.0) -> dict[str, ControlEntry]:
    """The latest valid control message per model, read by the product's one reader of the
    control topic (:func:`ja4_core.control_log.read_control_latest`); Kafka that cannot be
    read raises :class:`PublishError`, the trainer's error for its Kafka side."""
    try:
        return control_log.read_control_latest(settings, timeout)
    except control_log.ControlReadError as exc:
        raise PublishError(str(exc)) from None
