"""Drift of a sample against the quantile digest stored in a bundle: the one statistic.

Both processes use it (one home): the trainer on its baseline (:mod:`trainer.drift` re-exports
this module), every scorer replica on its live window (:mod:`stream_scorer.live_drift`), which
keeps only counts per bin cut at the digest's distinct quantile values: exactly what the KS and
KL below need (:func:`drift_from_cdf`), so the replica's figure is the trainer's on the same rows.

The bundle does not keep its training data, only a per-feature digest (``quantile_digest``
in :mod:`trainer.fit`): nine evenly spaced percentiles from p5 to p95, the mean and the std. So both
tests compare the *new sample* with the *reference quantiles*:

**KS on the quantile CDF** (our choice, rather than ``ks_2samp`` against a sample rebuilt from
nine quantiles). The digest pins the reference CDF at its quantile points: at a point ``v``,
``F_ref(v)`` lies between the largest quantile level whose value is ``<= v`` and the smallest
level whose value is ``> v`` (one number for a continuous feature, a band where quantiles tie,
as they do for 0/1 flags and small counts). The statistic is the largest distance between the
new sample's empirical CDF and that band over the digest's points: a lower bound of the real
two-sample KS distance that needs no invented data. A rebuilt sample would invent the tails
below p5 and above p95 and, for discrete features, spread the ties into a continuum that any
real sample "differs" from. The p-value uses the two-sample asymptotic distribution
(``scipy.stats.kstwobign``, computed here by :func:`kolmogorov_sf`) with the effective size
``n*m/(n+m)``; with tens of thousands of rows any tiny shift is "significant", so a feature
only counts as drifted when the distance itself is large (``KS_DISTANCE``) *and* significant.

**KL divergence on the quantile bins.** The digest's distinct quantile values cut the line
into bins with known reference mass (5 % below p5, 11.25 % between neighbours, 5 % above
p95; merged where values tie); KL(new || reference) on those bins, smoothed, catches changes of
shape the KS distance understates, such as mass moving into a tail.

A run is *drift-forced* when the share of drifted features reaches ``DRIFT_THRESHOLD``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

#: Quantile levels of the digest (must match ``trainer.fit.quantile_digest``).
DIGEST_LEVELS = np.linspace(0.05, 0.95, 9)
#: KS distance (sup |F_new - F_ref|) from which a feature may count as drifted.
KS_DISTANCE = 0.10
#: ... provided the KS p-value is below this.
KS_ALPHA = 0.01
#: KL divergence (nats) on the quantile bins from which a feature counts as drifted.
KL_LIMIT = 0.10
#: Added to every bin mass before the KL, so an empty bin does not make it infinite.
KL_EPS = 1e-4


@dataclass
class FeatureDrift:
    feature: str
    ks: float
    ks_pvalue: float
    kl: float
    mean_shift_std: float  # (new mean - reference mean) / reference std, for the report
    n: int
    drifted: bool
    note: str = ""


@dataclass
class DriftReport:
    features: list[FeatureDrift] = field(default_factory=list)
    threshold: float = 0.3
    n_rows: int = 0
    n_ref: int | None = None

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def share(self) -> float:
        return len(self.drifted) / len(self.features) if self.features else 0.0

    @property
    def forced(self) -> bool:
        """True when the drifted share reaches the threshold (and something was compared)."""
        return bool(self.features) and self.share >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {"share": self.share, "forced": self.forced, "threshold": self.threshold,
                "n_rows": self.n_rows, "n_ref": self.n_ref, "drifted": self.drifted,
                "features": {f.feature: {k: v for k, v in asdict(f).items() if k != "feature"}
                             for f in self.features}}


def reference_cdf_band(quantiles: Sequence[float] | np.ndarray, points: np.ndarray,
                       levels: np.ndarray = DIGEST_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the reference CDF at ``points`` implied by the digest's quantiles.

    >>> lo, hi = reference_cdf_band([0, 0, 0, 0, 0, 0, 0, 1, 1], np.array([0.0, 1.0]))
    >>> lo.round(4).tolist(), hi.round(4).tolist()
    ([0.725, 0.95], [0.8375, 1.0])
    """
    q = np.asarray(quantiles, dtype=np.float64)
    lo = np.array([levels[q <= v].max() if np.any(q <= v) else 0.0 for v in points])
    hi = np.array([levels[q > v].min() if np.any(q > v) else 1.0 for v in points])
    return lo, hi


def digest_points(entry: Mapping[str, Any]) -> np.ndarray | None:
    """The distinct quantile values of a digest entry (where the CDFs are compared), or None
    when the entry is unusable (wrong length, non-finite values).

    >>> digest_points({"quantiles": [0, 0, 0, 0, 0, 0, 1, 1, 1]}).tolist()
    [0.0, 1.0]
    """
    quantiles = np.asarray(entry.get("quantiles", []), dtype=np.float64)
    if len(quantiles) != len(DIGEST_LEVELS) or not np.all(np.isfinite(quantiles)):
        return None
    return np.unique(quantiles)


def feature_drift(values: np.ndarray, entry: Mapping[str, Any], *, n_ref: int | None = None,
                  name: str = "") -> FeatureDrift:
    """KS distance to the reference CDF band and KL on the quantile bins for one feature."""
    values = np.asarray(values, dtype=np.float64)
    values = np.sort(values[np.isfinite(values)])
    n = len(values)
    points = digest_points(entry)
    if n == 0 or points is None:
        return drift_from_cdf(np.zeros(0), n, 0.0, entry, n_ref=n_ref, name=name)
    f_new = np.searchsorted(values, points, side="right") / n
    return drift_from_cdf(f_new, n, float(values.mean()), entry, n_ref=n_ref, name=name)


def kolmogorov_sf(x: float) -> float:
    """``P(K > x)`` of the Kolmogorov distribution (``scipy.stats.kstwobign.sf``, to 1e-12).

    Computed from its two series rather than imported from scipy because this module is the
    scorer's too: ``scipy.stats`` and what it imports cost a worker ~40 MB of its 400 MB
    (issue 20; scipy's core is loaded by xgboost anyway) for this one function. Below ``x = 1`` the theta-function form converges in a few terms, above it the
    alternating series does (each needs at most 12 terms for double precision).

    >>> round(kolmogorov_sf(1.3581), 4)
    0.05
    """
    if x <= 0.0:
        return 1.0
    if x < 1.0:  # 1 - sqrt(2 pi)/x * sum exp(-(2k-1)^2 pi^2 / (8 x^2))
        w = -(math.pi ** 2) / (8.0 * x * x)
        cdf = math.sqrt(2.0 * math.pi) / x * sum(math.exp((2 * k - 1) ** 2 * w) for k in range(1, 13))
        return min(1.0, max(0.0, 1.0 - cdf))
    # 2 * sum (-1)^(k-1) exp(-2 k^2 x^2)
    total = sum((-1.0) ** (k - 1) * math.exp(-2.0 * k * k * x * x) for k in range(1, 13))
    return min(1.0, max(0.0, 2.0 * total))


def drift_from_cdf(f_new: np.ndarray, n: int, mean: float, entry: Mapping[str, Any], *,
                   n_ref: int | None = None, name: str = "") -> FeatureDrift:
    """The drift of a sample known only by its empirical CDF at the digest's distinct points
    (:func:`digest_points`), its size and its mean: all :func:`feature_drift` uses of the rows,
    so a streaming summary that keeps counts per bin gives the same figures."""
    points = digest_points(entry)
    if n == 0 or points is None:
        note = "no value in the current baseline" if n == 0 else "digest unusable"
        return FeatureDrift(name, 1.0, 0.0, float("inf"), float("nan"), n, drifted=n == 0, note=note)
    quantiles = np.asarray(entry["quantiles"], dtype=np.float64)
    f_new = np.asarray(f_new, dtype=np.float64)
    lo, hi = reference_cdf_band(quantiles, points)
    ks = float(np.max(np.maximum(0.0, np.maximum(f_new - hi, lo - f_new))))
    m = n_ref or n
    n_eff = n * m / (n + m)
    pvalue = kolmogorov_sf(ks * math.sqrt(n_eff)) if ks > 0 else 1.0
    # KL on bins cut at the distinct quantile values; where quantiles tie the reference CDF
    # is only known within [lo, hi], so take the value in that band closest to the new CDF.
    f_ref = np.clip(f_new, lo, hi)
    p_new = np.diff(np.concatenate([[0.0], f_new, [1.0]])) + KL_EPS
    p_ref = np.diff(np.concatenate([[0.0], f_ref, [1.0]])) + KL_EPS
    p_new, p_ref = p_new / p_new.sum(), np.maximum(p_ref, KL_EPS) / np.maximum(p_ref, KL_EPS).sum()
    kl = float(np.sum(p_new * np.log(p_new / p_ref)))
    std = float(entry.get("std") or 0.0)
    mean_shift = (mean - float(entry.get("mean", 0.0))) / std if std > 0 else 0.0
    drifted = (ks >= KS_DISTANCE and pvalue < KS_ALPHA) or kl >= KL_LIMIT
    return FeatureDrift(name, ks, pvalue, kl, mean_shift, n, drifted)


def check_drift(X: np.ndarray, features: Sequence[str], digest: Mapping[str, Mapping[str, Any]], *,
                threshold: float, n_ref: int | None = None) -> DriftReport:
    """Compare each column of ``X`` (named ``features``) that the digest knows with it."""
    report = DriftReport(threshold=threshold, n_rows=len(X), n_ref=n_ref)
    for j, name in enumerate(features):
        if name in digest:
            report.features.append(feature_drift(X[:, j], digest[name], n_ref=n_ref, name=name))
    return report
