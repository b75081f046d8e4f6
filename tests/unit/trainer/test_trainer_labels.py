"""Supervised labels: eligibility and cleanlab removing deliberately flipped labels."""

import numpy as np

from ja4_core.features import DEFAULT_FEATURES
from ja4_dev.simulator import TrafficSimulator
from trainer.labels import clean_labels, eligibility, split_holdout


def test_eligibility_needs_enough_labels_and_positives() -> None:
    assert eligibility(np.array([1] * 10 + [0] * 90), 100) == (True, "ok")
    assert not eligibility(np.array([1] * 10 + [0] * 89), 100)[0]
    assert "positive" in eligibility(np.array([1] * 9 + [0] * 200), 100)[1]
    assert "negative" in eligibility(np.array([1] * 200 + [0] * 5), 100)[1]


def test_cleanlab_removes_most_flipped_labels() -> None:
    rows = TrafficSimulator(seed=5, bot_share=0.3).records(1500, span_s=86400)
    X = np.array([[r[f] for f in DEFAULT_FEATURES] for r in rows], dtype=float)
    y = np.array([r["label"] == "bot" for r in rows], dtype=int)
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(y), 45, replace=False)  # 3 % of the labels are wrong
    noisy = y.copy()
    noisy[flipped] = 1 - noisy[flipped]

    X_clean, y_clean, flagged = clean_labels(X, noisy, nthreads=2)

    caught = len(set(flagged.tolist()) & set(flipped.tolist()))
    assert caught >= 0.8 * len(flipped), f"only {caught} of {len(flipped)} flipped labels flagged"
    assert len(flagged) < 0.1 * len(y), "cleanlab removed far more than the noise"
    assert len(y_clean) == len(y) - len(flagged)
    # What is left is mostly right.
    kept = np.setdiff1d(np.arange(len(y)), flagged)
    assert np.mean(noisy[kept] == y[kept]) > 0.995


def test_holdout_is_the_validation_period_when_the_rest_suffices() -> None:
    times = np.arange(300)
    y = np.array(([1] + [0] * 4) * 60)
    mask = split_holdout(times, y, cut_time=240, min_labels=100)
    assert mask is not None and mask.sum() == 60
    assert split_holdout(times, y, cut_time=50, min_labels=100) is None  # 50 labels before: too few


def test_cleanlab_removes_only_the_removable_labels() -> None:
    """The trainer lets cleanlab remove score-derived labels only: analysts' bots that look
    human (the headless impersonators) are what the supervised member must learn, and
    analyst labels win over score-derived ones. Flagged analyst labels are reported, kept."""
    rows = TrafficSimulator(seed=5, bot_share=0.3).records(1500, span_s=86400)
    X = np.array([[r[f] for f in DEFAULT_FEATURES] for r in rows], dtype=float)
    y = np.array([r["label"] == "bot" for r in rows], dtype=int)
    noisy = y.copy()
    noisy[:60] = 1 - noisy[:60]
    analyst = np.zeros(len(y), dtype=bool)
    analyst[:30] = True  # half of the flipped labels come from analysts: flagged, never removed

    X_clean, y_clean, flagged = clean_labels(X, noisy, nthreads=2, removable=~analyst)

    assert np.isin(np.arange(30), flagged).sum() >= 20, "the analysts' flipped labels are still flagged"
    removed = len(y) - len(y_clean)
    assert removed == int(np.sum(~analyst[flagged]))
    assert removed < len(flagged)
