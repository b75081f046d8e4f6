"""The ensemble: a pure, vectorised function from a feature matrix to scores and decisions.

No I/O here. Three separate steps, as in river's filters and sklearn's ``offset_``:

1. :func:`impute` fills missing/non-finite values with the training medians;
2. :meth:`Ensemble.score` runs each member once on the whole batch and combines them
   (``anomaly = (1-a)*eif + a*ae``, then ``score = (1-b)*anomaly + b*xgb``; a missing member
   drops out and the weights renormalise, as in the original bot-detector). When the bundle
   holds per-member quantile tables (every bundle the trainer writes since issue 16), each
   member is first mapped to its position in its own human-validation distribution
   (:func:`normalise`), and the weights are the ones the trainer decided from evidence;
3. :func:`decide` maps combined scores to threat levels with the manifest's thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ja4_core.detectors import REGISTRY, AutoencoderDetector, Detector, EIFDetector, XGBDetector
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


def normalise(scores: np.ndarray, table: dict[str, list[float]] | tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """A member's raw scores -> its position in its own human-validation distribution.

    ``table`` is the member's quantile table (``q`` strictly increasing raw scores, ``p`` the
    share of human validation scores at or below each, counted as ``rank / (n + 1)`` so that
    ``0 < p < 1`` and the tails keep room). Inside the table this is the
    empirical CDF (linear between points); beyond it the map keeps rising towards 1 (above)
    or falling towards 0 (below), so it is strictly increasing everywhere: a member's
    ranking survives normalisation exactly, even among anomalies beyond every human.

    >>> t = {"q": [0.0, 1.0, 2.0], "p": [0.25, 0.5, 0.9]}
    >>> normalise(np.array([0.5, 2.0, 4.0, -1.0]), t).round(3).tolist()
    [0.375, 0.9, 0.95, 0.167]
    """
    if isinstance(table, dict):
        q = np.asarray(table["q"], dtype=np.float64)
        p = np.asarray(table["p"], dtype=np.float64)
    else:
        q, p = table
    s = np.asarray(scores, dtype=np.float64)
    out = np.interp(s, q, p)
    # tails: distance measured in units of the table's span (or 1 for a one-point table)
    span = float(q[-1] - q[0]) if len(q) > 1 and q[-1] > q[0] else 1.0
    above = s > q[-1]
    if above.any():
        d = (s[above] - q[-1]) / span
        out[above] = p[-1] + (1.0 - p[-1]) * d / (d + 1.0)
    below = s < q[0]
    if below.any():
        d = (q[0] - s[below]) / span
        out[below] = p[0] / (d + 1.0)
    return out


@dataclass(frozen=True)
class ScoreBatch:
    """Scores of one batch; every array has one entry per row."""

    anomaly: np.ndarray
    eif: np.ndarray
    ae: np.ndarray | None
    xgb: np.ndarray | None
    #: The autoencoder's squared error per cell (rows x features), when asked for (the reasons).
    ae_cells: np.ndarray | None = None


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
    #: Per-member quantile tables (``{"eif": {"q": [...], "p": [...]}, ...}``): when present,
    #: each member is put on one scale (:func:`normalise`) before the weights apply. Bundles
    #: written before the trainer decided the combination have none and blend raw scores.
    tables: dict[str, dict[str, list[float]]] | None = None
    #: The manifest's ``combination`` section (method, weights, tables, evidence), if any.
    combination: dict[str, Any] | None = None
    _norm: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        # plain arrays once, so that scoring a batch is one np.interp per member
        self._norm = {m: (np.asarray(t["q"], dtype=np.float64), np.asarray(t["p"], dtype=np.float64))
                      for m, t in (self.tables or {}).items()}

    @property
    def n_features(self) -> int:
        return len(self.features)

    def members(self) -> dict[str, Detector]:
        """The members present, by registry name (= field name), in registry order."""
        return {name: det for name in REGISTRY if (det := getattr(self, name)) is not None}

    def normalised(self, member: str, scores: np.ndarray) -> np.ndarray:
        """A member's raw scores on the combination's scale (unchanged without tables)."""
        table = self._norm.get(member)
        return normalise(scores, table) if table is not None else scores

    def combine(self, eif: np.ndarray, ae: np.ndarray | None, xgb: np.ndarray | None) -> np.ndarray:
        """Weighted combination; absent members drop out and the weights renormalise.

        With quantile tables each member first becomes its position among human validation
        rows, so the weights blend like with like (see :mod:`trainer.combine`)."""
        if self._norm:
            eif = self.normalised("eif", eif)
            ae = self.normalised("ae", ae) if ae is not None else None
            xgb = self.normalised("xgb", xgb) if xgb is not None else None
        if ae is not None:
            anomaly = (1.0 - self.ae_weight) * eif + self.ae_weight * ae
        else:
            anomaly = eif
        if xgb is not None:
            return (1.0 - self.xgb_weight) * anomaly + self.xgb_weight * xgb
        return anomaly

    def score(self, X: np.ndarray, *, ae_cells: bool = False) -> ScoreBatch:
        """Score an already-imputed matrix (rows x ``n_features``), one call per member;
        ``ae_cells``: keep the autoencoder's per-cell errors of that same call (the reasons)."""
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected a matrix with {self.n_features} columns, got shape {X.shape}")
        eif = self.eif.score(X)
        ae: np.ndarray | None = None
        cells: np.ndarray | None = None
        if self.ae is not None and ae_cells:
            ae, cells = self.ae.score_by_feature(X)
        elif self.ae is not None:
            ae = self.ae.score(X)
        xgb = self.xgb.score(X) if self.xgb is not None else None
        return ScoreBatch(anomaly=np.clip(self.combine(eif, ae, xgb), 0.0, 1.0), eif=eif, ae=ae, xgb=xgb,
                          ae_cells=cells)

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
