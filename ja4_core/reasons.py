"""Why a record is anomalous: at most three features per record, most important first.

Pure and vectorised over a batch, like :mod:`ja4_core.ensemble`; it only reuses what scoring
already computed. Each feature of a record gets a **weight** in [0, 1] (the weights of a row
sum to at most 1), the mean of the two shares that are available for the row:

* **autoencoder share**: the feature's part of the record's reconstruction error (the
  autoencoder's per-feature squared error on the min-max scaled input, from the same forward
  pass that gave ``ae_score``: no second pass);
* **baseline share**: the feature's part of the record's distance beyond the human baseline,
  from the bundle's quantile digest (``digest`` in the manifest: per feature ``p1``, median,
  ``p99`` of the human baseline the model was trained on). A value between ``p1`` and ``p99``
  is at distance 0; above ``p99`` the distance is ``(value - p99) / (p99 - median)``, below
  ``p1`` it is ``(p1 - value) / (median - p1)`` (a feature whose spread is 0 is measured in
  units of its ``p99 - p1``, or of 1).

A share that is 0 for the whole row (no feature beyond the baseline, or no autoencoder) drops
out of the mean. An imputed cell (missing in the record) never is a reason: its value is the
training median, not something the client did. Features under :data:`MIN_WEIGHT` are not
reasons. XGBoost's per-feature contributions are not used: ``pred_contribs`` (TreeSHAP) costs
far more than the whole ensemble's scoring, outside the bound of issue 18 (see the README).

Digests written before issue 18 hold no ``p1``/``p99``: their lowest and highest points (p5,
p95) stand in for them. A bundle without any digest gives reasons from the autoencoder alone,
with the training medians and ``p99`` = ``None``; a bundle with neither gives none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ja4_core.features import LEGITIMATE_BROWSER, SCORE_LEVELS

#: Most reasons given per record.
MAX_REASONS = 3
#: A feature with a smaller weight (share of why) is not named as a reason.
MIN_WEIGHT = 0.05
#: Threat levels from which a record counts as anomalous (``SCORE_REASONS_MIN_LEVEL``).
REASON_LEVELS: tuple[str, ...] = tuple(SCORE_LEVELS[1:])
#: Digits kept of a reason's weight (it is a share: more is noise).
WEIGHT_DIGITS = 4
#: Distances beyond the baseline are capped here, so that a value such as 1e308 stays a finite,
#: dominant share instead of an infinity (inf / inf would be no share at all).
MAX_DISTANCE = 1e12


@dataclass(frozen=True)
class Baseline:
    """Per feature (in the bundle's feature order): where the human baseline lies.

    ``low``/``high`` are the p1/p99 points (``-inf``/``+inf`` where unknown: no distance then),
    ``p99`` what a reason reports (NaN where unknown), ``down``/``up`` the units of distance."""

    median: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p99: np.ndarray
    down: np.ndarray
    up: np.ndarray

    @property
    def has_tails(self) -> bool:
        return bool(np.isfinite(self.high).any() or np.isfinite(self.low).any())

    @classmethod
    def from_digest(cls, digest: Mapping[str, Any] | None, features: Sequence[str],
                    medians: np.ndarray) -> "Baseline":
        """From the manifest's ``digest`` (``None``/missing features: training medians, no tails).

        >>> b = Baseline.from_digest({"hits": {"quantiles": [1, 2, 5, 8, 9], "p1": 0.5, "p99": 20}},
        ...                          ["hits", "other"], np.array([4.0, 7.0]))
        >>> b.median.tolist(), b.low.tolist(), b.p99.tolist()[0], b.has_tails
        ([5.0, 7.0], [0.5, -inf], 20.0, True)
        """
        n = len(features)
        median = np.asarray(medians, dtype=np.float64).copy()
        low, high = np.full(n, -np.inf), np.full(n, np.inf)
        for j, name in enumerate(features):
            entry = digest.get(name) if isinstance(digest, Mapping) else None
            if not isinstance(entry, Mapping):
                continue
            q = _floats(entry.get("quantiles"))
            if len(q):
                median[j] = q[len(q) // 2]
            lo, hi = _float(entry.get("p1")), _float(entry.get("p99"))
            low[j] = lo if lo is not None else (q[0] if len(q) else -np.inf)
            high[j] = hi if hi is not None else (q[-1] if len(q) else np.inf)
        width = np.where(np.isfinite(high) & np.isfinite(low), high - low, 0.0)
        fallback = np.where(width > 0, width, 1.0)
        up = np.where(np.isfinite(high) & (high > median), high - median, fallback)
        down = np.where(np.isfinite(low) & (median > low), median - low, fallback)
        p99 = np.where(np.isfinite(high), high, np.nan)
        return cls(median, low, high, p99, down, up)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _floats(values: Any) -> list[float]:
    if not isinstance(values, (list, tuple)):
        return []
    out = [_float(v) for v in values]
    return [v for v in out if v is not None] if all(v is not None for v in out) else []


def tail_distance(X: np.ndarray, baseline: Baseline) -> np.ndarray:
    """Distance of each cell beyond the baseline's p1..p99 range, in its units (0 inside).

    >>> b = Baseline.from_digest({"a": {"quantiles": [0, 1, 2], "p1": 0, "p99": 3}}, ["a"], np.zeros(1))
    >>> tail_distance(np.array([[1.0], [5.0], [-1.0]]), b).tolist()
    [[0.0], [1.0], [1.0]]
    """
    with np.errstate(over="ignore"):  # a value near the largest double: capped just below
        above = np.maximum(X - baseline.high, 0.0) / baseline.up
        below = np.maximum(baseline.low - X, 0.0) / baseline.down
    return np.minimum(above + below, MAX_DISTANCE)


def _share(part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's part normalised to sum 1, and which rows had any (rows of zeros stay 0)."""
    total = part.sum(axis=1, keepdims=True)
    has = total[:, 0] > 0
    return np.divide(part, total, out=np.zeros_like(part), where=total > 0), has


def feature_weights(X: np.ndarray, missing: np.ndarray, baseline: Baseline,
                    ae_errors: np.ndarray | None = None) -> np.ndarray:
    """Weight of every cell (rows x features): the mean of the shares available per row.

    >>> b = Baseline.from_digest({f: {"quantiles": [0, 1, 2], "p1": 0, "p99": 2} for f in "ab"},
    ...                          ["a", "b"], np.ones(2))
    >>> X = np.array([[1.0, 9.0], [1.0, 1.0]])
    >>> feature_weights(X, np.zeros_like(X, dtype=bool), b).tolist()
    [[0.0, 1.0], [0.0, 0.0]]
    >>> feature_weights(X, np.zeros_like(X, dtype=bool), b, np.array([[0.1, 0.3], [0.2, 0.2]])).tolist()
    [[0.125, 0.875], [0.5, 0.5]]
    """
    shares: list[np.ndarray] = []
    counts = np.zeros(len(X))
    if ae_errors is not None:
        err = np.where(missing | ~np.isfinite(ae_errors), 0.0, np.maximum(ae_errors, 0.0))
        share, has = _share(err)
        shares.append(share)
        counts += has
    if baseline.has_tails:
        dist = np.where(missing, 0.0, tail_distance(X, baseline))
        share, has = _share(dist)
        shares.append(share)
        counts += has
    if not shares:
        return np.zeros(X.shape, dtype=np.float64)
    total = shares[0] if len(shares) == 1 else shares[0] + shares[1]
    return total / np.maximum(counts, 1.0)[:, np.newaxis]


def anomalous(scores: np.ndarray, thresholds: Mapping[str, float], levels: Sequence[str],
              min_level: str = "LOW") -> np.ndarray:
    """Rows that get reasons: the combined score reaches ``min_level``'s threshold, and the
    record was not judged a coherent browser (``LEGITIMATE_BROWSER``, which replaces LOW).

    >>> anomalous(np.array([0.1, 0.6, 0.6]), {"LOW": 0.5}, ["NORMAL", "LOW", "LEGITIMATE_BROWSER"]).tolist()
    [False, True, False]
    """
    if min_level not in REASON_LEVELS:
        raise ValueError(f"min_level must be one of {', '.join(REASON_LEVELS)}, got {min_level!r}")
    levels_arr = np.asarray(levels, dtype=object)
    return (np.asarray(scores) >= thresholds[min_level]) & (levels_arr != LEGITIMATE_BROWSER)


@dataclass(frozen=True)
class Reasons:
    """The reasons of one batch: for the rows in ``rows``, up to :data:`MAX_REASONS` columns of
    (feature index, weight, the record's value), most important first; a feature index of -1
    is no reason."""

    n: int
    rows: np.ndarray
    feature: np.ndarray
    weight: np.ndarray
    value: np.ndarray

    def as_lists(self, features: Sequence[str], baseline: Baseline) -> list[list[dict[str, Any]]]:
        """One list of reason objects per row of the batch (empty for a row without reasons)."""
        out: list[list[dict[str, Any]]] = [[] for _ in range(self.n)]
        if not len(self.rows):
            return out
        names = list(features)
        median = baseline.median.tolist()
        p99 = [None if v != v else v for v in baseline.p99.tolist()]  # NaN: unknown
        rows = self.rows.tolist()
        feats = self.feature.tolist()
        weights = np.round(self.weight, WEIGHT_DIGITS).tolist()
        values = self.value.tolist()
        for i, r in enumerate(rows):
            target = out[r]
            for j, w, v in zip(feats[i], weights[i], values[i]):
                if j < 0:
                    break
                target.append({"feature": names[j], "value": v, "median": median[j], "p99": p99[j], "weight": w})
        return out


def explain(X: np.ndarray, missing: np.ndarray, rows: np.ndarray, baseline: Baseline,
            ae_errors: np.ndarray | None = None, *, k: int = MAX_REASONS,
            min_weight: float = MIN_WEIGHT) -> Reasons:
    """The reasons of the rows where ``rows`` (a bool mask) is True, from the imputed matrix
    ``X``, its ``missing`` mask and the autoencoder's per-feature errors (if any).

    >>> b = Baseline.from_digest({f: {"quantiles": [0, 1, 2], "p1": 0, "p99": 2} for f in "abc"},
    ...                          ["a", "b", "c"], np.ones(3))
    >>> X = np.array([[1.0, 50.0, 5.0], [1.0, 1.0, 1.0], [9.0, 1.0, 1.0]])
    >>> r = explain(X, np.zeros_like(X, dtype=bool), np.array([True, True, False]), b)
    >>> for reasons in r.as_lists(["a", "b", "c"], b):
    ...     print(reasons)
    [{'feature': 'b', 'value': 50.0, 'median': 1.0, 'p99': 2.0, 'weight': 0.9412}, {'feature': 'c', 'value': 5.0, 'median': 1.0, 'p99': 2.0, 'weight': 0.0588}]
    []
    []
    """
    n = len(X)
    idx = np.flatnonzero(rows)
    k = min(k, X.shape[1])
    if not len(idx) or k <= 0:
        empty = np.zeros((0, max(k, 0)))
        return Reasons(n, idx, empty.astype(np.int64), empty, empty)
    errors = ae_errors[idx] if ae_errors is not None else None
    w = feature_weights(X[idx], missing[idx], baseline, errors)
    order = np.argsort(-w, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(w, order, axis=1)
    feature = np.where(top >= min_weight, order, -1)
    value = np.take_along_axis(X[idx], order, axis=1)
    return Reasons(n, idx, feature, np.where(feature >= 0, top, 0.0), value)
