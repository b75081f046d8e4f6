"""One conformance suite run against every registered detector (``ja4_core.detectors.REGISTRY``;
STYLE.md section 12, river's checks).

Each adapter must: refuse to score or save before fit (NotFittedError); give one finite float
in [0, 1] per row; rank outliers (for the supervised member: positives) above inliers; be
deterministic for a seed and depend on it; save and load through its bundle file without
changing scores; score each row independently of its batch; keep its detection quality when
the feature columns are permuted consistently at fit and score time.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ja4_core.detectors import REGISTRY, REQUIRED, Detector
from ja4_core.errors import NotFittedError

N_FEATURES = 6


def make_data(seed: int = 0):
    """Inliers: correlated Gaussian cloud; outliers: far from it in a few columns."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(N_FEATURES, N_FEATURES))
    train = rng.normal(size=(1200, N_FEATURES)) @ mix
    inliers = rng.normal(size=(300, N_FEATURES)) @ mix
    outliers = rng.normal(size=(60, N_FEATURES)) @ mix
    outliers[:, :3] += rng.choice([-1, 1], size=(60, 3)) * 12.0
    X_test = np.vstack([inliers, outliers])
    y_test = np.r_[np.zeros(len(inliers)), np.ones(len(outliers))].astype(int)
    # Labelled set for the supervised member: the same two populations.
    pos = rng.normal(size=(300, N_FEATURES)) @ mix
    pos[:, :3] += rng.choice([-1, 1], size=(300, 3)) * 12.0
    X_lab = np.vstack([train[:600], pos])
    y_lab = np.r_[np.zeros(600), np.ones(300)].astype(int)
    return train, X_test, y_test, X_lab, y_lab


DATA = make_data()


@dataclass(frozen=True)
class Adapter:
    """A registered detector class and how this suite drives it."""

    name: str
    cls: type[Detector]
    atol: float            #: round-trip tolerance
    uses_seed: bool        #: different seeds give different models

    def make(self, seed: int) -> Detector:
        return self.cls(**self.cls.unit_test_params(), random_seed=seed)

    def fit(self, det: Detector, train: np.ndarray, X_lab: np.ndarray, y_lab: np.ndarray) -> Detector:
        return det.fit(X_lab, y_lab) if self.cls.SUPERVISED else det.fit(train)

    def load(self, path: Path, det: Detector) -> Detector:
        """The one ``load`` signature: the file's bytes, the manifest section, the feature count."""
        return self.cls.load((path / self.cls.FILENAME).read_bytes(), det.manifest_section(), N_FEATURES)


#: Per-detector tolerances where the default (1e-9) is too tight: torch computes in float32.
ROUND_TRIP_ATOL = {"ae": 1e-6}
#: Detectors whose fit has no randomness (XGBoost without subsampling is deterministic).
SEEDLESS = {"xgb"}

#: Every registered detector: a member added to the registry is checked without editing this file.
ADAPTERS = [Adapter(name, cls, atol=ROUND_TRIP_ATOL.get(name, 1e-9), uses_seed=name not in SEEDLESS)
            for name, cls in REGISTRY.items()]


@pytest.fixture(params=ADAPTERS, ids=[a.name for a in ADAPTERS])
def adapter(request) -> Adapter:
    return request.param


_cache: dict[tuple[str, int, bool], object] = {}


def fitted(adapter: Adapter, seed: int = 1, permuted: bool = False):
    """A fitted detector (cached: fitting is the slow part and detectors are not mutated here)."""
    key = (adapter.name, seed, permuted)
    if key not in _cache:
        train, _, _, X_lab, y_lab = DATA
        if permuted:
            train, X_lab = train[:, PERM], X_lab[:, PERM]
        _cache[key] = adapter.fit(adapter.make(seed), train, X_lab, y_lab)
    return _cache[key]


PERM = np.array([4, 2, 0, 5, 1, 3])


def test_scoring_before_fit_is_refused(adapter):
    det = adapter.make(1)
    with pytest.raises(NotFittedError):
        det.score(DATA[1])


def test_saving_before_fit_is_refused(adapter, tmp_path):
    with pytest.raises(NotFittedError):
        adapter.make(1).save(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fit_returns_the_detector(adapter):
    det = adapter.make(1)
    train, _, _, X_lab, y_lab = DATA
    assert adapter.fit(det, train[:200], X_lab, y_lab) is det


def test_output_is_one_float_in_unit_interval_per_row(adapter):
    det = fitted(adapter)
    X_test = DATA[1]
    far = np.full((2, N_FEATURES), 1e9)
    far[1] *= -1
    for X in (X_test, X_test[:1], far):
        scores = det.score(X)
        assert isinstance(scores, np.ndarray) and scores.dtype == np.float64
        assert scores.shape == (len(X),)
        assert np.all(np.isfinite(scores)) and scores.min() >= 0.0 and scores.max() <= 1.0


def test_outliers_score_higher_than_inliers(adapter):
    det = fitted(adapter)
    _, X_test, y_test, _, _ = DATA
    scores = det.score(X_test)
    assert roc_auc_score(y_test, scores) > 0.95
    assert scores[y_test == 1].mean() > scores[y_test == 0].mean()
    assert np.median(scores[y_test == 1]) > np.quantile(scores[y_test == 0], 0.9)


def test_same_seed_gives_the_same_scores(adapter):
    train, X_test, _, X_lab, y_lab = DATA
    a = adapter.fit(adapter.make(7), train, X_lab, y_lab).score(X_test)
    b = adapter.fit(adapter.make(7), train, X_lab, y_lab).score(X_test)
    np.testing.assert_allclose(a, b, rtol=0, atol=adapter.atol)


@pytest.mark.parametrize("adapter", [a for a in ADAPTERS if a.uses_seed], ids=lambda a: a.name)
def test_different_seed_gives_a_different_model(adapter):
    X_test = DATA[1]
    assert not np.allclose(fitted(adapter, seed=1).score(X_test), fitted(adapter, seed=2).score(X_test),
                           rtol=0, atol=1e-6)


def test_save_load_round_trip_gives_the_same_scores(adapter, tmp_path):
    det = fitted(adapter)
    name = det.save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [name]
    loaded = adapter.load(tmp_path, det)
    X_test = DATA[1]
    np.testing.assert_allclose(loaded.score(X_test), det.score(X_test), rtol=0, atol=adapter.atol)


def test_saved_file_contains_no_pickle_opcodes_of_arbitrary_classes(adapter, tmp_path):
    name = fitted(adapter).save(tmp_path)
    data = (tmp_path / name).read_bytes()
    for marker in (b"numpy.core", b"__main__", b"builtins", b"stream_scorer"):
        assert marker not in data


def test_score_of_a_row_does_not_depend_on_its_batch(adapter):
    det = fitted(adapter)
    X_test = DATA[1]
    full = det.score(X_test)
    order = np.random.default_rng(3).permutation(len(X_test))
    np.testing.assert_allclose(det.score(X_test[order]), full[order], rtol=0, atol=1e-6)
    singles = np.array([det.score(X_test[i:i + 1])[0] for i in range(0, len(X_test), 37)])
    np.testing.assert_allclose(singles, full[::37], rtol=0, atol=1e-6)


def test_scoring_does_not_modify_the_input(adapter):
    X = DATA[1].copy()
    fitted(adapter).score(X)
    np.testing.assert_array_equal(X, DATA[1])


def test_feature_order_invariance_of_detection_quality(adapter):
    """Columns permuted consistently at fit and score time: same detection quality. (Scores are not
    bit-identical: random projections and tie-breaks see the columns in another order.)"""
    _, X_test, y_test, _, _ = DATA
    auc = roc_auc_score(y_test, fitted(adapter).score(X_test))
    auc_perm = roc_auc_score(y_test, fitted(adapter, permuted=True).score(X_test[:, PERM]))
    assert abs(auc - auc_perm) < 0.03


def test_integer_and_float32_input_is_accepted(adapter):
    det = fitted(adapter)
    X_test = DATA[1]
    np.testing.assert_allclose(det.score(X_test.astype(np.float32)), det.score(X_test.astype(np.float32)
                                                                                .astype(np.float64)),
                               rtol=0, atol=1e-9)
    scores = det.score(np.rint(X_test).astype(np.int64))
    assert scores.shape == (len(X_test),) and np.all((scores >= 0) & (scores <= 1))


def test_the_registry_names_every_member_once():
    """One name per member: its registry key, manifest section, file and ``Ensemble`` field."""
    from ja4_core.ensemble import Ensemble

    assert set(REGISTRY) >= {"eif", "ae", "xgb"} and REQUIRED <= set(REGISTRY)
    assert all(cls.NAME == name for name, cls in REGISTRY.items())
    assert len({cls.FILENAME for cls in REGISTRY.values()}) == len(REGISTRY)
    assert set(REGISTRY) <= set(Ensemble.__dataclass_fields__)


def test_bytes_round_trip_and_save_write_the_same_file(adapter, tmp_path):
    det = fitted(adapter)
    data = det.to_bytes()
    assert isinstance(data, bytes) and data
    name = det.save(tmp_path)
    assert name == adapter.cls.FILENAME
    loaded = adapter.cls.load(data, det.manifest_section(), N_FEATURES)
    np.testing.assert_allclose(loaded.score(DATA[1]), det.score(DATA[1]), rtol=0, atol=adapter.atol)


def test_unreadable_bytes_are_a_bundle_error(adapter):
    from ja4_core.errors import BundleError

    with pytest.raises(BundleError):
        adapter.cls.load(b"not a model", fitted(adapter).manifest_section(), N_FEATURES)


def test_each_detector_follows_the_one_contract(adapter):
    assert issubclass(adapter.cls, Detector)
    assert inspect.signature(adapter.cls.load).parameters.keys() == inspect.signature(Detector.load).parameters.keys()
