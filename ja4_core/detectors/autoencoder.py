"""Autoencoder adapter: reconstruction error of a small dense network, as in the original.

Architecture n -> 64 -> 32 -> 16 -> 32 -> 64 -> n with BatchNorm and ReLU, sigmoid output
on min-max scaled input, per-record MSE. The raw error is unbounded, so ``score`` maps it
into (0, 1) against the error distribution on the (human) validation split:
``err / (err + ref)`` with ``ref`` = its 99th percentile, i.e. 0.5 where a record
reconstructs as badly as the worst 1 % of humans. The map is strictly increasing, so it
keeps the ranking of the raw error. Weights are a plain state dict loaded with
``torch.load(weights_only=True)``, and - for serving - the same tensors in a compact array file
(:data:`COMPACT_FILENAME`, :mod:`.arrays`) that the compiled evaluator uses without torch.

torch is imported only where it is used (:func:`_torch`: training, ``ae.pt``, ``AE_EVALUATOR=torch``):
a worker that serves the compiled evaluator from the compact file never loads it (it is most of
a worker's memory).
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from ja4_core.detectors.arrays import decode as decode_arrays
from ja4_core.detectors.arrays import encode as encode_arrays
from ja4_core.detectors.base import Detector
from ja4_core.errors import BundleError, NotFittedError

if TYPE_CHECKING:  # imported when first used (numba compiles the kernel then; torch only if needed)
    from types import ModuleType

    from torch import nn

    from ja4_core.detectors.ae_compiled import CompiledAE

log = logging.getLogger(__name__)

FILENAME = "ae.pt"
#: The network's tensors for the compiled evaluator (safetensors layout, memory-mapped on load).
COMPACT_FILENAME = "ae.weights.safetensors"
#: Largest difference of ``score`` allowed between the compiled evaluator and torch on the same
#: rows: torch computes in float32, so they agree to its rounding (~1e-7), not exactly.
EVALUATOR_TOLERANCE = 1e-6
DEFAULT_HIDDEN: tuple[int, ...] = (64, 32, 16, 32, 64)
#: Scaled inputs are clipped to this range: far outliers stay far without overflowing.
_SCALED_CLIP = (-10.0, 11.0)


#: Intra-op threads torch gets when it is first imported (see :func:`limit_torch_threads`).
_torch_threads: int | None = None


def limit_torch_threads(n: int) -> None:
    """Give torch ``n`` intra-op threads, now if it is loaded, else when :func:`_torch` loads it
    (the worker calls this at start without importing torch)."""
    global _torch_threads
    _torch_threads = n
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def _torch() -> "ModuleType":
    """torch, imported on first use, with the thread limit set by :func:`limit_torch_threads`."""
    import torch

    if _torch_threads is not None and torch.get_num_threads() != _torch_threads:
        torch.set_num_threads(_torch_threads)
    return torch


def build_network(n_features: int, hidden: tuple[int, ...] = DEFAULT_HIDDEN) -> "nn.Sequential":
    """The autoencoder's layers; the state dict's keys depend on this exact order."""
    nn = _torch().nn
    layers: list[Any] = []
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU()]
        width = h
    layers += [nn.Linear(width, n_features), nn.Sigmoid()]
    return nn.Sequential(*layers)


#: Rows one training epoch visits at most (a fresh random subset each epoch, all rows when fewer).
#: Why: the network's quality follows the baseline's coverage, not every row every epoch; at 1M rows
#: 30 full epochs were two thirds of a retrain (223 of 329 s). Baselines up to this size train
#: exactly as before (same permutation, same steps).
ROWS_PER_EPOCH = 131_072


class AutoencoderDetector(Detector):
    """Dense autoencoder trained on the human baseline; high error = unlike the baseline."""

    NAME = "ae"
    FILENAME = FILENAME
    COMPACT_FILENAME = COMPACT_FILENAME

    def __init__(self, *, hidden: tuple[int, ...] = DEFAULT_HIDDEN, epochs: int = 30,
                 batch_size: int = 256, learning_rate: float = 1e-3, ref_quantile: float = 0.99,
                 random_seed: int = 1, rows_per_epoch: int = ROWS_PER_EPOCH) -> None:
        self.hidden = tuple(hidden)
        self.epochs = epochs
        self.rows_per_epoch = rows_per_epoch
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.ref_quantile = ref_quantile
        self.random_seed = random_seed
        self.net_: "nn.Sequential | None" = None
        self.min_: np.ndarray | None = None
        self.range_: np.ndarray | None = None
        self.error_ref_: float | None = None
        self.loss_curve_: list[float] = []
        self.val_loss_curve_: list[float] = []
        #: The compiled evaluator of ``net_``, when in use (see :meth:`use_compiled`).
        self.compiled_: CompiledAE | None = None
        #: Why the compiled evaluator is not in use (None when it is).
        self.evaluator_note: str | None = "not requested"

    @classmethod
    def unit_test_params(cls) -> dict[str, Any]:
        return {"epochs": 5}

    def params(self) -> dict[str, Any]:
        return {"hidden": list(self.hidden), "epochs": self.epochs, "batch_size": self.batch_size,
                "learning_rate": self.learning_rate, "ref_quantile": self.ref_quantile,
                "rows_per_epoch": self.rows_per_epoch}

    # -- scaling ------------------------------------------------------------------------
    def _scale(self, X: np.ndarray) -> np.ndarray:
        assert self.min_ is not None and self.range_ is not None
        scaled = (np.asarray(X, dtype=np.float64) - self.min_) / self.range_
        return np.clip(scaled, *_SCALED_CLIP).astype(np.float32)

    def _errors(self, scaled: np.ndarray) -> np.ndarray:
        assert self.net_ is not None
        torch = _torch()
        self.net_.eval()
        with torch.inference_mode():
            x = torch.from_numpy(scaled)
            recon = self.net_(x)
            return ((recon - x) ** 2).mean(dim=1).double().numpy()

    def _errors_by_feature(self, scaled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`_errors` (the same numbers), plus each cell's squared error."""
        assert self.net_ is not None
        torch = _torch()
        self.net_.eval()
        with torch.inference_mode():
            x = torch.from_numpy(scaled)
            cells = (self.net_(x) - x) ** 2
            return cells.mean(dim=1).double().numpy(), cells.double().numpy()

    # -- fit / score --------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray | None = None, *, X_val: np.ndarray | None = None,
            progress: Callable[[int, float], None] | None = None) -> "AutoencoderDetector":
        """Train on ``X``; the error reference comes from ``X_val`` (or ``X`` if absent).
        Unsupervised: ``y`` must be None (validation rows go by keyword, ``X_val=``)."""
        if y is not None:
            raise TypeError("AutoencoderDetector.fit takes no labels; pass validation rows as X_val=")
        torch = _torch()
        X = np.asarray(X, dtype=np.float64)
        torch.manual_seed(self.random_seed)
        rng = np.random.default_rng(self.random_seed)
        self.min_ = X.min(axis=0)
        rng_ = X.max(axis=0) - self.min_
        self.range_ = np.where(rng_ > 0, rng_, 1.0)
        data = self._scale(X)
        val = self._scale(X_val) if X_val is not None and len(X_val) else None
        self.net_ = build_network(X.shape[1], self.hidden)
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.learning_rate)
        loss_fn = torch.nn.MSELoss()
        tensor = torch.from_numpy(data)
        bs = max(2, min(self.batch_size, len(data)))
        self.loss_curve_, self.val_loss_curve_ = [], []
        for epoch in range(self.epochs):
            self.net_.train()
            order = rng.permutation(len(data))[:self.rows_per_epoch]
            total, count = 0.0, 0
            for start in range(0, len(order), bs):
                idx = order[start:start + bs]
                if len(idx) < 2:  # BatchNorm needs two rows
                    continue
                batch = tensor[idx]
                opt.zero_grad()
                loss = loss_fn(self.net_(batch), batch)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                count += len(idx)
            self.loss_curve_.append(total / max(count, 1))
            if val is not None:
                self.val_loss_curve_.append(float(self._errors(val).mean()))
            if progress is not None:
                progress(epoch + 1, self.loss_curve_[-1])
        ref_errors = self._errors(val if val is not None else data)
        self.error_ref_ = float(max(np.quantile(ref_errors, self.ref_quantile), 1e-12))
        return self

    def raw_errors(self, X: np.ndarray) -> np.ndarray:
        if self.compiled_ is not None:  # also when loaded from the compact file (no torch network)
            return self.compiled_.errors(X)
        if self.net_ is None:
            raise NotFittedError("AutoencoderDetector used before fit/load")
        return self._errors(self._scale(X))

    def raw_errors_by_feature(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`raw_errors` and, from the same forward pass, each cell's squared error on the
        scaled input (rows x features): the autoencoder's part of a record's reasons."""
        if self.compiled_ is not None:  # also when loaded from the compact file (no torch network)
            return self.compiled_.errors_by_feature(X)
        if self.net_ is None:
            raise NotFittedError("AutoencoderDetector used before fit/load")
        return self._errors_by_feature(self._scale(X))

    def score_by_feature(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`score` (the same numbers) and the per-feature squared errors behind it."""
        err, cells = self.raw_errors_by_feature(X)
        assert self.error_ref_ is not None
        return err / (err + self.error_ref_), cells

    @property
    def evaluator(self) -> str:
        """Which evaluator ``score`` uses: ``compiled`` or ``torch``."""
        return "compiled" if self.compiled_ is not None else "torch"

    def use_compiled(self, probe: np.ndarray) -> bool:
        """Switch ``score`` to the compiled evaluator (:mod:`.ae_compiled`: one GIL-free call
        instead of ~45 GIL hand-offs) if its scores match torch's on ``probe`` within
        ``EVALUATOR_TOLERANCE``. Returns whether it is now in use; the reason otherwise is in
        ``evaluator_note``. Never raises for an unsupported network: torch stays the evaluator.
        A detector loaded from the compact file (no torch network) keeps its compiled evaluator."""
        if self.net_ is None and self.compiled_ is not None:
            return True
        if self.net_ is None:
            raise NotFittedError("AutoencoderDetector.use_compiled called before fit/load")
        from ja4_core.detectors.ae_compiled import CompiledAE

        assert self.min_ is not None and self.range_ is not None and self.error_ref_ is not None
        probe = np.ascontiguousarray(probe, dtype=np.float64)
        self.compiled_ = None
        try:
            compiled = CompiledAE.from_network(self.net_, self.min_, self.range_, _SCALED_CLIP)
            ours, theirs = compiled.errors(probe), self.raw_errors(probe)
        except ValueError as exc:
            self.evaluator_note = f"compiled evaluator unavailable: {exc}"
            log.warning("AE: %s; scoring with torch", self.evaluator_note)
            return False
        ref = self.error_ref_
        diff = float(np.max(np.abs(ours / (ours + ref) - theirs / (theirs + ref)), initial=0.0))
        if not diff <= EVALUATOR_TOLERANCE:
            self.evaluator_note = f"compiled evaluator differs from torch by {diff:.3g}"
            log.warning("AE: %s; scoring with torch", self.evaluator_note)
            return False
        self.compiled_, self.evaluator_note = compiled, None
        return True

    def score(self, X: np.ndarray) -> np.ndarray:
        err = self.raw_errors(X)
        assert self.error_ref_ is not None
        return err / (err + self.error_ref_)

    # -- persistence --------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-safe constants that go into the manifest next to the weights file."""
        assert self.min_ is not None and self.range_ is not None
        return {"params": self.params(), "min": self.min_.tolist(), "range": self.range_.tolist(),
                "error_ref": self.error_ref_}

    def manifest_section(self) -> dict[str, Any]:
        return self.state()

    def to_bytes(self) -> bytes:
        """The network's plain state dict (``torch.save``; loads with ``weights_only=True``)."""
        if self.net_ is None:  # also when loaded from the compact file: that serves, the bundle keeps ae.pt
            raise NotFittedError("AutoencoderDetector.save called before fit (or on weights loaded from the compact file)")
        buf = io.BytesIO()
        _torch().save(self.net_.state_dict(), buf)
        return buf.getvalue()

    def compact_bytes(self, probe: np.ndarray) -> bytes | None:
        """The compact file: the compiled evaluator's arrays, or None when that evaluator does not
        match torch on ``probe`` (the bundle then has no compact file; readers use ``ae.pt``)."""
        if self.net_ is None:
            raise NotFittedError("AutoencoderDetector.compact_bytes called before fit")
        if self.compiled_ is None and not self.use_compiled(probe):
            return None
        assert self.compiled_ is not None
        tensors, meta = self.compiled_.to_arrays()
        return encode_arrays(tensors, format=self.compiled_.FORMAT, version=self.compiled_.VERSION, extra=meta)

    @classmethod
    def load_compact(cls, data: Any, section: Mapping[str, Any], n_features: int,
                     nthreads: int = 1) -> "AutoencoderDetector":
        """From the verified compact file and the manifest's constants, without torch: a detector
        that scores with the compiled evaluator only (``to_bytes`` and ``AE_EVALUATOR=torch`` need
        ``ae.pt``).

        :raises ja4_core.detectors.arrays.UnsupportedVersion: another version of the file (use ``ae.pt``).
        :raises BundleError: a file that is not this autoencoder's weights."""
        from ja4_core.detectors.ae_compiled import CompiledAE

        det = cls._from_section(section, n_features)
        tensors, meta = decode_arrays(data, format=CompiledAE.FORMAT, version=CompiledAE.VERSION)
        try:
            compiled = CompiledAE.from_arrays(tensors, meta)
        except ValueError as exc:
            raise BundleError(f"{COMPACT_FILENAME}: {exc}") from None
        assert det.min_ is not None and det.range_ is not None
        if not (np.array_equal(compiled.lo, det.min_) and np.array_equal(compiled.rng, det.range_)):
            raise BundleError(f"{COMPACT_FILENAME}: scaling differs from the manifest's")
        det.compiled_, det.evaluator_note = compiled, None
        return det

    @classmethod
    def _from_section(cls, section: Mapping[str, Any], n_features: int) -> "AutoencoderDetector":
        """An unfitted detector with the manifest's hyperparameters and scaling constants."""
        params = section.get("params") or {}
        det = cls(hidden=tuple(params.get("hidden", DEFAULT_HIDDEN)),
                  ref_quantile=float(params.get("ref_quantile", 0.99)))
        try:
            det.min_ = np.asarray(section["min"], dtype=np.float64)
            det.range_ = np.asarray(section["range"], dtype=np.float64)
            det.error_ref_ = float(section["error_ref"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"manifest: autoencoder constants unusable ({exc})") from exc
        if det.min_.shape != (n_features,) or det.range_.shape != (n_features,):
            raise BundleError("manifest: autoencoder scaling does not match the feature count")
        return det

    @classmethod
    def load(cls, data: bytes, section: Mapping[str, Any], n_features: int,
             nthreads: int = 1) -> "AutoencoderDetector":
        """From the bytes of ``ae.pt`` and the manifest's scaling constants (``nthreads`` is
        unused: torch's threads are the process's)."""
        det = cls._from_section(section, n_features)
        net = build_network(n_features, det.hidden)
        try:
            weights = _torch().load(io.BytesIO(data), weights_only=True, map_location="cpu")
            net.load_state_dict(weights)
        except Exception as exc:  # torch raises several unrelated types here
            raise BundleError(f"{FILENAME}: not a usable autoencoder state dict ({exc})") from exc
        net.eval()
        det.net_ = net
        return det
