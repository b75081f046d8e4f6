"""The score sink on a real broker and the embedded ClickHouse: rows land once, replays do not duplicate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import orjson

from tests.helpers import FAST_GROUP_ENV, free_port, produce


def _query(dsn: str, sql: str) -> list:
    """Query chdb in a child process: the embedded engine allows one process per directory."""
    code = ("import json,sys; from trainer.clickhouse_io import connect; ch = connect(sys.argv[1]); "
            "print(json.dumps(ch.client.query(sys.argv[2]).result_rows, default=str))")
    out = subprocess.run([sys.executable, "-c", code, dsn, sql], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run_sink(env: dict, tmp_path, expect_rows: int, dsn: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "stream_scorer.cli", "sink"], cwd=tmp_path,
                            env={**os.environ, **env}, stdout=open(tmp_path / "sink.log", "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import urllib.request

        deadline = time.monotonic() + 90
        inserted = 0
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{env['SINK_WEB_PORT']}/health", timeout=2) as r:
                    inserted = json.loads(r.read())["inserted"]
                if inserted >= expect_rows:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert inserted >= expect_rows, (tmp_path / "sink.log").read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_sink_inserts_idempotently(kafka_bootstrap, unique, tmp_path) -> None:
    dsn = f"chdb://{tmp_path / 'ch'}"
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPIC_SCORES": f"scores-{unique}",
           "TOPIC_DLQ": f"dlq-{unique}", "SINK_APP_ID": f"sink-{unique}", "CLICKHOUSE_URL": dsn,
           "SINK_WEB_PORT": str(free_port()), "SINK_BATCH_WAIT_MS": "200", "TOPIC_PARTITIONS": "2", **FAST_GROUP_ENV}
    hostile = "a'; DROP TABLE ml_all_scores; -- \u00e9\u2603"
    rows = [{"window_start": "2026-11-24T10:00:00Z", "src_ip": f"10.0.{i // 250}.{i % 250}", "ja4": "t13d1516h2_8daaf6152771_02713d6af862",
             "host": hostile if i == 0 else "shop.example", "anomaly_score": 0.4, "eif_score": 0.5, "ae_score": 0.2,
             "xgb_prob": None, "threat_level": "NORMAL", "model_name": "default", "model_version": "v1",
             "scored_at": "2026-11-24T10:00:01.000+00:00", "imputed": ["hits"] if i % 2 else [],
             "asn_number": 3320, "country_code": "DE", "browser_family": "Chrome", "bot_name": ""} for i in range(500)]
    messages = [(r["src_ip"].encode(), orjson.dumps(r)) for r in rows]
    produce(kafka_bootstrap, env["TOPIC_SCORES"], messages)
    _run_sink(env, tmp_path, len(rows), dsn)
    # Replay the same scores through a fresh consumer group: rows are re-inserted...
    produce(kafka_bootstrap, env["TOPIC_SCORES"], messages)
    env["SINK_APP_ID"] = f"sink2-{unique}"
    _run_sink(env, tmp_path, 2 * len(rows), dsn)
    # ...but query results do not duplicate.
    assert _query(dsn, "SELECT count() FROM ja4.ml_all_scores FINAL") == [[len(rows)]]
    assert _query(dsn, "SELECT host FROM ja4.ml_all_scores FINAL WHERE src_ip = '10.0.0.0'") == [[hostile]]
    assert _query(dsn, "SELECT count() FROM ja4.ml_all_scores FINAL WHERE has(imputed, 'hits')") == [[250]]
