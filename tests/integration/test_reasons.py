"""Reasons end to end (issue 18): a real worker on a real broker puts them in its score
records, and the sink stores them in ``ml_all_scores.reasons`` of the embedded ClickHouse,
also in a table created before the column existed (init_db adds it; old rows read ``[]``)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import orjson

from ja4_core.bundle import ModelStore, write_bundle
from ja4_core.clickhouse_io import SCORE_COLUMNS
from ja4_core.features import DEFAULT_FEATURES, window_start_seconds
from ja4_dev.processes import ProcessError, ProductProcess, python_module
from ja4_dev.simulator import TrafficSimulator
from tests.helpers import Collector, Worker, free_port, produce, record_key, records_to_messages, topic_env

BENIGN = ("NORMAL", "LEGITIMATE_BROWSER")


def _bundle_with_digest(store: ModelStore) -> str:
    """A small real bundle as the trainer writes it: with the baseline's quantile digest."""
    from trainer.fit import FitConfig, fit_ensemble, quantile_digest

    recs = TrafficSimulator(seed=1, bot_share=0.0).records(3000)
    X = np.array([[r[f] for f in DEFAULT_FEATURES] for r in recs], dtype=np.float64)
    fit = fit_ensemble(X, DEFAULT_FEATURES, FitConfig(eif_ntrees=60, ae_epochs=3, seed=1, nthreads=1))
    info = write_bundle(store, fit.ensemble, model="default", smoke_rows=X[:5],
                        extra={"digest": quantile_digest(X, DEFAULT_FEATURES)})
    store.set_current("default", info.version)
    return info.version


def _clickhouse(dsn: str, code: str, *args: str) -> list:
    """Run ``code`` (with ``ch`` connected) in a child process: chdb allows one process per
    directory, and the sink takes it while it runs. The code's ``out`` is returned."""
    prog = ("import json, sys; from ja4_core.clickhouse_io import connect; ch = connect(sys.argv[1]); out = None\n"
            f"{code}\nch.close(); print(json.dumps(out, default=str))")
    done = subprocess.run([sys.executable, "-c", prog, dsn, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_score_records_carry_reasons_and_the_sink_stores_them(kafka_bootstrap, unique, tmp_path) -> None:
    store = ModelStore(tmp_path / "models")
    version = _bundle_with_digest(store)
    dsn = f"chdb://{tmp_path / 'ch'}"
    # ml_all_scores as an older release created it (no reasons column), with one row in it
    old_cols = ", ".join(f"{n} {t}" for n, t in SCORE_COLUMNS if n != "reasons")
    _clickhouse(dsn, "ch.client.command('CREATE DATABASE IF NOT EXISTS ja4')\n"
                     f"ch.client.command(\"CREATE TABLE {{0}}.ml_all_scores ({old_cols}) ENGINE = "
                     "ReplacingMergeTree(scored_at) ORDER BY (window_start, src_ip, ja4, host, model_version)\""
                     ".format(ch._db))\n"
                     "ch.client.command(\"INSERT INTO {0}.ml_all_scores (window_start, src_ip, ja4, host, anomaly_score, "
                     "eif_score, threat_level, model_name, model_version, scored_at, imputed) VALUES "
                     "(1764000000, 'old', 'j', 'h', 0.1, 0.1, 'NORMAL', 'default', 'v0', now64(3), [])\".format(ch._db))")

    env = topic_env(kafka_bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20")
    humans = TrafficSimulator(seed=7, bot_share=0.0).records(200)
    # Far beyond the baseline in one feature, from clients that name no browser: a coherent browser
    # at LOW is LEGITIMATE_BROWSER by design (no reasons), and the simulator's diurnal traffic put
    # one of these at LOW in the hour from 22:00 UTC. Without a browser all 24 hours give LOW or above.
    odd = [dict(r, src_ip=f"10.66.0.{i}", hits=1e7, browser_family="") for i, r in enumerate(humans[:20])]
    worker = Worker(env, tmp_path).start()
    try:
        worker.wait_ready()
        produce(kafka_bootstrap, env["TOPIC_FEATURES"], records_to_messages(humans + odd))
        messages = Collector(kafka_bootstrap, env["TOPIC_SCORES"]).until_count(len(humans) + len(odd), timeout=60)
    finally:
        worker.stop()
    docs = {record_key(d): d for d in (orjson.loads(m.value()) for m in messages)}
    assert len(docs) == len(humans) + len(odd)
    for rec in odd:
        doc = docs[record_key(rec)]
        assert doc["threat_level"] not in BENIGN, doc
        first = doc["reasons"][0]
        assert set(first) == {"feature", "value", "median", "p99", "weight"}
        assert first["feature"] == "hits" and first["value"] == 1e7 and first["p99"] < 1e7
        assert 1 <= len(doc["reasons"]) <= 3
    assert all(d["reasons"] == [] for d in docs.values() if d["threat_level"] in BENIGN)
    assert all(d["model_version"] == version for d in docs.values())

    sink_env = {**env, "SINK_APP_ID": f"sink-{unique}", "CLICKHOUSE_URL": dsn, "SINK_WEB_PORT": str(free_port()),
                "SINK_BATCH_WAIT_MS": "200"}
    sink = ProductProcess("sink", python_module("stream_scorer.cli", "sink"), sink_env, tmp_path / "sink.log",
                          cwd=tmp_path).start()
    try:
        sink.wait_http(f"http://127.0.0.1:{sink_env['SINK_WEB_PORT']}/health",
                       lambda status, body: body.get("inserted", 0) >= len(docs), timeout=90)
    except ProcessError as exc:
        raise AssertionError(f"{exc}\n{sink.log()[-3000:]}") from None
    finally:
        sink.stop()
    rows = _clickhouse(dsn, "out = ch.client.query('SELECT toInt64(toUnixTimestamp(window_start)), src_ip, ja4, host, "
                            "reasons FROM {0}.ml_all_scores FINAL'.format(ch._db)).result_rows")
    stored = {(int(w), ip, j, h): json.loads(text) for w, ip, j, h, text in rows}
    assert stored[(1764000000, "old", "j", "h")] == []  # the row written before the column existed
    expected = {(int(window_start_seconds(d["window_start"])), d["src_ip"], d["ja4"], d["host"]): d["reasons"]
                for d in docs.values()}
    assert len(stored) == len(expected) + 1
    for key, reasons in expected.items():
        assert stored[key] == reasons, key
    assert sum(1 for r in expected.values() if r) >= len(odd)
