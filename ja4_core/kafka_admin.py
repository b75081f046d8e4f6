"""Creating the product's topics: the one place that decides partitions, replication and configs.

Every process that may create a topic (the scorer worker, the sink, ``produce``, the control
follower of each replica, the trainer's publisher) goes through :func:`ensure_topics` with the
specs built here, so a topic is created the same way whoever comes first.

Rules (``TOPIC_REPLICATION_FACTOR`` = ``rf``):

* ``rf = 0`` asks for the broker's ``default.replication.factor``: the CreateTopics request
  carries ``replication_factor = -1`` (KIP-464, Kafka 2.4+; librdkafka sends it as is), and
  ``min.insync.replicas`` is left to the broker too (we do not know the factor it picks).
* data topics (features, scores, DLQ, and Faust's leader topic of each app): ``TOPIC_PARTITIONS``
  partitions; ``min.insync.replicas = 2`` when ``rf >= 3``, else not set (the broker's default,
  1 on a stock broker), so scoring goes on with one broker down at any factor.
* the control topic: one partition, ``cleanup.policy=compact``; ``min.insync.replicas =
  min(2, rf)`` when ``rf >= 2``: an acknowledged announcement is on two brokers. With ``rf = 2``
  and one broker down announcements fail, and the trainer retries them (its ``PUBLISHED``
  marker), which costs a delay, never a lost or half-known announcement.

Existing topics are never changed: an operator who pre-created them (README, "Pre-creating
the topics") keeps their settings; a control topic that exists but is not compacted is
logged as a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ja4_core.errors import Ja4StreamError
from ja4_core.settings import Settings

log = logging.getLogger(__name__)

#: librdkafka's own log lines (a "Connection refused" every few hundred ms while Kafka is
#: down) go to this logger, quiet unless debugging; failures are reported by the caller.
_RDKAFKA_LOG = logging.getLogger("ja4_core.librdkafka")


class TopicError(Ja4StreamError):
    """A topic could not be listed or created (broker unreachable, refused, bad factor)."""


@dataclass(frozen=True)
class TopicSpec:
    """How one topic is created when it is missing."""

    name: str
    partitions: int
    #: -1 = the broker's default.replication.factor
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)


def replication_factor(settings: Settings) -> int:
    """The factor sent in CreateTopics: ``TOPIC_REPLICATION_FACTOR``, or -1 for the broker's default.

    >>> from ja4_core.settings import load_settings
    >>> replication_factor(load_settings({})), replication_factor(load_settings({"TOPIC_REPLICATION_FACTOR": "3"}))
    (-1, 3)
    """
    return settings.topic_replication_factor or -1


def data_min_insync(rf: int) -> int | None:
    """``min.insync.replicas`` of a data topic: 2 from a factor of 3, else the broker's default.

    >>> [data_min_insync(rf) for rf in (-1, 1, 2, 3, 5)]
    [None, None, None, 2, 2]
    """
    return 2 if rf >= 3 else None


def control_min_insync(rf: int) -> int | None:
    """``min.insync.replicas`` of the control topic: ``min(2, rf)`` from a factor of 2.

    >>> [control_min_insync(rf) for rf in (-1, 1, 2, 3, 5)]
    [None, None, 2, 2, 2]
    """
    return min(2, rf) if rf >= 2 else None


def data_topic(settings: Settings, name: str, partitions: int | None = None) -> TopicSpec:
    rf = replication_factor(settings)
    config: dict[str, str] = {}
    isr = data_min_insync(rf)
    if isr is not None:
        config["min.insync.replicas"] = str(isr)
    return TopicSpec(name, partitions or settings.topic_partitions, rf, config)


def control_topic(settings: Settings) -> TopicSpec:
    rf = replication_factor(settings)
    config = {"cleanup.policy": "compact"}
    isr = control_min_insync(rf)
    if isr is not None:
        config["min.insync.replicas"] = str(isr)
    return TopicSpec(settings.topic_control, 1, rf, config)


def faust_leader_topic(settings: Settings, app_id: str) -> TopicSpec:
    """Faust's per-app leader topic (``<app id>-__assignor-__leader``, one partition).

    Faust would create it itself with its ``topic_replication_factor`` (1 by default, and it
    cannot ask for the broker's default); created here first, Faust finds it and skips it."""
    return data_topic(settings, f"{app_id}-__assignor-__leader", partitions=1)


def scorer_topics(settings: Settings) -> list[TopicSpec]:
    """What a scorer worker needs: features, scores, DLQ, shadow scores and its Faust leader topic."""
    return [data_topic(settings, settings.topic_features), data_topic(settings, settings.topic_scores),
            data_topic(settings, settings.topic_dlq), data_topic(settings, settings.topic_shadow_scores),
            faust_leader_topic(settings, settings.scorer_app_id)]


def sink_topics(settings: Settings) -> list[TopicSpec]:
    """What the sink needs: scores, DLQ, shadow scores, labels and its Faust leader topic."""
    return [data_topic(settings, settings.topic_scores), data_topic(settings, settings.topic_dlq),
            data_topic(settings, settings.topic_shadow_scores), data_topic(settings, settings.topic_labels),
            faust_leader_topic(settings, settings.sink_app_id)]


def _admin(settings: Settings, timeout: float) -> Any:
    from confluent_kafka.admin import AdminClient

    from ja4_core.kafka_security import confluent_config

    if not log.isEnabledFor(logging.DEBUG):
        _RDKAFKA_LOG.setLevel(logging.CRITICAL)
    config: dict[str, Any] = {**confluent_config(settings), "logger": _RDKAFKA_LOG,
                              "socket.timeout.ms": int(timeout * 1000)}
    return AdminClient(config)


def ensure_topics(settings: Settings, specs: Sequence[TopicSpec], timeout: float = 15.0) -> list[str]:
    """Create the topics of ``specs`` that are missing; return the names created.

    A topic created meanwhile by another process counts as present. Existing topics are left
    as they are.

    :raises TopicError: the broker cannot be reached, or refused a creation (e.g. a
        ``TOPIC_REPLICATION_FACTOR`` above its number of brokers).
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    admin = _admin(settings, timeout)
    try:
        # All topics, not list_topics(topic=...): a metadata request naming a missing topic
        # may auto-create it on the broker, with default partitions and no compaction.
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TopicError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from None
    present = {name for name, meta in metadata.topics.items() if meta.error is None and meta.partitions}
    missing = [s for s in specs if s.name not in present]
    _warn_if_not_compacted(admin, settings, present, timeout)
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor,
                  config=dict(s.config)) for s in missing],
        operation_timeout=timeout, request_timeout=timeout)
    created: list[str] = []
    for spec in missing:
        try:
            futures[spec.name].result(timeout)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # a concurrent replica or trainer was first
            hint = (" (TOPIC_REPLICATION_FACTOR exceeds the brokers available?)"
                    if isinstance(err, KafkaError) and err.code() == KafkaError.INVALID_REPLICATION_FACTOR else "")
            raise TopicError(f"cannot create topic {spec.name!r}: {exc}{hint}") from None
        created.append(spec.name)
        log.info("created topic %s: %d partitions, replication factor %s%s", spec.name, spec.partitions,
                 "broker default" if spec.replication_factor < 0 else spec.replication_factor,
                 "".join(f", {k}={v}" for k, v in sorted(spec.config.items())))
    return created


def _warn_if_not_compacted(admin: Any, settings: Settings, present: set[str], timeout: float) -> None:
    """An existing control topic that is not compacted loses old announcements: say so."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import ConfigResource

    topic = settings.topic_control
    if topic not in present:
        return
    try:
        futures = admin.describe_configs([ConfigResource("topic", topic)], request_timeout=timeout)
        config = next(iter(futures.values())).result(timeout)
    except (KafkaException, StopIteration, ValueError) as exc:  # not allowed to describe: not our call
        log.debug("could not describe topic %s: %s", topic, exc)
        return
    entry = config.get("cleanup.policy")
    if entry is not None and "compact" not in str(entry.value):
        log.warning("control topic %s has cleanup.policy=%s, not compact: the latest announcement per model "
                    "may be deleted by retention", topic, entry.value)
