"""The demo runs on Apache Kafka where it can be had (issue 15): ``--broker auto`` by default."""

from __future__ import annotations

from ja4_dev import apache_kafka
from ja4_dev.demo import broker_choice
from stream_scorer.cli import build_parser


def test_the_demo_defaults_to_auto() -> None:
    assert build_parser().parse_args(["demo"]).broker == "auto"


def test_auto_is_kafka_exactly_where_java_and_mvn_are_available(monkeypatch) -> None:
    monkeypatch.setattr(apache_kafka, "available", lambda version=apache_kafka.KAFKA_VERSION: True)
    assert broker_choice("auto") == "kafka"
    monkeypatch.setattr(apache_kafka, "available", lambda version=apache_kafka.KAFKA_VERSION: False)
    assert broker_choice("auto") == "tansu"
    assert broker_choice("tansu") == "tansu" and broker_choice("kafka") == "kafka"

