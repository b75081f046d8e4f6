"""The autoencoder's epochs visit at most ``rows_per_epoch`` rows (issue 20: a 1M-row retrain),
and a baseline no larger than that trains exactly as before."""

from __future__ import annotations

import numpy as np
import torch

from ja4_core.detectors.autoencoder import ROWS_PER_EPOCH, AutoencoderDetector


def _data(n: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.lognormal(size=(n, 6))


def _steps(monkeypatch, det: AutoencoderDetector, X: np.ndarray) -> int:
    count = [0]
    original = torch.optim.Adam.step

    def counted(self, *args, **kwargs):
        count[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counted)
    det.fit(X)
    return count[0]


def test_a_baseline_within_the_cap_trains_exactly_as_without_one():
    X = _data(1200)
    capped = AutoencoderDetector(epochs=2, rows_per_epoch=1200).fit(X)
    uncapped = AutoencoderDetector(epochs=2, rows_per_epoch=10**9).fit(X)
    assert capped.loss_curve_ == uncapped.loss_curve_
    assert ROWS_PER_EPOCH >= 100_000  # every ADBench baseline of bench.quality is below it


def test_a_larger_baseline_visits_only_the_cap_per_epoch(monkeypatch):
    X = _data(3000)
    steps = _steps(monkeypatch, AutoencoderDetector(epochs=2, batch_size=100, rows_per_epoch=500), X)
    assert steps == 2 * 5  # 500 rows a epoch in batches of 100, not 30 batches
    det = AutoencoderDetector(epochs=1, rows_per_epoch=500).fit(X)
    assert det.params()["rows_per_epoch"] == 500 and np.isfinite(det.score(X)).all()
