"""deploy/clickhouse/kafka_engine.sql on the real ClickHouse engine (chdb): every statement
runs, and records reach the tables through its views.

CI has no broker that ClickHouse's Kafka engine could read, so each ``ENGINE = Kafka`` table
is replaced by a Null-engine stand-in with the Kafka engine's virtual columns (``_error``,
``_raw_message``, ``_topic``, ``_partition``, ``_offset``); inserting JSONEachRow into the
stand-in (with the Kafka table's input format settings) fires the views as a consumed
message would. Everything else in the file runs as written.
"""

from __future__ import annotations

import json
import re

import pytest

from ja4_core.clickhouse_io import connect
from tests.helpers import REPO

SQL = (REPO / "deploy" / "clickhouse" / "kafka_engine.sql").read_text(encoding="utf-8")
VIRTUAL = ", `_error` String, `_raw_message` String, `_topic` String, `_partition` UInt64, `_offset` UInt64"
KAFKA_ENGINE = re.compile(r"\)\s*ENGINE = Kafka\s+SETTINGS(.*)$", re.S)


def statements() -> tuple[list[str], dict[str, str]]:
    """The file's statements with Kafka tables stood in for, and each stand-in's settings."""
    body = "\n".join(line.split("--", 1)[0] if not line.lstrip().startswith("--") else ""
                     for line in SQL.splitlines())
    out, settings = [], {}
    for stmt in (s.strip() for s in body.split(";")):
        if not stmt:
            continue
        m = KAFKA_ENGINE.search(stmt)
        if m:
            table = re.search(r"CREATE TABLE IF NOT EXISTS (\S+)", stmt).group(1)
            settings[table] = ", ".join(kv.strip() for kv in m.group(1).split(",")
                                        if kv.strip().startswith("input_format_"))
            stmt = stmt[:m.start()] + VIRTUAL + ") ENGINE = Null"
        out.append(stmt)
    return out, settings


@pytest.fixture
def ch(chdb_url: str):
    with connect(chdb_url) as client:
        stmts, settings = statements()
        for stmt in stmts:
            client.client.command(stmt)
        client.kafka_settings = settings  # type: ignore[attr-defined]
        yield client


def consume(ch, table: str, docs: list[dict]) -> None:
    """What the Kafka engine does with messages: JSONEachRow into the table, its settings on."""
    rows = "\n".join(json.dumps(d) for d in docs)
    ch.client.command(f"INSERT INTO {table} SETTINGS {ch.kafka_settings[table]} FORMAT JSONEachRow\n{rows}")


SCORE = {"window_start": "2026-12-01T10:00:00Z", "src_ip": "10.0.0.1", "ja4": "t13d1516h2_8daaf6152771_b0da82dd1658",
         "host": "example.com", "anomaly_score": 0.91, "eif_score": 0.8, "ae_score": 0.7, "xgb_prob": None,
         "threat_level": "HIGH", "model_name": "ja4", "model_version": "v2", "scored_at": "2026-12-01T10:01:00.123Z",
         "imputed": [], "country_code": "DE", "reasons": [{"feature": "f", "value": 1.0, "median": 0.0, "p99": 0.5,
                                                            "weight": 0.9}]}


def test_every_statement_runs_and_scores_reach_ml_all_scores(ch) -> None:
    consume(ch, "ja4.ml_all_scores_kafka", [SCORE, {**SCORE, "window_start": 1796119200, "src_ip": "10.0.0.2"},
                                            {**SCORE, "src_ip": "", "model_version": "v2"}])
    rows = ch.client.query("SELECT src_ip, toUnixTimestamp(window_start), threat_level, reasons "
                           "FROM ja4.ml_all_scores FINAL ORDER BY src_ip").result_rows
    assert [r[:3] for r in rows] == [("10.0.0.1", 1796119200, "HIGH"), ("10.0.0.2", 1796119200, "HIGH")]
    assert json.loads(rows[0][3])[0]["feature"] == "f"
    errors = ch.client.query("SELECT error FROM ja4.ml_all_scores_kafka_errors").result_rows
    assert len(errors) == 1 and "missing or invalid" in errors[0][0]


def test_shadow_scores_reach_ml_shadow_scores_for_the_judge(ch) -> None:
    shadow = {k: SCORE[k] for k in ("window_start", "src_ip", "ja4", "host", "anomaly_score", "threat_level",
                                    "model_name", "scored_at")}
    shadow.update(model_version="v3", champion_version="v2", champion_anomaly_score=0.4, champion_threat_level="LOW")
    consume(ch, "ja4.ml_shadow_scores_kafka", [shadow, shadow, {**shadow, "champion_version": ""}])
    rows = ch.client.query("SELECT model_version, champion_version, anomaly_score, champion_threat_level "
                           "FROM ja4.ml_shadow_scores FINAL").result_rows
    assert rows == [("v3", "v2", 0.91, "LOW")]
