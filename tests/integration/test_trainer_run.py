"""Trainer runs on the embedded ClickHouse and the real test broker.

Data come from the traffic simulator with a fixed clock (``NOW``); settings are small
(50 trees, 3 epochs) except where a test is about them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ja4_core.bundle import ModelStore, load_bundle, new_version, smoke_check
from ja4_core.control import parse_control
from ja4_core.ensemble import impute
from ja4_core.errors import BundleError, ControlError
from ja4_core.features import DEFAULT_FEATURES, KEY_FIELDS
from ja4_core.settings import Settings, load_settings
from ja4_dev.simulator import BOT_KINDS, TrafficSimulator
from ja4_core.clickhouse_io import connect
from trainer.publish import read_control_latest
from trainer.run import Trainer

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
SIGNING_KEY = "test-signing-key"


def settings_for(chdb_url: str, tmp_path: Path, bootstrap: str, unique: str, **env: str) -> Settings:
    return load_settings({
        "CLICKHOUSE_URL": chdb_url, "MODEL_STORE": str(tmp_path / "models"), "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TOPIC_CONTROL": f"trainer-control-{unique}", "CONTROL_SIGNING_KEY": SIGNING_KEY,
        "EIF_NTREES": "50", "AE_EPOCHS": "3", "BASELINE_DAYS": "3", "LOG_LEVEL": "warning",
        "PROMOTION_POLICY": "direct", **env})  # a retrain goes live at once (the shadow policy: test_champion_judge)


def load(chdb_url: str, *, seed: int, days: float, rate: int, end: datetime, bot_share: float = 0.1,
         label_share: float = 0.0, kinds: tuple[str, ...] = BOT_KINDS,
         transform: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Simulated history into the feature table, analyst labels for ``label_share`` of it."""
    rows = TrafficSimulator(seed=seed, bot_share=bot_share, kinds=kinds).history(days, rate, end=end)
    if transform:
        transform(rows)
    rng = np.random.default_rng(seed)
    labelled = [{**{k: r[k] for k in KEY_FIELDS}, "label": r["label"]} for r in rows if rng.random() < label_share]
    with connect(chdb_url) as ch:
        ch.init_db()
        ch.insert_features(rows)
        ch.insert_labels(labelled)
    return rows


def decisions(chdb_url: str) -> list[dict]:
    with connect(chdb_url) as ch:
        return ch.last_decisions("default", 20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_first_run_trains_all_three_models_and_announces_a_verifiable_version(
        chdb_url: str, tmp_path: Path, kafka_bootstrap: str, unique: str) -> None:
    s = settings_for(chdb_url, tmp_path, kafka_bootstrap, unique)
    load(chdb_url, seed=1, days=3, rate=120, end=NOW, label_share=0.3)

    result = Trainer(s).run_once(now=NOW)

    assert result.decision == "trained", result.reason
    assert result.metrics["xgb"] == "trained" and result.published == result.version and result.publish_error is None
    # The announcement, read back from the compacted topic, verifies and names a loadable bundle.
    entry = read_control_latest(s)["default"]
    assert entry.error is None and entry.value is not None
    msg = parse_control(entry.value, (SIGNING_KEY,))
    assert (msg.type, msg.model, msg.version, msg.rollback) == ("activate", "default", result.version, False)
    with pytest.raises(ControlError, match="signature"):
        parse_control(entry.value, ("another-key",))
    store = ModelStore(s.model_store)
    bundle = load_bundle(store.resolve_uri(msg.uri, msg.model, msg.version), expected_manifest_sha256=msg.manifest_sha256)
    smoke_check(bundle)
    ens = bundle.ensemble
    assert ens.eif is not None and ens.ae is not None and ens.xgb is not None
    m = bundle.manifest
    assert set(m["digest"]) == set(ens.features) and len(m["digest"][ens.features[0]]["quantiles"]) == 9
    assert {"validation", "training_window", "pruned_features", "eif_threshold", "supervised", "smoke"} <= set(m)
    assert m["supervised"]["labels"]["n_flagged"] >= 0 and store.current("default") == result.version

    # Quality on fresh ground truth the trainer never saw.
    fresh = TrafficSimulator(seed=99, bot_share=0.3).records(3000, start=NOW, span_s=86400)
    X = np.array([[r.get(f, np.nan) for f in ens.features] for r in fresh], dtype=float)
    y = np.array([r["label"] == "bot" for r in fresh])
    batch = ens.score(impute(X, ens.medians)[0])
    assert roc_auc_score(y, batch.anomaly) > 0.9
    assert roc_auc_score(y, batch.eif) > 0.85 and roc_auc_score(y, batch.xgb) > 0.85

    # Report and history.
    assert (result.report_dir / "report.html").stat().st_size > 10_000
    metrics = json.loads((result.report_dir / "metrics.json").read_text())
    assert metrics["evaluation"]["ensemble"]["roc_auc"] > 0.8 and metrics["labels"]["n_labels"] > 100
    assert not str(result.report_dir).startswith(str(bundle.path))
    row = decisions(chdb_url)[0]
    assert (row["decision"], row["version"], row["xgb_trained"]) == ("trained", result.version, 1)


def test_a_second_run_inside_the_interval_without_drift_reuses(
        chdb_url: str, tmp_path: Path, kafka_bootstrap: str, unique: str) -> None:
    s = settings_for(chdb_url, tmp_path, kafka_bootstrap, unique)
    load(chdb_url, seed=2, days=3, rate=100, end=NOW)
    trainer = Trainer(s)
    first = trainer.run_once(now=NOW)
    second = trainer.run_once(now=NOW + timedelta(hours=2))

    assert first.decision == "trained" and second.decision == "reused"
    assert second.version == first.version and second.published is None  # already announced
    assert ModelStore(s.model_store).versions("default") == [first.version]
    assert second.drift is not None and second.drift.share < s.drift_threshold
    rows = decisions(chdb_url)
    assert [r["decision"] for r in rows] == ["reused", "trained"]
    assert rows[0]["drift_share"] is not None and rows[0]["drift"]["features"]


def test_a_shifted_baseline_is_drift_and_forces_a_retrain(
        chdb_url: str, tmp_path: Path, kafka_bootstrap: str, unique: str) -> None:
    s = settings_for(chdb_url, tmp_path, kafka_bootstrap, unique, BASELINE_DAYS="1", RETRAIN_INTERVAL_H="1000")
    load(chdb_url, seed=3, days=1, rate=120, end=NOW)
    trainer = Trainer(s)
    first = trainer.run_once(now=NOW)

    def shift(rows: list[dict]) -> None:
        for r in rows:
            for f in DEFAULT_FEATURES[:20]:
                r[f] = r[f] * 1.5 + 1.0
    load(chdb_url, seed=4, days=1, rate=120, end=NOW + timedelta(days=1), transform=shift)
    second = trainer.run_once(now=NOW + timedelta(days=1))

    assert first.decision == "trained"
    assert second.decision == "drift" and second.reason == "drift"
    assert second.drift is not None and second.drift.forced and second.drift.share >= s.drift_threshold
    assert set(second.drift.drifted) >= set(DEFAULT_FEATURES[:10]) - set(first.metrics["pruned_features"])
    assert ModelStore(s.model_store).current("default") == second.version != first.version
    assert read_control_latest(s)["default"].message.version == second.version
    row = decisions(chdb_url)[0]
    assert row["decision"] == "drift" and row["drift_forced"] == 1 and row["drifted_features"]
    assert "features drifted" in (second.report_dir / "report.html").read_text()


def test_a_contaminated_baseline_is_refused_and_the_previous_version_stays(
        chdb_url: str, tmp_path: Path, kafka_bootstrap: str, unique: str) -> None:
    s = settings_for(chdb_url, tmp_path, kafka_bootstrap, unique, RETRAIN_INTERVAL_H="0")
    load(chdb_url, seed=5, days=3, rate=120, end=NOW, bot_share=0.02)
    trainer = Trainer(s)
    first = trainer.run_once(now=NOW)
    # An attack in the last hours: unlabelled bots flood the (time-ordered) validation split.
    attack = tuple(k for k in BOT_KINDS if k != "known_crawler")
    load(chdb_url, seed=6, days=0.25, rate=300, end=NOW + timedelta(hours=6), bot_share=0.8, kinds=attack)
    second = trainer.run_once(now=NOW + timedelta(hours=6))

    assert first.decision == "trained"
    assert second.decision == "rejected", second.reason
    assert second.metrics["val_anomaly_rate"] > s.val_anomaly_gate
    store = ModelStore(s.model_store)
    assert store.current("default") == first.version and store.versions("default") == [first.version]
    assert second.current == first.version and second.published is None
    assert read_control_latest(s)["default"].message.version == first.version
    row = decisions(chdb_url)[0]
    assert row["decision"] == "rejected" and row["current_version"] == first.version
    assert row["val_anomaly_rate"] > 0.2 and row["version"] == second.version
    assert json.loads((second.report_dir / "metrics.json").read_text())["decision"] == "rejected"


def test_purge_keeps_n_versions_and_never_the_current(
        chdb_url: str, tmp_path: Path, kafka_bootstrap: str, unique: str) -> None:
    s = settings_for(chdb_url, tmp_path, kafka_bootstrap, unique, MODEL_HISTORY_COUNT="2", RETRAIN_INTERVAL_H="0",
                     EIF_NTREES="20", AE_EPOCHS="1", BASELINE_DAYS="1")
    load(chdb_url, seed=7, days=1, rate=100, end=NOW)
    trainer = Trainer(s)
    runs = [trainer.run_once(now=NOW) for _ in range(3)]
    store = ModelStore(s.model_store)
    v1, v2, v3 = (r.version for r in runs)
    assert all(r.decision == "trained" for r in runs)
    assert store.versions("default") == [v2, v3] and store.current("default") == v3
    assert runs[2].purged == [v1]
    assert not (runs[0].report_dir).exists() and runs[1].report_dir.exists()  # reports follow their bundles

    rollback = trainer.activate(v2)  # the operator goes back to the older one
    assert rollback.published == v2 and store.current("default") == v2
    entry = read_control_latest(s)["default"]
    assert entry.message.version == v2 and entry.message.rollback
    assert store.purge("default", 1) == []  # v3 is newer, but v2 is current: nothing may go
    assert store.versions("default") == [v2, v3]
    with pytest.raises(BundleError):
        trainer.activate(v1)  # purged: cannot be activated


def test_an_interrupted_write_leaves_nothing_a_scorer_would_load(
        chdb_url: str, tmp_path: Path, kafka_bootstrap: str, unique: str) -> None:
    s = settings_for(chdb_url, tmp_path, kafka_bootstrap, unique, EIF_NTREES="20", AE_EPOCHS="1", BASELINE_DAYS="1")
    load(chdb_url, seed=8, days=1, rate=100, end=NOW)
    trainer = Trainer(s)
    first = trainer.run_once(now=NOW)
    store = ModelStore(s.model_store)
    base = store.model_dir("default")
    # What a trainer killed in write_bundle leaves: a complete-looking temp dir, a partial one...
    complete = base / f".tmp-{new_version()}-dead"
    shutil.copytree(store.bundle_dir("default", first.version), complete)
    partial = base / f".tmp-{new_version()}-beef"
    partial.mkdir()
    (partial / "eif.isotree").write_bytes(b"\x00" * 100)
    # ... and what a non-atomic writer would leave under a final name: files but no manifest.
    torn = base / new_version()
    torn.mkdir()
    shutil.copy(store.bundle_dir("default", first.version) / "eif.isotree", torn / "eif.isotree")

    assert store.versions("default") == [first.version]
    assert store.current("default") == first.version
    with pytest.raises(BundleError):
        load_bundle(torn)

    second = trainer.run_once(now=NOW, force=True)
    assert second.decision == "trained"
    assert store.versions("default") == [first.version, second.version]
    assert read_control_latest(s)["default"].message.version == second.version
    # Leftovers older than an hour are swept by the next purge.
    old = (NOW - timedelta(hours=2)).timestamp()
    for leftover in (complete, partial):
        os.utime(leftover, (old, old))
    trainer.run_once(now=NOW, force=True)
    assert not complete.exists() and not partial.exists()


def test_kafka_down_keeps_the_bundle_and_the_next_run_announces_it(
        chdb_url: str, tmp_path: Path, kafka_bootstrap: str, unique: str) -> None:
    down = settings_for(chdb_url, tmp_path, f"127.0.0.1:{free_port()}", unique, EIF_NTREES="20", AE_EPOCHS="1")
    load(chdb_url, seed=9, days=2, rate=100, end=NOW)
    first = Trainer(down, publish_timeout_s=2.0).run_once(now=NOW)

    assert first.decision == "trained" and first.published is None and first.publish_error
    store = ModelStore(down.model_store)
    assert store.current("default") == first.version
    load_bundle(store.bundle_dir("default", first.version))

    up = settings_for(chdb_url, tmp_path, kafka_bootstrap, unique, EIF_NTREES="20", AE_EPOCHS="1")
    second = Trainer(up).run_once(now=NOW + timedelta(hours=1))
    assert second.decision == "reused" and second.published == first.version and second.publish_error is None
    assert read_control_latest(up)["default"].message.version == first.version
    third = Trainer(up).run_once(now=NOW + timedelta(hours=1))
    assert third.published is None  # announced once, not again


def test_a_second_trainer_gives_up_cleanly_while_the_lock_is_held(
        chdb_url: str, tmp_path: Path, kafka_bootstrap: str, unique: str) -> None:
    s = settings_for(chdb_url, tmp_path, kafka_bootstrap, unique)
    trainer = Trainer(s)
    trainer.lock_wait_s = 0.3
    with ModelStore(s.model_store).lock("default"):
        result = trainer.run_once(now=NOW)
    assert result.decision == "locked" and "another trainer" in result.reason
    assert ModelStore(s.model_store).versions("default") == []
