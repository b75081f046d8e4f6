"""A batch whose outputs cannot be delivered for good: retried, then the worker exits, and
nothing past the batch is ever committed; once the cause is gone every record is scored.

The permanent error is real: the DLQ topic is deleted after the worker created it (the
output producer does not let the broker auto-create it again), so every DLQ entry fails
with "unknown topic" while score records are delivered. (Tansu does not enforce a topic's
``max.message.bytes``, so a too-small topic limit would not fail there.)
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections import Counter

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ja4_core.bundle import ModelStore
from stream_scorer.output_producer import EXIT_DELIVERY_FAILED
from ja4_dev.simulator import TrafficSimulator
from tests.helpers import Collector, Worker, quick_bundle, record_key, records_to_messages, topic_env

PARTITIONS = 4


def _delete_topic(admin: AdminClient, topic: str) -> None:
    for fut in admin.delete_topics([topic], operation_timeout=15).values():
        fut.result()
    deadline = time.monotonic() + 15
    while topic in admin.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, f"{topic} still listed after deletion"
        time.sleep(0.2)


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes, int | None]]) -> list[tuple[int, int]]:
    """Send (key, value, partition or None); return each message's (partition, offset)."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    where: dict[int, tuple[int, int]] = {}
    for i, (key, value, partition) in enumerate(messages):
        def cb(err, msg, i=i):
            assert err is None, err
            where[i] = (msg.partition(), msg.offset())
        kwargs = {"partition": partition} if partition is not None else {}
        p.produce(topic, value, key, on_delivery=cb, **kwargs)
    assert p.flush(30) == 0
    return [where[i] for i in range(len(messages))]


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (-1001 = none), read without joining it."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return {tp.partition: tp.offset
                for tp in c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)}
    finally:
        c.close()


def _metric(worker: Worker, name: str) -> float:
    try:
        with urllib.request.urlopen(worker.url + "/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_undeliverable_dlq_retries_exits_and_commits_nothing_past_it(kafka_bootstrap, unique, tmp_path) -> None:
    store = ModelStore(tmp_path / "models")
    quick_bundle(store)
    env = topic_env(kafka_bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20",
                    OUTPUT_DELIVERY_ATTEMPTS="3", OUTPUT_RETRY_BACKOFF_S="2")
    features, group = env["TOPIC_FEATURES"], env["SCORER_APP_ID"]
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    records = TrafficSimulator(seed=11, bot_share=0.2).records(400)
    good = records_to_messages(records)
    bad = [(f"bad-{p}".encode(), f"{{not json {p}".encode(), p) for p in range(PARTITIONS)]

    w1 = Worker(env, tmp_path).start()
    try:
        w1.wait_ready()  # it created its topics; its output producer has sent nothing yet
        _delete_topic(admin, env["TOPIC_DLQ"])
        # First a burst with one undeliverable DLQ entry per partition, then good records
        # only, which a worker that skipped the failed batch would score, ack and commit.
        first = _produce(kafka_bootstrap, features, bad + [(k, v, None) for k, v in good[:100]])
        first_bad = {part: off for part, off in first[:len(bad)]}
        sent_later = 100
        saw_retrying = False
        retries = 0.0
        deadline = time.monotonic() + 150
        while w1.proc.poll() is None:
            assert time.monotonic() < deadline, f"the worker did not exit:\n{w1.log()[-3000:]}"
            if sent_later < len(good):
                _produce(kafka_bootstrap, features, [(k, v, None) for k, v in good[sent_later:sent_later + 20]])
                sent_later += 20
            for part, offset in _committed(kafka_bootstrap, group, features).items():
                assert offset <= first_bad[part], (
                    f"partition {part} committed {offset}, past the undelivered batch at {first_bad[part]}")
            try:
                status, body = w1.get("/ready")
                if body.get("delivery") == "retrying":
                    assert status == 503, body
                    saw_retrying = True
                retries = max(retries, _metric(w1, "ja4_delivery_retries_total"))
            except OSError:
                pass
            time.sleep(0.3)
        _produce(kafka_bootstrap, features, [(k, v, None) for k, v in good[sent_later:]])
        assert w1.proc.returncode == EXIT_DELIVERY_FAILED, w1.log()[-3000:]
        log1 = w1.log()
        assert "giving up delivering a batch after 3 attempts" in log1
        assert saw_retrying, "/ready said 'retrying' with 503 while the batch was retried"
        assert retries >= 1, "the retries were counted in /metrics"
        for part, offset in _committed(kafka_bootstrap, group, features).items():
            assert offset <= first_bad[part], f"partition {part}: committed {offset} on the way out"
        # Only what failed was retried: no score record was sent twice.
        scores = Collector(kafka_bootstrap, env["TOPIC_SCORES"]).drain(quiet_s=2, timeout=20)
        twice = [k for k, n in Counter((m.key(), m.value()) for m in scores).items() if n > 1]
        assert not twice, f"{len(twice)} score records sent more than once by the failed worker"
    finally:
        w1.stop()

    # The cause removed: the DLQ topic exists again. A new worker picks up from the last
    # committed offset and every record is scored, every bad one dead-lettered.
    for fut in admin.create_topics([NewTopic(env["TOPIC_DLQ"], PARTITIONS, 1)]).values():
        fut.result()
    w2 = Worker(env, tmp_path).start()
    try:
        w2.wait_ready()
        sent = {record_key(r) for r in records}
        scores = Collector(kafka_bootstrap, env["TOPIC_SCORES"]).poll_until(
            lambda msgs: {record_key(orjson.loads(m.value())) for m in msgs} >= sent, timeout=90)
        dlq = Collector(kafka_bootstrap, env["TOPIC_DLQ"]).poll_until(
            lambda msgs: {m.key() for m in msgs} >= {k for k, _, _ in bad}, timeout=30)
        assert {record_key(orjson.loads(m.value())) for m in scores} >= sent, "every record scored"
        assert {m.key(): m.value() for m in dlq} == {k: v for k, v, _ in bad}
        assert w2.get("/ready")[1]["delivery"] == "ok"
    finally:
        w2.stop()
