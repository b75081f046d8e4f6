"""XGBoost classifier adapter: the supervised member, present only when labels exist.

``score`` is the positive-class probability (bot = 1), computed with ``inplace_predict``
(no DMatrix copy). Stored as XGBoost UBJSON.

xgboost is imported on first use (:func:`_xgb`). Imported as it is, it imports scikit-learn and
pandas when they are installed (its sklearn-style API), which cost a scorer ~130 MB and seconds
of start-up for nothing: a worker calls :func:`import_for_scoring` at start, which imports it
without them (the booster, all scoring needs). The trainer imports it whole.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ja4_core.detectors.base import Detector
from ja4_core.errors import BundleError, NotFittedError

if TYPE_CHECKING:
    from types import ModuleType

    import xgboost as xgb

FILENAME = "xgb.ubj"
#: Optional packages xgboost imports for its sklearn-style API and DataFrame inputs.
_SCORING_NEEDS_NOT = ("sklearn", "pandas")


def _xgb() -> "ModuleType":
    import xgboost

    return xgboost


def import_for_scoring() -> None:
    """Import xgboost for a scoring process, without scikit-learn and pandas (unless they are
    already imported): ``Booster.load_model`` and ``inplace_predict`` on numpy need neither.
    A later import of either works as usual; xgboost's own sklearn-style classes stay
    unavailable in this process, which only scores."""
    if "xgboost" in sys.modules:
        return
    hidden = [name for name in _SCORING_NEEDS_NOT if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    try:
        import xgboost  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name) is None:
                del sys.modules[name]


class XGBDetector(Detector):
    """Gradient-boosted trees on the same features, trained on analyst/score labels."""

    NAME = "xgb"
    FILENAME = FILENAME
    SUPERVISED = True

    def __init__(self, *, n_estimators: int = 200, max_depth: int = 6, learning_rate: float = 0.1,
                 scale_pos_weight: float | None = None, nthreads: int = 1, random_seed: int = 1) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.scale_pos_weight = scale_pos_weight
        self.nthreads = nthreads
        self.random_seed = random_seed
        self.booster_: "xgb.Booster | None" = None

    def params(self) -> dict[str, Any]:
        return {"n_estimators": self.n_estimators, "max_depth": self.max_depth,
                "learning_rate": self.learning_rate, "scale_pos_weight": self.scale_pos_weight}

    def _classifier(self) -> "xgb.XGBClassifier":
        return _xgb().XGBClassifier(
            n_estimators=self.n_estimators, max_depth=self.max_depth,
            learning_rate=self.learning_rate, scale_pos_weight=self.scale_pos_weight,
            n_jobs=self.nthreads, random_state=self.random_seed, tree_method="hist",
            eval_metric="logloss")

    @classmethod
    def unit_test_params(cls) -> dict[str, Any]:
        return {"n_estimators": 40, "max_depth": 3}

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> "XGBDetector":
        """Fit on ``X`` and the labels ``y`` (1 = bot), which this member needs."""
        if y is None:
            raise ValueError("XGBDetector.fit needs labels y (a supervised member)")
        y = np.asarray(y, dtype=np.int32)
        if self.scale_pos_weight is None:
            pos = max(int(y.sum()), 1)
            self.scale_pos_weight = float((len(y) - pos) / pos)
        clf = self._classifier().fit(np.asarray(X, dtype=np.float64), y)
        self.booster_ = clf.get_booster()
        return self

    def predict_proba_oof(self, X: np.ndarray, y: np.ndarray, folds: int = 5,
                          seed: int = 1) -> np.ndarray:
        """Out-of-fold probabilities of both classes, for label-noise filtering."""
        from sklearn.model_selection import StratifiedKFold

        y = np.asarray(y, dtype=np.int32)
        proba = np.zeros((len(y), 2), dtype=np.float64)
        n_splits = max(2, min(folds, int(np.bincount(y, minlength=2).min())))
        for train, test in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(X, y):
            clf = self._classifier().fit(X[train], y[train])
            proba[test] = clf.predict_proba(X[test])
        return proba

    def score(self, X: np.ndarray) -> np.ndarray:
        if self.booster_ is None:
            raise NotFittedError("XGBDetector.score called before fit/load")
        return np.asarray(self.booster_.inplace_predict(np.asarray(X, dtype=np.float64)),
                          dtype=np.float64)

    def set_threads(self, nthreads: int) -> None:
        self.nthreads = nthreads
        if self.booster_ is not None:
            self.booster_.set_param({"nthread": nthreads})

    def manifest_section(self) -> dict[str, Any]:
        return {"params": self.params()}

    def to_bytes(self) -> bytes:
        """XGBoost UBJSON (``save_raw("ubj")``, what ``save_model`` writes to a ``.ubj`` file)."""
        if self.booster_ is None:
            raise NotFittedError("XGBDetector.save called before fit")
        return bytes(self.booster_.save_raw(raw_format="ubj"))

    @classmethod
    def load(cls, data: bytes, section: Mapping[str, Any], n_features: int,
             nthreads: int = 1) -> "XGBDetector":
        params = section.get("params") or {}
        det = cls(**{k: v for k, v in params.items() if k in
                     ("n_estimators", "max_depth", "learning_rate", "scale_pos_weight")},
                  nthreads=nthreads)
        xgb = _xgb()
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(data))
        except xgb.core.XGBoostError as exc:
            raise BundleError(f"{FILENAME}: not a readable XGBoost model ({exc})") from exc
        booster.set_param({"nthread": nthreads})
        det.booster_ = booster
        return det
