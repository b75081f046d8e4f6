"""The compiled autoencoder evaluator scores as torch does (to float32 rounding, 1e-6)."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from ja4_core.bundle import ModelStore, load_bundle
from ja4_core.detectors.ae_compiled import CompiledAE
from ja4_core.detectors.autoencoder import _SCALED_CLIP, EVALUATOR_TOLERANCE, AutoencoderDetector

from tests.helpers import quick_bundle


def _trained(seed: int, cols: int, hidden=(64, 32, 16, 32, 64)) -> tuple[AutoencoderDetector, np.ndarray]:
    """A trained detector, and rows: its own kind, far outliers, and exact minima/maxima."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(1500, cols)) * rng.uniform(0.1, 50, size=cols) + rng.uniform(-100, 100, size=cols)
    det = AutoencoderDetector(hidden=hidden, epochs=3, random_seed=seed).fit(X[:1000], X_val=X[1000:])
    rows = np.vstack([X, rng.normal(size=(300, cols)) * 1e4, X.min(axis=0), X.max(axis=0)])
    return det, rows


@pytest.mark.parametrize("seed,cols,hidden", [(1, 12, (64, 32, 16, 32, 64)), (2, 3, (8, 4, 8)), (3, 40, (16,))])
def test_compiled_errors_match_torch(seed, cols, hidden) -> None:
    det, rows = _trained(seed, cols, hidden)
    torch_scores = det.score(rows)
    compiled = CompiledAE.from_network(det.net_, det.min_, det.range_, _SCALED_CLIP)
    err = compiled.errors(rows)
    ref = det.error_ref_
    assert np.max(np.abs(err / (err + ref) - torch_scores)) <= EVALUATOR_TOLERANCE
    assert np.allclose(err, det.raw_errors(rows), rtol=1e-5, atol=1e-9)
    assert compiled.errors(rows[:0]).shape == (0,)
    # batch size changes nothing (one row at a time equals the whole matrix)
    assert np.array_equal(np.concatenate([compiled.errors(rows[i:i + 1]) for i in range(20)]), err[:20])


def test_detector_uses_compiled_only_after_it_matched(monkeypatch) -> None:
    det, rows = _trained(4, 6)
    before = det.score(rows)
    assert det.evaluator == "torch"
    assert det.use_compiled(rows[:100]) is True and det.evaluator == "compiled" and det.evaluator_note is None
    assert np.max(np.abs(det.score(rows) - before)) <= EVALUATOR_TOLERANCE
    # an evaluator that disagrees is refused, with the reason, and torch keeps scoring
    monkeypatch.setattr(CompiledAE, "errors", lambda self, X: np.zeros(len(X)))
    assert det.use_compiled(rows[:100]) is False
    assert det.evaluator == "torch" and "differs" in det.evaluator_note
    assert np.array_equal(det.score(rows), before)


def test_a_network_of_another_shape_stays_on_torch() -> None:
    det, rows = _trained(5, 4, (8,))
    det.net_ = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4), nn.Sigmoid()).eval()
    assert det.use_compiled(rows[:10]) is False
    assert det.evaluator == "torch" and "unavailable" in det.evaluator_note


def test_bundles_load_with_the_compiled_autoencoder_unless_told_otherwise(tmp_path) -> None:
    store = ModelStore(tmp_path / "models")
    info = quick_bundle(store, n=1500, ntrees=10, epochs=2)
    compiled = load_bundle(info.path)
    assert compiled.ensemble.ae.evaluator == "compiled"
    torch_ = load_bundle(info.path, ae_evaluator="torch")
    assert torch_.ensemble.ae.evaluator == "torch"
    X = compiled.ensemble.medians[np.newaxis, :] * np.linspace(0.5, 2.0, 50)[:, np.newaxis]
    assert np.max(np.abs(compiled.ensemble.score(X).anomaly - torch_.ensemble.score(X).anomaly)) <= EVALUATOR_TOLERANCE
