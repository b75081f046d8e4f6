"""Baseline preparation: missing values, variance pruning, time order."""

import numpy as np
import pytest

from ja4_core.errors import SchemaError
from trainer.prepare import column_variances, prepare_baseline, select, to_missing


def test_non_finite_values_become_missing() -> None:
    X = to_missing(np.array([[1.0, np.inf, -np.inf, np.nan]]))
    assert X[0, 0] == 1.0 and np.isnan(X[0, 1:]).all()


def test_low_variance_and_empty_features_are_pruned_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    n = 500
    X = np.column_stack([rng.normal(size=n),                   # kept
                         np.full(n, 3.0),                      # constant: pruned
                         3.0 + rng.normal(scale=1e-5, size=n),  # variance 1e-10 < 1e-6: pruned
                         np.full(n, np.nan),                   # no value at all: pruned
                         np.where(rng.random(n) < 0.5, np.nan, rng.normal(size=n))])  # half missing: kept
    caplog.set_level("INFO")
    p = prepare_baseline(X, ("a", "const", "tiny", "empty", "sparse"), variance_threshold=1e-6)
    assert p.features == ("a", "sparse")
    assert p.pruned == ("const", "tiny", "empty")
    assert p.X.shape == (n, 2)
    assert "const, tiny, empty" in caplog.text


def test_rows_are_put_in_time_order_stably() -> None:
    X = np.array([[3.0], [1.0], [2.0], [1.5]])
    times = np.array([30, 10, 20, 10])
    p = prepare_baseline(X, ("a",), times, variance_threshold=0.0)
    assert p.times.tolist() == [10, 10, 20, 30]
    assert p.X[:, 0].tolist() == [1.0, 1.5, 2.0, 3.0]  # the two rows at t=10 keep their order


def test_everything_pruned_is_an_error() -> None:
    with pytest.raises(SchemaError, match="nothing to train on"):
        prepare_baseline(np.ones((10, 2)), ("a", "b"))


def test_select_reorders_columns_by_name() -> None:
    X = np.array([[1.0, 2.0, np.inf]])
    assert np.array_equal(select(X, ("a", "b", "c"), ("c", "a")), np.array([[np.nan, 1.0]]), equal_nan=True)
    with pytest.raises(SchemaError, match="zzz"):
        select(X, ("a", "b", "c"), ("zzz",))


def test_column_variances_ignore_missing() -> None:
    v = column_variances(np.array([[1.0, np.nan], [3.0, np.nan]]))
    assert v[0] == 1.0 and np.isnan(v[1])
