"""A compiled evaluator of a trained isotree extended isolation forest.

isotree's own ``predict`` walks its node objects (each a set of C++ vectors) one row at a time,
which costs about 0.2-0.4 ms per row for the original 300 trees of ~13 levels: more than the rest
of the scorer. This module evaluates the *same* forest, read from isotree's own serialisation by
:mod:`.isotree_file`, with a numba-compiled loop over packed node tables:

- the walk goes tree by tree over a block of rows, so one tree's nodes stay in cache, and
  :data:`_LANES` rows of the block step through that tree side by side (their loads overlap);
- the arithmetic is isotree's (``traverse_hplane``): ``h = sum_k (x[col_k] - mean_k) * coef_k``
  accumulated left to right, without fused multiply-add; a NaN/inf term contributes the node's
  ``fill_val`` (``missing_action='impute'``); ``h <= split`` goes left; leaf scores are summed per
  row in tree order; the score is ``2 ** (-depth / (ntrees * exp_avg_depth))``.

So the scores equal ``IsolationForest.predict`` (to ~1e-15; the scorer checks 1e-9 on every bundle
it loads, see :class:`.eif.EIFDetector`). The kernel releases the GIL, so several threads can share
a batch.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ja4_core.detectors._numba import jit
from ja4_core.detectors.isotree_file import FastEIF

_BLOCK_ROWS = 128  #: rows walked together through one tree (keeps that tree's nodes hot in cache)
#: Rows of a block that walk one tree side by side. One row's walk is a chain of dependent loads
#: and hard-to-predict branches; the paths of different rows are independent, so stepping
#: several of them in turn lets the CPU overlap their loads: 47 -> 21 us a row for the default
#: forest (300 trees, ndim 3) on this project's 2-core bench machine, the same scores bit for bit.
_LANES = 8


@jit
def _depth_sums(X, fnode, inode, roots, leaf, k, out):  # pragma: no cover - compiled
    # a node id >= 0 is an internal node (a row of fnode/inode), ~id < 0 the leaf ``leaf[~id]``.
    # Each row's arithmetic and its sum over the trees (in tree order) are as in a walk of one
    # row at a time: only the order in which rows take their steps changes.
    n = X.shape[0]
    ntrees = roots.shape[0]
    for r in range(n):
        out[r] = 0.0
    nodes = np.empty(_LANES, dtype=np.int64)
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(n, start + _BLOCK_ROWS)
        for t in range(ntrees):
            root = roots[t]
            for first in range(start, stop, _LANES):
                lanes = min(_LANES, stop - first)
                for lane in range(lanes):
                    nodes[lane] = root
                walking = lanes
                while walking > 0:  # one step of every row still inside the tree
                    walking = 0
                    for lane in range(lanes):
                        node = nodes[lane]
                        if node < 0:
                            continue
                        r = first + lane
                        h = 0.0
                        for j in range(k):
                            x = X[r, inode[node, 2 + j]]
                            if np.isfinite(x):
                                h += (x - fnode[node, 1 + j]) * fnode[node, 1 + k + j]
                            else:
                                h += fnode[node, 1 + 2 * k + j]
                        node = inode[node, 0] if h <= fnode[node, 0] else inode[node, 1]
                        nodes[lane] = node
                        if node >= 0:
                            walking += 1
                for lane in range(lanes):
                    out[first + lane] += leaf[-nodes[lane] - 1]


@dataclass
class CompiledEIF:
    """Packed node tables of one forest and the compiled walk over them.

    Only internal nodes have rows in ``fnode``/``inode``; a child or root id ``c < 0`` is the
    leaf ``leaf[~c]``. That halves the tables (half the nodes of a tree are leaves), which are
    also what the bundle's compact file holds (:meth:`to_arrays`, :meth:`from_arrays`)."""

    fnode: np.ndarray   #: (I, 1+3k) float64 per internal node: split, mean[k], coef[k], fill[k]
    inode: np.ndarray   #: (I, 2+k) int32/int64 per internal node: left, right, col[k]
    roots: np.ndarray   #: (T,) id of each tree's root (same encoding as the children)
    leaf: np.ndarray    #: (L,) leaf scores
    k: int
    exp_avg_depth: float
    n_features: int
    nthreads: int = 1

    #: ``format`` and ``version`` of the compact file (:mod:`.arrays` metadata).
    FORMAT = "ja4-eif-forest"
    VERSION = 1

    @classmethod
    def from_fast(cls, fast: FastEIF, nthreads: int = 1) -> "CompiledEIF":
        is_leaf = fast.score > 0
        k = fast.cols.shape[1]
        n = len(fast.split)
        itype = np.int32 if n < 2**31 - 1 else np.int64
        # global node id -> internal row (>= 0) or ~leaf index (< 0)
        enc = np.empty(n, dtype=np.int64)
        enc[~is_leaf] = np.arange(int((~is_leaf).sum()))
        enc[is_leaf] = ~np.arange(int(is_leaf.sum()))
        internal = ~is_leaf
        fnode = np.ascontiguousarray(np.concatenate(
            [fast.split[internal, None], fast.mean[internal], fast.coef[internal], fast.fill[internal]], axis=1),
            dtype=np.float64)
        inode = np.ascontiguousarray(np.concatenate(
            [enc[fast.left[internal]][:, None], enc[fast.right[internal]][:, None], fast.cols[internal]], axis=1),
            dtype=itype)
        return cls(fnode=fnode, inode=inode, roots=enc[fast.roots].astype(itype),
                   leaf=np.ascontiguousarray(fast.score[is_leaf], dtype=np.float64), k=k,
                   exp_avg_depth=fast.exp_avg_depth, n_features=fast.n_features, nthreads=nthreads)

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """The arrays and constants of the compact file (see :mod:`.arrays`)."""
        return ({"fnode": self.fnode, "inode": self.inode, "roots": self.roots, "leaf": self.leaf},
                {"k": str(self.k), "exp_avg_depth": repr(float(self.exp_avg_depth)),
                 "n_features": str(self.n_features)})

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, str], n_features: int,
                    nthreads: int = 1) -> "CompiledEIF":
        """Over the arrays of a compact file, used in place (read-only views of a mapped file).

        Every id is checked to lie inside the tables before the compiled walk may follow it (the
        walk does no bounds checks); raises ``ValueError`` for tables that do not fit together."""
        try:
            fnode, inode, roots, leaf = (arrays[name] for name in ("fnode", "inode", "roots", "leaf"))
            k, exp_avg_depth, stored = int(meta["k"]), float(meta["exp_avg_depth"]), int(meta["n_features"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"compact forest incomplete ({exc})") from None
        internal, leaves = len(fnode), len(leaf)
        if (fnode.dtype != np.float64 or leaf.dtype != np.float64 or inode.dtype.kind != "i"
                or roots.dtype != inode.dtype or k < 1 or fnode.shape != (internal, 1 + 3 * k)
                or inode.shape != (internal, 2 + k) or roots.ndim != 1 or not len(roots) or leaf.ndim != 1
                or stored != n_features or not np.isfinite(exp_avg_depth) or exp_avg_depth <= 0):
            raise ValueError("compact forest tables do not fit together")
        ids = np.concatenate([roots, inode[:, :2].ravel()])
        if internal and (inode[:, 2:].min() < 0 or inode[:, 2:].max() >= n_features):
            raise ValueError("compact forest: a split column lies outside the features")
        if ids.min() < -leaves or ids.max() >= internal:
            raise ValueError("compact forest: a node id lies outside the tables")
        children = inode[:, :2]
        if not ((children < 0) | (children > np.arange(internal)[:, None])).all():
            # isotree stores a node's children after it; a child before its parent could loop forever
            raise ValueError("compact forest: a child precedes its parent")
        return cls(fnode=fnode, inode=inode, roots=roots, leaf=leaf, k=k, exp_avg_depth=exp_avg_depth,
                   n_features=n_features, nthreads=nthreads)

    @classmethod
    def from_bytes(cls, data: bytes, n_features: int | None = None, nthreads: int = 1) -> "CompiledEIF":
        """From isotree's serialisation (raises ``ValueError`` for a forest it cannot evaluate)."""
        return cls.from_fast(FastEIF.from_bytes(data, n_features), nthreads)

    @classmethod
    def from_model(cls, model, n_features: int | None = None, nthreads: int = 1) -> "CompiledEIF":
        """From a fitted ``isotree.IsolationForest``."""
        return cls.from_fast(FastEIF.from_model(model, n_features), nthreads)

    @property
    def ntrees(self) -> int:
        return len(self.roots)

    def depth_sums(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] < self.n_features:
            raise ValueError(f"X must be a matrix with at least {self.n_features} columns")
        out = np.empty(len(X), dtype=np.float64)
        workers = min(self.nthreads, max(1, len(X) // _BLOCK_ROWS))
        if workers <= 1:
            _depth_sums(X, self.fnode, self.inode, self.roots, self.leaf, self.k, out)
            return out
        bounds = np.linspace(0, len(X), workers + 1).astype(int)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda i: _depth_sums(X[bounds[i]:bounds[i + 1]], self.fnode, self.inode,
                                                self.roots, self.leaf, self.k, out[bounds[i]:bounds[i + 1]]),
                          range(workers)))
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Standardised outlier score, as ``IsolationForest.predict(X)``."""
        return np.exp2(-self.depth_sums(X) / (self.exp_avg_depth * float(self.ntrees)))
