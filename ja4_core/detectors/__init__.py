"""Ensemble members, one per module, all under one adapter contract (:mod:`.base`).

Contract (as in river's ``anomaly`` package, written down in :class:`.base.Detector`): ``fit``
learns from a float64 matrix whose columns are the bundle's features, missing values already
imputed; ``score`` takes a batch (never one record) and returns a float64 array in [0, 1] where
**higher means more anomalous / more likely a bot**. Sign flips and normalisation happen inside
each adapter. Each adapter saves to bytes and loads from bytes of one file in the bundle, in its
library's own format (no pickle), with one ``load`` signature; the EIF and the autoencoder also
write a compact array file (:mod:`.arrays`) that a worker maps and serves from without their
libraries (``compact_bytes`` / ``load_compact``).

:data:`REGISTRY` names every member once; the bundle (files, manifest sections, loading) and
the ensemble's list of members follow it, and the conformance suite runs on each entry.
"""

from ja4_core.detectors.autoencoder import AutoencoderDetector
from ja4_core.detectors.base import Detector
from ja4_core.detectors.eif import EIFDetector
from ja4_core.detectors.xgb import XGBDetector

#: Every ensemble member, by name (= manifest section = ``Ensemble`` field), in scoring order.
REGISTRY: dict[str, type[Detector]] = {cls.NAME: cls for cls in (EIFDetector, AutoencoderDetector, XGBDetector)}
#: Members every bundle has; the others are optional.
REQUIRED: frozenset[str] = frozenset({EIFDetector.NAME})

__all__ = ["REGISTRY", "REQUIRED", "AutoencoderDetector", "Detector", "EIFDetector", "XGBDetector"]
