"""A broken upstream is an input fault, not drift to learn (issue 19, item 4): on a real worker,
a feature that turns constant zero and one that is mostly missing are flagged with their own
metric and reason, and no retrain request is raised, though the drift threshold is so low that
either alone would otherwise ask."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from ja4_core.bundle import ModelStore
from tests.helpers import Worker, topic_env
from tests.integration.test_live_drift import DRIFT_ENV, digest_bundle, drift_of, human_records, requests_on_topic, stream


def test_constant_zero_and_mostly_missing_features_are_faults_and_ask_nothing(kafka_bootstrap, unique,
                                                                              tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    digest_bundle(store)
    # One drifted feature of 39 (share 0.026) would be enough to ask.
    env = topic_env(kafka_bootstrap, unique, store.root, **{**DRIFT_ENV, "DRIFT_THRESHOLD": "0.02"})
    worker = Worker(env, tmp_path).start()
    try:
        worker.wait_ready(90)
        recs = human_records(4, 4000)
        for i, r in enumerate(recs):
            r["hits"] = 0  # a broken aggregator sends zeros
            if i % 10 < 7:
                del r["header_count"]  # ... and mostly drops this one (imputed by scoring)
        stream(kafka_bootstrap, env["TOPIC_FEATURES"], recs, 10.0)
        deadline = time.monotonic() + 10
        body = drift_of(worker)
        while not body["ready"] and time.monotonic() < deadline:
            time.sleep(0.5)
            body = drift_of(worker)
        assert body["input_faults"] == {"hits": "constant", "header_count": "imputed"}, body
        assert body["outcome"] == "held:input_fault", body
        hits = body["features"]["hits"]
        assert hits["fault"] == "constant" and hits["ks"] > 0.5 and not hits["drifted"], hits
        assert body["features"]["header_count"]["imputed_share"] >= 0.6
        with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'ja4_feature_input_fault{feature="hits",reason="constant"} 1.0' in text
        assert 'ja4_feature_input_fault{feature="header_count",reason="imputed"} 1.0' in text
        assert 'ja4_feature_drift{feature="hits"}' in text and "ja4_feature_drifted_share" in text
        assert body["requests_published"] == 0
        assert requests_on_topic(env) == []
    finally:
        worker.stop()
