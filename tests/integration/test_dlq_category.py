"""The DLQ category travels on the reject (issue 14): a real worker on a real broker puts it in
the ``error-category`` header and counts ``ja4_dlq_total`` by it.

On c6ab0d5 there was no such header, and ``metrics.dlq_category`` parsed the reason text again:
an envelope over ``SCORER_MAX_ENVELOPE_RECORDS`` was counted as ``not_object``.
"""

from __future__ import annotations

import orjson

from ja4_core.bundle import ModelStore
from ja4_core.features import KEY_FIELDS
from ja4_dev.simulator import TrafficSimulator
from tests.helpers import Collector, Worker, headers_of, produce, quick_bundle, topic_env
from tests.integration.test_worker_probes import _metrics


def test_each_dlq_entry_carries_its_category(kafka_bootstrap, unique, tmp_path) -> None:
    store = ModelStore(tmp_path / "models")
    quick_bundle(store)
    env = topic_env(kafka_bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20", SCORER_MAX_ENVELOPE_RECORDS="3")
    good = {k: v for k, v in TrafficSimulator(seed=3).records(1)[0].items()}
    no_ja4 = {k: v for k, v in good.items() if k != "ja4"}
    bad = {
        b"invalid_json": b"{not json",
        b"not_object": b"42",
        b"empty": b"[]",
        b"envelope_too_large": orjson.dumps([good] * 4),
        b"missing_key": orjson.dumps(no_ja4),
        b"bad_window_start": orjson.dumps({**good, "window_start": "yesterday"}),
    }
    assert set(KEY_FIELDS) <= set(good)
    worker = Worker(env, tmp_path).start()
    try:
        worker.wait_ready()
        produce(kafka_bootstrap, env["TOPIC_FEATURES"], list(bad.items()))
        dlq = Collector(kafka_bootstrap, env["TOPIC_DLQ"]).until_count(len(bad), timeout=60)
        m = _metrics(worker)
    finally:
        worker.stop()
    got = {msg.key(): headers_of(msg) for msg in dlq}
    assert set(got) == set(bad)
    for key, headers in got.items():
        assert headers["error-category"] == key.decode(), headers
        assert headers["error"]  # the text for people stays
        assert m[f"ja4_dlq_total{{reason={key.decode()}}}"] == 1
