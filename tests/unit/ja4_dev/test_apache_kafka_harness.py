"""The Apache Kafka harness's pure parts: broker settings per node count, tools, the cache lock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ja4_dev import apache_kafka as ak


def test_properties_suit_the_node_count(tmp_path: Path) -> None:
    one = ak.broker_properties(1, 9092, {1: 9093}, tmp_path)
    three = {i: ak.broker_properties(i, 9090 + 2 * i, {1: 9093, 2: 9095, 3: 9097}, tmp_path / str(i))
             for i in (1, 2, 3)}
    assert one["offsets.topic.replication.factor"] == one["default.replication.factor"] == "1"
    assert one["transaction.state.log.min.isr"] == "1"
    for i, props in three.items():
        assert props["node.id"] == str(i) and props["process.roles"] == "broker,controller"
        assert props["offsets.topic.replication.factor"] == props["transaction.state.log.replication.factor"] == "3"
        assert props["transaction.state.log.min.isr"] == "2"
        assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093,127.0.0.1:9095,127.0.0.1:9097"
        assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{9090 + 2 * i}"
        assert props["log.dirs"] == str(tmp_path / str(i))
    assert one["group.initial.rebalance.delay.ms"] == "0" and one["auto.create.topics.enable"] == "true"
    assert ak.broker_properties(1, 1, {1: 2}, tmp_path, min_insync_replicas=2,
                                extra={"log.segment.bytes": "1048576"})["log.segment.bytes"] == "1048576"


def test_kafka_uuid_is_a_valid_cluster_id() -> None:
    ids = {ak._kafka_uuid() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") and "=" not in i for i in ids)


def test_free_ports_are_distinct() -> None:
    ports = ak._free_ports(6)
    assert len(set(ports)) == 6


def test_without_java_the_cluster_says_what_is_missing(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no mvn
    monkeypatch.setenv("JA4_KAFKA_CACHE", str(tmp_path / "cache"))
    assert ak.missing_tools() == ["java", "mvn"] and not ak.available()
    with pytest.raises(ak.KafkaUnavailable, match="java and mvn"):
        ak.KafkaCluster(1, workdir=tmp_path / "k").start()
    with pytest.raises(ak.KafkaUnavailable):
        ak.resolve()
    with pytest.raises(ValueError):
        ak.KafkaCluster(0)


def test_a_second_resolver_waits_for_the_first(monkeypatch, tmp_path: Path) -> None:
    """Two processes resolving at once: the second waits on the lock, then uses the first's jars."""
    monkeypatch.setenv("JA4_KAFKA_CACHE", str(tmp_path))
    monkeypatch.setattr(ak.shutil, "which", lambda name: f"/usr/bin/{name}")

    def no_maven(*a, **k):  # the second resolver must not run Maven again
        raise AssertionError("resolved twice")

    monkeypatch.setattr(ak.subprocess, "run", no_maven)
    held = threading.Event()

    def first() -> None:
        with ak._locked(tmp_path / f"kafka-{ak.KAFKA_VERSION}.lock"):
            held.set()
            time.sleep(0.5)
            ak.lib_dir().mkdir(parents=True)
            (ak.lib_dir().parent / "COMPLETE").write_text("done\n")

    t = threading.Thread(target=first)
    t.start()
    held.wait(5)
    t0 = time.monotonic()
    assert ak.resolve() == ak.lib_dir()
    assert time.monotonic() - t0 >= 0.3, "resolve() did not wait for the lock"
    t.join()
