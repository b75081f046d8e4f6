"""isotree's file format, read: the ``eif.isotree`` file of a bundle as flat node arrays, and a
vectorised numpy evaluator of that extended isolation forest.

It reads isotree's own binary serialisation (``export_model``, the ``eif.isotree`` file of a
bundle) - not ``to_json()``, whose numbers are rounded to 6 decimals - into flat arrays
(struct of arrays, one row per node of every tree) and evaluates the *same* forest with the
*same* arithmetic as isotree's ``traverse_hplane``: ``hval = sum_k (x[col_k] - mean_k) * coef_k``
accumulated left to right, ``hval <= split_point`` goes left, a leaf adds its ``score``, and the
standardised score is ``2 ** (-(sum of leaf scores) / (ntrees * exp_avg_depth))``. Scores equal
``IsolationForest.predict`` to ~1e-15 (checked by ``tests/unit/ja4_core/test_eif_evaluators.py``).

Scope (refused with ``ValueError`` otherwise): an ExtIsoForest (ndim > 1) on numeric columns
only, standard "depth" scoring, little-endian 64-bit serialisation. Missing or infinite values take
the node's ``fill_val`` as the term's contribution, like ``missing_action='impute'``.

The walk is level-synchronous over all (row, tree) pairs at once: leaves point to themselves
with a split of +inf, so ``max_depth`` rounds bring every pair to its leaf without masks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ja4_core.detectors._numba import jit

WATERMARK = b"isotree_model"
_SETUP = 9  # endianness, version x3, double type, size_t kind, sizeof int/size_t/double


@dataclass
class FastEIF:
    """Flat arrays of every node of every tree (global node ids)."""

    cols: np.ndarray        #: (N, k) int64 column of each term (0 for leaves)
    coef: np.ndarray        #: (N, k) float64
    mean: np.ndarray        #: (N, k) float64
    fill: np.ndarray        #: (N, k) float64 imputation value per term (NaN inputs)
    split: np.ndarray       #: (N,) float64, +inf for leaves
    left: np.ndarray        #: (N,) int64 global ids; leaves point to themselves
    right: np.ndarray       #: (N,) int64
    score: np.ndarray       #: (N,) float64 leaf score (0 for internal nodes)
    roots: np.ndarray       #: (T,) int64 global id of each tree's root
    max_depth: int
    exp_avg_depth: float
    n_features: int

    @property
    def ntrees(self) -> int:
        return len(self.roots)

    # -- loading ------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, n_features: int | None = None) -> "FastEIF":
        return cls.from_bytes(Path(path).read_bytes(), n_features)

    @classmethod
    def from_model(cls, model, n_features: int | None = None) -> "FastEIF":
        """From a fitted ``isotree.IsolationForest`` (exports it to a temporary file)."""
        import os
        import tempfile

        fd, name = tempfile.mkstemp(suffix=".isotree")
        os.close(fd)
        try:
            model.export_model(name)
            return cls.from_file(name, n_features)
        finally:
            os.unlink(name)

    @classmethod
    def from_bytes(cls, data: bytes, n_features: int | None = None) -> "FastEIF":
        if not data.startswith(WATERMARK):
            raise ValueError("not an isotree model (watermark missing)")
        pos = len(WATERMARK)
        little, _vmaj, _vmin, _vpatch, dbl, size_kind, s_int, s_size, s_dbl = data[pos:pos + _SETUP]
        if not (little == 1 and dbl == 1 and size_kind == 3 and s_size == 8 and s_dbl == 8):
            raise ValueError("only little-endian 64-bit isotree serialisations are supported")
        pos += _SETUP
        model_type = data[pos]
        pos += 1
        if model_type == 4:  # AllObjectsCombined: ending indicator, then sizes
            indicator = data[pos]
            pos += 1
            if indicator not in (2, 5, 7, 9):
                raise ValueError("the serialised model is not an extended isolation forest (ndim=1?)")
            # size of model, imputer, indexer(s)/metadata: skip the size_t block up to the model
            # by locating it from the declared model size and the fields that follow.
            pos = _find_ext_model_start(data, pos)
        elif model_type == 2:  # ExtIsoForestModel alone: size_t size, then the model
            pos += 8
        else:
            raise ValueError(f"unsupported isotree object type {model_type}")
        return _parse_ext_model(data, pos, n_features)

    # -- scoring ------------------------------------------------------------------------
    def _tables(self):
        """Packed per-node tables for the walk (built once, cached)."""
        cached = getattr(self, "_packed", None)
        if cached is None:
            k = self.cols.shape[1]
            ftab = np.ascontiguousarray(np.concatenate(
                [self.mean, self.coef, self.split[:, None]], axis=1))              # (N, 2k+1)
            kids = np.ascontiguousarray(np.stack([self.left, self.right], axis=1).ravel())
            dtype = np.int32 if len(self.split) * 2 < 2**31 else np.int64
            cached = (ftab, kids.astype(dtype), self.cols.astype(dtype), k, dtype)
            self._packed = cached
        return cached

    def depth_sums(self, X: np.ndarray, chunk_pairs: int = 1 << 18) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError("X must be a 2-D matrix")
        n, f = X.shape
        if f < self.n_features:
            raise ValueError(f"X has {f} columns, the forest needs {self.n_features}")
        ftab, kids, cols_t, k, idt = self._tables()
        has_nan = not bool(np.isfinite(X).all())
        T = self.ntrees
        out = np.empty(n, dtype=np.float64)
        rows_per_chunk = max(1, chunk_pairs // max(T, 1))
        roots = self.roots.astype(idt)
        for start in range(0, n, rows_per_chunk):
            Xc = X[start:start + rows_per_chunk]
            b = len(Xc)
            flat = Xc.ravel()
            base = (np.arange(b, dtype=idt) * idt(f))[:, None, None]              # (b, 1, 1)
            node = np.broadcast_to(roots, (b, T)).copy()                           # (b, T)
            for _ in range(self.max_depth):
                rec = ftab[node]                                                   # (b, T, 2k+1)
                x = flat[cols_t[node] + base]                                      # (b, T, k)
                bad = ~np.isfinite(x) if has_nan else None
                x -= rec[..., :k]
                x *= rec[..., k:2 * k]
                if bad is not None:  # isotree: a NaN/inf term contributes the node's fill_val
                    x = np.where(bad, self.fill[node], x)
                h = x[..., 0].copy()
                for j in range(1, k):
                    h += x[..., j]
                node = kids[2 * node + (h > rec[..., 2 * k])]
            # isotree accumulates tree by tree in order; keep that order for the sum.
            leaf = self.score[node]
            acc = np.zeros(b, dtype=np.float64)
            for t in range(T):
                acc += leaf[:, t]
            out[start:start + b] = acc
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Standardised outlier score, as ``IsolationForest.predict(X)``."""
        depth = self.depth_sums(X)
        return np.exp2(-depth / (self.exp_avg_depth * float(self.ntrees)))


def _find_ext_model_start(data: bytes, pos: int) -> int:
    """In a combined serialisation, the ExtIsoForest section follows a block of size_t
    fields (model size, imputer size, [indexer size,] metadata size). The section starts
    with 5 enum bytes (or 3 in older formats), two doubles (exp_avg_depth, exp_avg_sep), then
    orig_sample_size and ntrees; the declared model size lets us check each candidate."""
    size_model = struct.unpack_from("<Q", data, pos)[0]
    for n_sizes in (3, 4, 5):
        start = pos + 8 * n_sizes
        end = start + size_model
        if end > len(data):
            continue
        for n_enums in (5, 4, 3):
            try:
                model, stop = _walk(data, start, n_enums)
            except (struct.error, ValueError, IndexError):
                continue
            if stop == end:
                return start
    raise ValueError("could not locate the extended model in the isotree serialisation")


_NODE_FIXED = 120  # 5 doubles (split, score, range_low, range_high, remainder) + 10 size_t


@jit
def _scan_nodes(raw, pos, ntrees, sizes, offsets, fields):  # pragma: no cover - compiled
    """Offsets and size_t fields of every node (compiled: a 64 MB forest scans in milliseconds,
    without holding the GIL). Returns the end offset, or -1 if the layout is implausible."""
    end = raw.shape[0]
    n = 0
    for t in range(ntrees):
        if pos + 8 > end:
            return -1
        n_nodes = np.int64(0)
        for i in range(8):
            n_nodes |= np.int64(raw[pos + i]) << (8 * i)
        pos += 8
        if n_nodes < 0 or n_nodes > 100_000_000 or n + n_nodes > offsets.shape[0]:
            return -1
        sizes[t] = n_nodes
        for _ in range(n_nodes):
            if pos + 120 > end:
                return -1
            offsets[n] = pos
            for f in range(10):
                v = np.int64(0)
                base = pos + 40 + 8 * f
                for i in range(8):
                    v |= np.int64(raw[base + i]) << (8 * i)
                if v < 0 or v > 1_000_000:
                    return -1
                fields[n, f] = v
            # cols (size_t), col types (1 byte each), coef, mean, cat coef, chosen cat, fill, fill new
            pos += 120 + 8 * fields[n, 2] + fields[n, 3] + 8 * (fields[n, 4] + fields[n, 5] + fields[n, 6]) \
                + 8 * fields[n, 7] + 8 * (fields[n, 8] + fields[n, 9])
            n += 1
            if pos > end:
                return -1
    return pos


def _walk(data: bytes, start: int, n_enums: int):
    """Scan the ExtIsoForest section: per node only its offset and its 10 size_t fields (the
    arrays are gathered later with numpy). Returns ((exp_avg_depth, tree sizes, offsets,
    size_t fields), end offset)."""
    pos = start + n_enums
    exp_avg_depth, _exp_avg_sep = struct.unpack_from("<dd", data, pos)
    pos += 16
    _orig_sample_size, ntrees = struct.unpack_from("<QQ", data, pos)
    pos += 16
    if not (0 < ntrees < 1_000_000) or not (exp_avg_depth > 0):
        raise ValueError("implausible header")
    raw = np.frombuffer(data, dtype=np.uint8)
    capacity = max(0, (len(data) - pos) // _NODE_FIXED)
    sizes = np.zeros(ntrees, dtype=np.int64)
    offsets = np.zeros(capacity, dtype=np.int64)
    fields = np.zeros((capacity, 10), dtype=np.int64)
    stop = _scan_nodes(raw, pos, ntrees, sizes, offsets, fields)
    if stop < 0:
        raise ValueError("implausible node layout")
    total = int(sizes.sum())
    return (exp_avg_depth, sizes, offsets[:total], fields[:total]), int(stop)


def _gather(raw: np.ndarray, offsets: np.ndarray, dtype: str) -> np.ndarray:
    """The 8-byte values at ``offsets`` (any alignment) of the byte buffer ``raw``."""
    idx = offsets[:, None] + np.arange(8)
    return np.ascontiguousarray(raw[idx]).view(dtype)[:, 0]


def _parse_ext_model(data: bytes, pos: int, n_features: int | None) -> FastEIF:
    last_err: Exception | None = None
    for n_enums in (5, 4, 3):
        try:
            (exp_avg_depth, sizes, offsets, fields), _ = _walk(data, pos, n_enums)
            break
        except (struct.error, ValueError, IndexError) as exc:
            last_err = exc
    else:
        raise ValueError(f"could not parse the extended model: {last_err}")
    raw = np.frombuffer(data, dtype=np.uint8)
    off = offsets
    q = fields
    local_left, local_right, n_col, n_type, n_coef, n_mean, n_catc, n_chosen, n_fill, n_fnew = q.T
    if n_catc.any() or n_chosen.any() or n_fnew.any():
        raise ValueError("categorical splits are not supported")
    if (n_col != n_coef).any() or ((n_mean != 0) & (n_mean != n_col)).any() or ((n_fill != 0) & (n_fill != n_col)).any():
        raise ValueError("inconsistent node")
    total = len(off)
    split = _gather(raw, off, "<f8")
    score = _gather(raw, off + 8, "<f8")
    rlow, rhigh = _gather(raw, off + 16, "<f8"), _gather(raw, off + 24, "<f8")
    leaf = score > 0  # isotree: a leaf has score > 0
    internal = ~leaf
    if (internal & (np.isfinite(rlow) | np.isfinite(rhigh))).any():
        raise ValueError("range penalties (penalize_range=True) are not supported")
    if (internal & (n_col == 0)).any():
        raise ValueError("internal node without terms")
    k = int(n_col.max()) if total else 1
    k = max(k, 1)
    cols = np.zeros((total, k), dtype=np.int64)
    coef = np.zeros((total, k), dtype=np.float64)
    mean = np.zeros((total, k), dtype=np.float64)
    fill = np.zeros((total, k), dtype=np.float64)
    base = off + _NODE_FIXED
    coef_at = base + 8 * n_col + n_type
    mean_at = coef_at + 8 * n_coef
    fill_at = mean_at + 8 * n_mean  # no categorical parts (checked above)
    for j in range(k):
        has = internal & (n_col > j)
        if not has.any():
            continue
        rows = np.nonzero(has)[0]
        cols[rows, j] = _gather(raw, base[rows] + 8 * j, "<u8").astype(np.int64)
        coef[rows, j] = _gather(raw, coef_at[rows] + 8 * j, "<f8")
        with_mean = rows[n_mean[rows] > 0]
        mean[with_mean, j] = _gather(raw, mean_at[with_mean] + 8 * j, "<f8")
        with_fill = rows[n_fill[rows] > 0]
        fill[with_fill, j] = _gather(raw, fill_at[with_fill] + 8 * j, "<f8")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    tree_of = np.repeat(np.arange(len(sizes)), sizes)
    gbase = starts[tree_of]
    ids = np.arange(total, dtype=np.int64)
    left = np.where(leaf, ids, gbase + local_left)
    right = np.where(leaf, ids, gbase + local_right)
    if ((left < 0) | (left >= total) | (right < 0) | (right >= total)).any():
        raise ValueError("child index outside its tree")
    split = np.where(leaf, np.inf, split)
    score = np.where(leaf, score, 0.0)
    # depth of the deepest leaf, level by level over all trees at once
    max_depth, frontier = 0, starts.copy()
    while True:
        frontier = frontier[internal[frontier]]
        if not len(frontier):
            break
        max_depth += 1
        if max_depth > 10_000:
            raise ValueError("a tree has a cycle")
        frontier = np.concatenate([left[frontier], right[frontier]])
    nf = int(cols.max()) + 1 if total else 0
    if n_features is not None:
        if nf > n_features:
            raise ValueError(f"forest uses column {nf - 1} but only {n_features} features were given")
        nf = n_features
    return FastEIF(cols=cols, coef=coef, mean=mean, fill=fill, split=split, left=left, right=right,
                   score=score, roots=starts, max_depth=max_depth, exp_avg_depth=float(exp_avg_depth),
                   n_features=nf)
