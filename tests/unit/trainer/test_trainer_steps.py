"""The trainer's run steps called one by one on in-memory data: no ClickHouse, no broker.

``plan_run`` and ``fit_and_evaluate`` are pure: they take what the read step would return
(:class:`trainer.inputs.TrainingInputs`, built here from the simulator) and return values; the
write step is checked on a temporary store, the announce step's catch-up without Kafka.
"""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from ja4_core.bundle import LoadedBundle, ModelStore, read_manifest
from ja4_core.clickhouse_io import Baseline, Labelled, to_epoch
from ja4_core.ensemble import impute
from ja4_core.features import DEFAULT_FEATURES
from ja4_core.settings import load_settings
from ja4_dev.simulator import TrafficSimulator
from trainer.announce import announce_pending, write_marker
from trainer.fit import FitConfig, train_cut
from trainer.inputs import TrainingInputs
from trainer.plan import MIN_BASELINE_ROWS, TRAIN_SHARE, TrainingPlan, plan_run
from trainer.prepare import select
from trainer.train import FitOutcome, fit_and_evaluate, manifest_extra, run_metrics
from trainer.write import write_version

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
FEATURES = tuple(DEFAULT_FEATURES[:12])
CONFIG = FitConfig(eif_ntrees=20, ae_epochs=1, nthreads=1)
SETTINGS = load_settings({"XGB_MIN_LABELS": "50", "MODEL_STORE": "/nonexistent/ja4-models"})


def _matrix(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    X = np.array([[r.get(f, np.nan) for f in FEATURES] for r in rows], dtype=np.float64)
    return X, np.array([to_epoch(r["window_start"]) for r in rows], dtype=np.int64)


def make_inputs(*, rate: int = 40, label_share: float = 0.0, shift: float = 0.0, now: datetime = NOW,
                current: LoadedBundle | None = None) -> TrainingInputs:
    """What the read step would return for simulated traffic ending at ``now``."""
    humans = TrafficSimulator(seed=1, bot_share=0.0).history(1, rate, end=now)
    X, times = _matrix(humans)
    X = X * (1.0 + shift) + shift
    every = TrafficSimulator(seed=2, bot_share=0.3).history(1, rate, end=now)
    labelled = [r for i, r in enumerate(every) if (i % 10) < 10 * label_share]  # spread over the day
    LX, ltimes = _matrix(labelled) if labelled else (np.zeros((0, len(FEATURES))), np.zeros(0, dtype=np.int64))
    y = np.array([r["label"] == "bot" for r in labelled], dtype=np.int32)
    start = int((now - timedelta(days=1)).timestamp())
    return TrainingInputs(
        model="default", now=now, features=FEATURES,
        baseline=Baseline(X=X, features=FEATURES, times=times, start=start, end=int(now.timestamp())),
        labels=Labelled(X=LX, y=y, source=np.array(["analyst"] * len(y), dtype=object), times=ltimes,
                        features=FEATURES),
        previous=None if current is None else current.version, current=current,
        why_no_current="first model" if current is None else "")


@pytest.fixture(scope="module")
def first() -> tuple[TrainingInputs, TrainingPlan, FitOutcome]:
    inputs = make_inputs(label_share=0.6)
    plan = plan_run(inputs, SETTINGS)
    return inputs, plan, fit_and_evaluate(inputs, plan, CONFIG, val_anomaly_gate=SETTINGS.val_anomaly_gate)


def as_current(first: tuple[TrainingInputs, TrainingPlan, FitOutcome], version: str = "v1") -> LoadedBundle:
    """The first run's model as the read step would load it back."""
    inputs, plan, outcome = first
    metrics = run_metrics(inputs, plan, outcome, version=version, val_anomaly_gate=SETTINGS.val_anomaly_gate)
    manifest = manifest_extra(inputs, plan, outcome, metrics, contamination=SETTINGS.eif_contamination)
    return LoadedBundle(model="default", version=version, path=Path("/nonexistent"), manifest=manifest,
                        manifest_sha256="0" * 64, ensemble=outcome.ensemble, size_bytes=0)


# --- plan ----------------------------------------------------------------------------------

def test_plan_skips_a_baseline_too_small_to_split() -> None:
    inputs = make_inputs(rate=2)
    assert len(inputs.baseline) < MIN_BASELINE_ROWS
    plan = plan_run(inputs, SETTINGS)
    assert (plan.action, plan.prepared, plan.supervised) == ("skip", None, None)
    assert plan.reason == f"{len(inputs.baseline)} baseline rows < {MIN_BASELINE_ROWS}: nothing trained"


def test_plan_of_a_first_model_makes_the_one_cut_and_the_supervised_plan(first) -> None:
    inputs, plan, _ = first
    assert (plan.action, plan.reason, plan.drift) == ("train", "first model", None)
    assert plan.prepared is not None and plan.supervised is not None
    assert plan.cut == train_cut(len(plan.prepared), TRAIN_SHARE)
    assert plan.cut_time == int(plan.prepared.times[plan.cut])
    assert plan.supervised.mode == "trained" and plan.supervised.eligible
    held = plan.supervised.held_out
    assert held is not None and np.array_equal(held, inputs.labels.times >= plan.cut_time)


def test_plan_without_labels_has_no_supervised_member() -> None:
    plan = plan_run(make_inputs(), SETTINGS)
    assert plan.action == "train" and plan.supervised is not None
    assert plan.supervised.mode == "none" and plan.supervised.held_out is None
    assert "labels < XGB_MIN_LABELS=50" in plan.supervised.reason


def test_plan_reuses_a_young_model_and_retrains_on_force_schedule_and_drift(first) -> None:
    current = as_current(first)
    later = NOW + timedelta(hours=2)
    reuse = plan_run(make_inputs(now=later, current=current), SETTINGS)
    assert reuse.action == "reuse" and reuse.reason.startswith("trained 2.0 h ago (< RETRAIN_INTERVAL_H=")
    assert reuse.drift is not None and not reuse.drift.forced and reuse.supervised is None
    assert reuse.drift_fields["drift_share"] == reuse.drift.share

    forced = plan_run(make_inputs(now=later, current=current, label_share=0.6), SETTINGS, force=True)
    assert (forced.action, forced.reason) == ("train", "forced")
    # The current XGBoost is younger than XGB_RETRAIN_INTERVAL_H: reused, not retrained.
    assert forced.supervised is not None and forced.supervised.mode == "reused"
    assert forced.supervised.reason == "reused from v1" and forced.supervised.eligible

    old = NOW + timedelta(hours=SETTINGS.retrain_interval_h + 1)
    scheduled = plan_run(make_inputs(now=old, current=current), SETTINGS)
    assert scheduled.action == "train" and scheduled.reason.startswith("scheduled: trained ")

    drifted = plan_run(make_inputs(now=later, current=current, shift=0.5), SETTINGS)
    assert (drifted.action, drifted.reason) == ("train", "drift")
    assert drifted.drift is not None and drifted.drift.forced and drifted.drift_fields["drift_forced"]


# --- fit and evaluate ----------------------------------------------------------------------

def test_fit_and_evaluate_alone_reuses_the_validation_scores_of_the_fit(first) -> None:
    inputs, plan, outcome = first
    assert plan.prepared is not None
    ens = outcome.ensemble
    assert outcome.rejected is None and outcome.xgb_mode == "trained" and ens.xgb is not None
    assert outcome.fit.n_train == plan.cut and outcome.fit.n_val == len(plan.prepared) - plan.cut
    # The report's validation columns are what the ensemble gives on the imputed validation rows.
    X_val = impute(plan.prepared.X[plan.cut:], ens.medians)[0]
    fresh = ens.score(X_val)
    np.testing.assert_allclose(outcome.neg["eif"], fresh.eif)
    np.testing.assert_allclose(outcome.neg["ensemble"], fresh.anomaly)
    np.testing.assert_allclose(outcome.smoke_rows, X_val[:len(outcome.smoke_rows)])
    levels = list(ens.thresholds.values())
    assert levels == sorted(levels)
    assert outcome.pos is not None and "ensemble" in outcome.evaluation
    assert outcome.labels.n_labels == len(inputs.labels) and outcome.supervised is not None


def test_the_combination_is_fitted_on_scores_the_supervised_member_never_trained_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """XGBoost learns from every label, the held-out ones included, so on those rows its own
    scores are in-sample: with labels that carry no signal it still separates them there. The
    evidence the weights are fitted on must hold its out-of-fold scores instead, which are
    at chance, as the labels are."""
    import trainer.train
    from trainer.combine import roc_auc
    from trainer.labels import out_of_fold

    inputs = make_inputs(label_share=0.6)
    rng = np.random.default_rng(7)
    noise = (rng.random(len(inputs.labels)) < 0.3).astype(np.int32)  # labels independent of the rows
    inputs = replace(inputs, labels=replace(inputs.labels, y=noise))
    plan = plan_run(inputs, SETTINGS)
    assert plan.supervised is not None and plan.supervised.mode == "trained"
    held = plan.supervised.held_out
    assert held is not None
    seen: dict[str, object] = {}
    real = trainer.train.decide_weights

    def spy(config, val_scores, *, labelled=None, constructed=None):  # type: ignore[no-untyped-def]
        seen["labelled"] = labelled
        return real(config, val_scores, labelled=labelled, constructed=constructed)

    monkeypatch.setattr(trainer.train, "decide_weights", spy)
    outcome = fit_and_evaluate(inputs, plan, CONFIG, val_anomaly_gate=1.0)
    labelled = seen["labelled"]
    assert labelled is not None
    scores, y = labelled  # type: ignore[misc]
    # bots first, then humans: the held-out rows in that order
    L = impute(select(inputs.labels.X[held], FEATURES, plan.prepared.features), outcome.ensemble.medians)[0]
    order = np.concatenate([np.flatnonzero(noise[held] == 1), np.flatnonzero(noise[held] == 0)])
    full = impute(select(inputs.labels.X, FEATURES, plan.prepared.features), outcome.ensemble.medians)[0]
    oof = out_of_fold(full, noise, nthreads=CONFIG.nthreads)[:, 1][held]
    np.testing.assert_allclose(scores["xgb"], oof[order])
    assert outcome.ensemble.xgb is not None
    in_sample = outcome.ensemble.xgb.score(L[order])
    auc_in, auc_oof = roc_auc(in_sample[y == 0], in_sample[y == 1]), roc_auc(oof[order][y == 0], oof[order][y == 1])
    assert auc_in > auc_oof + 0.1 and abs(auc_oof - 0.5) < 0.15
    assert outcome.supervised is not None and "out-of-fold" in outcome.supervised["note"]


def test_the_levels_are_set_on_the_validation_split_weighted_by_the_supervised_members_verdict() -> None:
    """With a supervised member the threat levels come from the whole validation split (the
    score the worker computes, on thousands of rows), each row weighted by its probability of
    being human; the report records the rates on the analysts' humans next to them, and the
    recall of the held-out labelled bots at each level and at 1 % / 5 % human false alerts."""
    inputs = make_inputs(rate=100, label_share=1.0)
    plan = plan_run(inputs, SETTINGS)
    assert plan.supervised is not None and plan.supervised.mode == "trained"
    outcome = fit_and_evaluate(inputs, plan, CONFIG, val_anomaly_gate=1.0)
    combination = outcome.ensemble.combination
    assert combination is not None
    assert combination["levels_set_on"].startswith(f"{outcome.fit.n_val} validation rows weighted")
    for level, rates in combination["levels"].items():
        assert abs(rates["validation"] - rates["design"]) <= max(rates["design"] / 2, 2 / outcome.fit.n_val), level
        assert "labelled_humans" in rates
    recall = outcome.operating_point["recall"]
    assert set(recall) == {"LOW", "MEDIUM", "HIGH", "CRITICAL", "at_1pct_human_alerts", "at_5pct_human_alerts"}
    assert recall["LOW"] >= recall["at_5pct_human_alerts"] >= recall["at_1pct_human_alerts"] >= recall["CRITICAL"]


def test_without_a_supervised_member_the_levels_are_set_on_the_analysts_humans() -> None:
    """Too few labels for XGBoost (XGB_MIN_LABELS): the analysts' humans of the label window
    set the levels when there are enough of them, never score-derived "humans" (rows a model
    already scored low)."""
    from trainer.fit import MIN_REFERENCE_HUMANS

    inputs = make_inputs(rate=100, label_share=1.0)
    settings = load_settings({"XGB_MIN_LABELS": "100000", "MODEL_STORE": "/nonexistent/ja4-models"})
    plan = plan_run(inputs, settings)
    assert plan.supervised is not None and plan.supervised.mode == "none"
    expected = int(np.sum(inputs.labels.y == 0))
    assert expected >= MIN_REFERENCE_HUMANS
    outcome = fit_and_evaluate(inputs, plan, CONFIG, val_anomaly_gate=1.0)
    assert outcome.ensemble.combination is not None
    assert outcome.ensemble.combination["levels_set_on"] == f"{expected} analyst-labelled humans"

    scored = replace(inputs, labels=replace(inputs.labels, source=np.array(["score"] * len(inputs.labels), dtype=object)))
    outcome = fit_and_evaluate(scored, plan_run(scored, settings), CONFIG, val_anomaly_gate=1.0)
    assert outcome.ensemble.combination is not None
    assert "validation rows (unlabelled" in outcome.ensemble.combination["levels_set_on"]


def test_fit_and_evaluate_refuses_a_contaminated_baseline(first) -> None:
    inputs, plan, _ = first
    outcome = fit_and_evaluate(inputs, plan, CONFIG, val_anomaly_gate=0.0)
    assert outcome.rejected is not None and outcome.rejected.startswith("validation anomaly rate ")
    assert outcome.rejected.endswith("no version stays current")


def test_fit_and_evaluate_needs_a_training_plan() -> None:
    inputs = make_inputs(rate=2)
    with pytest.raises(ValueError, match="training plan"):
        fit_and_evaluate(inputs, plan_run(inputs, SETTINGS), CONFIG, val_anomaly_gate=0.2)


def test_the_fit_step_does_no_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the network, ClickHouse, the model store and the control topic out of reach and
    an empty working directory, the fit step still fits, and leaves no file behind."""
    import ja4_core.bundle
    import ja4_core.clickhouse_io
    import trainer.publish

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fit step did I/O")

    inputs = make_inputs(label_share=0.6)
    plan = plan_run(inputs, SETTINGS)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(ja4_core.clickhouse_io, "connect", refuse)
    monkeypatch.setattr(ja4_core.bundle.ModelStore, "__init__", refuse)
    monkeypatch.setattr(ja4_core.bundle, "write_bundle", refuse)
    monkeypatch.setattr(trainer.publish, "publish_activate", refuse)
    monkeypatch.chdir(tmp_path)
    outcome = fit_and_evaluate(inputs, plan, CONFIG, val_anomaly_gate=SETTINGS.val_anomaly_gate)
    assert outcome.rejected is None and outcome.ensemble.xgb is not None
    assert os.listdir(tmp_path) == []


# --- write and the announce step's catch-up ------------------------------------------------

def test_write_returns_the_hash_the_announcement_carries_and_the_catch_up_trusts_the_marker(
        first, tmp_path: Path) -> None:
    inputs, plan, outcome = first
    store = ModelStore(tmp_path / "models")
    metrics = run_metrics(inputs, plan, outcome, version="20260601T000000000Z-abcd",
                          val_anomaly_gate=SETTINGS.val_anomaly_gate)
    written = write_version(store, outcome.ensemble, model="default", version="20260601T000000000Z-abcd",
                            extra=manifest_extra(inputs, plan, outcome, metrics, contamination=0.05),
                            smoke_rows=outcome.smoke_rows, keep=2)
    manifest, sha = read_manifest(written.info.path)
    assert written.manifest_sha256 == sha and store.current("default") == "20260601T000000000Z-abcd"
    assert manifest["reason"] == "first model" and manifest["digest_rows"] == len(inputs.baseline)
    # Nothing to announce when the marker confirms this version on this topic and broker:
    # no Kafka is reachable at this address, and none is needed.
    settings = load_settings({"MODEL_STORE": str(tmp_path / "models"), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    write_marker(store, "default", settings, "20260601T000000000Z-abcd", sha)
    assert announce_pending(settings, store, "default", timeout=1.0) == (None, None)
    # A marker of another broker does not count.
    other = replace(settings, kafka_bootstrap_servers="127.0.0.1:10")
    version, error = announce_pending(other, store, "default", timeout=1.0)
    assert version is None and error
