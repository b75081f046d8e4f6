"""The faster evaluators of a trained forest give isotree's own scores (to 1e-9)."""

from __future__ import annotations

import numpy as np
import pytest
from isotree import IsolationForest

from ja4_core.detectors.eif import EIFDetector
from ja4_core.detectors.eif_compiled import CompiledEIF
from ja4_core.detectors.isotree_file import FastEIF


def _forest(ntrees, sample_size, ndim, cols, n_test):
    """A fitted extended forest and test rows: half its training rows, half far outside."""
    rng = np.random.default_rng(ntrees + cols)
    X = rng.normal(size=(3000, cols)) * rng.uniform(0.1, 50, size=cols)
    m = IsolationForest(ntrees=ntrees, ndim=ndim, sample_size=sample_size, missing_action="impute",
                        nthreads=1, random_seed=1).fit(X)
    return m, np.vstack([X[:500], rng.normal(size=(n_test, cols)) * 100])


def _forest_with_missing_rows():
    """A forest and rows where 20 % of the cells are NaN (one +inf)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, 6))
    m = IsolationForest(ntrees=40, ndim=3, sample_size=256, missing_action="impute", nthreads=1, random_seed=1).fit(X)
    Xt = X[:300].copy()
    Xt[rng.random(Xt.shape) < 0.2] = np.nan
    Xt[0, 0] = np.inf
    return m, Xt


@pytest.mark.parametrize("ntrees,sample_size,ndim,cols", [(300, "auto", 3, 40), (100, 256, 3, 9), (50, 256, 2, 3)])
def test_same_scores_as_isotree(ntrees, sample_size, ndim, cols) -> None:
    m, Xt = _forest(ntrees, sample_size, ndim, cols, 500)
    fast = FastEIF.from_model(m, cols)
    assert np.max(np.abs(fast.predict(Xt) - m.predict(Xt))) <= 1e-9


def test_missing_values_take_the_fill_value() -> None:
    m, Xt = _forest_with_missing_rows()
    assert np.max(np.abs(FastEIF.from_model(m, 6).predict(Xt) - m.predict(Xt))) <= 1e-9


def test_refuses_a_single_variable_forest() -> None:
    X = np.random.default_rng(1).normal(size=(500, 4))
    m = IsolationForest(ntrees=5, ndim=1, sample_size=64, nthreads=1).fit(X)
    with pytest.raises(ValueError):
        FastEIF.from_model(m, 4)


# -- the compiled evaluator (what workers use by default) -----------------------------------

@pytest.mark.parametrize("ntrees,sample_size,ndim,cols", [(300, "auto", 3, 40), (100, 256, 3, 9), (50, 256, 2, 3), (30, 128, 5, 5)])
def test_compiled_gives_isotrees_scores(ntrees, sample_size, ndim, cols) -> None:
    m, Xt = _forest(ntrees, sample_size, ndim, cols, 777)
    compiled = CompiledEIF.from_model(m, cols)
    assert np.max(np.abs(compiled.predict(Xt) - m.predict(Xt))) <= 1e-9
    compiled.nthreads = 2  # the row split across threads changes nothing
    assert np.max(np.abs(compiled.predict(Xt) - m.predict(Xt))) <= 1e-9
    assert compiled.predict(Xt[:0]).shape == (0,)


@pytest.mark.parametrize("rows", [1, 7, 8, 9, 127, 128, 129, 300])
def test_compiled_score_of_a_row_does_not_depend_on_its_batch(rows) -> None:
    """Rows step through a tree several at a time (``_LANES``); a row's score must be the one it
    gets alone, whatever its batch-mates, their count or its position among them (bit for bit)."""
    m, Xt = _forest_with_missing_rows()
    compiled = CompiledEIF.from_model(m, 6)
    alone = np.array([compiled.predict(Xt[i:i + 1])[0] for i in range(rows)])
    batch = compiled.predict(Xt[:rows])
    assert np.array_equal(batch, alone)
    if rows > 3:  # the same rows three places earlier: each in another lane
        assert np.array_equal(compiled.predict(Xt[3:rows]), batch[3:])
    assert np.max(np.abs(batch - m.predict(Xt[:rows]))) <= 1e-9


def test_compiled_takes_the_fill_value_for_missing_terms() -> None:
    m, Xt = _forest_with_missing_rows()
    assert np.max(np.abs(CompiledEIF.from_model(m, 6).predict(Xt) - m.predict(Xt))) <= 1e-9


def test_detector_uses_compiled_only_after_it_matched(tmp_path) -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(1500, 4))
    det = EIFDetector(ntrees=20, sample_size=128).fit(X)
    assert det.evaluator == "isotree"
    assert det.use_compiled(X[:200]) is True and det.evaluator == "compiled"
    assert np.max(np.abs(det.score(X) - det.model_.predict(X))) <= 1e-9
    # a serialisation the compiled reader cannot use leaves isotree in charge, with the reason
    assert det.use_compiled(X[:200], b"not a model") is False
    assert det.evaluator == "isotree" and "unavailable" in det.evaluator_note
    # a forest of single-variable splits is not an extended forest: isotree keeps scoring
    one = EIFDetector(ntrees=5, ndim=1, sample_size=64).fit(X)
    assert one.use_compiled(X[:50]) is False and one.evaluator == "isotree"
    assert np.allclose(one.score(X[:5]), one.model_.predict(X[:5]))


def test_detector_refuses_a_compiled_evaluator_that_disagrees(monkeypatch) -> None:
    X = np.random.default_rng(6).normal(size=(1000, 3))
    det = EIFDetector(ntrees=10, sample_size=64).fit(X)
    monkeypatch.setattr(CompiledEIF, "predict", lambda self, X: np.zeros(len(X)))
    assert det.use_compiled(X[:100]) is False
    assert det.evaluator == "isotree" and "differs" in det.evaluator_note
