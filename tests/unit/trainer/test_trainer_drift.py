"""Drift against a bundle's quantile digest: KS on the quantile CDF and KL on its bins."""

import numpy as np
import pytest

from trainer.drift import KS_DISTANCE, check_drift, feature_drift, reference_cdf_band
from trainer.fit import quantile_digest


def _data(seed: int, n: int = 5000) -> tuple[np.ndarray, tuple[str, ...]]:
    rng = np.random.default_rng(seed)
    X = np.column_stack([
        rng.normal(10, 2, n),                      # continuous
        rng.lognormal(1, 1, n),                    # heavy tail
        (rng.random(n) < 0.3).astype(float),       # 0/1 flag: quantiles tie
        rng.poisson(2, n).astype(float),           # small counts: ties too
        rng.beta(2, 5, n),                         # ratio
    ])
    return X, ("normal", "lognormal", "flag", "count", "ratio")


def test_same_distribution_is_not_drift() -> None:
    X_ref, names = _data(1)
    X_new, _ = _data(2, 3000)
    report = check_drift(X_new, names, quantile_digest(X_ref, names), threshold=0.3, n_ref=len(X_ref))
    assert report.drifted == []
    assert not report.forced
    for f in report.features:
        assert f.ks < KS_DISTANCE and f.kl < 0.05, f


def test_tied_quantiles_of_a_flag_use_the_cdf_band() -> None:
    # p(1) = 0.3: quantiles up to p61 are 0, above are 1; the reference F(0) lies in a band.
    lo, hi = reference_cdf_band([0, 0, 0, 0, 0, 0, 1, 1, 1], np.array([0.0, 1.0]))
    assert lo[0] == pytest.approx(0.6125) and hi[0] == pytest.approx(0.725)
    assert lo[1] == pytest.approx(0.95) and hi[1] == 1.0
    entry = {"quantiles": [0, 0, 0, 0, 0, 0, 1, 1, 1], "mean": 0.3, "std": 0.46}
    same = feature_drift(np.r_[np.zeros(700), np.ones(300)], entry, name="flag")
    assert same.ks == 0.0 and not same.drifted
    flipped = feature_drift(np.r_[np.zeros(300), np.ones(700)], entry, name="flag")
    assert flipped.drifted and flipped.ks > 0.3


@pytest.mark.parametrize("column", range(5))
def test_a_shift_of_one_feature_is_detected(column: int) -> None:
    X_ref, names = _data(1)
    X_new, _ = _data(2, 3000)
    X_new[:, column] = X_new[:, column] * 1.5 + 0.5 * (np.nanstd(X_ref[:, column]) + 1)
    report = check_drift(X_new, names, quantile_digest(X_ref, names), threshold=0.3, n_ref=len(X_ref))
    assert report.drifted == [names[column]]
    assert report.share == pytest.approx(0.2)
    assert not report.forced  # 1 of 5 < 0.3


def test_mass_moving_into_a_tail_is_caught_by_kl() -> None:
    X_ref, names = _data(1)
    X_new, _ = _data(2, 3000)
    col = X_new[:, 0]
    col[:450] = 40.0  # 15 % of rows far above p95; the body is unchanged
    report = check_drift(X_new, names, quantile_digest(X_ref, names), threshold=0.3)
    normal = report.features[0]
    assert normal.drifted and normal.kl >= 0.1


def test_share_reaching_the_threshold_forces_a_retrain() -> None:
    X_ref, names = _data(1)
    X_new, _ = _data(2, 3000)
    X_new[:, :2] += 100.0
    report = check_drift(X_new, names, quantile_digest(X_ref, names), threshold=0.4)
    assert report.share == pytest.approx(0.4) and report.forced
    d = report.to_dict()
    assert d["forced"] and set(d["drifted"]) == {"normal", "lognormal"} and "ks" in d["features"]["flag"]


def test_missing_values_and_unknown_features() -> None:
    X_ref, names = _data(1)
    digest = quantile_digest(X_ref, names)
    X_new, _ = _data(2, 1000)
    X_new[:, 1] = np.nan  # the feature vanished from the data: counts as drifted
    report = check_drift(X_new, (*names[:4], "not_in_digest"), digest, threshold=0.3)
    assert [f.feature for f in report.features] == list(names[:4])
    assert report.drifted == ["lognormal"]
    assert report.features[1].note
