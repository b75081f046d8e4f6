"""The features topic reaches the agent a fetch at a time (stream_scorer/bulk_consumer.py).

Before the bulk path (00575e1) every message went through Faust's per-message path (the
conductor's callback, an ``Event``, the agent's ``Stream``) and ``ja4_fetch_messages`` did not
exist: both tests fail there on the metric. Here every scored message was handed over by the
bulk consumer (the histogram's sum equals the messages acked), hand-offs hold many messages, and
a rebalance and a SIGTERM mid-stream lose and duplicate nothing.
"""

from __future__ import annotations

import threading
import time

import orjson

from ja4_core.bundle import ModelStore
from ja4_dev.simulator import TrafficSimulator
from tests.helpers import Collector, Worker, produce, producer, quick_bundle, record_key, topic_env
from tests.integration.test_worker_probes import _metrics


def _unique_messages(n: int, seed: int) -> tuple[list[tuple[bytes, bytes]], set[tuple]]:
    """n one-record messages whose record keys are all different (so a duplicate is ours)."""
    msgs, keys = [], set()
    for i, rec in enumerate(TrafficSimulator(seed=seed, bot_share=0.1).records(n)):
        rec["src_ip"] = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        msgs.append((rec["src_ip"].encode(), orjson.dumps(rec)))
        keys.add(record_key(rec))
    return msgs, keys


def _tally(scores: list, sent: set[tuple]) -> tuple[int, int]:
    """(lost, duplicates) of the score records against the keys sent."""
    keys = [record_key(orjson.loads(m.value())) for m in scores]
    return len(sent - set(keys)), len(keys) - len(set(keys))


def test_a_worker_takes_whole_fetches(kafka_bootstrap, unique, tmp_path) -> None:
    """A backlog of 1-record messages: every message comes through the bulk hand-off, many at once."""
    store = ModelStore(tmp_path / "models")
    quick_bundle(store)
    env = topic_env(kafka_bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20")
    msgs, sent = _unique_messages(4000, seed=3)
    worker = Worker(env, tmp_path).start()
    try:
        worker.wait_ready()
        produce(kafka_bootstrap, env["TOPIC_FEATURES"], msgs)
        scores = Collector(kafka_bootstrap, env["TOPIC_SCORES"]).until_count(len(msgs), timeout=90)
        time.sleep(1.5)  # the last batch's acks
        m = _metrics(worker)
    finally:
        worker.stop()
    assert _tally(scores, sent) == (0, 0)
    assert m["ja4_messages_in_total"] == len(msgs)
    assert m.get("ja4_fetch_messages_sum") == len(msgs), "every message was handed over by the bulk consumer"
    assert m["ja4_fetch_messages_count"] <= len(msgs) / 5, "hand-offs hold many messages, not one each"


class _UniqueStream:
    """Produces the given messages at a steady rate in a thread (the workers always have input)."""

    def __init__(self, bootstrap: str, topic: str, msgs: list[tuple[bytes, bytes]], rate: float) -> None:
        self.bootstrap, self.topic, self.msgs, self.rate = bootstrap, topic, msgs, rate
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        p = producer(self.bootstrap)
        start = time.monotonic()
        for i, (key, value) in enumerate(self.msgs):
            p.produce(self.topic, value, key)
            self.sent = i + 1
            if i % 100 == 0:
                p.poll(0)
                ahead = i / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        assert p.flush(30) == 0

    def __enter__(self) -> "_UniqueStream":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(60)


def test_rebalance_and_sigterm_mid_stream_lose_and_duplicate_nothing(kafka_bootstrap, unique, tmp_path) -> None:
    """Under a steady stream, a second replica joins (a rebalance mid-stream), then the first is
    stopped with SIGTERM while it holds batches: every record is scored exactly once, the
    survivor took all of its input through the bulk hand-off, and the stopped one left cleanly."""
    store = ModelStore(tmp_path / "models")
    quick_bundle(store)
    env = topic_env(kafka_bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20")
    msgs, sent = _unique_messages(12000, seed=4)
    w1, w2 = Worker(env, tmp_path), Worker(env, tmp_path)
    try:
        w1.start().wait_ready()
        collector = Collector(kafka_bootstrap, env["TOPIC_SCORES"])  # the worker created the topic
        with _UniqueStream(kafka_bootstrap, env["TOPIC_FEATURES"], msgs, rate=800.0) as stream:
            time.sleep(2.0)
            w2.start()
            w2.wait_ready(need_partitions=False)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (w1.model()["partitions"] and w2.model()["partitions"]):
                time.sleep(0.1)
            assert w2.model()["partitions"], "the second replica got partitions (a rebalance mid-stream)"
            time.sleep(2.0)
            assert stream.sent < len(msgs), "the stream still runs when the first replica stops"
            code = w1.stop()
        collector.poll_until(lambda got: _tally(got, sent)[0] == 0, timeout=90)
        scores = collector.drain(quiet_s=1.5)  # and any duplicate still on its way
        m2 = _metrics(w2)
    finally:
        w1.stop(), w2.stop()
    lost, duplicates = _tally(scores, sent)
    print(f"rebalance + SIGTERM mid-stream: {len(sent)} in, lost {lost}, duplicates {duplicates}")
    assert (lost, duplicates) == (0, 0)
    assert code == 0, w1.log()[-3000:]
    assert "Traceback" not in w1.log(), w1.log()[-3000:]
    assert m2.get("ja4_fetch_messages_sum") == m2["ja4_messages_in_total"] > 0
