"""Ensemble members, one per module, all with the same adapter contract.

Contract (as in river's ``anomaly`` package): ``fit`` learns from a float64 matrix whose
columns are the bundle's features, missing values already imputed; ``score`` takes a batch
(never one record) and returns a float64 array in [0, 1] where **higher means more
anomalous / more likely a bot**. Sign flips and normalisation happen inside each adapter.
Each adapter saves to and loads from one file in the bundle, in its library's own format
(no pickle).
"""

from ja4_core.detectors.autoencoder import AutoencoderDetector
from ja4_core.detectors.eif import EIFDetector
from ja4_core.detectors.xgb import XGBDetector

__all__ = ["AutoencoderDetector", "EIFDetector", "XGBDetector"]
