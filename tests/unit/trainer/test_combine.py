"""The trainer decides the combination from evidence (issue 16): members on one scale, weight
only for a member that adds ranking power, labels fitted on validation rows only, explicit
weights as overrides, old bundles unchanged; and the quality benchmark runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import quality
from ja4_core.bundle import ModelStore, load_bundle, write_bundle
from ja4_core.ensemble import normalise
from trainer.combine import decide_combination, quantile_table, roc_auc
from trainer.fit import FitConfig, fit_ensemble

rng = np.random.default_rng(7)
SMALL = FitConfig(eif_ntrees=20, ae_epochs=2, nthreads=1)


def test_normalisation_keeps_each_members_ranking_everywhere():
    val = rng.gamma(2.0, 1.0, 500)
    t = quantile_table(val)
    s = np.concatenate([np.linspace(-5, 30, 2000), val])
    u = normalise(s, t)
    order = np.argsort(s, kind="stable")
    assert np.all(np.diff(u[order]) >= 0) and np.all((u > 0) & (u < 1))
    assert np.all(np.diff(normalise(np.array([20.0, 25.0, 30.0]), t)) > 0)  # beyond every human
    assert abs(np.mean(normalise(val, t) <= 0.9) - 0.9) < 0.02  # a position among humans


def test_a_member_that_ranks_at_chance_gets_no_weight():
    n = 2000
    val = {"eif": rng.normal(0, 1, n), "ae": rng.normal(0, 1, n)}
    # on every kind of constructed anomaly the EIF ranks them higher; the AE is at chance
    constructed = {kind: {"eif": rng.normal(shift, 1, n), "ae": rng.normal(0, 1, n)}
                   for kind, shift in (("shuffle", 1.0), ("range", 2.0), ("box", 3.0))}
    c = decide_combination(val, constructed_scores=constructed)
    assert c.ae_weight == 0.0 and c.method == "evidence"
    assert c.evidence["constructed"]["earned"] is False
    # ... and with labels, a supervised member at chance gets no weight either
    val["xgb"] = rng.random(n)
    y = np.r_[np.zeros(300), np.ones(100)].astype(int)
    lab = {"eif": np.r_[rng.normal(0, 1, 300), rng.normal(2, 1, 100)],
           "ae": rng.normal(0, 1, 400), "xgb": rng.random(400)}
    c = decide_combination(val, constructed_scores=constructed, labelled=(lab, y))
    assert (c.ae_weight, c.xgb_weight, c.method) == (0.0, 0.0, "labels")


def test_a_member_that_adds_ranking_power_gets_weight():
    n = 2000
    val = {"eif": rng.normal(0, 1, n), "ae": rng.normal(0, 1, n)}
    # two independent views, each seeing half the signal: the blend beats either alone
    constructed = {kind: {"eif": rng.normal(1.0, 1, n), "ae": rng.normal(1.0, 1, n)} for kind in ("shuffle", "range")}
    c = decide_combination(val, constructed_scores=constructed)
    assert 0.3 <= c.ae_weight <= 0.7
    assert c.evidence["constructed"]["earned"] is True


def test_explicit_weights_are_used_as_given_on_raw_scores():
    val = {"eif": rng.random(100), "ae": rng.random(100)}
    c = decide_combination(val, ae_override=0.3, xgb_override=0.2)
    assert (c.ae_weight, c.xgb_weight, c.method) == (0.3, 0.0, "override")
    assert c.to_manifest()["tables"] is None  # the original's blend of raw scores


def _cluster(n, d, shift=0.0):
    X = rng.normal(0, 1, (n, d))
    X[:, 0] += shift
    return X


def test_with_labels_the_combination_is_fitted_on_validation_rows_only(tmp_path):
    """XGBoost trains on labelled rows where feature 0 separates bots (it learns exactly that);
    on the labelled rows of the validation period the bots differ in feature 1 instead, so
    XGBoost ranks them at chance there. The weights must follow the validation rows: the
    supervised member, perfect on the rows it trained on, gets no weight."""
    d = 6
    baseline = _cluster(1500, d)
    Xtr = np.vstack([_cluster(300, d), _cluster(300, d, shift=6.0)])
    ytr = np.r_[np.zeros(300), np.ones(300)].astype(int)
    Xv_h = _cluster(200, d)
    Xv_b = _cluster(200, d)
    Xv_b[:, 1] += 6.0
    Xv, yv = np.vstack([Xv_h, Xv_b]), np.r_[np.zeros(200), np.ones(200)].astype(int)
    fit = fit_ensemble(baseline, tuple(f"f{j}" for j in range(d)), SMALL, xgb_data=(Xtr, ytr), labelled_val=(Xv, yv))
    ens = fit.ensemble
    assert ens.combination["method"] == "labels"
    assert ens.xgb_weight == 0.0
    info = ens.combination["evidence"]["labelled"]
    assert info["member_roc_auc"]["xgb"] < 0.7 and info["rows"] == "labelled validation period"
    assert roc_auc(ens.xgb.score(Xtr[ytr == 0]), ens.xgb.score(Xtr[ytr == 1])) > 0.99  # in-sample: perfect
    # and when the validation rows show the supervised member ranking well, it gets weight
    Xv_b2 = _cluster(200, d, shift=6.0)
    fit2 = fit_ensemble(baseline, tuple(f"f{j}" for j in range(d)), SMALL, xgb_data=(Xtr, ytr),
                        labelled_val=(np.vstack([Xv_h, Xv_b2]), yv))
    assert fit2.ensemble.xgb_weight > 0.0


def test_with_labelled_humans_the_levels_mean_their_design_rate_on_a_baseline_holding_bots():
    """The baseline is unlabelled traffic with 10 % bots: quantiles of the whole validation
    split land among the bots and fresh humans almost never reach MEDIUM. Set on the labelled
    humans of the validation period, each level catches about its design share of humans."""
    from ja4_core.features import DEFAULT_FEATURES
    from ja4_dev.simulator import TrafficSimulator

    features = tuple(DEFAULT_FEATURES)
    sim = TrafficSimulator(seed=3, bot_share=0.1)

    def matrix(n: int) -> tuple[np.ndarray, np.ndarray]:
        recs = sim.records(n)
        return (np.array([[r.get(f, np.nan) for f in features] for r in recs], dtype=np.float64),
                np.array([r["label"] != "human" for r in recs], dtype=int))

    base, _ = matrix(4000)
    lab = matrix(3000)
    fresh, y = matrix(6000)
    fit = fit_ensemble(base, features, SMALL, labelled_val=lab)
    assert "labelled humans" in fit.ensemble.combination["levels_set_on"]
    humans = fit.ensemble.score(fit_medians_impute(fresh[y == 0], fit.ensemble.medians)).anomaly
    for level, design in (("LOW", 0.10), ("MEDIUM", 0.03), ("HIGH", 0.01)):
        rate = float(np.mean(humans >= fit.ensemble.thresholds[level]))
        assert design / 2 <= rate <= design * 2, (level, rate)
        recorded = fit.ensemble.combination["levels"][level]
        assert recorded["design"] == design and abs(recorded["validation"] - design) < design / 2
        assert recorded["validation_all"] > recorded["validation"]  # the split's bots reach the levels


def fit_medians_impute(X: np.ndarray, medians: np.ndarray) -> np.ndarray:
    from ja4_core.ensemble import impute

    return impute(X, medians)[0]


def test_the_decision_and_its_evidence_are_in_the_manifest_and_old_bundles_score_as_before(tmp_path):
    d = 4
    X = _cluster(800, d)
    fit = fit_ensemble(X, tuple(f"f{j}" for j in range(d)), SMALL)
    info = write_bundle(ModelStore(tmp_path), fit.ensemble, model="m", version="v1", smoke_rows=X[-8:])
    manifest = json.loads((info.path / "manifest.json").read_text())
    comb = manifest["combination"]
    assert comb["method"] == "evidence" and set(comb["tables"]) == {"eif", "ae"}
    assert set(comb["evidence"]["constructed"]["member_roc_auc"]) == {"shuffle", "range", "box"}
    loaded = load_bundle(info.path)
    probe = _cluster(50, d, shift=2.0)
    assert np.allclose(loaded.ensemble.score(probe).anomaly, fit.ensemble.score(probe).anomaly)
    # a bundle written before issue 16 (no combination section) blends raw scores, as before
    ens = fit.ensemble
    old = type(ens)(features=ens.features, medians=ens.medians, eif=ens.eif, ae=ens.ae, ae_weight=0.3, xgb_weight=0.2,
                    thresholds=dict(ens.thresholds))
    info = write_bundle(ModelStore(tmp_path), old, model="m", version="v0")
    assert "combination" not in json.loads((info.path / "manifest.json").read_text())
    b = load_bundle(info.path).ensemble.score(probe)
    assert np.allclose(b.anomaly, np.clip(0.7 * b.eif + 0.3 * b.ae, 0, 1))


def test_quality_benchmark_runs_in_quick_form(tmp_path):
    """Figures are not asserted: two small unseen data sets (3 and 7 features) and the simulator."""
    for name, d in (("a_three", 3), ("b_seven", 7)):
        X = np.vstack([_cluster(400, d), _cluster(30, d, shift=5.0)])
        y = np.r_[np.zeros(400), np.ones(30)].astype(int)
        np.savez(tmp_path / f"{name}.npz", X=X, y=y)
    out = tmp_path / "quality.json"
    assert quality.main(["--quick", "--data", str(tmp_path), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    names = [r["name"] for r in res["results"]]
    assert names == ["a_three", "b_seven", "simulator", "simulator+labels"]
    for r in res["results"]:
        assert set(r["met"]) >= {"vs_best_member", "vs_original_fixed"}
        assert {"anomaly_score", "eif_score", "ae_score"} <= set(r["roc_auc"])


@pytest.mark.parametrize("bad", [{"eif": {"q": [1.0, 0.5], "p": [0.2, 0.3]}},
                                 {"eif": {"q": [0.0, 1.0], "p": [0.0, 0.5]}}])
def test_malformed_combination_tables_are_refused(tmp_path, bad):
    from ja4_core.errors import BundleError
    d = 3
    X = _cluster(400, d)
    fit = fit_ensemble(X, tuple(f"f{j}" for j in range(d)), SMALL)
    ens = fit.ensemble
    ens.combination = {**ens.combination, "tables": {**ens.combination["tables"], **bad}}
    info = write_bundle(ModelStore(tmp_path), ens, model="m", version="v1")
    with pytest.raises(BundleError, match="combination table"):
        load_bundle(info.path)
