"""What the in-process cost benchmarks share (``reasons_cost``, ``drift_cost``,
``shadow_cost``): a bundle trained on simulated humans, and a rate measured in CPU time.

Why CPU time: these benchmarks compare one pipeline with and without a feature on one
thread, on a box shared with brokers and other runs; wall time would charge their load to
whichever side happened to run at the moment.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable


def simulated_bundle(workdir: Path, quick: bool, *, seed: int = 11, labelled: bool = False,
                     digest: bool = True) -> Any:
    """Train and write a bundle on simulated humans (``labelled``: plus an XGBoost member on
    a half-bot labelled sample); returns the store's :class:`BundleInfo`."""
    import numpy as np

    from ja4_core.bundle import ModelStore, write_bundle
    from ja4_core.features import DEFAULT_FEATURES
    from ja4_dev.simulator import TrafficSimulator
    from trainer.fit import FitConfig, fit_ensemble, quantile_digest

    def matrix(records: list[dict[str, Any]]) -> Any:
        return np.array([[r[f] for f in DEFAULT_FEATURES] for r in records], dtype=np.float64)

    X = matrix(TrafficSimulator(seed=seed, bot_share=0.0).records(4000 if quick else 20000))
    xgb_data = None
    if labelled:
        sample = TrafficSimulator(seed=seed + 1, bot_share=0.5).records(2000)
        xgb_data = (matrix(sample), np.array([r["label"] == "bot" for r in sample], dtype=int))
    config = FitConfig(eif_ntrees=60 if quick else 300, ae_epochs=3 if quick else 30, nthreads=1, seed=seed)
    fit = fit_ensemble(X, DEFAULT_FEATURES, config, xgb_data=xgb_data)
    extra = {"digest": quantile_digest(X, DEFAULT_FEATURES), "digest_rows": len(X)} if digest else None
    return write_bundle(ModelStore(workdir), fit.ensemble, model="default", smoke_rows=X[:8], extra=extra)


def rows_per_cpu_s(fn: Callable[[], int], min_time: float, clock: Callable[[], float] = time.thread_time) -> float:
    """Rows per second of ``clock`` (this thread's CPU time by default; ``time.process_time``
    where the work may use helper threads): ``fn`` runs until ``min_time`` has passed and
    returns the rows it handled each call."""
    rows, t0 = 0, clock()
    while True:
        rows += fn()
        elapsed = clock() - t0
        if elapsed >= min_time:
            return rows / elapsed
