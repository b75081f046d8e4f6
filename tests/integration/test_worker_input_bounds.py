"""Input the scorer must bound or refuse, through one real worker and broker (issue 13, items 5
and 6): an envelope beyond ``SCORER_MAX_ENVELOPE_RECORDS`` gives one DLQ entry (a 1 MB
``[{},{},...]`` gave 333,333), and a record whose ``window_start`` is not ISO-8601 or epoch
seconds between 1970 and 2200 is dead-lettered with the reason instead of being scored."""

from __future__ import annotations

import time

import orjson

from ja4_core.bundle import ModelStore
from ja4_dev.simulator import TrafficSimulator
from tests.helpers import Collector, Worker, headers_of, quick_bundle, topic_env

MB = 1024 * 1024


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "message.max.bytes": 16 * MB})
    for key, value in messages:
        p.produce(topic, value, key)
    assert p.flush(30) == 0, "undelivered messages"


def test_envelope_bound_and_window_start_through_a_worker(kafka_bootstrap, unique, tmp_path) -> None:
    store = ModelStore(tmp_path / "models")
    quick_bundle(store)
    env = topic_env(kafka_bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20", SCORER_MAX_ENVELOPE_RECORDS="100")
    records = TrafficSimulator(seed=3, bot_share=0.0).records(202)
    huge = b"[" + b",".join([b"{}"] * 333_333) + b"]"  # 1 MB of empty objects
    over = orjson.dumps([dict(r, src_ip=f"10.101.{i}.1") for i, r in enumerate(records[:101])])
    at_bound = orjson.dumps([dict(r, src_ip=f"10.100.{i}.1") for i, r in enumerate(records[101:201])])
    bad_times = {b"ws-garbage": "garbage", b"ws-1e300": 1e300, b"ws-2200": "2200-01-01T00:00:00Z", b"ws-neg": -1}
    messages = [(b"huge", huge), (b"over", over), (b"at-bound", at_bound), (b"ok", orjson.dumps(records[201]))]
    messages += [(k, orjson.dumps(dict(records[201], window_start=v))) for k, v in bad_times.items()]
    worker = Worker(env, tmp_path).start()
    try:
        worker.wait_ready()
        started = time.monotonic()
        _produce(kafka_bootstrap, env["TOPIC_FEATURES"], messages)
        scores = Collector(kafka_bootstrap, env["TOPIC_SCORES"])
        dlq = Collector(kafka_bootstrap, env["TOPIC_DLQ"])
        scores.until_count(101, timeout=60)
        dlq.until_count(2 + len(bad_times), timeout=60)
        elapsed = time.monotonic() - started
        scores.drain(quiet_s=2.0)
        dlq.drain(quiet_s=2.0)
        assert worker.proc.poll() is None and worker.get("/health")[0] == 200
    finally:
        worker.stop()
    by_key: dict[bytes, list] = {}
    for m in dlq.messages:
        by_key.setdefault(m.key(), []).append(m)
    assert {k: len(v) for k, v in by_key.items()} == {b"huge": 1, b"over": 1, **{k: 1 for k in bad_times}}
    assert len(dlq.messages) == 2 + len(bad_times), "no message gives more DLQ entries than the bound"
    huge_entry = by_key[b"huge"][0]
    assert "SCORER_MAX_ENVELOPE_RECORDS (100)" in headers_of(huge_entry)["error"]
    assert huge.startswith(huge_entry.value()), "the original bytes (cut only to the producer's request size)"
    over_entry = by_key[b"over"][0]
    assert over_entry.value() == over and "source-record-index" not in headers_of(over_entry)
    assert "envelope of 101 records exceeds SCORER_MAX_ENVELOPE_RECORDS (100)" in headers_of(over_entry)["error"]
    for key in bad_times:
        assert "'window_start'" in headers_of(by_key[key][0])["error"], headers_of(by_key[key][0])
    score_keys = [m.key() for m in scores.messages]
    assert score_keys.count(b"at-bound") == 100 and score_keys.count(b"ok") == 1 and len(score_keys) == 101
    assert elapsed < 30, f"took {elapsed:.1f}s"
