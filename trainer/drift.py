"""Drift of the current baseline against the digest stored in the current bundle.

The statistic lives in :mod:`ja4_core.drift` (one home: every scorer replica computes the same
one on its live window); this module keeps the trainer's names for it.
"""

from __future__ import annotations

from ja4_core.drift import (
    DIGEST_LEVELS,
    KL_EPS,
    KL_LIMIT,
    KS_ALPHA,
    KS_DISTANCE,
    DriftReport,
    FeatureDrift,
    check_drift,
    digest_points,
    drift_from_cdf,
    feature_drift,
    reference_cdf_band,
)

__all__ = ["DIGEST_LEVELS", "KL_EPS", "KL_LIMIT", "KS_ALPHA", "KS_DISTANCE", "DriftReport", "FeatureDrift",
           "check_drift", "digest_points", "drift_from_cdf", "feature_drift", "reference_cdf_band"]
