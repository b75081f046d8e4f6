"""Extended Isolation Forest (isotree) adapter.

isotree's ``predict`` already returns the standardised outlier score of Liu et al.,
``2 ** (-E[depth] / c(n))`` in (0, 1) with higher = more anomalous, so no flip is needed.
The forest is stored in isotree's own binary format (``export_model``), never pickled, and - for
serving - as the compiled evaluator's node tables in a compact array file (:data:`COMPACT_FILENAME`,
:mod:`.arrays`): a worker that loads those never imports or parses isotree (:meth:`EIFDetector.load_compact`).

Scoring uses, by default, :class:`.eif_compiled.CompiledEIF`: the same forest, read from the same
file, walked by a compiled loop about 4x faster than isotree's ``predict``. It is used only after it
gave isotree's scores (to 1e-9) on the probe rows of :func:`ja4_core.bundle.evaluator_probe` (the
bundle's smoke rows, its medians, and spreads around the medians from tiny to huge); a forest it
cannot read or a mismatch falls back to isotree, which always stays loaded. The compact file is written
only after the same check passed at training (:meth:`EIFDetector.compact_bytes`), and is then served
without isotree.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ja4_core.detectors.arrays import decode as decode_arrays
from ja4_core.detectors.arrays import encode as encode_arrays
from ja4_core.detectors.base import Detector
from ja4_core.errors import BundleError, NotFittedError

if TYPE_CHECKING:  # imported when first used (numba compiles the kernel then; isotree only if needed)
    from isotree import IsolationForest

    from ja4_core.detectors.eif_compiled import CompiledEIF

FILENAME = "eif.isotree"
#: The forest's node tables for the compiled evaluator (safetensors layout, memory-mapped on load).
COMPACT_FILENAME = "eif.forest.safetensors"
EVALUATORS = ("compiled", "isotree")
#: Largest difference allowed between the compiled evaluator and isotree on the same rows.
EVALUATOR_TOLERANCE = 1e-9

log = logging.getLogger(__name__)


class EIFDetector(Detector):
    """Isolation forest with random hyperplane splits (``ndim`` columns per split).

    Defaults are the original bot-detector's: ``ndim=3, ntrees=300, sample_size='auto'``
    (``min(rows, 10000)`` rows per tree), ``missing_action='impute'``.
    """

    NAME = "eif"
    FILENAME = FILENAME
    COMPACT_FILENAME = COMPACT_FILENAME

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
        #: The compiled evaluator of ``model_``, when in use (see :meth:`use_compiled`).
        self.compiled_: CompiledEIF | None = None
        #: Why the compiled evaluator is not in use (None when it is).
        self.evaluator_note: str | None = "not requested"

    def params(self) -> dict[str, Any]:
        """Hyperparameters as stored in the manifest."""
        return {"ntrees": self.ntrees, "ndim": self.ndim, "sample_size": self.sample_size,
                "missing_action": self.missing_action, "random_seed": self.random_seed}

    @classmethod
    def unit_test_params(cls) -> dict[str, Any]:
        return {"ntrees": 60}

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> "EIFDetector":
        """Fit the forest on ``X`` (unsupervised: ``y`` is ignored)."""
        from isotree import IsolationForest

        X = np.ascontiguousarray(X, dtype=np.float64)
        ndim = min(self.ndim, X.shape[1])  # isotree refuses ndim > columns
        self.model_ = IsolationForest(
            ntrees=self.ntrees, ndim=ndim, sample_size=self.sample_size,
            missing_action=self.missing_action, nthreads=self.nthreads,
            random_seed=self.random_seed).fit(X)
        self.n_features_in_ = X.shape[1]
        self.compiled_, self.evaluator_note = None, "not requested"
        return self

    @property
    def evaluator(self) -> str:
        """Which evaluator ``score`` uses: ``compiled`` or ``isotree``."""
        return "compiled" if self.compiled_ is not None else "isotree"

    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        if self.compiled_ is not None:
            return self.compiled_.predict(X)
        if self.model_ is None:
            raise NotFittedError("EIFDetector.score called before fit/load")
        return np.asarray(self.model_.predict(X), dtype=np.float64)

    def use_compiled(self, probe: np.ndarray, data: bytes | None = None) -> bool:
        """Switch ``score`` to the compiled evaluator if it gives isotree's scores on ``probe``.

        ``data`` is the forest's isotree serialisation (exported from ``model_`` if not given).
        Returns whether the compiled evaluator is now in use; the reason otherwise is in
        ``evaluator_note``. Never raises for an unsupported forest: isotree stays the evaluator.
        A detector loaded from the compact file (no isotree model) keeps its compiled evaluator.
        """
        if self.model_ is None and self.compiled_ is not None:
            return True
        if self.model_ is None:
            raise NotFittedError("EIFDetector.use_compiled called before fit/load")
        from ja4_core.detectors.eif_compiled import CompiledEIF

        probe = np.ascontiguousarray(probe, dtype=np.float64)
        try:
            compiled = (CompiledEIF.from_bytes(data, self.n_features_in_, self.nthreads) if data is not None
                        else CompiledEIF.from_model(self.model_, self.n_features_in_, self.nthreads))
            diff = float(np.max(np.abs(compiled.predict(probe) - self.model_.predict(probe)), initial=0.0))
        except (ValueError, OSError) as exc:
            self.compiled_, self.evaluator_note = None, f"compiled evaluator unavailable: {exc}"
            log.warning("EIF: %s; scoring with isotree", self.evaluator_note)
            return False
        if not diff <= EVALUATOR_TOLERANCE:
            self.compiled_ = None
            self.evaluator_note = f"compiled evaluator differs from isotree by {diff:.3g}"
            log.warning("EIF: %s; scoring with isotree", self.evaluator_note)
            return False
        self.compiled_, self.evaluator_note = compiled, None
        return True

    def set_threads(self, nthreads: int) -> None:
        """Threads used by ``score`` (isotree releases the GIL while predicting)."""
        self.nthreads = nthreads
        if self.model_ is not None:
            self.model_.nthreads = nthreads
        if self.compiled_ is not None:
            self.compiled_.nthreads = nthreads

    def manifest_section(self) -> dict[str, Any]:
        return {"params": self.params()}

    def compact_bytes(self, probe: np.ndarray) -> bytes | None:
        """The compact file: the compiled evaluator's node tables, or None when that evaluator
        does not give isotree's scores on ``probe`` (the bundle then has no compact file and every
        reader uses isotree's file)."""
        if self.model_ is None:
            raise NotFittedError("EIFDetector.compact_bytes called before fit")
        if self.compiled_ is None and not self.use_compiled(probe):
            return None
        assert self.compiled_ is not None
        tables, meta = self.compiled_.to_arrays()
        return encode_arrays(tables, format=self.compiled_.FORMAT, version=self.compiled_.VERSION, extra=meta)

    @classmethod
    def load_compact(cls, data: Any, section: Mapping[str, Any], n_features: int,
                     nthreads: int = 1) -> "EIFDetector":
        """From the verified compact file (bytes or a read-only mapping, used in place): a
        detector that scores with the compiled evaluator and has no isotree model (``to_bytes``
        and ``EIF_EVALUATOR=isotree`` need the portable file).

        :raises ja4_core.detectors.arrays.UnsupportedVersion: another version of the file (use the portable one).
        :raises BundleError: a file that is not a usable forest."""
        from ja4_core.detectors.eif_compiled import CompiledEIF

        params = section.get("params") or {}
        det = cls(**{k: v for k, v in params.items() if k in
                     ("ntrees", "ndim", "sample_size", "missing_action", "random_seed")},
                  nthreads=nthreads)
        tables, meta = decode_arrays(data, format=CompiledEIF.FORMAT, version=CompiledEIF.VERSION)
        try:
            det.compiled_ = CompiledEIF.from_arrays(tables, meta, n_features, nthreads)
        except ValueError as exc:
            raise BundleError(f"{COMPACT_FILENAME}: {exc}") from None
        det.n_features_in_, det.evaluator_note = n_features, None
        return det

    def to_bytes(self) -> bytes:
        """isotree's own serialisation (``export_model``). isotree writes only to a path, so
        through a private temporary directory of this process."""
        if self.model_ is None:  # also when loaded from the compact file: that serves, the bundle keeps the portable one
            raise NotFittedError("EIFDetector.save called before fit (or on a forest loaded from the compact file)")
        with tempfile.TemporaryDirectory(prefix="ja4-eif-") as private:
            path = Path(private) / FILENAME
            self.model_.export_model(str(path))
            return path.read_bytes()

    @classmethod
    def load(cls, data: bytes, section: Mapping[str, Any], n_features: int,
             nthreads: int = 1) -> "EIFDetector":
        """From the bytes of ``eif.isotree``. isotree reads only from a path, so they are written
        to a private directory of this process (mode 0700, removed before returning): a writer
        of the model store cannot reach that copy."""
        from isotree import IsolationForest

        params = section.get("params") or {}
        det = cls(**{k: v for k, v in params.items() if k in
                     ("ntrees", "ndim", "sample_size", "missing_action", "random_seed")},
                  nthreads=nthreads)
        with tempfile.TemporaryDirectory(prefix="ja4-eif-") as private:
            path = Path(private) / FILENAME
            path.write_bytes(data)
            try:
                det.model_ = IsolationForest.import_model(str(path))
            except Exception as exc:  # isotree raises plain RuntimeError/ValueError
                raise BundleError(f"{FILENAME}: not a readable isotree model ({exc})") from exc
        det.model_.nthreads = nthreads
        det.n_features_in_ = n_features
        return det
