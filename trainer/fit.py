"""Fitting the ensemble from a prepared baseline: pure computation, no I/O.

The original's recipe: the EIF and the autoencoder learn the *human* baseline (first 80 % in
time order), the last 20 % validates. The validation split gives the autoencoder's error
reference, the threat thresholds (quantiles of the combined score on humans) and the gate:
if more than ``VAL_ANOMALY_GATE`` of the validation rows score above the EIF's anomaly
threshold (the ``1 - EIF_CONTAMINATION`` quantile of the training split), the baseline was
contaminated and the model is refused.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from ja4_core.detectors import AutoencoderDetector, EIFDetector, XGBDetector
from ja4_core.ensemble import Ensemble, impute

#: Quantiles of the combined score on the human validation split that start each level:
#: about 10 % of humans are LOW or above, 3 % MEDIUM, 1 % HIGH, 0.1 % CRITICAL.
LEVEL_QUANTILES: dict[str, float] = {"LOW": 0.90, "MEDIUM": 0.97, "HIGH": 0.99, "CRITICAL": 0.999}


@dataclass
class FitConfig:
    """Hyperparameters of one training run (from the settings)."""

    eif_ntrees: int = 300
    eif_ndim: int = 3
    eif_sample_size: int | str = "auto"
    ae_epochs: int = 30
    ae_weight: float = 0.30
    xgb_weight: float = 0.20
    train_share: float = 0.8
    contamination: float = 0.05
    nthreads: int = 2
    seed: int = 1
    #: torch threads while the autoencoder trains. Its layers are at most 64 wide and its
    #: batches 256 rows: too little work per operation to share. Two threads were measured
    #: 4-50x slower than one on a busy 2-core machine (OpenMP threads waiting on each other).
    ae_threads: int = 1


@dataclass
class FitResult:
    """A fitted ensemble plus what the gate, the report and the manifest need."""

    ensemble: Ensemble
    eif_threshold: float
    val_anomaly_rate: float
    n_train: int
    n_val: int
    val_scores: dict[str, np.ndarray] = field(default_factory=dict)
    ae_loss_curve: list[float] = field(default_factory=list)
    ae_val_loss_curve: list[float] = field(default_factory=list)


#: Below this many labelled rows XGBoost trains on one thread.
XGB_PARALLEL_MIN_ROWS = 50_000


def xgb_threads(n_rows: int, nthreads: int) -> int:
    """Threads for an XGBoost fit on ``n_rows``.

    XGBoost's ``hist`` method synchronises its threads at every tree node; on a small table
    the work between barriers is tiny, and on a busy machine (CPU oversubscribed, OpenMP
    threads spinning at barriers) two threads were measured 10-30x *slower* than one. Small
    fits therefore use a single thread.

    >>> xgb_threads(5_000, 8), xgb_threads(500_000, 8)
    (1, 8)
    """
    return nthreads if n_rows >= XGB_PARALLEL_MIN_ROWS else 1


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads, then restore the previous number."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def medians_of(X: np.ndarray) -> np.ndarray:
    """Column medians ignoring non-finite values (0 where a column has none)."""
    clean = np.where(np.isfinite(X), X, np.nan)
    with np.errstate(all="ignore"):
        med = np.nanmedian(clean, axis=0) if len(clean) else np.zeros(X.shape[1])
    return np.where(np.isfinite(med), med, 0.0)


def split_time_ordered(X: np.ndarray, train_share: float) -> tuple[np.ndarray, np.ndarray]:
    """First ``train_share`` of the rows (already in time order) and the rest."""
    cut = int(round(len(X) * train_share))
    cut = min(max(cut, 1), len(X) - 1)
    return X[:cut], X[cut:]


def level_thresholds(combined_val: np.ndarray) -> dict[str, float]:
    """Threat thresholds from the combined score on human validation rows, kept increasing."""
    cuts = {k: float(np.quantile(combined_val, q)) for k, q in LEVEL_QUANTILES.items()}
    prev = -np.inf
    for k in LEVEL_QUANTILES:  # ties in the quantiles would make a level empty but never disorder
        cuts[k] = max(cuts[k], prev)
        prev = cuts[k]
    return cuts


def fit_ensemble(X: np.ndarray, features: tuple[str, ...], config: FitConfig, *,
                 xgb_data: tuple[np.ndarray, np.ndarray] | None = None,
                 progress: Callable[[str, Any], None] | None = None,
                 xgb_prefit: XGBDetector | None = None) -> FitResult:
    """Fit EIF + autoencoder on the time-ordered human baseline ``X`` (+ XGBoost when labelled
    data is given) and derive the manifest constants from the validation split.

    ``xgb_prefit`` puts an already fitted supervised model (e.g. the current bundle's, inside
    ``XGB_RETRAIN_INTERVAL_H``) into the ensemble instead of training one; the thresholds are
    then derived with it, as they must be since it enters the combined score."""
    X = np.asarray(X, dtype=np.float64)
    medians = medians_of(X)
    X, _ = impute(X, medians)
    X_train, X_val = split_time_ordered(X, config.train_share)
    say = progress or (lambda step, info: None)

    say("eif", {"rows": len(X_train)})
    eif = EIFDetector(ntrees=config.eif_ntrees, ndim=config.eif_ndim, sample_size=config.eif_sample_size,
                      nthreads=config.nthreads, random_seed=config.seed).fit(X_train)
    eif.use_compiled(X_train[:2000])  # the same scores, ~4x faster on the large splits below
    eif_threshold = float(np.quantile(eif.score(X_train), 1.0 - config.contamination))
    eif_val = eif.score(X_val)
    val_anomaly_rate = float(np.mean(eif_val > eif_threshold))

    say("ae", {"rows": len(X_train), "epochs": config.ae_epochs})
    with torch_threads(config.ae_threads):
        ae = AutoencoderDetector(epochs=config.ae_epochs, random_seed=config.seed).fit(
            X_train, X_val, progress=lambda epoch, loss: say("ae_epoch", {"epoch": epoch, "loss": loss}))

    xgb = None
    if xgb_data is not None:
        say("xgb", {"rows": len(xgb_data[1])})
        Xl, yl = xgb_data
        Xl, _ = impute(np.asarray(Xl, dtype=np.float64), medians)
        xgb = XGBDetector(nthreads=xgb_threads(len(yl), config.nthreads), random_seed=config.seed).fit(Xl, yl)
    elif xgb_prefit is not None:
        xgb = xgb_prefit

    ensemble = Ensemble(features=tuple(features), medians=medians, eif=eif, ae=ae, xgb=xgb,
                        ae_weight=config.ae_weight, xgb_weight=config.xgb_weight)
    batch = ensemble.score(X_val)
    ensemble.thresholds = level_thresholds(batch.anomaly)
    val_scores = {"eif": batch.eif, "anomaly": batch.anomaly}
    if batch.ae is not None:
        val_scores["ae"] = batch.ae
    if batch.xgb is not None:
        val_scores["xgb"] = batch.xgb
    return FitResult(ensemble=ensemble, eif_threshold=eif_threshold, val_anomaly_rate=val_anomaly_rate,
                     n_train=len(X_train), n_val=len(X_val), val_scores=val_scores,
                     ae_loss_curve=ae.loss_curve_, ae_val_loss_curve=ae.val_loss_curve_)


def quantile_digest(X: np.ndarray, features: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per-feature 9-point quantile digest (p5..p95), mean and std, for drift checks."""
    qs = np.linspace(0.05, 0.95, 9)
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(features):
        col = X[:, j]
        col = col[np.isfinite(col)]
        if not len(col):
            col = np.zeros(1)
        out[name] = {"quantiles": np.quantile(col, qs).tolist(), "mean": float(col.mean()),
                     "std": float(col.std())}
    return out
