"""The trainer judges a challenger on the analysts' labels (issue 17), end to end: two real
workers shadow it, the sink writes ``ml_shadow_scores``, ``stream-trainer run-once`` retires a
worse challenger and promotes a better one, and every replica switches."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

from ja4_core.bundle import ModelStore, write_bundle
from ja4_core.features import DEFAULT_FEATURES
from ja4_core.settings import load_settings
from ja4_dev.processes import ProductProcess, python_module
from ja4_dev.simulator import TrafficSimulator
from tests.helpers import Worker, free_port, produce, records_to_messages, topic_env
from tests.integration.test_shadow import KEY, announce, challenger, champion, wait_for


def bundle(store: ModelStore, records: list[dict], seed: int):
    """A real bundle fitted on ``records`` (clean humans make a better model than a baseline
    half of bots, which is better than one of bots only)."""
    from trainer.fit import FitConfig, fit_ensemble

    X = np.array([[r[f] for f in DEFAULT_FEATURES] for r in records], dtype=np.float64)
    fit = fit_ensemble(X, DEFAULT_FEATURES, FitConfig(eif_ntrees=60, ae_epochs=3, seed=seed, nthreads=1))
    return write_bundle(store, fit.ensemble, model="default", smoke_rows=X[:5])


def _py(dsn: str, code: str, *args: str) -> str:
    """Run ``code`` with ``ch`` open on the embedded ClickHouse in a child process (one process
    per chdb directory: the sink and the trainer take turns with it)."""
    prelude = "import json,sys; from ja4_core.clickhouse_io import connect; ch = connect(sys.argv[1]); ch.init_db(); "
    out = subprocess.run([sys.executable, "-c", prelude + code + "; ch.close()", dsn, *args], capture_output=True,
                         text=True, check=True)
    return out.stdout


def _shadow_rows(dsn: str, version: str) -> int:
    return int(_py(dsn, "print(ch.client.query('SELECT count() FROM ' + ch.table('ml_shadow_scores') + ' FINAL WHERE model_version = "
                        "{v:String}', parameters={'v': sys.argv[2]}).result_rows[0][0])", version).split()[-1])


def shadow_into_clickhouse(env: dict, tmp_path, records: list[dict], version: str) -> None:
    """Send the labelled records through the workers; run the sink until the challenger's
    scores of all of them are in ``ml_shadow_scores``; stop it."""
    produce(env["KAFKA_BOOTSTRAP_SERVERS"], env["TOPIC_FEATURES"], records_to_messages(records))
    sink = ProductProcess("sink", python_module("stream_scorer.cli", "sink"), env, tmp_path / "sink.log",
                          cwd=tmp_path).start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.5)
            status = sink.wait_http(f"http://127.0.0.1:{env['SINK_WEB_PORT']}/health", lambda s, b: s == 200, 30)
            if status.get("shadow_inserted", 0) >= len(records):
                break
        else:
            raise AssertionError(f"shadow rows not written: {status} {sink.log()[-3000:]}")
    finally:
        sink.stop()
    assert _shadow_rows(env["CLICKHOUSE_URL"], version) == len(records)


def run_trainer(env: dict, tmp_path) -> str:
    proc = subprocess.run([sys.executable, "-m", "trainer.cli", "run-once"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_a_worse_challenger_is_retired_and_a_better_one_promoted_on_every_replica(
        kafka_bootstrap, unique, tmp_path, chdb_url) -> None:
    import os

    store = ModelStore(tmp_path / "models")
    contaminated = bundle(store, TrafficSimulator(seed=2, bot_share=0.5).records(4000), seed=1)
    bots = [r for r in TrafficSimulator(seed=3, bot_share=0.9).records(6000) if r.get("label") == "bot"][:4000]
    worse = bundle(store, bots, seed=1)
    better = bundle(store, TrafficSimulator(seed=1, bot_share=0.0).records(4000), seed=1)
    store.set_current("default", contaminated.version)
    env = {**os.environ, **topic_env(kafka_bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20",
                                      CONTROL_SIGNING_KEY=KEY, CLICKHOUSE_URL=chdb_url,
                                      SINK_APP_ID=f"sink-{unique}", SINK_WEB_PORT=str(free_port()),
                                      SINK_BATCH_WAIT_MS="200", SHADOW_MIN_BOTS="40", SHADOW_MIN_HUMANS="40",
                                      SHADOW_MARGIN="0.01", PROMOTION_POLICY="shadow")}
    # The champion, announced as the trainer does (so its catch-up step has nothing to re-announce).
    from trainer.announce import announce as trainer_announce

    trainer_announce(load_settings(env), store, "default", contaminated.version, contaminated.manifest_sha256)
    labelled = TrafficSimulator(seed=11, bot_share=0.3).records(300)
    _py(chdb_url, "ch.insert_labels(json.loads(sys.argv[2]))",
        json.dumps([{k: r[k] for k in ("window_start", "src_ip", "ja4", "host", "label")} for r in labelled]))
    workers = [Worker(env, tmp_path).start(), Worker(env, tmp_path).start()]
    try:
        for w in workers:
            w.wait_ready(need_partitions=False)
        wait_for(workers, lambda i: champion(i) == contaminated.version, "champion")

        announce(kafka_bootstrap, env["TOPIC_CONTROL"], worse, "shadow")
        wait_for(workers, lambda i: challenger(i) == worse.version, "worse challenger shadows")
        shadow_into_clickhouse(env, tmp_path, labelled, worse.version)
        out = run_trainer(env, tmp_path)
        assert "retired" in out, out
        wait_for(workers, lambda i: challenger(i) is None and champion(i) == contaminated.version
                 and (i["challenger"]["dropped"] or {}).get("reason") == "retired", "worse challenger retired")

        announce(kafka_bootstrap, env["TOPIC_CONTROL"], better, "shadow")
        wait_for(workers, lambda i: challenger(i) == better.version, "better challenger shadows")
        shadow_into_clickhouse(env, tmp_path, labelled, better.version)
        out = run_trainer(env, tmp_path)
        assert "promoted" in out, out
        wait_for(workers, lambda i: champion(i) == better.version and challenger(i) is None, "every replica promoted")
        assert store.current("default") == better.version
    finally:
        for w in workers:
            w.stop()
    sql = ("SELECT decision, version, metrics_json FROM {table} WHERE decision IN ('retired', 'promoted') "
           "ORDER BY decided_at")
    history = json.loads(_py(chdb_url, "print(json.dumps(ch.client.query(sys.argv[2].format("
                                       "table=ch.table('model_training_history'))).result_rows))", sql).splitlines()[-1])
    assert [(d, v) for d, v, _ in history] == [("retired", worse.version), ("promoted", better.version)]
    retired, promoted = (json.loads(m) for _, _, m in history)
    assert retired["challenger_roc_auc"] < retired["champion_roc_auc"]
    assert promoted["challenger_roc_auc"] >= promoted["champion_roc_auc"] + 0.01
    assert promoted["n_bots"] >= 40 and promoted["n_humans"] >= 40
    prom = (store.model_dir("default") / "trainer.prom").read_text()
    assert 'ja4_trainer_challenger_decision{decision="promoted"} 1.0' in prom
