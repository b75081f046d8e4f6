"""The score sink on a real broker and the embedded ClickHouse: rows land once, replays do not
duplicate; bad score records and rows ClickHouse refuses are dead-lettered without a crash or
a row-by-row slow path; a batch ClickHouse cannot take is never skipped nor committed past."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import orjson

from tests.helpers import FAST_GROUP_ENV, Collector, free_port, headers_of, produce


def _query(dsn: str, sql: str) -> list:
    """Query chdb in a child process: the embedded engine allows one process per directory."""
    code = ("import json,sys; from ja4_core.clickhouse_io import connect; ch = connect(sys.argv[1]); "
            "print(json.dumps(ch.client.query(sys.argv[2]).result_rows, default=str))")
    out = subprocess.run([sys.executable, "-c", code, dsn, sql], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _command(dsn: str, *sql: str) -> None:
    """Create the schema, then run statements, in a child process (one process per chdb directory)."""
    code = ("import sys; from ja4_core.clickhouse_io import connect; ch = connect(sys.argv[1]); ch.init_db(); "
            "[ch.client.command(s) for s in sys.argv[2:]]; ch.close()")
    subprocess.run([sys.executable, "-c", code, dsn, *sql], capture_output=True, text=True, check=True)


def _start_sink(env: dict, tmp_path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stream_scorer.cli", "sink"], cwd=tmp_path,
                            env={**os.environ, **env}, stdout=open(tmp_path / "sink.log", "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stop_sink(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def _get(env: dict, path: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{env['SINK_WEB_PORT']}{path}", timeout=2) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _metric(env: dict, name: str) -> float:
    """One sample of the sink's /metrics (``name`` with its labels, e.g. ``x_total{reason="a"}``)."""
    for line in _get(env, "/metrics")[1].decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def _wait_health(env: dict, proc: subprocess.Popen, tmp_path, done, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    health: dict = {}
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            health = json.loads(_get(env, "/health")[1])
            if done(health):
                return health
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"sink: {health} (exit {proc.poll()}):\n" + (tmp_path / "sink.log").read_text()[-3000:])


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (-1001 = none), read without joining it."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
        return {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in parts], timeout=10)}
    finally:
        c.close()


def _run_sink(env: dict, tmp_path, expect_rows: int, dsn: str) -> None:
    proc = _start_sink(env, tmp_path)
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
        _stop_sink(proc)


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


def _env(kafka_bootstrap: str, unique: str, dsn: str, **extra: str) -> dict:
    return {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPIC_SCORES": f"scores-{unique}",
            "TOPIC_DLQ": f"dlq-{unique}", "SINK_APP_ID": f"sink-{unique}", "CLICKHOUSE_URL": dsn,
            "SINK_WEB_PORT": str(free_port()), "SINK_BATCH_WAIT_MS": "200", "TOPIC_PARTITIONS": "2",
            **FAST_GROUP_ENV, **extra}


def _score(i: int, **over) -> dict:
    return {"window_start": "2026-11-24T10:00:00Z", "src_ip": f"10.1.{i // 250}.{i % 250}", "ja4": "t13d_a_b",
            "host": "shop.example", "anomaly_score": 0.4, "eif_score": 0.5, "ae_score": 0.2, "xgb_prob": None,
            "threat_level": "NORMAL", "model_name": "default", "model_version": "v1",
            "scored_at": "2026-11-24T10:00:01.000+00:00", "imputed": [], **over}


def test_bad_score_records_and_refused_rows_are_dead_lettered_without_a_row_by_row_path(kafka_bootstrap, unique,
                                                                                        tmp_path) -> None:
    """Issue 13, item 6 at the sink. Score records with a window_start an older scorer did not
    check ("garbage", 1e300, before 1970, beyond ClickHouse's DateTime) and unreadable ones are
    dead-lettered by the sink; rows ClickHouse itself refuses (here: a table constraint) are
    found by halving the batch, not row by row; the sink never crashes, and ``inserted``
    counts only the rows written."""
    dsn = f"chdb://{tmp_path / 'ch'}"
    env = _env(kafka_bootstrap, unique, dsn, SINK_BATCH_MAX="5000", SINK_BATCH_WAIT_MS="1000")
    _command(dsn, "ALTER TABLE ja4.ml_all_scores ADD CONSTRAINT refuse CHECK NOT startsWith(host, 'refused')")
    n_good = 1500
    invalid = {b"ws-garbage": orjson.dumps(_score(9001, window_start="garbage")),
               b"ws-1e300": orjson.dumps(_score(9002, window_start=1e300)),
               b"ws-1969": orjson.dumps(_score(9003, window_start=-5)),
               b"ws-2150": orjson.dumps(_score(9004, window_start=5_700_000_000)),
               b"unreadable": b"{not json"}
    refused = {f"refused-{j}".encode(): orjson.dumps(_score(9100 + j, host="refused.example")) for j in range(3)}
    good = [(_score(i)["src_ip"].encode(), orjson.dumps(_score(i))) for i in range(n_good)]
    bad = list({**invalid, **refused}.items())
    messages = good[:10] + bad[:4] + good[10:700] + bad[4:6] + good[700:] + bad[6:]
    produce(kafka_bootstrap, env["TOPIC_SCORES"], messages)
    proc = _start_sink(env, tmp_path)
    try:
        health = _wait_health(env, proc, tmp_path, lambda h: h["inserted"] + h["rejected"] >= len(messages))
        assert (health["inserted"], health["rejected"]) == (n_good, len(bad)), health
        assert _metric(env, 'ja4_sink_dlq_total{reason="refused"}') == len(refused)
        assert _metric(env, 'ja4_sink_dlq_total{reason="invalid"}') == len(invalid)
        assert _metric(env, "ja4_sink_rows_inserted_total") == n_good
        inserts = _metric(env, "ja4_sink_inserts_total")
        assert inserts <= 100, f"{inserts} inserts for {len(messages)} records: the slow path went row by row"
        assert proc.poll() is None and _get(env, "/ready")[0] == 200
        dlq = Collector(kafka_bootstrap, env["TOPIC_DLQ"]).until_count(len(bad), timeout=30)
    finally:
        _stop_sink(proc)
    assert "Traceback" not in (tmp_path / "sink.log").read_text()
    by_key = {m.key(): m for m in dlq}
    assert len(dlq) == len(bad) and set(by_key) == {k for k, _ in bad}
    for key, value in bad:
        h = headers_of(by_key[key])
        assert by_key[key].value() == value and h["source-topic"] == env["TOPIC_SCORES"]
        assert h["error"].startswith("sink: "), h
        if key.startswith(b"ws-"):
            assert "window_start" in h["error"], h
    assert "refused by ClickHouse" in headers_of(by_key[b"refused-0"])["error"]
    assert _query(dsn, "SELECT count() FROM ja4.ml_all_scores FINAL") == [[n_good]]


def test_a_batch_clickhouse_cannot_take_is_retried_then_the_sink_exits_without_committing_it(kafka_bootstrap, unique,
                                                                                             tmp_path) -> None:
    """Issue 13, item 2 (sink half). ClickHouse cannot take writes (the table replaced by a
    view: a real ClickHouse error that is not about the data): the sink retries with backoff
    (counted in /metrics, /ready 503 meanwhile), then exits non-zero having committed nothing
    past the last written batch. Once the table is back, every record lands."""
    dsn = f"chdb://{tmp_path / 'ch'}"
    env = _env(kafka_bootstrap, unique, dsn, OUTPUT_DELIVERY_ATTEMPTS="4", OUTPUT_RETRY_BACKOFF_S="1")
    first = [(_score(i)["src_ip"].encode(), orjson.dumps(_score(i))) for i in range(300)]
    second = [(_score(i)["src_ip"].encode(), orjson.dumps(_score(i))) for i in range(300, 600)]
    produce(kafka_bootstrap, env["TOPIC_SCORES"], first)
    _run_sink(env, tmp_path, len(first), dsn)  # written, acked, committed on stop
    committed = _committed(kafka_bootstrap, env["SINK_APP_ID"], env["TOPIC_SCORES"])
    assert sum(committed.values()) == len(first), committed

    _command(dsn, "RENAME TABLE ja4.ml_all_scores TO ja4.kept", "CREATE VIEW ja4.ml_all_scores AS SELECT * FROM ja4.kept")
    produce(kafka_bootstrap, env["TOPIC_SCORES"], second)
    proc = _start_sink(env, tmp_path)
    seen_unready = seen_retry = False
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                status, body = _get(env, "/ready")
                if status == 503 and json.loads(body).get("write_blocked"):
                    seen_unready = True
                    seen_retry = seen_retry or _metric(env, "ja4_sink_write_retries_total") >= 1
            except OSError:
                pass
            time.sleep(0.1)
        code = proc.poll()
    finally:
        _stop_sink(proc)
    log = (tmp_path / "sink.log").read_text()
    assert code == 75, f"exit {code}:\n{log[-3000:]}"
    assert seen_unready and seen_retry, log[-3000:]
    assert log.count("retrying in") == 3, "4 attempts: 3 retries, then stop"
    assert _committed(kafka_bootstrap, env["SINK_APP_ID"], env["TOPIC_SCORES"]) == committed, \
        "nothing past the unwritten batch is committed"

    _command(dsn, "DROP VIEW ja4.ml_all_scores", "RENAME TABLE ja4.kept TO ja4.ml_all_scores")
    _run_sink(env, tmp_path, len(second), dsn)  # the same group: the unwritten records are re-delivered
    assert _query(dsn, "SELECT count() FROM ja4.ml_all_scores FINAL") == [[len(first) + len(second)]]
    assert sum(_committed(kafka_bootstrap, env["SINK_APP_ID"], env["TOPIC_SCORES"]).values()) == 600
