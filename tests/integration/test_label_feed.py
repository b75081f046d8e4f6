"""The label feed (issue 18): labels on TOPIC_LABELS are checked by the sink and stored in
soc_labels; each bad one (an unknown field, a label other than bot/human, a line that is not
JSON, an oversized note) goes to the DLQ with its reason and nothing else is dropped; labels
for windows never scored are stored and counted apart. On c1c1da8 there was no label feed:
nothing read the topic and soc_labels stayed empty."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import orjson

from tests.helpers import FAST_GROUP_ENV, Collector, free_port, headers_of, produce

WINDOW = "2026-11-24T10:00:00Z"
JA4 = "t13d1516h2_8daaf6152771_02713d6af862"


def _label(ip: str, label: str = "bot", **extra: object) -> dict:
    return {"window_start": WINDOW, "src_ip": ip, "ja4": JA4, "host": "shop.example", "label": label,
            "source": "test", **extra}


def _chdb(dsn: str, code: str, *args: str) -> list:
    """Run ``code`` (with ``ch`` open, schema created) in a child process: one process per chdb directory."""
    prog = ("import json,sys; from ja4_core.clickhouse_io import connect; ch = connect(sys.argv[1]); ch.init_db(); "
            f"out = {code}; print(json.dumps(out, default=str)); ch.close()")
    done = subprocess.run([sys.executable, "-c", prog, dsn, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _health(port: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
        return json.loads(r.read())


def _metrics(port: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return r.read().decode()


def test_labels_are_checked_stored_counted_and_bad_ones_dead_lettered(kafka_bootstrap, unique, tmp_path) -> None:
    dsn = f"chdb://{tmp_path / 'ch'}"
    port = str(free_port())
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPIC_SCORES": f"scores-{unique}", "TOPIC_DLQ": f"dlq-{unique}",
           "TOPIC_LABELS": f"labels-{unique}", "TOPIC_SHADOW_SCORES": f"shadow-{unique}",
           "SINK_APP_ID": f"sink-{unique}", "CLICKHOUSE_URL": dsn, "SINK_WEB_PORT": port,
           "SINK_BATCH_WAIT_MS": "200", "TOPIC_PARTITIONS": "2", **FAST_GROUP_ENV}
    # One window was scored (10.0.0.1); the others never were.
    score = {"window_start": WINDOW, "src_ip": "10.0.0.1", "ja4": JA4, "host": "shop.example", "anomaly_score": 0.9,
             "threat_level": "HIGH", "model_version": "v1", "scored_at": "2026-11-24T10:00:01Z"}
    _chdb(dsn, "ch.insert_scores([json.loads(sys.argv[2])])", json.dumps(score))
    good = [_label("10.0.0.1", analyst="ann", note="scraper pattern \u2603"), _label("10.0.0.2", "human")]
    bad = {
        b"unknown field": orjson.dumps(_label("10.0.0.3", lable="bot")),
        b"label value": orjson.dumps(_label("10.0.0.4", "maybe")),
        b"not json": b'{"window_start": "2026-11-24T10:00:00Z", "src_ip": ',
        b"oversized note": orjson.dumps(_label("10.0.0.5", note="x" * 5000)),
    }
    last = _label("10.0.0.6", "human")  # after every bad one: still stored
    messages = [(b"g", orjson.dumps(g)) for g in good] + [(k, v) for k, v in bad.items()] + [(b"g", orjson.dumps(last))]
    produce(kafka_bootstrap, env["TOPIC_LABELS"], messages)

    proc = subprocess.Popen([sys.executable, "-m", "stream_scorer.cli", "sink"], cwd=tmp_path, env={**os.environ, **env},
                            stdout=open(tmp_path / "sink.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, health = time.monotonic() + 90, {}
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = _health(port)
                if health["labels"]["stored"] + health["labels"]["dead_lettered"] >= 7:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert health.get("labels") == {"stored": 3, "unscored": 2, "dead_lettered": 4}, \
            (tmp_path / "sink.log").read_text()[-3000:]
        metrics = _metrics(port)
        assert 'ja4_sink_labels_total{outcome="stored"} 1.0' in metrics
        assert 'ja4_sink_labels_total{outcome="unscored"} 2.0' in metrics
        assert 'ja4_sink_labels_total{outcome="dead_lettered"} 4.0' in metrics
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)

    dlq = Collector(kafka_bootstrap, env["TOPIC_DLQ"])
    try:
        entries = {m.key(): (headers_of(m), m.value()) for m in dlq.until_count(4, timeout=30)}
    finally:
        dlq.close()
    assert set(entries) == set(bad)
    for key, (headers, value) in entries.items():
        assert headers["error-category"] == "label_invalid"
        assert headers["source-topic"] == env["TOPIC_LABELS"]
        assert headers["error"].startswith("labels: ")
        assert value == bad[key]  # the original bytes, for a replay after a fix
    assert "unknown field 'lable'" in entries[b"unknown field"][0]["error"]
    assert "'bot' or 'human'" in entries[b"label value"][0]["error"]
    assert "not JSON" in entries[b"not json"][0]["error"]
    assert "'note' is 5000 characters" in entries[b"oversized note"][0]["error"]

    rows = _chdb(dsn, "ch.client.query('SELECT src_ip, label, source, analyst, note FROM ja4.soc_labels "
                      "ORDER BY src_ip').result_rows")
    assert rows == [["10.0.0.1", "bot", "test", "ann", "scraper pattern \u2603"], ["10.0.0.2", "human", "test", "", ""],
                    ["10.0.0.6", "human", "test", "", ""]]


def test_labels_clickhouse_cannot_take_stop_the_sink_uncommitted_and_land_later(kafka_bootstrap, unique,
                                                                                 tmp_path) -> None:
    """soc_labels unwritable (replaced by a view: a ClickHouse error not about the rows): the
    sink retries, exits 75 without committing the labels, and once the table is back they land."""
    from confluent_kafka import Consumer, TopicPartition

    dsn = f"chdb://{tmp_path / 'ch'}"
    port = str(free_port())
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPIC_SCORES": f"scores-{unique}", "TOPIC_DLQ": f"dlq-{unique}",
           "TOPIC_LABELS": f"labels-{unique}", "TOPIC_SHADOW_SCORES": f"shadow-{unique}",
           "SINK_APP_ID": f"sink-{unique}", "CLICKHOUSE_URL": dsn, "SINK_WEB_PORT": port,
           "SINK_BATCH_WAIT_MS": "200", "TOPIC_PARTITIONS": "1", "OUTPUT_DELIVERY_ATTEMPTS": "2",
           "OUTPUT_RETRY_BACKOFF_S": "0.5", **FAST_GROUP_ENV}
    _chdb(dsn, "[ch.client.command(s) for s in sys.argv[2:]]", "RENAME TABLE ja4.soc_labels TO ja4.kept_labels",
          "CREATE VIEW ja4.soc_labels AS SELECT * FROM ja4.kept_labels")
    produce(kafka_bootstrap, env["TOPIC_LABELS"], [(b"k", orjson.dumps(_label(f"10.0.1.{i}"))) for i in range(5)])

    def run_sink() -> int:
        proc = subprocess.Popen([sys.executable, "-m", "stream_scorer.cli", "sink"], cwd=tmp_path,
                                env={**os.environ, **env}, stdout=open(tmp_path / "sink.log", "ab"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    if _health(port)["labels"]["stored"] >= 5:
                        break
                except OSError:
                    pass
                time.sleep(0.3)
            return proc.poll() if proc.poll() is not None else 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)

    assert run_sink() == 75, (tmp_path / "sink.log").read_text()[-3000:]
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": env["SINK_APP_ID"], "enable.auto.commit": False})
    try:
        (tp,) = c.committed([TopicPartition(env["TOPIC_LABELS"], 0)], timeout=10)
    finally:
        c.close()
    assert tp.offset < 0, "nothing committed past the unwritten labels"
    _chdb(dsn, "[ch.client.command(s) for s in sys.argv[2:]]", "DROP VIEW ja4.soc_labels",
          "RENAME TABLE ja4.kept_labels TO ja4.soc_labels")
    assert run_sink() == 0
    assert _chdb(dsn, "ch.client.query('SELECT count() FROM ja4.soc_labels').result_rows") == [[5]]
