"""The trainer's ClickHouse access on the embedded engine: schema, inserts, the baseline and
label rules, and values that would break formatted SQL stored and read back verbatim."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from ja4_core.errors import SchemaError
from ja4_core.clickhouse_io import (FEATURES_TABLE, HISTORY_TABLE, LABELS_TABLE, SCORES_TABLE, Decision, connect)

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
HOSTILE = [
    "'; DROP TABLE ja4.soc_labels; --",
    "\\' OR 1=1 --",
    "{start:Int64} {pos:Array(String)}",
    "%(start)s %s %%",
    "$$heredoc$$ $x$",
    "`backtick` \"double\" 'single'",
    "日本語 ünïcödé \t\n\r",
    "nul\x00byte",
    "a" * 5000,
]


def _row(i: int, *, hours_ago: float = 1.0, **extra: object) -> dict:
    ws = NOW - timedelta(hours=hours_ago)
    return {"window_start": ws.isoformat(), "src_ip": f"10.0.0.{i}", "ja4": "t13d1516h2_aaa_bbb",
            "host": "shop.example.com", "hits": float(i), "header_count": 10.0 + i, **extra}


def test_init_db_is_idempotent_and_creates_the_contract_tables(chdb_url: str) -> None:
    with connect(chdb_url) as ch:
        ch.init_db()
        ch.init_db()
        for table in (FEATURES_TABLE, SCORES_TABLE, LABELS_TABLE, HISTORY_TABLE):
            assert ch.columns(table), table
        scores = ch.columns(SCORES_TABLE)
        assert list(scores) == ["window_start", "src_ip", "ja4", "host", "anomaly_score", "eif_score", "ae_score",
                                "xgb_prob", "threat_level", "model_name", "model_version", "scored_at", "imputed",
                                "asn_number", "country_code", "browser_family", "bot_name", "reasons"]
        assert scores["threat_level"] == "LowCardinality(String)" and scores["ae_score"] == "Nullable(Float64)"
        engine = ch.client.query("SELECT engine_full FROM system.tables WHERE database = {d:String} AND name = {t:String}",
                                 parameters={"d": ch.database, "t": SCORES_TABLE}).result_rows[0][0]
        assert engine.startswith("ReplacingMergeTree(scored_at)")
        assert set(ch.columns(LABELS_TABLE)) >= {"window_start", "src_ip", "ja4", "host", "label", "source", "created_at"}
        assert ch.columns(FEATURES_TABLE)["hits"] == "Nullable(Float64)"


def test_hostile_strings_are_stored_and_read_back_verbatim(chdb_url: str) -> None:
    with connect(chdb_url) as ch:
        ch.init_db()
        rows = [{**_row(i), "src_ip": s, "ja4": s[::-1], "host": s, "bot_name": "", "country_code": s[:2],
                 "browser_family": s} for i, s in enumerate(HOSTILE)]
        ch.insert_features(rows)
        ch.insert_labels([{**r, "label": "bot", "source": s} for r, s in zip(rows, HOSTILE)])
        ch.insert_scores([{**r, "anomaly_score": 0.1, "eif_score": 0.1, "ae_score": None, "xgb_prob": None,
                           "threat_level": "NORMAL", "model_name": s, "model_version": s, "scored_at": NOW.isoformat(),
                           "imputed": [s]} for r, s in zip(rows, HOSTILE)])
        ch.record_decision(Decision("default", "reused", reason=HOSTILE[0] + HOSTILE[3], version=HOSTILE[2]))

        got = ch.client.query(f"SELECT src_ip, ja4, host, browser_family FROM {ch.table(FEATURES_TABLE)} "
                              "WHERE src_ip = {v:String}", parameters={"v": HOSTILE[0]}).result_rows
        assert got == [(HOSTILE[0], HOSTILE[0][::-1], HOSTILE[0], HOSTILE[0])]
        for s in HOSTILE:
            assert ch.client.query(f"SELECT count() FROM {ch.table(LABELS_TABLE)} WHERE source = {{v:String}}",
                                   parameters={"v": s}).result_rows[0][0] == 1
            assert ch.client.query(f"SELECT imputed FROM {ch.table(SCORES_TABLE)} WHERE model_version = {{v:String}}",
                                   parameters={"v": s}).result_rows == [([s],)]
        assert sorted(r[0] for r in ch.client.query(f"SELECT src_ip FROM {ch.table(FEATURES_TABLE)}").result_rows) == sorted(HOSTILE)
        decision = ch.last_decisions("default")[0]
        assert decision["reason"] == HOSTILE[0] + HOSTILE[3] and decision["version"] == HOSTILE[2]
        # Every row was labelled bot by its (hostile) key: the joins matched them all.
        feats = ch.usable_features(("hits", "header_count"))
        assert len(ch.baseline(feats, days=1, max_rows=1000, now=NOW)) == 0
        assert ch.labelled(feats, now=NOW).y.tolist() == [1] * len(HOSTILE)
        # The tables are all still there.
        assert ch.count(LABELS_TABLE) == len(HOSTILE) and ch.count(SCORES_TABLE) == len(HOSTILE)


def test_bring_your_own_features_adds_numeric_columns(chdb_url: str) -> None:
    with connect(chdb_url) as ch:
        ch.init_db(features=("hits",))
        ch.insert_features([_row(1, my_feature=0.5, note="text is ignored"), _row(2, my_feature=None)])
        cols = ch.columns(FEATURES_TABLE)
        assert cols["my_feature"] == "Nullable(Float64)" and "note" not in cols
        assert ch.usable_features(("my_feature", "hits", "absent")) == ("my_feature", "hits")
        base = ch.baseline(("my_feature", "hits"), days=1, now=NOW)
        assert np.isnan(base.X).sum() == 1 and sorted(base.X[:, 1].tolist()) == [1.0, 2.0]
        with pytest.raises(SchemaError, match="bad-name"):
            ch.insert_features([_row(3, **{"bad-name": 1.0})])
        with pytest.raises(SchemaError, match="src_ip"):
            ch.insert_features([{k: v for k, v in _row(4).items() if k != "src_ip"}])


def test_baseline_and_labels_follow_the_contract_rules(chdb_url: str) -> None:
    """Analyst labels win over score-derived ones; known bots and old rows stay out."""
    with connect(chdb_url) as ch:
        ch.init_db()
        rows = {name: _row(i, hits=float(i)) for i, name in enumerate(
            ["plain", "analyst_bot", "scored_high", "high_but_analyst_human", "known_bot", "old", "scored_normal",
             "relabelled"], start=1)}
        rows["known_bot"]["bot_name"] = "Googlebot"
        rows["old"]["window_start"] = (NOW - timedelta(days=9)).isoformat()
        ch.insert_features(list(rows.values()))
        t0 = NOW - timedelta(minutes=30)
        ch.insert_labels([{**rows["analyst_bot"], "label": "bot"},
                          {**rows["high_but_analyst_human"], "label": "human"},
                          {**rows["relabelled"], "label": "bot", "created_at": t0},
                          {**rows["relabelled"], "label": "human", "created_at": t0 + timedelta(minutes=5)}])

        def score(r: dict, level: str) -> dict:
            return {**r, "anomaly_score": 0.5, "eif_score": 0.5, "threat_level": level, "model_name": "default",
                    "model_version": "v1", "scored_at": NOW.timestamp()}
        ch.insert_scores([score(rows["scored_high"], "HIGH"), score(rows["high_but_analyst_human"], "CRITICAL"),
                          score(rows["scored_normal"], "NORMAL"), score(rows["plain"], "MEDIUM")])

        base = ch.baseline(("hits",), days=7, row_filter="empty(bot_name)", now=NOW)
        # plain (MEDIUM is neither), analyst human over CRITICAL, scored normal, relabelled human
        assert sorted(base.X[:, 0].tolist()) == [1.0, 4.0, 7.0, 8.0]
        everything = ch.baseline(("hits",), days=30, row_filter="", now=NOW)
        assert sorted(everything.X[:, 0].tolist()) == [1.0, 4.0, 5.0, 6.0, 7.0, 8.0]

        lab = ch.labelled(("hits",), now=NOW)
        got = {int(x): (int(y), s) for x, y, s in zip(lab.X[:, 0], lab.y, lab.source)}
        assert got == {2: (1, "analyst"), 3: (1, "score"), 4: (0, "analyst"), 7: (0, "score"), 8: (0, "analyst")}
        assert lab.n_pos == 2 and list(lab.times) == sorted(lab.times)
