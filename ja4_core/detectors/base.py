"""The one adapter contract every ensemble member follows, and what the registry relies on.

A detector is fitted on a float64 matrix whose columns are the bundle's features (missing
values already imputed), scores a batch (never one record) as a float64 array in [0, 1] with
**higher = more anomalous / more likely a bot** (sign flips and normalisation inside the
adapter), and round-trips through bytes in its library's own format (never pickle): the
bundle writes :meth:`Detector.to_bytes` to the member's one file, lists
:meth:`Detector.manifest_section` under the member's name in the manifest, and rebuilds the
member with :meth:`Detector.load` from the verified bytes of that file and that section.
Nothing here names a member: :data:`ja4_core.detectors.REGISTRY` does, once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Mapping, Self

import numpy as np


class Detector(ABC):
    """Base class of every registered ensemble member (see the module docstring)."""

    #: The member's name: its key in the registry, its manifest section and its score field prefix.
    NAME: ClassVar[str]
    #: The one bundle file the member is stored in (a plain name).
    FILENAME: ClassVar[str]
    #: Whether ``fit`` needs labels ``y`` (1 = bot); unsupervised members take none.
    SUPERVISED: ClassVar[bool] = False
    #: The member's optional compact file (:mod:`.arrays`, memory-mapped): what a worker serving
    #: the compiled evaluator loads instead of ``FILENAME``; None when the member has none.
    COMPACT_FILENAME: ClassVar[str | None] = None

    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> Self:
        """Learn from ``X`` (and labels ``y`` for a supervised member); return ``self``."""

    @abstractmethod
    def score(self, X: np.ndarray) -> np.ndarray:
        """One float in [0, 1] per row, higher = more anomalous; NotFittedError before fit."""

    @abstractmethod
    def to_bytes(self) -> bytes:
        """The member's file, in its library's own format; NotFittedError before fit."""

    @abstractmethod
    def manifest_section(self) -> dict[str, Any]:
        """JSON-safe constants ``load`` needs besides the file (hyperparameters, scaling)."""

    @classmethod
    @abstractmethod
    def load(cls, data: bytes, section: Mapping[str, Any], n_features: int, nthreads: int = 1) -> Self:
        """Rebuild a fitted member from its file's bytes and its manifest section; a file or
        section that cannot be used raises :class:`~ja4_core.errors.BundleError`."""

    @classmethod
    @abstractmethod
    def unit_test_params(cls) -> dict[str, Any]:
        """Small, fast constructor arguments for the conformance suite (river's convention)."""

    def compact_bytes(self, probe: np.ndarray) -> bytes | None:
        """The compact file's bytes, or None (no compact file: readers use ``FILENAME``). ``probe``
        are rows on which its evaluator must give the library's own scores first."""
        return None

    @classmethod
    def load_compact(cls, data: Any, section: Mapping[str, Any], n_features: int, nthreads: int = 1) -> Self:
        """Rebuild a member for serving from its verified compact file (bytes or a read-only
        mapping, used in place) and its manifest section."""
        raise NotImplementedError(f"{cls.__name__} has no compact file")

    def set_threads(self, nthreads: int) -> None:  # noqa: B027 - a no-op unless the library threads
        """Threads ``score`` may use."""

    def save(self, directory: Path) -> str:
        """Write :meth:`to_bytes` to ``directory / FILENAME``; return the file name."""
        data = self.to_bytes()
        (Path(directory) / self.FILENAME).write_bytes(data)
        return self.FILENAME
