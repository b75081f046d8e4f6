"""Topics the product creates (issue 13, item 4), on the real broker: partitions, replication
factor and configs as :mod:`ja4_core.kafka_admin` says, whichever process creates them.

Run on the session's broker and on the embedded Tansu. A factor above the number of brokers
is refused by Apache Kafka (a clear error naming the setting) but accepted by Tansu, so the
factors used here are those the broker can honour."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from ja4_core.settings import load_settings
from ja4_core.kafka_admin import TopicError, control_min_insync, data_min_insync, ensure_topics, scorer_topics

pytestmark = [pytest.mark.timeout(180), pytest.mark.both_brokers]


def _settings(bootstrap: str, unique: str, rf: int, **extra: str):
    return load_settings({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TOPIC_FEATURES": f"features-{unique}",
                          "TOPIC_SCORES": f"scores-{unique}", "TOPIC_DLQ": f"dlq-{unique}",
                          "TOPIC_SHADOW_SCORES": f"shadow-{unique}",
                          "TOPIC_CONTROL": f"control-{unique}", "SCORER_APP_ID": f"scorer-{unique}",
                          "TOPIC_PARTITIONS": "3", "TOPIC_REPLICATION_FACTOR": str(rf), **extra})


def _brokers(bootstrap: str) -> int:
    return len(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).brokers)


def _described(bootstrap: str, topic: str) -> tuple[int, int, dict[str, str]]:
    """(partitions, replicas of partition 0, configs set on the topic) as the broker reports them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    meta = admin.list_topics(timeout=10).topics[topic]
    futures = admin.describe_configs([ConfigResource("topic", topic)])
    config = next(iter(futures.values())).result(10)
    return (len(meta.partitions), len(meta.partitions[0].replicas),
            {k: v.value for k, v in config.items() if _set_on_topic(v)})


def _set_on_topic(entry) -> bool:
    """Set for this topic, not inherited from the broker. Tansu reports only the configs a
    topic was created with, all as "default"; Apache Kafka reports every config, with its source."""
    from confluent_kafka.admin import ConfigSource

    inherited = (ConfigSource.DYNAMIC_BROKER_CONFIG.value, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value,
                 ConfigSource.STATIC_BROKER_CONFIG.value)
    return entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value or (
        entry.source not in inherited and not entry.is_synonym and _TANSU_STYLE)


#: Set per test from ``broker_kind`` (see the fixture below).
_TANSU_STYLE = False


@pytest.fixture(autouse=True)
def _describe_style(broker_kind):
    global _TANSU_STYLE
    _TANSU_STYLE = broker_kind == "tansu"
    yield
    _TANSU_STYLE = False


def test_the_scorers_topics_have_the_settings_partitions_factor_and_configs(kafka_bootstrap, broker_kind, unique):
    rf = _brokers(kafka_bootstrap)
    s = _settings(kafka_bootstrap, unique, rf=rf)
    created = ensure_topics(s, scorer_topics(s))
    leader = f"{s.scorer_app_id}-__assignor-__leader"
    assert set(created) == {s.topic_features, s.topic_scores, s.topic_dlq, s.topic_shadow_scores, leader}
    for topic in (s.topic_features, s.topic_scores, s.topic_dlq, s.topic_shadow_scores):
        parts, replicas, config = _described(kafka_bootstrap, topic)
        assert (parts, replicas) == (3, rf)
        assert config.get("min.insync.replicas") == (str(data_min_insync(rf)) if data_min_insync(rf) else None)
        assert "cleanup.policy" not in config
    assert _described(kafka_bootstrap, leader)[:2] == (1, rf)
    assert ensure_topics(s, scorer_topics(s)) == []  # idempotent


def test_the_worker_cli_creates_its_topics_with_the_factor(kafka_bootstrap, broker_kind, unique):
    from stream_scorer.cli import ensure_topics as cli_ensure_topics

    rf = _brokers(kafka_bootstrap)
    s = _settings(kafka_bootstrap, unique, rf=rf)
    cli_ensure_topics(s, [s.topic_features])
    assert _described(kafka_bootstrap, s.topic_features)[:2] == (3, rf)


@pytest.mark.parametrize("which", ["broker-default", "one", "all-brokers"])
def test_the_replicas_control_topic_is_compacted_with_the_factor(kafka_bootstrap, broker_kind, unique, which):
    from stream_scorer.control_follower import ensure_control_topic

    brokers = _brokers(kafka_bootstrap)
    rf = {"broker-default": 0, "one": 1, "all-brokers": brokers}[which]
    s = _settings(kafka_bootstrap, f"{unique}-{which}", rf=rf)
    asyncio.run(ensure_control_topic(s))
    parts, replicas, config = _described(kafka_bootstrap, s.topic_control)
    assert parts == 1
    if rf:
        assert replicas == rf
    assert config.get("cleanup.policy") == "compact"
    isr = control_min_insync(rf or -1)
    assert config.get("min.insync.replicas") == (str(isr) if isr else None)


def test_the_trainers_control_topic_is_created_the_same_way(kafka_bootstrap, broker_kind, unique):
    from trainer.publish import ensure_control_topic

    rf = _brokers(kafka_bootstrap)
    s = _settings(kafka_bootstrap, unique, rf=rf)
    assert ensure_control_topic(s) is True
    assert ensure_control_topic(s) is False
    parts, replicas, config = _described(kafka_bootstrap, s.topic_control)
    assert (parts, replicas) == (1, rf)
    assert config.get("cleanup.policy") == "compact"


def test_a_factor_above_the_brokers_is_a_clear_error_on_apache_kafka(kafka_bootstrap, broker_kind, unique):
    if broker_kind == "tansu":
        pytest.skip("Tansu accepts any replication factor (it keeps one copy)")
    s = _settings(kafka_bootstrap, unique, rf=_brokers(kafka_bootstrap) + 1)
    with pytest.raises(TopicError, match="TOPIC_REPLICATION_FACTOR"):
        ensure_topics(s, scorer_topics(s))
