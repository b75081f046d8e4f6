"""The scorer end to end on a real broker: scores, DLQ, consumer-group split."""

from __future__ import annotations

import orjson
import pytest

from ja4_core.bundle import ModelStore
from ja4_core.features import KEY_FIELDS
from ja4_dev.simulator import TrafficSimulator
from tests.helpers import Collector, Worker, headers_of, produce, quick_bundle, record_key, records_to_messages, topic_env

#: The worker on Apache Kafka and on the embedded default alike (tests/conftest.py).
pytestmark = pytest.mark.both_brokers


@pytest.fixture
def store(tmp_path):
    return ModelStore(tmp_path / "models")


def test_valid_and_malformed_records(kafka_bootstrap, unique, tmp_path, store) -> None:
    """N valid + M malformed in -> N scores (same key, model-version header) + M DLQ with reasons."""
    info = quick_bundle(store)
    env = topic_env(kafka_bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20")
    worker = Worker(env, tmp_path).start()
    try:
        worker.wait_ready()
        records = TrafficSimulator(seed=7, bot_share=0.2).records(300)
        good = records_to_messages(records)
        envelope = [(b"env", orjson.dumps(records[:0] + [dict(r, src_ip=f"10.9.{i}.1") for i, r in enumerate(records[:50])]))]
        half_bad = dict(records[0], src_ip="10.8.0.1")
        del half_bad["ja4"]
        bad = [
            (b"bad-json", b"{not json"),
            (b"bad-utf8", b"\xff\xfe\x00"),
            (b"bad-number", b"42"),
            (b"bad-missing", orjson.dumps(half_bad)),
            (b"bad-empty", b"[]"),
        ]
        imputed = dict(records[1], src_ip="10.7.0.1", hits=None, post_ratio="lots", header_count=float("1e308") * 10 if False else None)
        produce(kafka_bootstrap, env["TOPIC_FEATURES"], good + envelope + bad + [(b"imp", orjson.dumps(imputed))])
        n_scores = len(good) + 50 + 1
        scores = Collector(kafka_bootstrap, env["TOPIC_SCORES"]).until_count(n_scores, timeout=60)
        dlq = Collector(kafka_bootstrap, env["TOPIC_DLQ"]).until_count(len(bad), timeout=30)
    finally:
        worker.stop()
    assert len(scores) == n_scores
    assert len(dlq) == len(bad)
    docs = [orjson.loads(m.value()) for m in scores]
    sent_keys = {record_key(r) for r in records} | {record_key(dict(r, src_ip=f"10.9.{i}.1")) for i, r in enumerate(records[:50])}
    sent_keys.add(record_key(imputed))
    assert {record_key(d) for d in docs} == sent_keys
    for msg, doc in zip(scores, docs):
        assert headers_of(msg)["model-version"] == info.version == doc["model_version"]
        assert 0.0 <= doc["anomaly_score"] <= 1.0 and 0.0 <= doc["eif_score"] <= 1.0
        assert doc["threat_level"] in {"NORMAL", "LOW", "MEDIUM", "HIGH", "CRITICAL", "KNOWN_BOT", "LEGITIMATE_BROWSER"}
        if doc["src_ip"].startswith("10.9."):
            assert msg.key() == b"env"
        elif doc["src_ip"] == "10.7.0.1":
            assert msg.key() == b"imp"
            assert set(doc["imputed"]) == {"hits", "post_ratio", "header_count"}
        else:
            assert msg.key() == doc["src_ip"].encode()
    by_key = {m.key(): m for m in dlq}
    assert set(by_key) == {k for k, _ in bad}
    for key, value in bad:
        h = headers_of(by_key[key])
        assert by_key[key].value() == value, "DLQ keeps the original bytes"
        assert h["error"] and h["source-topic"] == env["TOPIC_FEATURES"]
        assert int(h["source-partition"]) >= 0 and int(h["source-offset"]) >= 0
    assert "missing key field 'ja4'" in headers_of(by_key[b"bad-missing"])["error"]
    assert "not valid JSON" in headers_of(by_key[b"bad-json"])["error"]


def test_two_workers_split_partitions(kafka_bootstrap, unique, tmp_path, store) -> None:
    """Two replicas in one group share the partitions and together score every record."""
    quick_bundle(store)
    env = topic_env(kafka_bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20")
    w1 = Worker(env, tmp_path).start()
    w2 = Worker(env, tmp_path).start()
    try:
        w1.wait_ready()
        w2.wait_ready()
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            p1, p2 = w1.model()["partitions"], w2.model()["partitions"]
            if p1 and p2 and not set(p1) & set(p2) and len(p1) + len(p2) == 4:
                break
            time.sleep(0.5)
        assert p1 and p2 and not set(p1) & set(p2) and sorted(p1 + p2) == [0, 1, 2, 3], (p1, p2)
        records = TrafficSimulator(seed=11).records(2000)
        produce(kafka_bootstrap, env["TOPIC_FEATURES"], records_to_messages(records))
        scores = Collector(kafka_bootstrap, env["TOPIC_SCORES"]).until_count(len(records), timeout=60)
    finally:
        w1.stop()
        w2.stop()
    keys = {record_key(orjson.loads(m.value())) for m in scores}
    assert keys == {record_key(r) for r in records}
    partitions_scored = {m.partition() for m in scores}
    assert len(partitions_scored) > 1


def test_worker_waits_without_model(kafka_bootstrap, unique, tmp_path, store) -> None:
    """No bundle anywhere: the worker does not consume, says so, and scores once one appears."""
    env = topic_env(kafka_bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20")
    worker = Worker(env, tmp_path).start()
    try:
        records = TrafficSimulator(seed=3).records(100)
        import time

        time.sleep(8)
        produce(kafka_bootstrap, env["TOPIC_FEATURES"], records_to_messages(records))
        status, body = worker.get("/ready")
        assert status == 503 and body["model_active"] is False
        status, body = worker.get("/health")
        assert status == 200 and body["alive"] is True and body["ready"] is False
        early = Collector(kafka_bootstrap, env["TOPIC_SCORES"])
        assert early.drain(quiet_s=3, timeout=5) == []
        assert "waiting, not consuming" in worker.log()
        # A trainer publishes: here we just write a bundle and announce it on the control topic.
        from ja4_core.control import build_activate

        info = quick_bundle(store)
        produce(kafka_bootstrap, env["TOPIC_CONTROL"], [(b"default", build_activate(
            model="default", version=info.version, uri=info.uri, manifest_sha256=info.manifest_sha256,
            issued_by="test"))])
        scores = early.until_count(len(records), timeout=40)
    finally:
        worker.stop()
    assert len({record_key(orjson.loads(m.value())) for m in scores}) == len(records)
