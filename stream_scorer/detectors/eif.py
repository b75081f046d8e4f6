"""Extended Isolation Forest (isotree) adapter.

isotree's ``predict`` already returns the standardised outlier score of Liu et al.,
``2 ** (-E[depth] / c(n))`` in (0, 1) with higher = more anomalous, so no flip is needed.
The forest is stored in isotree's own binary format (``export_model``), never pickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from isotree import IsolationForest

from ..errors import BundleError, NotFittedError

FILENAME = "eif.isotree"


class EIFDetector:
    """Isolation forest with random hyperplane splits (``ndim`` columns per split).

    Defaults are the original bot-detector's: ``ndim=3, ntrees=300, sample_size='auto'``
    (``min(rows, 10000)`` rows per tree), ``missing_action='impute'``.
    """

    def __init__(self, *, ntrees: int = 300, ndim: int = 3, sample_size: int | str = "auto",
                 missing_action: str = "impute", nthreads: int = 1, random_seed: int = 1) -> None:
        self.ntrees = ntrees
        self.ndim = ndim
        self.sample_size = sample_size
        self.missing_action = missing_action
        self.nthreads = nthreads
        self.random_seed = random_seed
        self.model_: IsolationForest | None = None
        self.n_features_in_: int | None = None

    def params(self) -> dict[str, Any]:
        """Hyperparameters as stored in the manifest."""
        return {"ntrees": self.ntrees, "ndim": self.ndim, "sample_size": self.sample_size,
                "missing_action": self.missing_action, "random_seed": self.random_seed}

    def fit(self, X: np.ndarray) -> "EIFDetector":
        X = np.ascontiguousarray(X, dtype=np.float64)
        ndim = min(self.ndim, X.shape[1])  # isotree refuses ndim > columns
        self.model_ = IsolationForest(
            ntrees=self.ntrees, ndim=ndim, sample_size=self.sample_size,
            missing_action=self.missing_action, nthreads=self.nthreads,
            random_seed=self.random_seed).fit(X)
        self.n_features_in_ = X.shape[1]
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            raise NotFittedError("EIFDetector.score called before fit/load")
        return np.asarray(self.model_.predict(np.ascontiguousarray(X, dtype=np.float64)),
                          dtype=np.float64)

    def set_threads(self, nthreads: int) -> None:
        """Threads used by ``score`` (isotree releases the GIL while predicting)."""
        self.nthreads = nthreads
        if self.model_ is not None:
            self.model_.nthreads = nthreads

    def save(self, directory: Path) -> str:
        if self.model_ is None:
            raise NotFittedError("EIFDetector.save called before fit")
        self.model_.export_model(str(directory / FILENAME))
        return FILENAME

    @classmethod
    def load(cls, path: Path, params: dict[str, Any], n_features: int,
             nthreads: int = 1) -> "EIFDetector":
        det = cls(**{k: v for k, v in params.items() if k in
                     ("ntrees", "ndim", "sample_size", "missing_action", "random_seed")},
                  nthreads=nthreads)
        try:
            det.model_ = IsolationForest.import_model(str(path))
        except Exception as exc:  # isotree raises plain RuntimeError/ValueError
            raise BundleError(f"{path.name}: not a readable isotree model ({exc})") from exc
        det.model_.nthreads = nthreads
        det.n_features_in_ = n_features
        return det
