"""The ensemble: a pure, vectorised function from a feature matrix to scores and decisions.

No I/O here. Three separate steps, as in river's filters and sklearn's ``offset_``:

1. :func:`impute` fills missing/non-finite values with the training medians;
2. :meth:`Ensemble.score` runs each member once on the whole batch and combines them
   (``anomaly = (1-a)*eif + a*ae``, then ``score = (1-b)*anomaly + b*xgb``; a missing member
   drops out and the weights renormalise, as in the original bot-detector);
3. :func:`decide` maps combined scores to threat levels with the manifest's thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ja4_core.detectors import AutoencoderDetector, EIFDetector, XGBDetector
from ja4_core.features import KNOWN_BOT, LEGITIMATE_BROWSER, SCORE_LEVELS

#: Feature that tells whether JA4, HTTP/2 settings and headers agree on one browser.
COHERENCE_FEATURE = "fingerprint_coherence_score"
COHERENCE_MIN = 0.8


def impute(X: np.ndarray, medians: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace non-finite cells with the column medians; return (filled, missing mask).

    >>> X = np.array([[1.0, np.nan], [np.inf, 4.0]])
    >>> filled, mask = impute(X, np.array([0.5, 2.0]))
    >>> filled.tolist(), mask.tolist()
    ([[1.0, 2.0], [0.5, 4.0]], [[False, True], [True, False]])
    """
    mask = ~np.isfinite(X)
    if mask.any():
        X = np.where(mask, medians[np.newaxis, :], X)
    return X, mask


@dataclass(frozen=True)
class ScoreBatch:
    """Scores of one batch; every array has one entry per row."""

    anomaly: np.ndarray
    eif: np.ndarray
    ae: np.ndarray | None
    xgb: np.ndarray | None


@dataclass
class Ensemble:
    """Fitted members plus the manifest constants needed to score and decide."""

    features: tuple[str, ...]
    medians: np.ndarray
    eif: EIFDetector
    ae: AutoencoderDetector | None = None
    xgb: XGBDetector | None = None
    ae_weight: float = 0.30
    xgb_weight: float = 0.20
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return len(self.features)

    def combine(self, eif: np.ndarray, ae: np.ndarray | None, xgb: np.ndarray | None) -> np.ndarray:
        """Weighted combination; absent members drop out and the weights renormalise."""
        if ae is not None:
            anomaly = (1.0 - self.ae_weight) * eif + self.ae_weight * ae
        else:
            anomaly = eif
        if xgb is not None:
            return (1.0 - self.xgb_weight) * anomaly + self.xgb_weight * xgb
        return anomaly

    def score(self, X: np.ndarray) -> ScoreBatch:
        """Score an already-imputed matrix (rows x ``n_features``), one call per member."""
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected a matrix with {self.n_features} columns, got shape {X.shape}")
        eif = self.eif.score(X)
        ae = self.ae.score(X) if self.ae is not None else None
        xgb = self.xgb.score(X) if self.xgb is not None else None
        return ScoreBatch(anomaly=np.clip(self.combine(eif, ae, xgb), 0.0, 1.0), eif=eif, ae=ae, xgb=xgb)

    def set_threads(self, nthreads: int) -> None:
        self.eif.set_threads(nthreads)
        if self.xgb is not None:
            self.xgb.set_threads(nthreads)

    @property
    def coherence_index(self) -> int | None:
        return self.features.index(COHERENCE_FEATURE) if COHERENCE_FEATURE in self.features else None


def decide(scores: np.ndarray, thresholds: dict[str, float], *,
           bot_name: Sequence[bool] | np.ndarray, browser_family: Sequence[bool] | np.ndarray,
           coherence: np.ndarray | None = None, coherence_min: float = COHERENCE_MIN) -> np.ndarray:
    """Threat level per row (an object array of strings).

    ``NORMAL < LOW < MEDIUM < HIGH < CRITICAL`` from the combined score and the thresholds;
    ``KNOWN_BOT`` wins when the record names a bot; ``LEGITIMATE_BROWSER`` replaces NORMAL/LOW
    when a browser family is known and the fingerprint is coherent: a browser JA4 with
    incoherent behaviour stays in normal scoring, so spoofing a fingerprint buys nothing.

    >>> decide(np.array([0.1, 0.9, 0.1, 0.1]), {"LOW": 0.5, "MEDIUM": 0.6, "HIGH": 0.7, "CRITICAL": 0.8},
    ...        bot_name=[False, False, True, False], browser_family=[False, False, False, True],
    ...        coherence=np.array([1.0, 1.0, 1.0, 0.95])).tolist()
    ['NORMAL', 'CRITICAL', 'KNOWN_BOT', 'LEGITIMATE_BROWSER']
    """
    cuts = np.array([thresholds[level] for level in SCORE_LEVELS[1:]], dtype=np.float64)
    idx = np.searchsorted(cuts, scores, side="right")
    levels = np.asarray(SCORE_LEVELS, dtype=object)[idx]
    benign = idx <= 1
    browser = np.asarray(browser_family, dtype=bool)
    if coherence is not None:
        browser = browser & (coherence >= coherence_min)
    levels = np.where(benign & browser, LEGITIMATE_BROWSER, levels)
    return np.where(np.asarray(bot_name, dtype=bool), KNOWN_BOT, levels)
