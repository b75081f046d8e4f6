"""Load the compiled evaluators' machine code before the first bundle needs it.

Why: the first call of a numba kernel in a process infers its types and loads its machine code
from the on-disk cache (compiling it when the cache is cold), which took 1-2.5 s of a worker's
first bundle load on a busy box, after the consumer group had already assigned partitions. A
worker runs :func:`warm_up` in a thread at start, beside Faust's start-up and the group join,
on a tiny forest and network of the same array types as a bundle's compact files (read-only
float64 / int32 tables), so the first real load finds the code ready.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from ja4_core.detectors.arrays import decode as decode_arrays
from ja4_core.detectors.arrays import encode as encode_arrays

log = logging.getLogger(__name__)


def _tiny_forest() -> None:
    from ja4_core.detectors.eif_compiled import CompiledEIF

    k = 1
    tables = {"fnode": np.array([[0.0, 0.0, 1.0, 0.0]]), "inode": np.array([[-1, -2, 0]], dtype=np.int32),
              "roots": np.array([0], dtype=np.int32), "leaf": np.array([1.0, 2.0])}
    meta = {"k": str(k), "exp_avg_depth": "1.0", "n_features": "1"}
    blob = encode_arrays(tables, format=CompiledEIF.FORMAT, version=CompiledEIF.VERSION, extra=meta)
    decoded, meta = decode_arrays(blob, format=CompiledEIF.FORMAT, version=CompiledEIF.VERSION)
    CompiledEIF.from_arrays(decoded, meta, 1).predict(np.zeros((2, 1)))


def _tiny_network() -> None:
    from ja4_core.detectors.ae_compiled import CompiledAE

    one = np.ones(1)
    tensors = {"lo": np.zeros(1), "rng": one, "w0": np.ones((1, 1)), "b0": np.zeros(1), "mean0": np.zeros(1),
               "den0": one, "gamma0": one, "beta0": np.zeros(1), "w1": np.ones((1, 1)), "b1": np.zeros(1)}
    net = CompiledAE.from_arrays(tensors, {"layers": "2", "clip": "-10.0,11.0"})
    X = np.zeros((2, 1))
    net.errors(X)
    by_feature = getattr(net, "errors_by_feature", None)
    if by_feature is not None:  # the reasons' variant of the same kernel
        by_feature(X)


def warm_up() -> float:
    """Run each compiled kernel once on tiny inputs; returns the seconds it took. Never raises:
    a failure here only means the first load pays the cost itself."""
    started = time.perf_counter()
    for step in (_tiny_forest, _tiny_network):
        try:
            step()
        except Exception:  # noqa: BLE001 - an optimisation; the real load reports real problems
            log.debug("warm-up step %s failed", step.__name__, exc_info=True)
    elapsed = time.perf_counter() - started
    log.info("compiled evaluators warmed up in %.2fs", elapsed)
    return elapsed


def warm_up_in_background() -> threading.Thread:
    """:func:`warm_up` in a daemon thread (the process's start-up goes on meanwhile)."""
    thread = threading.Thread(target=warm_up, name="ja4-warm-up", daemon=True)
    thread.start()
    return thread
