"""Live drift per feature on one replica: a bounded summary of the traffic it scores.

Why bins on the digest: the drift statistic (:mod:`ja4_core.drift`, the trainer's own) only
needs the window's empirical CDF at the bundle digest's distinct quantile values, its size and
its mean. So per feature the window keeps the counts of finite values in the bins cut at those
values (at most 10), their sum, min and max, and the count of missing values (the ones
scoring imputes): the same figures the trainer would compute from the window's rows, in a few
KB whatever the rate.

The window slides in :data:`SUBWINDOWS` rotated sub-windows (``LIVE_DRIFT_WINDOW_S`` /
:data:`SUBWINDOWS` each): a sub-window older than the window is zeroed before it is reused,
so the summary covers between 0.9 and 1.0 of the window. A batch is added in a few vectorised
numpy calls (:meth:`LiveDrift.observe`, on the worker's Python thread, next to parsing).

**Input faults are not drift.** Once a window holds ``LIVE_DRIFT_MIN_RECORDS`` records, a
feature is flagged ``constant`` when every finite value of the window is the same while the
baseline's digest has at least two distinct quantiles (then at least 5 % of the baseline lies
off any single value, so 500 equal values have probability below 0.95**500), and ``imputed``
when more than ``INPUT_FAULT_IMPUTED_SHARE`` of its values were missing. A faulty feature
does not count as drifted, and while any feature is faulty no retrain is requested (it would
learn the broken input; see :mod:`.retrain_decision`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ja4_core.drift import DIGEST_LEVELS, FeatureDrift, digest_points, drift_from_cdf

#: Sub-windows of the sliding window (the summary's time resolution is window / SUBWINDOWS).
SUBWINDOWS = 10
#: Bins per feature: one below the lowest digest point, one above each point.
NBINS = len(DIGEST_LEVELS) + 1


@dataclass(frozen=True)
class FeatureLive:
    """One feature's window against the baseline."""

    feature: str
    n: int                          #: finite values in the window
    imputed_share: float            #: missing (imputed) values / all values of the window
    drift: FeatureDrift | None      #: None when the digest does not know the feature
    fault: str                      #: "" | "constant" | "imputed"
    baseline_quantiles: list[float]
    window_quantiles: list[float | None]

    @property
    def drifted(self) -> bool:
        return self.drift is not None and self.drift.drifted and not self.fault

    def to_dict(self) -> dict[str, Any]:
        d = self.drift
        return {"n": self.n, "imputed_share": round(self.imputed_share, 4), "fault": self.fault or None,
                "drifted": self.drifted, "ks": None if d is None else round(d.ks, 4),
                "ks_pvalue": None if d is None else d.ks_pvalue,
                "kl": None if d is None or not np.isfinite(d.kl) else round(d.kl, 4),
                "mean_shift_std": None if d is None or not np.isfinite(d.mean_shift_std) else round(d.mean_shift_std, 3),
                "baseline_quantiles": self.baseline_quantiles, "window_quantiles": self.window_quantiles}


@dataclass(frozen=True)
class DriftSnapshot:
    """The whole window of one replica at one moment."""

    version: str | None
    window_s: float
    covered_s: float               #: time the summed sub-windows actually span
    records: int                   #: rows observed in the window
    min_records: int
    features: list[FeatureLive] = field(default_factory=list)
    note: str = ""

    @property
    def ready(self) -> bool:
        """Enough rows for the figures to count."""
        return self.records >= self.min_records and bool(self.compared)

    @property
    def compared(self) -> list[FeatureLive]:
        return [f for f in self.features if f.drift is not None]

    @property
    def drifted(self) -> list[FeatureLive]:
        """Drifted features (faulty ones excluded), the most drifted first."""
        return sorted((f for f in self.compared if f.drifted), key=lambda f: -(f.drift.ks if f.drift else 0.0))

    @property
    def faults(self) -> list[FeatureLive]:
        return [f for f in self.features if f.fault]

    @property
    def share(self) -> float:
        compared = self.compared
        return len(self.drifted) / len(compared) if compared and self.ready else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"model_version": self.version, "window_s": self.window_s, "covered_s": round(self.covered_s, 1),
                "records": self.records, "min_records": self.min_records, "ready": self.ready,
                "drifted_share": round(self.share, 4), "drifted": [f.feature for f in self.drifted],
                "input_faults": {f.feature: f.fault for f in self.faults}, "note": self.note,
                "features": {f.feature: f.to_dict() for f in self.features}}


class _Bins:
    """The bin edges of one bundle: per feature its digest's distinct points, padded with +inf."""

    def __init__(self, features: Sequence[str], digest: Mapping[str, Mapping[str, Any]]) -> None:
        self.features = tuple(features)
        self.entries: list[Mapping[str, Any] | None] = []
        self.npoints = np.zeros(len(self.features), dtype=np.int64)
        self.points = np.full((len(self.features), NBINS - 1), np.inf)
        #: Where each feature's bins start in the flat count vector.
        self.offsets = np.arange(len(self.features), dtype=np.intp) * NBINS
        for j, name in enumerate(self.features):
            entry = digest.get(name)
            pts = digest_points(entry) if entry is not None else None
            self.entries.append(entry if pts is not None else None)
            if pts is not None:
                self.points[j, :len(pts)] = pts
                self.npoints[j] = len(pts)


class LiveDrift:
    """The sliding window of one replica, rebuilt whenever the active bundle changes.

    Thread-safe: :meth:`observe` runs on the worker's Python thread, :meth:`snapshot` on the
    event loop."""

    def __init__(self, window_s: float, *, min_records: int = 500, imputed_fault_share: float = 0.5,
                 clock: Any = time.monotonic) -> None:
        self.window_s = float(window_s)
        self.min_records = min_records
        self.imputed_fault_share = imputed_fault_share
        self.clock = clock
        self._lock = threading.Lock()
        self.version: str | None = None
        self.n_ref: int | None = None
        self._bins: _Bins | None = None
        self._note = "no model yet"

    @property
    def enabled(self) -> bool:
        return self.window_s > 0

    def _reset(self, version: str | None, features: Sequence[str], digest: Mapping[str, Any] | None,
               n_ref: int | None) -> None:
        self.version, self.n_ref = version, n_ref
        self._bins = _Bins(features, digest or {}) if digest else None
        self._note = "" if digest else "the active bundle has no quantile digest"
        nf = len(features)
        self._counts = np.zeros((SUBWINDOWS, nf, NBINS), dtype=np.int64)
        self._missing = np.zeros((SUBWINDOWS, nf), dtype=np.int64)
        self._sums = np.zeros((SUBWINDOWS, nf))
        self._mins = np.full((SUBWINDOWS, nf), np.inf)
        self._maxs = np.full((SUBWINDOWS, nf), -np.inf)
        self._rows = np.zeros(SUBWINDOWS, dtype=np.int64)
        self._start = np.full(SUBWINDOWS, -np.inf)
        self._slot = 0
        self._start[0] = self.clock()

    def use_bundle(self, version: str, features: Sequence[str], manifest: Mapping[str, Any]) -> None:
        """Start a new window for a new active bundle (a no-op when it is the same version)."""
        with self._lock:
            if version != self.version:
                rows = manifest.get("digest_rows")
                self._reset(version, features, manifest.get("digest"), int(rows) if isinstance(rows, int) else None)

    def _rotate(self, now: float) -> None:
        sub = self.window_s / SUBWINDOWS
        for _ in range(SUBWINDOWS):  # a long gap empties every slot once, not more
            if now < self._start[self._slot] + sub:
                return
            nxt = (self._slot + 1) % SUBWINDOWS
            start = self._start[self._slot] + sub
            if now >= start + sub:  # skipped whole sub-windows: start the new one now
                start = now
            self._counts[nxt] = 0
            self._missing[nxt] = 0
            self._sums[nxt] = 0.0
            self._mins[nxt] = np.inf
            self._maxs[nxt] = -np.inf
            self._rows[nxt] = 0
            self._start[nxt] = start
            self._slot = nxt

    def observe(self, X: np.ndarray) -> None:
        """Add a batch's raw feature matrix (rows x the bundle's features, NaN where missing)."""
        if not self.enabled or len(X) == 0:
            return
        with self._lock:
            bins = self._bins
            if bins is None or X.shape[1] != len(bins.features):
                return
            self._rotate(self.clock())
            s = self._slot
            nf = X.shape[1]
            finite = np.isfinite(X)
            # Bin index = how many of the feature's points lie below the value (the +inf pads
            # never): one comparison of the whole matrix per point, the fastest form measured.
            idx = np.zeros(X.shape, dtype=np.intp)
            for k in range(NBINS - 1):
                idx += X > bins.points[:, k]
            idx += bins.offsets
            idx[~finite] = nf * NBINS  # a discard bin for missing values
            counts = np.bincount(idx.ravel(), minlength=nf * NBINS + 1)
            self._counts[s] += counts[:-1].reshape(nf, NBINS)
            self._missing[s] += len(X) - finite.sum(axis=0)
            self._sums[s] += np.where(finite, X, 0.0).sum(axis=0)
            # fmin/fmax skip NaN (parsing leaves no other non-finite value in X).
            np.fmin(self._mins[s], np.fmin.reduce(X, axis=0), out=self._mins[s])
            np.fmax(self._maxs[s], np.fmax.reduce(X, axis=0), out=self._maxs[s])
            self._rows[s] += len(X)

    def snapshot(self) -> DriftSnapshot:
        """The window's figures against the active bundle's digest, feature by feature."""
        if not self.enabled:
            return DriftSnapshot(self.version, 0.0, 0.0, 0, self.min_records, note="LIVE_DRIFT_WINDOW_S=0: off")
        with self._lock:
            bins = self._bins
            if bins is None:
                return DriftSnapshot(self.version, self.window_s, 0.0, 0, self.min_records, note=self._note)
            now = self.clock()
            self._rotate(now)
            live = self._start > now - self.window_s
            counts = self._counts[live].sum(axis=0)
            missing = self._missing[live].sum(axis=0)
            sums = self._sums[live].sum(axis=0)
            mins = self._mins[live].min(axis=0) if live.any() else np.full(len(bins.features), np.inf)
            maxs = self._maxs[live].max(axis=0) if live.any() else np.full(len(bins.features), -np.inf)
            rows = int(self._rows[live].sum())
            covered = float(now - self._start[live].min()) if live.any() else 0.0
        features = [self._feature(j, name, bins, counts[j], int(missing[j]), float(sums[j]), float(mins[j]),
                                  float(maxs[j]), rows)
                    for j, name in enumerate(bins.features)]
        return DriftSnapshot(self.version, self.window_s, min(covered, self.window_s), rows, self.min_records,
                             features)

    def _feature(self, j: int, name: str, bins: _Bins, counts: np.ndarray, missing: int, total: float,
                 lo: float, hi: float, rows: int) -> FeatureLive:
        n = int(counts.sum())
        imputed_share = missing / (n + missing) if n + missing else 0.0
        entry = bins.entries[j]
        if entry is None:
            return FeatureLive(name, n, imputed_share, None, "", [], [])
        k = int(bins.npoints[j])
        points = bins.points[j, :k]
        f_new = np.cumsum(counts)[:k] / n if n else np.zeros(k)
        drift = drift_from_cdf(f_new, n, total / n if n else 0.0, entry, n_ref=self.n_ref, name=name)
        fault = ""
        if rows >= self.min_records:
            if imputed_share > self.imputed_fault_share:
                fault = "imputed"
            elif n and lo == hi and k >= 2:
                fault = "constant"
        return FeatureLive(name, n, imputed_share, drift, fault, [float(q) for q in entry["quantiles"]],
                           window_quantiles(points, f_new, lo, hi) if n else [None] * len(DIGEST_LEVELS))


def window_quantiles(points: np.ndarray, cdf: np.ndarray, lo: float, hi: float) -> list[float | None]:
    """The window's quantiles at the digest's levels, interpolated in its bins (the window's
    min and max close the outer bins): an estimate for people, not used by the statistic.

    >>> window_quantiles(np.array([1.0, 2.0]), np.array([0.5, 1.0]), 0.0, 2.0)[:3]
    [0.1, 0.325, 0.55]
    """
    xs = np.concatenate([[lo], points, [hi]])
    fs = np.concatenate([[0.0], cdf, [1.0]])
    xs = np.maximum.accumulate(np.clip(xs, lo, hi))
    # np.interp wants increasing fs; where the CDF is flat the first x of the flat run is taken.
    fs, keep = np.unique(fs, return_index=True)
    return [round(float(v), 6) for v in np.interp(DIGEST_LEVELS, fs, xs[keep])]
