"""The KS p-value of the drift test without scipy (issue 20: the worker imports no scipy.stats):
the same figures as ``scipy.stats.kstwobign.sf``."""

from __future__ import annotations

import numpy as np
import pytest

from ja4_core.drift import kolmogorov_sf


@pytest.mark.parametrize("x", [*np.linspace(1e-3, 0.3, 30), *np.linspace(0.3, 6.0, 300), 0.999999, 1.0, 1.000001, 40.0])
def test_matches_scipy_kstwobign(x: float) -> None:
    stats = pytest.importorskip("scipy.stats")
    assert abs(kolmogorov_sf(float(x)) - float(stats.kstwobign.sf(x))) < 1e-12


def test_bounds() -> None:
    assert kolmogorov_sf(0.0) == 1.0 and kolmogorov_sf(-1.0) == 1.0
    assert kolmogorov_sf(100.0) == 0.0
