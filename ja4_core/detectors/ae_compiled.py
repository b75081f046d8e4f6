"""A compiled evaluator of a trained autoencoder: the same weights, one GIL-free call.

Why: torch releases and re-takes the GIL around every operator (about 45 times for one
forward pass of this network plus its error). In a worker the event loop holds the GIL most
of the time, and each re-take waits for the interpreter's switch interval, so a 73-row batch
that takes 0.9 ms alone took 30 ms next to a busy event loop (measured). This module runs the
whole forward pass and the per-record error in one numba call that releases the GIL once.

The arithmetic follows the network of :func:`.autoencoder.build_network` in eval mode:
``Linear -> BatchNorm1d (running statistics) -> ReLU`` per hidden layer, ``Linear -> Sigmoid``
out, on the input scaled and clipped as :meth:`.autoencoder.AutoencoderDetector._scale` does
(rounded to float32, as torch sees it), then the mean squared error per row. It computes in
float64 where torch computes in float32, so errors differ by float32 rounding only; the
detector uses it only after it matched torch on probe rows (see ``use_compiled``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba.typed import List

from ja4_core.detectors._numba import jit


@jit
def _errors(X, lo, rng, clip_lo, clip_hi, weights, biases, bn_mean, bn_den, bn_gamma, bn_beta, out,
            per_feature):  # pragma: no cover
    # per_feature: (n, f) to receive each cell's squared error too (the reasons), or (0, f)
    n, f = X.shape
    keep = per_feature.shape[0] == n
    width_max = f
    for layer in range(len(weights)):
        width_max = max(width_max, weights[layer].shape[1])
    x0 = np.empty(f, dtype=np.float64)
    a = np.empty(width_max, dtype=np.float64)
    h = np.empty(width_max, dtype=np.float64)
    last = len(weights) - 1
    for r in range(n):  # row by row, sums in a fixed order: a row's error never depends on its batch
        for j in range(f):
            v = (X[r, j] - lo[j]) / rng[j]
            v = min(max(v, clip_lo), clip_hi)
            x0[j] = np.float64(np.float32(v))
            a[j] = x0[j]
        for layer in range(len(weights)):
            W = weights[layer]
            b = biases[layer]
            n_in, n_out = W.shape
            for o in range(n_out):
                h[o] = 0.0
            for i in range(n_in):  # the inner loop over outputs vectorises; each sum runs i = 0, 1, ...
                ai = a[i]
                for o in range(n_out):
                    h[o] += W[i, o] * ai
            if layer < last:
                mean, den, gamma, beta = bn_mean[layer], bn_den[layer], bn_gamma[layer], bn_beta[layer]
                for o in range(n_out):
                    y = (h[o] + b[o] - mean[o]) / den[o] * gamma[o] + beta[o]
                    a[o] = y if y > 0.0 else 0.0
            else:
                for o in range(n_out):
                    a[o] = 1.0 / (1.0 + np.exp(-(h[o] + b[o])))
        s = 0.0
        for j in range(f):
            d = a[j] - x0[j]
            s += d * d
            if keep:
                per_feature[r, j] = d * d
        out[r] = s / f


@dataclass
class CompiledAE:
    """The autoencoder's constants as float64 arrays, and the compiled forward pass."""

    lo: np.ndarray
    rng: np.ndarray
    clip: tuple[float, float]
    weights: List          #: per layer (in, out), transposed from torch's (out, in)
    biases: List
    bn_mean: List          #: per hidden layer: running mean
    bn_den: List           #: sqrt(running var + eps)
    bn_gamma: List
    bn_beta: List

    @classmethod
    def from_network(cls, net, lo: np.ndarray, rng: np.ndarray, clip: tuple[float, float]) -> "CompiledAE":
        """From an eval-mode ``nn.Sequential`` of (Linear, BatchNorm1d, ReLU)* Linear, Sigmoid.
        Raises ``ValueError`` for any other layout."""
        from torch import nn

        mods = list(net)
        if len(mods) < 2 or not isinstance(mods[-1], nn.Sigmoid) or not isinstance(mods[-2], nn.Linear) \
                or (len(mods) - 2) % 3:
            raise ValueError("not an autoencoder of (Linear, BatchNorm1d, ReLU)* Linear, Sigmoid")
        f64 = lambda t: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64)  # noqa: E731
        weights, biases, means, dens, gammas, betas = List(), List(), List(), List(), List(), List()
        for i in range(0, len(mods) - 2, 3):
            lin, bn, act = mods[i:i + 3]
            if not (isinstance(lin, nn.Linear) and isinstance(bn, nn.BatchNorm1d) and isinstance(act, nn.ReLU)) \
                    or bn.running_mean is None or not bn.affine:
                raise ValueError("not an autoencoder of (Linear, BatchNorm1d, ReLU)* Linear, Sigmoid")
            weights.append(np.ascontiguousarray(f64(lin.weight).T))
            biases.append(f64(lin.bias))
            means.append(f64(bn.running_mean))
            dens.append(np.sqrt(f64(bn.running_var) + float(bn.eps)))
            gammas.append(f64(bn.weight))
            betas.append(f64(bn.bias))
        out = mods[-2]
        weights.append(np.ascontiguousarray(f64(out.weight).T))
        biases.append(f64(out.bias))
        empty = np.zeros(0)
        for lst in (means, dens, gammas, betas):
            lst.append(empty)  # the output layer has no BatchNorm (keeps the lists aligned)
        return cls(np.ascontiguousarray(lo, dtype=np.float64), np.ascontiguousarray(rng, dtype=np.float64),
                   (float(clip[0]), float(clip[1])), weights, biases, means, dens, gammas, betas)

    def errors(self, X: np.ndarray) -> np.ndarray:
        """Mean squared reconstruction error per row of the unscaled matrix ``X``."""
        return self._run(X, per_feature=False)[0]

    def errors_by_feature(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``errors(X)`` (the same numbers) and each cell's squared error on the scaled input
        (rows x features), from the same single pass: what :mod:`ja4_core.reasons` uses."""
        return self._run(X, per_feature=True)

    def _run(self, X: np.ndarray, *, per_feature: bool) -> tuple[np.ndarray, np.ndarray]:
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.lo):
            raise ValueError(f"X must be a matrix with {len(self.lo)} columns")
        out = np.empty(len(X), dtype=np.float64)
        cells = np.empty((len(X) if per_feature else 0, X.shape[1]), dtype=np.float64)
        if len(X):
            _errors(X, self.lo, self.rng, self.clip[0], self.clip[1], self.weights, self.biases,
                    self.bn_mean, self.bn_den, self.bn_gamma, self.bn_beta, out, cells)
        return out, cells

    #: ``format`` and ``version`` of the compact file (:mod:`.arrays` metadata).
    FORMAT = "ja4-ae-weights"
    VERSION = 1

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """The float64 arrays this evaluator computes with, for the compact file: a reader gets the
        same numbers back without torch (:meth:`from_arrays`)."""
        out: dict[str, np.ndarray] = {"lo": self.lo, "rng": self.rng}
        for i in range(len(self.weights)):
            out[f"w{i}"], out[f"b{i}"] = self.weights[i], self.biases[i]
            if i < len(self.weights) - 1:
                for name, lst in (("mean", self.bn_mean), ("den", self.bn_den), ("gamma", self.bn_gamma),
                                  ("beta", self.bn_beta)):
                    out[f"{name}{i}"] = lst[i]
        return out, {"layers": str(len(self.weights)), "clip": f"{self.clip[0]!r},{self.clip[1]!r}"}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, str]) -> "CompiledAE":
        """From the arrays of a compact file; raises ``ValueError`` when they do not chain into
        one network (every layer's input the previous one's output, the input the features)."""
        try:
            layers = int(meta["layers"])
            clip_lo, clip_hi = (float(v) for v in meta["clip"].split(","))
            lo, rng = (np.array(arrays[k], dtype=np.float64) for k in ("lo", "rng"))
            weights, biases, means, dens, gammas, betas = List(), List(), List(), List(), List(), List()
            width = len(lo)
            for i in range(layers):
                W, b = np.array(arrays[f"w{i}"], dtype=np.float64), np.array(arrays[f"b{i}"], dtype=np.float64)
                if W.ndim != 2 or W.shape[0] != width or b.shape != (W.shape[1],):
                    raise ValueError(f"layer {i} does not follow the previous one")
                width = W.shape[1]
                weights.append(W)
                biases.append(b)
                for name, lst in (("mean", means), ("den", dens), ("gamma", gammas), ("beta", betas)):
                    v = np.array(arrays[f"{name}{i}"], dtype=np.float64) if i < layers - 1 else np.zeros(0)
                    if i < layers - 1 and v.shape != (width,):
                        raise ValueError(f"batch norm {i} does not match its layer")
                    lst.append(v)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"compact autoencoder unusable ({exc})") from None
        if layers < 1 or width != len(lo) or rng.shape != lo.shape or not np.all(rng > 0):
            raise ValueError("compact autoencoder does not reconstruct its input")
        return cls(lo, rng, (clip_lo, clip_hi), weights, biases, means, dens, gammas, betas)
