"""The ensemble (combine, impute, decide) and the batch scoring function ``score_values``.

Combination arithmetic and decision boundaries are checked with stub members returning known
scores; ``score_values`` is checked end to end with a small real bundle (EIF + autoencoder +
XGBoost) written with ``write_bundle`` and read back with ``load_bundle``.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import orjson
import pytest

from ja4_core.bundle import ModelStore, load_bundle, write_bundle
from ja4_core.ensemble import COHERENCE_FEATURE, Ensemble, decide, impute
from ja4_core.features import CONTEXT_FIELDS, DEFAULT_FEATURES, KEY_FIELDS, KNOWN_BOT, LEGITIMATE_BROWSER, \
    SCORE_LEVELS
from stream_scorer.scoring import score_values
from ja4_dev.simulator import TrafficSimulator
from trainer.fit import FitConfig, fit_ensemble

LEVELS = set(SCORE_LEVELS) | {KNOWN_BOT, LEGITIMATE_BROWSER}
TH = {"LOW": 0.5, "MEDIUM": 0.6, "HIGH": 0.7, "CRITICAL": 0.8}


class Stub:
    """An ensemble member that returns fixed scores and counts its calls."""

    def __init__(self, values):
        self.values = np.asarray(values, dtype=np.float64)
        self.calls: list[int] = []

    def score(self, X):
        self.calls.append(len(X))
        return self.values[: len(X)].copy()

    def set_threads(self, n):
        pass


def stub_ensemble(eif, ae=None, xgb=None, **kw) -> Ensemble:
    return Ensemble(features=("a", "b"), medians=np.zeros(2), eif=Stub(eif),
                    ae=Stub(ae) if ae is not None else None, xgb=Stub(xgb) if xgb is not None else None,
                    thresholds=dict(TH), **kw)


EIF = [0.5, 0.0, 1.0]
AE = [0.9, 1.0, 0.0]
XGB = [0.1, 1.0, 0.5]
X3 = np.zeros((3, 2))


# --- combine -------------------------------------------------------------------------------

def test_combine_all_members_uses_the_contract_formula():
    # anomaly = 0.7*eif + 0.3*ae ; score = 0.8*anomaly + 0.2*xgb
    batch = stub_ensemble(EIF, AE, XGB).score(X3)
    assert batch.anomaly.tolist() == pytest.approx([0.516, 0.44, 0.66], abs=1e-12)
    assert batch.eif.tolist() == EIF and batch.ae.tolist() == AE and batch.xgb.tolist() == XGB


def test_absent_autoencoder_drops_out_and_weights_renormalise():
    batch = stub_ensemble(EIF, None, XGB).score(X3)
    assert batch.ae is None
    assert batch.anomaly.tolist() == pytest.approx([0.42, 0.2, 0.9], abs=1e-12)   # 0.8*eif + 0.2*xgb


def test_absent_xgboost_drops_out_and_weights_renormalise():
    batch = stub_ensemble(EIF, AE, None).score(X3)
    assert batch.xgb is None
    assert batch.anomaly.tolist() == pytest.approx([0.62, 0.3, 0.7], abs=1e-12)   # 0.7*eif + 0.3*ae


def test_eif_alone_is_the_score():
    batch = stub_ensemble(EIF).score(X3)
    assert batch.anomaly.tolist() == EIF


def test_weights_come_from_the_ensemble():
    batch = stub_ensemble(EIF, AE, XGB, ae_weight=0.5, xgb_weight=0.0).score(X3)
    assert batch.anomaly.tolist() == pytest.approx([0.7, 0.5, 0.5], abs=1e-12)
    batch = stub_ensemble(EIF, AE, XGB, ae_weight=0.0, xgb_weight=1.0).score(X3)
    assert batch.anomaly.tolist() == pytest.approx(XGB, abs=1e-12)


def test_combined_score_is_clipped_to_unit_interval():
    batch = stub_ensemble([1.5, -0.5], None, None).score(np.zeros((2, 2)))
    assert batch.anomaly.tolist() == [1.0, 0.0]


def test_score_calls_each_member_once_per_batch():
    ens = stub_ensemble(EIF, AE, XGB)
    ens.score(X3)
    assert ens.eif.calls == [3] and ens.ae.calls == [3] and ens.xgb.calls == [3]


@pytest.mark.parametrize("shape", [(3, 1), (3, 3), (3,), (1, 3, 2)])
def test_score_refuses_a_matrix_of_the_wrong_shape(shape):
    ens = stub_ensemble(EIF, AE, XGB)
    with pytest.raises(ValueError, match="2 columns"):
        ens.score(np.zeros(shape))
    assert ens.eif.calls == []


def test_coherence_index_names_the_coherence_column():
    ens = stub_ensemble(EIF)
    assert ens.coherence_index is None
    ens.features = ("hits", COHERENCE_FEATURE)
    assert ens.coherence_index == 1


# --- impute ----------------------------------------------------------------------------------

def test_impute_fills_every_non_finite_cell_with_the_column_median():
    X = np.array([[1.0, np.nan, 3.0], [np.inf, 5.0, -np.inf], [7.0, 8.0, 9.0]])
    original = X.copy()
    filled, mask = impute(X, np.array([10.0, 20.0, 30.0]))
    assert filled.tolist() == [[1.0, 20.0, 3.0], [10.0, 5.0, 30.0], [7.0, 8.0, 9.0]]
    assert mask.tolist() == [[False, True, False], [True, False, True], [False, False, False]]
    np.testing.assert_array_equal(X, original)  # the caller's matrix is not modified


def test_impute_without_missing_values_returns_the_values():
    X = np.arange(6, dtype=np.float64).reshape(2, 3)
    filled, mask = impute(X, np.full(3, 99.0))
    assert filled.tolist() == X.tolist() and not mask.any()


# --- decide ----------------------------------------------------------------------------------

def _decide(scores, bot=None, browser=None, coherence=None, thresholds=TH):
    n = len(scores)
    return decide(np.asarray(scores, dtype=np.float64), thresholds, bot_name=bot or [False] * n,
                  browser_family=browser or [False] * n,
                  coherence=None if coherence is None else np.asarray(coherence, dtype=np.float64)).tolist()


def test_threshold_boundaries_start_each_level():
    scores = [0.0, 0.4999999, 0.5, 0.5999999, 0.6, 0.6999999, 0.7, 0.7999999, 0.8, 1.0]
    assert _decide(scores) == ["NORMAL", "NORMAL", "LOW", "LOW", "MEDIUM", "MEDIUM", "HIGH", "HIGH",
                               "CRITICAL", "CRITICAL"]


def test_equal_thresholds_leave_the_lower_level_empty():
    th = {"LOW": 0.5, "MEDIUM": 0.5, "HIGH": 0.9, "CRITICAL": 0.9}
    assert _decide([0.49, 0.5, 0.89, 0.9], thresholds=th) == ["NORMAL", "MEDIUM", "MEDIUM", "CRITICAL"]


def test_known_bot_wins_over_every_level_and_browser():
    assert _decide([0.0, 0.55, 0.95], bot=[True] * 3, browser=[True] * 3, coherence=[1.0] * 3) == [KNOWN_BOT] * 3


def test_legitimate_browser_only_replaces_normal_and_low():
    scores = [0.1, 0.55, 0.65, 0.75, 0.9]
    assert _decide(scores, browser=[True] * 5, coherence=[1.0] * 5) == [
        LEGITIMATE_BROWSER, LEGITIMATE_BROWSER, "MEDIUM", "HIGH", "CRITICAL"]


def test_incoherent_browser_fingerprint_stays_in_normal_scoring():
    assert _decide([0.1, 0.55, 0.1, 0.1], browser=[True] * 4, coherence=[0.79, 0.5, 0.8, 0.0]) == [
        "NORMAL", "LOW", LEGITIMATE_BROWSER, "NORMAL"]


def test_legitimate_browser_needs_a_browser_family():
    assert _decide([0.1], browser=[False], coherence=[1.0]) == ["NORMAL"]


def test_without_a_coherence_feature_a_browser_family_suffices():
    assert _decide([0.1, 0.9], browser=[True, True], coherence=None) == [LEGITIMATE_BROWSER, "CRITICAL"]


def test_decide_on_an_empty_batch():
    assert _decide([]) == []


# --- score_values with a real bundle -----------------------------------------------------------

@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    sim = TrafficSimulator(seed=11, bot_share=0.0)
    humans = sim.records(2000)
    X = np.array([[r[f] for f in DEFAULT_FEATURES] for r in humans])
    labelled = TrafficSimulator(seed=12, bot_share=0.5).records(600)
    Xl = np.array([[r[f] for f in DEFAULT_FEATURES] for r in labelled])
    yl = np.array([r["label"] == "bot" for r in labelled], dtype=int)
    fit = fit_ensemble(X, DEFAULT_FEATURES, FitConfig(eif_ntrees=50, ae_epochs=3), xgb_data=(Xl, yl))
    store = ModelStore(tmp_path_factory.mktemp("store"))
    info = write_bundle(store, fit.ensemble, model="default", smoke_rows=X[:8])
    return load_bundle(info.path)


def median_record(bundle, **extra):
    ens = bundle.ensemble
    rec = {"window_start": "2026-11-24T21:00:00Z", "src_ip": "10.0.0.1", "ja4": "t13d1516h2_8daaf6152771_02713d6af862",
           "host": "www.example.com"}
    rec.update(zip(ens.features, ens.medians.tolist()))
    rec.update(extra)
    return rec


def extreme_record(bundle, **extra):
    rec = median_record(bundle)
    rec.update({f: 1e6 for f in bundle.ensemble.features})
    rec.update(extra)
    return rec


NOW = datetime(2026, 11, 24, 22, 10, 0, 123000, tzinfo=timezone.utc)


def scores_of(values, bundle):
    out = score_values(values, bundle, now=NOW)
    return out, [(i, orjson.loads(v)) for i, v in out.scores]


def test_one_score_per_valid_record_in_order(bundle):
    sim = TrafficSimulator(seed=5, bot_share=0.3)
    recs = sim.records(30)
    values = [orjson.dumps(recs[0]), b"not json", orjson.dumps(recs[1:11]),
              orjson.dumps({"src_ip": "x"}), orjson.dumps([recs[11], {"ja4": "j"}, recs[12]]), None]
    out, scores = scores_of(values, bundle)
    assert [i for i, _ in scores] == [0] + [2] * 10 + [4, 4]
    assert [s["src_ip"] for _, s in scores] == [r["src_ip"] for r in recs[:13]]
    assert sorted((r.message_index, r.record_index) for r in out.rejects) == [(1, None), (3, None), (4, 1), (5, None)]
    assert out.records_in == 13 + 4
    assert out.levels == [s["threat_level"] for _, s in scores]


def test_score_record_fields_follow_the_contract(bundle):
    recs = TrafficSimulator(seed=6, bot_share=0.3).records(40)
    out, scores = scores_of([orjson.dumps(recs)], bundle)
    assert len(scores) == 40
    score_fields = {"anomaly_score", "eif_score", "ae_score", "xgb_prob", "threat_level", "model_name",
                    "model_version", "scored_at", "imputed", "reasons"}
    a, b = bundle.ensemble.ae_weight, bundle.ensemble.xgb_weight
    for rec, (_, s) in zip(recs, scores):
        passthrough = {k: rec[k] for k in (*KEY_FIELDS, *CONTEXT_FIELDS) if k in rec}
        assert set(s) == set(passthrough) | score_fields
        assert {k: s[k] for k in passthrough} == passthrough
        for k in ("anomaly_score", "eif_score", "ae_score", "xgb_prob"):
            assert isinstance(s[k], float) and 0.0 <= s[k] <= 1.0, (k, s[k])
        # the contract's formula, on each member's position among human validation rows
        # (the bundle's quantile tables, issue 16)
        e, ae, x = (float(bundle.ensemble.normalised(m, np.array([s[f]]))[0])
                    for m, f in (("eif", "eif_score"), ("ae", "ae_score"), ("xgb", "xgb_prob")))
        expected = (1 - b) * ((1 - a) * e + a * ae) + b * x
        assert s["anomaly_score"] == pytest.approx(expected, abs=1e-12)
        assert s["threat_level"] in LEVELS
        assert s["model_name"] == "default" == bundle.model
        assert s["model_version"] == bundle.version
        assert s["scored_at"] == "2026-11-24T22:10:00.123+00:00"
        assert s["imputed"] == []
    assert out.imputed_counts == {}


def test_scores_match_the_ensemble_on_the_same_matrix(bundle):
    recs = TrafficSimulator(seed=7, bot_share=0.3).records(25)
    _, scores = scores_of([orjson.dumps(r) for r in recs], bundle)
    X = np.array([[r[f] for f in bundle.ensemble.features] for r in recs])
    batch = bundle.ensemble.score(X)
    np.testing.assert_allclose([s["anomaly_score"] for _, s in scores], batch.anomaly, rtol=0, atol=1e-12)
    np.testing.assert_allclose([s["eif_score"] for _, s in scores], batch.eif, rtol=0, atol=1e-12)


def test_a_records_score_does_not_depend_on_its_batch(bundle):
    recs = TrafficSimulator(seed=8, bot_share=0.5).records(50)
    _, alone = scores_of([orjson.dumps(recs[0])], bundle)
    _, batched = scores_of([orjson.dumps(r) for r in reversed(recs)], bundle)
    # float32 autoencoder arithmetic differs by ~1e-8 with the batch size; the EIF is exact
    assert batched[-1][1]["eif_score"] == alone[0][1]["eif_score"]
    assert batched[-1][1]["anomaly_score"] == pytest.approx(alone[0][1]["anomaly_score"], abs=1e-6)
    assert batched[-1][1]["ae_score"] == pytest.approx(alone[0][1]["ae_score"], abs=1e-6)


def test_imputed_lists_the_imputed_features_and_uses_the_medians(bundle):
    feats = bundle.ensemble.features
    base = median_record(bundle)
    holes = dict(base)
    del holes[feats[0]]
    holes[feats[5]] = None
    holes[feats[7]] = "n/a"
    holes[feats[3]] = [1]
    out, scores = scores_of([orjson.dumps(holes), orjson.dumps(base)], bundle)
    (_, s_holes), (_, s_base) = scores
    assert s_holes["imputed"] == [feats[0], feats[3], feats[5], feats[7]]  # in feature order
    assert s_base["imputed"] == []
    assert out.imputed_counts == {feats[0]: 1, feats[3]: 1, feats[5]: 1, feats[7]: 1}
    # The imputed values are the medians, which the base record carries explicitly: the same
    # row, so the same EIF score exactly (the float32 autoencoder may differ by ~1e-8 between
    # two positions of one batch, see test_a_records_score_does_not_depend_on_its_batch).
    assert s_holes["eif_score"] == s_base["eif_score"]
    assert s_holes["anomaly_score"] == pytest.approx(s_base["anomaly_score"], abs=1e-6)


def test_known_bot_when_bot_name_is_not_empty(bundle):
    values = [orjson.dumps(median_record(bundle, bot_name="Googlebot")),
              orjson.dumps(extreme_record(bundle, bot_name="bingbot", browser_family="Chrome")),
              orjson.dumps(median_record(bundle, bot_name=""))]
    _, scores = scores_of(values, bundle)
    assert [s["threat_level"] for _, s in scores][:2] == [KNOWN_BOT, KNOWN_BOT]
    assert scores[2][1]["threat_level"] != KNOWN_BOT
    assert scores[0][1]["bot_name"] == "Googlebot"


def test_legitimate_browser_rule(bundle):
    plain = median_record(bundle)
    coherent = median_record(bundle, browser_family="Chrome", fingerprint_coherence_score=0.95)
    coherent_plain = median_record(bundle, fingerprint_coherence_score=0.95)
    incoherent = median_record(bundle, browser_family="Chrome", fingerprint_coherence_score=0.3)
    incoherent_plain = median_record(bundle, fingerprint_coherence_score=0.3)
    loud = extreme_record(bundle, browser_family="Chrome", fingerprint_coherence_score=1.0)
    _, scores = scores_of([orjson.dumps(r) for r in
                           (plain, coherent, coherent_plain, incoherent, incoherent_plain, loud)], bundle)
    levels = [s["threat_level"] for _, s in scores]
    assert levels[0] in ("NORMAL", "LOW"), "precondition: the median record scores as benign"
    assert levels[2] in ("NORMAL", "LOW")
    assert levels[1] == LEGITIMATE_BROWSER
    # A browser JA4 with an incoherent fingerprint gets what the same record gets without a browser.
    assert levels[4] in SCORE_LEVELS
    assert levels[3] == levels[4]
    # A known browser never hides a high score.
    assert levels[5] in ("MEDIUM", "HIGH", "CRITICAL")
    assert scores[5][1]["browser_family"] == "Chrome"


def test_each_model_is_called_once_per_batch(bundle, monkeypatch):
    ens = bundle.ensemble
    calls = {"eif": [], "ae": [], "xgb": []}
    for name in calls:
        member = getattr(ens, name)
        original = member.score

        def counting(X, _orig=original, _name=name):
            calls[_name].append(X.shape)
            return _orig(X)
        monkeypatch.setattr(member, "score", counting)
    # with reasons on, the autoencoder's one call also returns its per-feature errors
    by_feature = ens.ae.score_by_feature

    def counting_by_feature(X):
        calls["ae"].append(X.shape)
        return by_feature(X)
    monkeypatch.setattr(ens.ae, "score_by_feature", counting_by_feature)
    recs = TrafficSimulator(seed=9, bot_share=0.3).records(120)
    values = [orjson.dumps(recs[i:i + 10]) for i in range(0, 100, 10)] + [orjson.dumps(r) for r in recs[100:]]
    out = score_values(values, bundle)
    assert len(out.scores) == 120
    n = len(ens.features)
    assert calls == {"eif": [(120, n)], "ae": [(120, n)], "xgb": [(120, n)]}


def test_batch_without_valid_records_calls_no_model(bundle, monkeypatch):
    def boom(X):
        raise AssertionError("a model was called")
    monkeypatch.setattr(bundle.ensemble.eif, "score", boom)
    out = score_values([b"nope", None, b"[]"], bundle)
    assert out.scores == [] and len(out.rejects) == 3 and out.records_in == 3


def test_epoch_window_start_is_passed_through(bundle):
    _, scores = scores_of([orjson.dumps(median_record(bundle, window_start=1764018000))], bundle)
    assert scores[0][1]["window_start"] == 1764018000


def test_bundle_without_xgboost_gives_null_xgb_prob(bundle, tmp_path):
    # members loaded from the compact files serve only; re-writing needs the portable files
    ens = load_bundle(bundle.path, eif_evaluator="isotree", ae_evaluator="torch").ensemble
    no_xgb = Ensemble(features=ens.features, medians=ens.medians, eif=ens.eif, ae=ens.ae, xgb=None,
                      ae_weight=ens.ae_weight, xgb_weight=ens.xgb_weight, thresholds=dict(ens.thresholds))
    info = write_bundle(ModelStore(tmp_path), no_xgb, model="default", version="v1")
    loaded = load_bundle(info.path)
    _, scores = scores_of([orjson.dumps(median_record(loaded))], loaded)
    s = scores[0][1]
    assert s["xgb_prob"] is None and s["model_version"] == "v1"
    assert s["anomaly_score"] == pytest.approx(
        (1 - ens.ae_weight) * s["eif_score"] + ens.ae_weight * s["ae_score"], abs=1e-12)


def test_deeply_nested_context_field_does_not_fail_the_batch(bundle):
    good = orjson.dumps(median_record(bundle, src_ip="10.0.0.2"))
    poisoned_bytes = b'{"window_start":"w","src_ip":"10.6.6.6","ja4":"j","host":"h","bot_name":' \
                     + b"[" * 300 + b"]" * 300 + b"}"
    out = score_values([good, poisoned_bytes], bundle)
    src = [orjson.loads(v)["src_ip"] for _, v in out.scores]
    assert "10.0.0.2" in src
    assert len(out.scores) + len(out.rejects) == 2
