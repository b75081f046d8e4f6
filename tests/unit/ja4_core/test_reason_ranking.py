"""Reasons in score records (issue 18): :mod:`ja4_core.reasons` and its hook in the scoring path.

The pure functions are checked on small hand-made matrices; the hook end to end through
``score_values`` with a small real bundle (EIF + autoencoder + the trainer's quantile digest)
written with ``write_bundle`` and read back with ``load_bundle``, as a worker loads it.
"""

from __future__ import annotations

import dataclasses
import doctest

import numpy as np
import orjson
import pytest

from ja4_core import reasons as reasons_module
from ja4_core.bundle import ModelStore, load_bundle, write_bundle
from ja4_core.clickhouse_io import SCORE_COLUMNS, score_row
from ja4_core.errors import SchemaError
from ja4_core.features import DEFAULT_FEATURES
from ja4_core.reasons import MAX_REASONS, Baseline, anomalous, explain, feature_weights
from ja4_core.settings import load_settings
from ja4_dev.simulator import TrafficSimulator
from stream_scorer.scoring import reasons_from, score_values
from trainer.fit import FitConfig, fit_ensemble, quantile_digest

REASON_KEYS = {"feature", "value", "median", "p99", "weight"}


def test_doctests() -> None:
    result = doctest.testmod(reasons_module)
    assert result.attempted > 0 and result.failed == 0


# --- the pure functions ----------------------------------------------------------------------

FEATS = ("a", "b", "c", "d")
DIGEST = {f: {"quantiles": [0.0, 1.0, 2.0], "p1": 0.0, "p99": 2.0} for f in FEATS}


def _baseline(digest=DIGEST) -> Baseline:
    return Baseline.from_digest(digest, FEATS, np.ones(len(FEATS)))


def test_one_wildly_out_of_range_feature_is_named_first() -> None:
    X = np.array([[1.0, 1.0, 1e6, 2.5]])
    r = explain(X, np.zeros_like(X, dtype=bool), np.array([True]), _baseline())
    (got,) = r.as_lists(FEATS, _baseline())
    assert got[0]["feature"] == "c" and got[0]["value"] == 1e6
    assert got[0]["median"] == 1.0 and got[0]["p99"] == 2.0 and got[0]["weight"] > 0.99
    # the AE's errors agree: still first, whatever the AE spreads over the others
    ae = np.array([[0.01, 0.02, 0.9, 0.05]])
    (got,) = explain(X, np.zeros_like(X, dtype=bool), np.array([True]), _baseline(), ae).as_lists(FEATS, _baseline())
    assert [g["feature"] for g in got][0] == "c" and len(got) <= MAX_REASONS
    assert [g["weight"] for g in got] == sorted((g["weight"] for g in got), reverse=True)


def test_a_value_near_the_largest_double_is_still_the_first_reason() -> None:
    digest = {**DIGEST, "d": {"quantiles": [0.0, 0.0, 1e-9], "p1": 0.0, "p99": 1e-9}}
    X = np.array([[1.0, 1.7e308, 1.0, -1.7e308]])
    w = feature_weights(X, np.zeros_like(X, dtype=bool), _baseline(digest))
    assert np.isfinite(w).all() and w[0].sum() == pytest.approx(1.0)
    (got,) = explain(X, np.zeros_like(X, dtype=bool), np.array([True]), _baseline(digest)).as_lists(
        FEATS, _baseline(digest))
    assert {g["feature"] for g in got} == {"b", "d"}


def test_a_row_that_is_not_anomalous_has_no_reasons() -> None:
    X = np.array([[1.0, 1.0, 1e6, 1.0], [1.0, 1.0, 1e6, 1.0]])
    r = explain(X, np.zeros_like(X, dtype=bool), np.array([False, True]), _baseline())
    lists = r.as_lists(FEATS, _baseline())
    assert lists[0] == [] and lists[1][0]["feature"] == "c"


def test_an_imputed_cell_is_never_a_reason() -> None:
    # the record sent no value for "c" (NaN): it was imputed with the median, so even if the AE
    # reconstructs that cell badly, "c" is not why the record is anomalous
    X = np.array([[1.0, 9.0, 1.0, 1.0]])
    missing = np.array([[False, False, True, False]])
    ae = np.array([[0.0, 0.1, 5.0, 0.0]])
    (got,) = explain(X, missing, np.array([True]), _baseline(), ae).as_lists(FEATS, _baseline())
    assert [g["feature"] for g in got] == ["b"]
    w = feature_weights(X, missing, _baseline(), ae)
    assert w[0, 2] == 0.0 and np.isfinite(w).all()


def test_non_finite_autoencoder_errors_are_ignored() -> None:
    X = np.array([[1.0, 1.0, 1.0, 1.0]])
    ae = np.array([[np.nan, np.inf, 0.3, 0.1]])
    w = feature_weights(X, np.zeros_like(X, dtype=bool), _baseline(), ae)
    assert np.isfinite(w).all() and w[0].tolist() == pytest.approx([0.0, 0.0, 0.75, 0.25])


def test_a_constant_feature_out_of_its_range_is_measured_in_units_of_one() -> None:
    digest = {**DIGEST, "d": {"quantiles": [0.0, 0.0, 0.0], "p1": 0.0, "p99": 0.0}}
    X = np.array([[1.0, 1.0, 1.0, 1.0]])
    (got,) = explain(X, np.zeros_like(X, dtype=bool), np.array([True]), _baseline(digest)).as_lists(
        FEATS, _baseline(digest))
    assert got == [{"feature": "d", "value": 1.0, "median": 0.0, "p99": 0.0, "weight": 1.0}]


def test_an_old_digest_uses_its_outer_points_and_no_digest_gives_no_tails() -> None:
    old = {f: {"quantiles": [0.0, 0.5, 1.0, 1.5, 2.0]} for f in FEATS}  # before issue 18: no p1/p99
    b = Baseline.from_digest(old, FEATS, np.zeros(4))
    assert b.median.tolist() == [1.0] * 4 and b.p99.tolist() == [2.0] * 4 and b.low.tolist() == [0.0] * 4
    none = Baseline.from_digest(None, FEATS, np.array([1.0, 2.0, 3.0, 4.0]))
    assert not none.has_tails and none.median.tolist() == [1.0, 2.0, 3.0, 4.0]
    X = np.array([[1.0, 1.0, 1e9, 1.0]])
    # neither a digest nor an autoencoder: nothing to tell why, so no reasons (never a guess)
    assert explain(X, np.zeros_like(X, dtype=bool), np.array([True]), none).as_lists(FEATS, none) == [[]]
    # an autoencoder alone: its share decides, and p99 is unknown (null)
    (got,) = explain(X, np.zeros_like(X, dtype=bool), np.array([True]), none,
                     np.array([[0.0, 0.0, 1.0, 0.0]])).as_lists(FEATS, none)
    assert got == [{"feature": "c", "value": 1e9, "median": 3.0, "p99": None, "weight": 1.0}]


def test_a_malformed_digest_entry_is_skipped_not_fatal() -> None:
    digest = {"a": {"quantiles": ["x", None]}, "b": "garbage", "c": {"quantiles": [0, 1, 2], "p99": float("nan")}}
    b = Baseline.from_digest(digest, FEATS, np.full(4, 7.0))
    assert b.median.tolist() == [7.0, 7.0, 1.0, 7.0]
    assert np.isnan(b.p99[[0, 1, 3]]).all() and b.p99[2] == 2.0  # NaN p99: the digest's top point


def test_anomalous_follows_the_level_and_the_setting() -> None:
    th = {"LOW": 0.5, "MEDIUM": 0.6, "HIGH": 0.7, "CRITICAL": 0.8}
    scores = np.array([0.49, 0.5, 0.65, 0.9, 0.9, 0.55])
    levels = ["NORMAL", "LOW", "MEDIUM", "CRITICAL", "KNOWN_BOT", "LEGITIMATE_BROWSER"]
    assert anomalous(scores, th, levels).tolist() == [False, True, True, True, True, False]
    assert anomalous(scores, th, levels, "HIGH").tolist() == [False, False, False, True, True, False]
    with pytest.raises(ValueError):
        anomalous(scores, th, levels, "NORMAL")


def test_settings_turn_reasons_off_or_raise_the_level() -> None:
    assert reasons_from(load_settings({})) == "LOW"
    assert reasons_from(load_settings({"SCORE_REASONS": "off"})) is None
    assert reasons_from(load_settings({"SCORE_REASONS_MIN_LEVEL": "high"})) == "HIGH"


# --- through score_values with a real bundle --------------------------------------------------

@pytest.fixture(scope="module")
def humans() -> np.ndarray:
    recs = TrafficSimulator(seed=11, bot_share=0.0).records(2500)
    return np.array([[r[f] for f in DEFAULT_FEATURES] for r in recs], dtype=np.float64)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, humans):
    """The same fitted ensemble written twice: with the trainer's digest, and without one."""
    fit = fit_ensemble(humans, DEFAULT_FEATURES, FitConfig(eif_ntrees=50, ae_epochs=3))
    store = ModelStore(tmp_path_factory.mktemp("store"))
    with_digest = write_bundle(store, fit.ensemble, model="default", smoke_rows=humans[:8],
                               extra={"digest": quantile_digest(humans, DEFAULT_FEATURES)})
    without = write_bundle(store, fit.ensemble, model="default", smoke_rows=humans[:8])
    return load_bundle(with_digest.path), load_bundle(without.path)


def _record(bundle, **values):
    ens = bundle.ensemble
    rec = {"window_start": "2026-11-24T21:00:00Z", "src_ip": "10.0.0.1", "ja4": "t13d1516h2_8daaf6152771_02713d6af862",
           "host": "www.example.com"}
    rec.update(zip(ens.features, ens.medians.tolist()))
    rec.update(values)
    return rec


def _scored(bundle, records, **kw):
    out = score_values([orjson.dumps(records)], bundle, **kw)
    return [orjson.loads(v) for _, v in out.scores]


def test_score_records_name_the_out_of_range_feature_first(bundles) -> None:
    bundle, _ = bundles
    normal, odd = _scored(bundle, [_record(bundle), _record(bundle, hits=1e7)])
    assert normal["threat_level"] in ("NORMAL", "LEGITIMATE_BROWSER") and normal["reasons"] == []
    assert odd["threat_level"] in ("LOW", "MEDIUM", "HIGH", "CRITICAL"), odd
    first = odd["reasons"][0]
    assert set(first) == REASON_KEYS and first["feature"] == "hits" and first["value"] == 1e7
    digest = bundle.manifest["digest"]["hits"]
    assert first["median"] == digest["quantiles"][4] and first["p99"] == digest["p99"]
    assert 1 <= len(odd["reasons"]) <= MAX_REASONS
    assert [r["weight"] for r in odd["reasons"]] == sorted((r["weight"] for r in odd["reasons"]), reverse=True)


def test_a_missing_value_is_imputed_and_not_a_reason(bundles) -> None:
    bundle, _ = bundles
    rec = _record(bundle, hits=1e7)
    rec["header_count"] = None
    (s,) = _scored(bundle, [rec])
    assert s["imputed"] == ["header_count"]
    assert s["reasons"][0]["feature"] == "hits" and "header_count" not in {r["feature"] for r in s["reasons"]}


def test_reasons_off_scores_the_same_and_gives_empty_lists(bundles) -> None:
    bundle, _ = bundles
    recs = TrafficSimulator(seed=5, bot_share=0.4).records(300)
    on, off = _scored(bundle, recs), _scored(bundle, recs, reasons_from=None)
    strip = lambda s: {k: v for k, v in s.items() if k not in ("reasons", "scored_at")}  # noqa: E731
    assert [strip(s) for s in on] == [strip(s) for s in off]  # the same scores to the last bit
    assert all(s["reasons"] == [] for s in off)
    with_reasons = [s for s in on if s["reasons"]]
    assert with_reasons and all(s["threat_level"] not in ("NORMAL", "LEGITIMATE_BROWSER") for s in with_reasons)
    assert all(s["reasons"] == [] for s in on if s["threat_level"] in ("NORMAL", "LEGITIMATE_BROWSER"))


def test_a_bundle_without_a_digest_still_scores_with_autoencoder_reasons(bundles) -> None:
    bundle, plain = bundles
    assert "digest" not in plain.manifest
    (s,) = _scored(plain, [_record(plain, hits=1e7)])
    assert s["reasons"] and s["reasons"][0]["feature"] == "hits" and s["reasons"][0]["p99"] is None
    assert s["reasons"][0]["median"] == float(plain.ensemble.medians[plain.ensemble.features.index("hits")])


def test_per_feature_errors_come_from_the_same_pass_on_both_evaluators(bundles, humans) -> None:
    bundle, _ = bundles
    ae = bundle.ensemble.ae
    assert ae is not None and ae.evaluator == "compiled"
    X = humans[:200]
    err, cells = ae.raw_errors_by_feature(X)
    assert np.array_equal(err, ae.raw_errors(X))  # bit for bit: reasons on/off never move a score
    assert cells.shape == X.shape and np.allclose(cells.mean(axis=1), err, rtol=1e-12)
    torch_ae = load_bundle(bundle.path, ae_evaluator="torch").ensemble.ae
    assert torch_ae is not None and torch_ae.evaluator == "torch"
    t_err, t_cells = torch_ae.raw_errors_by_feature(X)
    assert np.array_equal(t_err, torch_ae.raw_errors(X))
    assert np.allclose(t_cells, cells, atol=1e-6)


def test_an_eif_only_ensemble_without_digest_gives_no_reasons(bundles) -> None:
    _, plain = bundles
    eif_only = dataclasses.replace(plain, ensemble=dataclasses.replace(plain.ensemble, ae=None, tables=None))
    (s,) = _scored(eif_only, [_record(plain, hits=1e7)])
    assert s["reasons"] == [] and s["ae_score"] is None


# --- the sink's row ---------------------------------------------------------------------------

def _score_record(**extra):
    rec = {"window_start": "2026-11-24T21:00:00Z", "src_ip": "10.0.0.1", "ja4": "j", "host": "h",
           "anomaly_score": 0.9, "threat_level": "HIGH", "model_version": "v1"}
    rec.update(extra)
    return rec


def test_the_sink_row_holds_the_reasons_as_json_text() -> None:
    cols = [c for c, _ in SCORE_COLUMNS]
    reasons = [{"feature": "hits", "value": 1e7, "median": 10.0, "p99": 437.0, "weight": 0.5}]
    row = score_row(_score_record(reasons=reasons))
    assert orjson.loads(row[cols.index("reasons")]) == reasons
    assert score_row(_score_record())[cols.index("reasons")] == "[]"  # a scorer from before issue 18


@pytest.mark.parametrize("bad", ["hits", [1, 2], {"feature": "x"}, [{"feature": "x" * 5000}]])
def test_the_sink_refuses_reasons_that_are_not_a_small_list_of_objects(bad) -> None:
    with pytest.raises(SchemaError, match="reasons"):
        score_row(_score_record(reasons=bad))
