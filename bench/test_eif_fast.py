"""Equality of the fast evaluator and isotree's predict on the same forest (to 1e-9).

Not part of the test suite (``tests/``); run with ``python -m pytest bench/test_eif_fast.py``.
The owner may move it under ``tests/unit`` when adopting ``stream_scorer.detectors.eif_fast``.
"""

from __future__ import annotations

import numpy as np
import pytest
from isotree import IsolationForest

from stream_scorer.detectors.eif_fast import FastEIF


@pytest.mark.parametrize("ntrees,sample_size,ndim,cols", [(300, "auto", 3, 40), (100, 256, 3, 9), (50, 256, 2, 3)])
def test_same_scores_as_isotree(ntrees, sample_size, ndim, cols) -> None:
    rng = np.random.default_rng(ntrees + cols)
    X = rng.normal(size=(3000, cols)) * rng.uniform(0.1, 50, size=cols)
    m = IsolationForest(ntrees=ntrees, ndim=ndim, sample_size=sample_size, missing_action="impute",
                        nthreads=1, random_seed=1).fit(X)
    fast = FastEIF.from_model(m, cols)
    Xt = np.vstack([X[:500], rng.normal(size=(500, cols)) * 100])
    assert np.max(np.abs(fast.predict(Xt) - m.predict(Xt))) <= 1e-9


def test_missing_values_take_the_fill_value() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, 6))
    m = IsolationForest(ntrees=40, ndim=3, sample_size=256, missing_action="impute", nthreads=1, random_seed=1).fit(X)
    fast = FastEIF.from_model(m, 6)
    Xt = X[:300].copy()
    Xt[rng.random(Xt.shape) < 0.2] = np.nan
    assert np.max(np.abs(fast.predict(Xt) - m.predict(Xt))) <= 1e-9


def test_refuses_a_single_variable_forest() -> None:
    X = np.random.default_rng(1).normal(size=(500, 4))
    m = IsolationForest(ntrees=5, ndim=1, sample_size=64, nthreads=1).fit(X)
    with pytest.raises(ValueError):
        FastEIF.from_model(m, 4)
