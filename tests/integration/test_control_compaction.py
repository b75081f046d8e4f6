"""The control topic really is compacted by Apache Kafka, and compaction loses no model (issue 15).

Every replica finds the model to serve by reading the compacted control topic from the
start (:func:`ja4_core.control.latest_valid`). Compaction keeps only the last record of each
key (the model name), so what a replica finds after compaction must be what it found before:
the latest announcement of every model. Tansu does not compact, so this runs on Apache Kafka
only, with the harness's :data:`~ja4_dev.apache_kafka.FAST_COMPACTION_TOPIC_CONFIG` (segments
roll after a second, the cleaner looks every second) instead of hours.
"""

from __future__ import annotations

import time

import pytest

from ja4_core.bundle import ModelStore
from ja4_core.control import build_activate
from ja4_core.control_log import latest_control_messages, read_control_records
from ja4_core.settings import load_settings
from ja4_dev.apache_kafka import FAST_COMPACTION_TOPIC_CONFIG
from tests.helpers import Worker, producer, quick_bundle, topic_env

ROUNDS = 6
PER_ROUND = 10  # announcements per round, alternating between the two models


def _create_control_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, -1, config=dict(FAST_COMPACTION_TOPIC_CONFIG))])[topic].result(15)


def test_compaction_keeps_the_latest_announcement_of_every_model(kafka_bootstrap, broker_kind, unique,
                                                                  tmp_path) -> None:
    if broker_kind not in ("kafka", "kafka3"):
        pytest.skip("compaction needs Apache Kafka's log cleaner (Tansu does not compact)")
    store = ModelStore(tmp_path / "models")
    bundles = {m: [quick_bundle(store, seed=s, n=2000, ntrees=30, model=m, set_current=False) for s in (1, 2)]
               for m in ("alpha", "beta")}
    env = topic_env(kafka_bootstrap, unique, store.root)
    topic = env["TOPIC_CONTROL"]
    _create_control_topic(kafka_bootstrap, topic)
    settings = load_settings(env)

    p = producer(kafka_bootstrap)
    sent = 0
    latest: dict[str, str] = {}

    def announce(model: str, info) -> None:
        nonlocal sent
        p.produce(topic, build_activate(model=model, version=info.version, uri=info.uri,
                                        manifest_sha256=info.manifest_sha256, issued_by="test"), model.encode())
        latest[model] = info.version
        sent += 1

    for r in range(ROUNDS):
        for i in range(PER_ROUND):
            model = ("alpha", "beta")[i % 2]
            announce(model, bundles[model][(r + i // 2) % 2])
        assert p.flush(15) == 0
        time.sleep(1.2)  # older than segment.ms: the next record rolls a new segment
    # Ends on alpha's older bundle: "latest" is the last announced, not the newest trained.
    announce("alpha", bundles["alpha"][0])
    announce("beta", bundles["beta"][1])
    assert p.flush(15) == 0
    time.sleep(1.2)
    announce("beta", bundles["beta"][1])  # rolls the segment that holds the two above
    assert p.flush(15) == 0
    assert latest == {"alpha": bundles["alpha"][0].version, "beta": bundles["beta"][1].version}

    deadline = time.monotonic() + 90
    offsets: list[int] = []
    while time.monotonic() < deadline:
        offsets = [rec.offset for rec in read_control_records(settings, timeout_s=10)]
        if offsets and len(offsets) <= 4 and offsets[0] > 0:
            break
        time.sleep(1)
    print(f"compaction: {sent} announcements (offsets 0..{sent - 1}), left after cleaning: {len(offsets)} "
          f"at offsets {offsets}")
    assert offsets and offsets[0] > 0 and len(offsets) < sent, f"not compacted within 90 s: {offsets}"

    found = latest_control_messages(settings)
    assert {m: doc["version"] for m, doc in found.items()} == latest
    # Replicas started after compaction serve the latest announced version of their model.
    workers = [Worker({**env, "MODEL_NAME": m}, tmp_path).start() for m in ("alpha", "beta")]
    try:
        for w, m in zip(workers, ("alpha", "beta")):
            w.wait_ready(90)
            assert w.model()["active"]["model_version"] == latest[m], w.model()
    finally:
        for w in workers:
            w.stop()
