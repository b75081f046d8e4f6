"""EIF speed vs quality on the ADBench sets and on simulator data.

Protocol (ADBench, unsupervised): fit on all of X, score all of X, ROC AUC against y, mean of
seeds 1-3 as in the contract's reference table (``--quick``: seed 1 and at most 60,000 rows).
Speed: rows/s on a fixed block of rows (the first ``speed_rows`` of X), batches of 1,000 rows
as in the scorer, with 1 and 2 threads, for isotree's ``predict`` and for the compiled
evaluator (``eif_compiled.CompiledEIF``) of the *same* trained forest, whose max |difference|
to isotree's scores is reported (the numpy evaluator ``isotree_file.FastEIF`` too, for the original).
"""

from __future__ import annotations

import glob
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from bench.common import log

ADBENCH = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "adbench"
VARIANTS = [  # (name, ntrees, sample_size)
    ("original 300/auto", 300, "auto"),
    ("300/256", 300, 256),
    ("100/256", 100, 256),
    ("100/auto", 100, "auto"),
    ("200/auto", 200, "auto"),
]


def _datasets(quick: bool, sim_rows: int) -> list[tuple[str, np.ndarray, np.ndarray, str]]:
    out = []
    for path in sorted(glob.glob(str(ADBENCH / "*.npz"))):
        d = np.load(path)
        X, y = np.asarray(d["X"], dtype=np.float64), np.asarray(d["y"]).astype(int)
        note = "all rows"
        if quick and len(X) > 60000:
            idx = np.random.default_rng(0).choice(len(X), 60000, replace=False)
            X, y = X[idx], y[idx]
            note = "60,000-row random subsample (--quick)"
        out.append((Path(path).stem, X, y, note))
    from ja4_core.features import DEFAULT_FEATURES
    from ja4_dev.simulator import TrafficSimulator

    recs = TrafficSimulator(seed=21, bot_share=0.1).records(sim_rows)
    X = np.array([[r[f] for f in DEFAULT_FEATURES] for r in recs], dtype=np.float64)
    y = np.array([r["label"] == "bot" for r in recs], dtype=int)
    out.append(("simulator", X, y, f"{sim_rows} records, 10% bots, fit on all"))
    return out


def _speed(fn, X: np.ndarray, batch: int = 1000) -> float:
    fn(X[:batch])
    t0 = time.perf_counter()
    for i in range(0, len(X), batch):
        fn(X[i:i + batch])
    return len(X) / (time.perf_counter() - t0)


def run(quick: bool) -> dict[str, Any]:
    from isotree import IsolationForest

    from ja4_core.detectors.eif_compiled import CompiledEIF
    from ja4_core.detectors.isotree_file import FastEIF

    speed_rows = 3000 if quick else 10000
    seeds = (1,) if quick else (1, 2, 3)
    rows: list[dict[str, Any]] = []
    for name, X, y, note in _datasets(quick, 10000 if quick else 30000):
        ndim = min(3, X.shape[1])
        Xs = np.ascontiguousarray(X[:speed_rows])
        for vname, ntrees, ss in VARIANTS:
            aucs = []
            for seed in seeds:
                t0 = time.perf_counter()
                m = IsolationForest(ntrees=ntrees, ndim=ndim, sample_size=ss, missing_action="impute",
                                    nthreads=2, random_seed=seed).fit(X)
                fit_s = time.perf_counter() - t0
                compiled = CompiledEIF.from_model(m, X.shape[1], nthreads=2)
                t0 = time.perf_counter()
                scores = compiled.predict(X)  # the same scores as m.predict (checked below), faster
                score_s = time.perf_counter() - t0
                aucs.append(float(roc_auc_score(y, scores)))
            # speed and equality on the last seed's forest
            m.nthreads = 1
            r1 = _speed(m.predict, Xs)
            m.nthreads = 2
            r2 = _speed(m.predict, Xs)
            ref = m.predict(Xs)
            compiled.nthreads = 1
            c1 = _speed(compiled.predict, Xs)
            diff = float(np.abs(compiled.predict(Xs) - ref).max())
            compiled.nthreads = 2
            c2 = _speed(compiled.predict, Xs)
            diff = max(diff, float(np.abs(compiled.predict(Xs) - ref).max()))
            auc = float(np.mean(aucs))
            row = {"dataset": name, "rows": len(X), "cols": X.shape[1], "note": note, "variant": vname,
                   "ntrees": ntrees, "sample_size": ss, "ndim": ndim, "seeds": list(seeds), "roc_auc": auc,
                   "roc_auc_per_seed": aucs, "fit_s": fit_s, "full_score_s_compiled_2threads": score_s,
                   "rows_per_s_1thread": r1, "rows_per_s_2threads": r2,
                   "compiled_rows_per_s_1thread": c1, "compiled_rows_per_s_2threads": c2,
                   "compiled_max_abs_diff": diff}
            if vname.startswith("original"):
                m.nthreads = 1
                fast = FastEIF.from_model(m, X.shape[1])
                row["numpy_rows_per_s_1thread"] = _speed(fast.predict, Xs)
                row["numpy_max_abs_diff"] = float(np.abs(fast.predict(Xs) - ref).max())
            rows.append(row)
            log(f"  eif {name:12s} {vname:18s} AUC {auc:.4f}  isotree {r1:8.0f} rows/s (1t) {r2:8.0f} (2t)  "
                f"compiled {c1:8.0f} (1t) {c2:8.0f} (2t), max diff {diff:.1e}")
    # which variants keep AUC within 0.005 of the original on every data set?
    by_ds: dict[str, dict[str, float]] = {}
    for r in rows:
        by_ds.setdefault(r["dataset"], {})[r["variant"]] = r["roc_auc"]
    verdict = {}
    for vname, _, _ in VARIANTS[1:]:
        deltas = {ds: v[vname] - v[VARIANTS[0][0]] for ds, v in by_ds.items()}
        verdict[vname] = {"auc_minus_original": deltas, "within_0.005_everywhere": all(d >= -0.005 for d in deltas.values())}
    return {"speed_rows": speed_rows, "seeds": list(seeds), "rows": rows, "verdict": verdict}
