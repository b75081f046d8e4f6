"""Baseline preparation: pure numpy, no I/O, as in the original bot-detector.

Three steps before any model sees the human baseline:

1. non-finite values (NaN, +/-inf, NULL read as NaN) become NaN, i.e. *missing*; the fit
   later imputes them with the column medians (the same rule the scorer applies);
2. features whose variance (ignoring missing values) is below ``PRUNE_VARIANCE_THRESHOLD``
   are pruned: a constant column carries no signal, and the autoencoder's min-max scaling
   and the EIF's hyperplanes would only see noise in it. A column with no value at all is
   pruned too. Pruned names are logged and go into the manifest;
3. rows are put in time order (stable), because the EIF trains on the first 80 % and
   validates on the last 20 % *in time*.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ja4_core.errors import SchemaError

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A prepared baseline: kept features only, missing = NaN, oldest row first."""

    X: np.ndarray
    features: tuple[str, ...]
    times: np.ndarray
    pruned: tuple[str, ...] = ()
    variances: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.X)


def to_missing(X: np.ndarray) -> np.ndarray:
    """A float64 copy of ``X`` with every non-finite cell set to NaN.

    >>> to_missing(np.array([[1.0, np.inf], [-np.inf, 2.0]])).tolist()
    [[1.0, nan], [nan, 2.0]]
    """
    X = np.array(X, dtype=np.float64, copy=True)
    X[~np.isfinite(X)] = np.nan
    return X


def column_variances(X: np.ndarray) -> np.ndarray:
    """Variance per column ignoring NaN; NaN for a column with no value."""
    if X.shape[0] == 0:
        return np.full(X.shape[1], np.nan)
    with np.errstate(all="ignore"):
        present = np.isfinite(X).any(axis=0)
        out = np.full(X.shape[1], np.nan)
        if present.any():
            out[present] = np.nanvar(X[:, present], axis=0)
    return out


def prepare_baseline(X: np.ndarray, features: Sequence[str], times: np.ndarray | None = None, *,
                     variance_threshold: float = 1e-6) -> Prepared:
    """Non-finite -> NaN, prune low-variance features, sort rows by time.

    >>> p = prepare_baseline(np.array([[3.0, 1.0], [1.0, 1.0], [2.0, 1.0]]), ("a", "b"), np.array([3, 1, 2]))
    >>> p.features, p.pruned, p.X[:, 0].tolist()
    (('a',), ('b',), [1.0, 2.0, 3.0])
    """
    features = tuple(features)
    X = to_missing(np.asarray(X, dtype=np.float64).reshape(-1, len(features)))
    times = np.arange(len(X), dtype=np.int64) if times is None else np.asarray(times)
    if len(times) != len(X):
        raise SchemaError(f"{len(times)} times for {len(X)} rows")
    # The read already returns time order: then no second copy of the matrix is made.
    if len(times) > 1 and not bool(np.all(times[:-1] <= times[1:])):
        order = np.argsort(times, kind="stable")
        X, times = X[order], times[order]
    variances = column_variances(X)
    # `not >=` also catches NaN (a column with no value at all).
    keep = np.array([bool(v >= variance_threshold) for v in variances]) if len(features) else np.zeros(0, bool)
    pruned = tuple(f for f, k in zip(features, keep) if not k)
    if pruned:
        log.info("pruned %d feature(s) with variance below %g: %s", len(pruned), variance_threshold, ", ".join(pruned))
    kept = tuple(f for f, k in zip(features, keep) if k)
    if not kept:
        raise SchemaError(f"every feature has variance below {variance_threshold}: nothing to train on")
    return Prepared(X=X if bool(keep.all()) else X[:, keep], features=kept, times=times, pruned=pruned,
                    variances={f: float(v) for f, v in zip(features, variances)})


def select(X: np.ndarray, features: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    """The columns of ``X`` (named ``features``) reordered to ``wanted``; non-finite -> NaN."""
    index = {f: i for i, f in enumerate(features)}
    missing = [f for f in wanted if f not in index]
    if missing:
        raise SchemaError(f"features not available: {', '.join(missing)}")
    return to_missing(np.asarray(X, dtype=np.float64)[:, [index[f] for f in wanted]])
