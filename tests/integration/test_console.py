"""``stream-scorer console`` over HTTP (issue 18) on a real broker and the embedded ClickHouse,
read through the sink: the top windows of the last hour with reasons, filters, labels that go
through TOPIC_LABELS into soc_labels, the fleet's figures, and the access rules (a token, when
set, on every request and never printed; no start off loopback without one; labels only from
the page's own origin). On c1c1da8 there was no console (``stream-scorer console``: usage error)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from ja4_dev.processes import ProductProcess, python_module
from tests.helpers import FAST_GROUP_ENV, free_port, produce

TOKEN = "s3cret-console-token-0123"
JA4S = ("t13d1516h2_8daaf6152771_02713d6af862", "t13d1011h1_aaaaaaaaaaaa_bbbbbbbbbbbb")


def _start(args: list[str], env: dict, log: Path) -> ProductProcess:
    return ProductProcess(args[0], python_module("stream_scorer.cli", *args), env, log, cwd=log.parent).start()


def _http(url: str, *, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):  # type: ignore[no-untyped-def]
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=15) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _scores(now: datetime) -> list[dict]:
    window = now.replace(minute=0, second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    for i, (score, level) in enumerate([(0.99, "CRITICAL"), (0.95, "HIGH"), (0.7, "MEDIUM"), (0.2, "NORMAL")]):
        out.append({"window_start": window, "src_ip": f"10.1.0.{i}", "ja4": JA4S[i % 2],
                    "host": "shop.example" if i < 3 else "api.example", "anomaly_score": score, "eif_score": score,
                    "threat_level": level, "model_name": "default", "model_version": "v-test",
                    "scored_at": (now - timedelta(minutes=5)).isoformat(),
                    "reasons": [] if level == "NORMAL" else
                    [{"feature": "hit_velocity", "value": 41.0 + i, "median": 0.8, "p99": 3.1, "weight": 0.6}]})
    # Scored two hours ago: not in "the last hour".
    out.append({**out[0], "src_ip": "10.1.0.99", "scored_at": (now - timedelta(hours=2)).isoformat()})
    return out


def test_console_lists_filters_labels_and_guards(kafka_bootstrap, unique, tmp_path) -> None:
    now = datetime.now(timezone.utc)
    sink_port, console_port = str(free_port()), str(free_port())
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPIC_SCORES": f"scores-{unique}", "TOPIC_DLQ": f"dlq-{unique}",
           "TOPIC_LABELS": f"labels-{unique}", "TOPIC_SHADOW_SCORES": f"shadow-{unique}",
           "TOPIC_FEATURES": f"features-{unique}", "TOPIC_CONTROL": f"control-{unique}",
           "SCORER_APP_ID": f"scorer-{unique}", "SINK_APP_ID": f"sink-{unique}",
           "CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}", "SINK_WEB_PORT": sink_port, "CONSOLE_PORT": console_port,
           "CONSOLE_TOKEN": TOKEN, "SINK_BATCH_WAIT_MS": "200", "TOPIC_PARTITIONS": "2", **FAST_GROUP_ENV}

    # Off loopback without a token: refused at start, before anything is served.
    refused = subprocess.run([sys.executable, "-m", "stream_scorer.cli", "console", "--console-host", "0.0.0.0"],
                             env={**os.environ, **{k: v for k, v in env.items() if k != "CONSOLE_TOKEN"}},
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "CONSOLE_TOKEN: required" in refused.stderr, refused

    scores = _scores(now)
    produce(kafka_bootstrap, env["TOPIC_SCORES"], [(s["src_ip"].encode(), orjson.dumps(s)) for s in scores])
    # One message per produce call: the embedded broker counts offsets per batch, Kafka per record.
    for topic, value in [("TOPIC_DLQ", b"bad")] * 2 + [("TOPIC_FEATURES", b"{}")] * 5:  # no scorer: lag 5
        produce(kafka_bootstrap, env[topic], [(None, value)])
    sink = _start(["sink"], env, tmp_path / "sink.log")
    console = _start(["console"], env, tmp_path / "console.log")
    base = f"http://127.0.0.1:{console_port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        deadline, body = time.monotonic() + 90, b""
        while time.monotonic() < deadline:
            try:
                status, _, body = _http(f"{base}/api/rows", headers=auth)
                if status == 200 and len(json.loads(body)["rows"]) == 4:
                    break
            except OSError:
                pass
            assert sink.running and console.running
            time.sleep(0.5)
        rows = json.loads(body)["rows"]
        assert [r["src_ip"] for r in rows] == ["10.1.0.0", "10.1.0.1", "10.1.0.2", "10.1.0.3"], body
        assert rows[0]["threat_level"] == "CRITICAL" and rows[0]["model_version"] == "v-test"
        assert rows[0]["reasons"] == [{"feature": "hit_velocity", "value": 41.0, "median": 0.8, "p99": 3.1,
                                       "weight": 0.6}]
        assert rows[3]["reasons"] == [] and rows[0]["label"] is None

        def ips(query: str) -> list[str]:
            status, _, out = _http(f"{base}/api/rows?{query}", headers=auth)
            assert status == 200, out
            return [r["src_ip"] for r in json.loads(out)["rows"]]

        assert ips("level=CRITICAL,HIGH") == ["10.1.0.0", "10.1.0.1"]
        assert ips("host=API.") == ["10.1.0.3"]
        assert ips(f"ja4={JA4S[1][:10]}") == ["10.1.0.1", "10.1.0.3"]
        assert _http(f"{base}/api/rows?level=SEVERE", headers=auth)[0] == 400

        deadline = time.monotonic() + 30
        while True:
            st = json.loads(_http(f"{base}/api/status", headers=auth)[2])
            if st.get("dlq") == 2 and st.get("lag") == 5 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert (st.get("dlq"), st.get("lag")) == (2, 5), st
        assert "model" in st and "sink" in st["source"]

        # Access: the token on every request; the page's own origin only, JSON only.
        assert _http(f"{base}/api/rows")[0] == 401
        assert _http(f"{base}/api/rows", headers={"Authorization": "Bearer wrong-token-xxxxxxxx"})[0] == 401
        assert _http(f"http://127.0.0.1:{sink_port}/console/rows")[0] == 401  # the sink's side too
        status, headers, _ = _http(f"{base}/?token={TOKEN}")
        assert status == 302 and headers["Location"] == "/" and "HttpOnly" in headers["Set-Cookie"]
        cookie = headers["Set-Cookie"].split(";")[0]
        status, headers, page = _http(f"{base}/", headers={"Cookie": cookie})
        assert status == 200 and b"ja4-stream review" in page and "default-src 'self'" in headers["Content-Security-Policy"]

        row = rows[2]
        label = {k: row[k] for k in ("window_start", "src_ip", "ja4", "host")}
        post = {**auth, "Content-Type": "application/json"}
        assert _http(f"{base}/api/label", data=orjson.dumps({**label, "label": "spam"}), headers=post)[0] == 400
        assert _http(f"{base}/api/label", data=orjson.dumps({**label, "label": "bot", "x": 1}), headers=post)[0] == 400
        assert _http(f"{base}/api/label", data=orjson.dumps({**label, "label": "bot", "note": "n" * 1001}),
                     headers=post)[0] == 400
        assert _http(f"{base}/api/label", data=b"{not json", headers=post)[0] == 400
        assert _http(f"{base}/api/label", data=orjson.dumps({**label, "label": "bot"}),
                     headers={**post, "Origin": "http://evil.example"})[0] == 403
        assert _http(f"{base}/api/label", data=orjson.dumps({**label, "label": "bot"}),
                     headers={**auth, "Content-Type": "text/plain"})[0] == 415
        status, _, out = _http(f"{base}/api/label", data=orjson.dumps({**label, "label": "bot", "analyst": "ann"}),
                               headers=post)
        assert status == 200, out
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = {r["src_ip"]: r["label"] for r in json.loads(_http(f"{base}/api/rows", headers=auth)[2])["rows"]}
            if got.get(row["src_ip"]):
                break
            time.sleep(0.5)
        assert got[row["src_ip"]]["label"] == "bot" and got[row["src_ip"]]["analyst"] == "ann"
        assert got[row["src_ip"]]["source"] == "console"
        assert sum(v is not None for v in got.values()) == 1  # only the labelled row
    finally:
        console.stop(grace=30)
        sink.stop(grace=30)
    log = (tmp_path / "console.log").read_text()
    assert "review console on http://127.0.0.1:" in log and "(token required)" in log
    assert TOKEN not in log and TOKEN not in (tmp_path / "sink.log").read_text()


def test_a_clickhouse_server_is_read_directly(tmp_path) -> None:
    """With ``CLICKHOUSE_URL=http(s)://`` the console reads ClickHouse itself (here the same
    class on a chdb directory no process holds), with the same rows as through the sink."""
    import asyncio

    from ja4_core.settings import load_settings
    from stream_scorer.console_data import ClickHouseRows, ReviewQuery, SinkRows, row_source

    dsn = f"chdb://{tmp_path / 'ch'}"
    code = ("import json,sys; from ja4_core.clickhouse_io import connect; ch = connect(sys.argv[1]); ch.init_db(); "
            "ch.insert_scores(json.loads(sys.argv[2])); ch.close()")
    subprocess.run([sys.executable, "-c", code, dsn, json.dumps(_scores(datetime.now(timezone.utc)))], check=True)
    assert isinstance(row_source(load_settings(environ={"CLICKHOUSE_URL": "https://u:p@ch.example:8443/ja4"})),
                      ClickHouseRows)
    assert isinstance(row_source(load_settings(environ={"CLICKHOUSE_URL": dsn})), SinkRows)
    source = ClickHouseRows(load_settings(environ={"CLICKHOUSE_URL": dsn}))
    assert "u:p" not in ClickHouseRows(load_settings(environ={"CLICKHOUSE_URL": "https://u:p@h:8443/ja4"})).describe

    async def read() -> dict:
        try:
            return await source.rows(ReviewQuery.from_params({"level": "HIGH,CRITICAL"}))
        finally:
            await source.close()

    rows = asyncio.run(read())["rows"]
    assert [(r["src_ip"], r["threat_level"]) for r in rows] == [("10.1.0.0", "CRITICAL"), ("10.1.0.1", "HIGH")]
    assert rows[0]["reasons"][0]["feature"] == "hit_velocity" and rows[0]["label"] is None
