"""Operations view of a worker: every probe answers, metrics count what happened, JSON logs."""

from __future__ import annotations

import json
import time
import urllib.request

import orjson

from ja4_core.bundle import ModelStore
from ja4_dev.simulator import TrafficSimulator
from tests.helpers import Collector, Worker, produce, quick_bundle, records_to_messages, topic_env


def _metrics(worker: Worker) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}" if s.labels else "")
            out[key] = s.value
    return out


def test_probes_metrics_and_json_logs(kafka_bootstrap, unique, tmp_path) -> None:
    store = ModelStore(tmp_path / "models")
    info = quick_bundle(store)
    env = topic_env(kafka_bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20", LOG_FORMAT="json")
    worker = Worker(env, tmp_path).start()
    try:
        worker.wait_ready()
        records = TrafficSimulator(seed=9).records(200)
        records[0] = {k: v for k, v in records[0].items() if k != "hits"}
        produce(kafka_bootstrap, env["TOPIC_FEATURES"], records_to_messages(records) + [(b"x", b"not json")])
        Collector(kafka_bootstrap, env["TOPIC_SCORES"]).until_count(len(records), timeout=60)
        time.sleep(6)  # the lag sampler runs every 5 s
        assert worker.get("/health") == (200, worker.get("/health")[1]) and worker.get("/health")[1]["alive"]
        status, ready = worker.get("/ready")
        assert status == 200 and ready["model_version"] == info.version and ready["partitions"]
        assert worker.get("/live")[0] == 200
        model = worker.model()
        assert model["active"]["model_version"] == info.version and model["outcomes"]["activated"] == 1
        m = _metrics(worker)
    finally:
        worker.stop()
    assert m["ja4_records_in_total"] == len(records) + 1
    assert sum(v for k, v in m.items() if k.startswith("ja4_records_scored_total{")) == len(records)
    assert m["ja4_dlq_total{reason=invalid_json}"] == 1
    assert m["ja4_imputed_features_total{feature=hits}"] >= 1
    assert m["ja4_batch_records_count"] >= 1 and m["ja4_batch_scoring_seconds_count"] >= 1
    assert m["ja4_end_to_end_lag_seconds_count"] >= 1
    # every batch passed every stage once, and the stages' times are real durations
    from stream_scorer.metrics import STAGES

    counts = {st: m[f"ja4_stage_seconds_count{{stage={st}}}"] for st in STAGES}
    assert len(set(counts.values())) == 1 and counts["score"] == m["ja4_batch_records_count"]
    assert all(m[f"ja4_stage_seconds_sum{{stage={st}}}"] >= 0 for st in STAGES)
    assert m["ja4_stage_seconds_sum{stage=batch}"] > 0 and m["ja4_stage_seconds_sum{stage=score}"] > 0
    assert m["ja4_reloads_total{outcome=activated}"] == 1
    assert m[f"ja4_active_model_info{{model_name=default,model_version={info.version}}}"] == 1
    assert m["ja4_assigned_partitions"] == 4
    assert any(k.startswith("ja4_consumer_lag_records{") for k in m)
    assert m["ja4_process_rss_bytes"] > 0
    # LOG_FORMAT=json: our log lines are JSON objects with level, logger, message.
    lines = [ln for ln in worker.log().splitlines() if ln.startswith("{")]
    docs = [json.loads(ln) for ln in lines]
    assert any(d["logger"] == "stream_scorer.model_holder" and "reload" in d["message"] for d in docs)
    assert all({"time", "level", "logger", "message"} <= set(d) for d in docs)
