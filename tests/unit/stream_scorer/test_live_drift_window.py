"""The live drift window (pure): the trainer's figures from bins, bounded memory, sliding,
input faults; and the decision to ask for a retrain."""

from __future__ import annotations

import numpy as np
import pytest

from ja4_core.drift import check_drift
from stream_scorer.live_drift import SUBWINDOWS, LiveDrift
from stream_scorer.retrain_decision import RetrainDecider
from trainer.fit import quantile_digest

NAMES = ("normal", "flag", "count", "always_zero")


def _data(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    return np.column_stack([rng.normal(10 + shift, 2, n), (rng.random(n) < 0.3).astype(float),
                            rng.poisson(2 + shift, n).astype(float), np.zeros(n)])


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _window(window_s: float = 100.0, **kw: object) -> tuple[LiveDrift, Clock, dict]:
    rng = np.random.default_rng(1)
    ref = _data(rng, 5000)
    digest = quantile_digest(ref, NAMES)
    clock = Clock()
    live = LiveDrift(window_s, min_records=200, clock=clock, **kw)  # type: ignore[arg-type]
    live.use_bundle("v1", NAMES, {"digest": digest, "digest_rows": 5000})
    return live, clock, digest


def test_the_window_gives_the_trainers_figures_on_the_same_rows() -> None:
    live, clock, digest = _window()
    X = _data(np.random.default_rng(2), 3000, shift=0.7)
    X[::9, 0] = np.nan
    for i in range(0, len(X), 250):
        live.observe(X[i:i + 250])
        clock.t += 1.0
    snap = live.snapshot()
    report = check_drift(X, NAMES, digest, threshold=0.3, n_ref=5000)
    for mine, theirs in zip(snap.features, report.features):
        assert mine.drift is not None
        assert mine.drift.ks == pytest.approx(theirs.ks, abs=1e-12)
        assert mine.drift.kl == pytest.approx(theirs.kl, abs=1e-12)
        assert mine.drift.mean_shift_std == pytest.approx(theirs.mean_shift_std, abs=1e-9)
        assert mine.drift.drifted == theirs.drifted
    assert snap.features[0].imputed_share == pytest.approx(334 / 3000)
    assert snap.records == 3000 and snap.ready


def test_same_traffic_is_not_drift_and_moved_traffic_is() -> None:
    live, clock, _ = _window()
    rng = np.random.default_rng(3)
    live.observe(_data(rng, 2000))
    assert live.snapshot().share == 0.0
    clock.t += 200.0  # the old traffic leaves the window
    live.observe(_data(rng, 2000, shift=2.0))
    snap = live.snapshot()
    assert snap.records == 2000
    assert {f.feature for f in snap.drifted} == {"normal", "count"}
    assert snap.share == pytest.approx(2 / 4)


def test_memory_is_bounded_and_old_traffic_slides_out() -> None:
    live, clock, _ = _window(window_s=10.0)
    rng = np.random.default_rng(4)
    size = live._counts.nbytes  # noqa: SLF001 - the point of the test
    for _ in range(200):
        live.observe(_data(rng, 100))
        clock.t += 0.5
    assert live._counts.nbytes == size and live._counts.shape[0] == SUBWINDOWS  # noqa: SLF001
    snap = live.snapshot()
    assert 1800 <= snap.records <= 2000  # 9 to 10 s of 200 rows/s
    clock.t += 100.0
    assert live.snapshot().records == 0


def test_a_constant_or_mostly_missing_feature_is_an_input_fault_not_drift() -> None:
    live, _, _ = _window()
    X = _data(np.random.default_rng(5), 1000)
    X[:, 0] = 0.0           # the aggregator sends zeros
    X[:700, 2] = np.nan     # ... and mostly drops this one
    live.observe(X)
    snap = live.snapshot()
    faults = {f.feature: f.fault for f in snap.faults}
    assert faults == {"normal": "constant", "count": "imputed"}
    assert snap.drifted == []  # a faulty feature does not count as drifted
    # A feature constant in the baseline too (one distinct quantile) is not a fault.
    assert snap.features[3].fault == "" and not snap.features[3].drifted


def test_a_few_records_are_not_judged() -> None:
    live, _, _ = _window()
    X = np.zeros((50, 4))
    live.observe(X)
    snap = live.snapshot()
    assert not snap.ready and snap.faults == [] and snap.share == 0.0


def test_a_new_bundle_starts_a_new_window_and_a_bundle_without_digest_turns_it_off() -> None:
    live, _, digest = _window()
    live.observe(np.ones((10, 4)))
    live.use_bundle("v2", NAMES, {"digest": digest})
    assert live.snapshot().records == 0 and live.snapshot().version == "v2"
    live.use_bundle("v3", NAMES, {})
    live.observe(np.ones((10, 4)))
    assert live.snapshot().note and live.snapshot().records == 0
    assert not LiveDrift(0.0).enabled


def test_the_decision_waits_for_the_sustained_share_its_rank_and_the_cooldown() -> None:
    d = RetrainDecider(threshold=0.3, after_s=10.0, cooldown_s=100.0, stagger_s=3.0)
    kw = dict(ready=True, faults=0, last_request_at=None)
    assert d.step(0.0, share=0.5, rank=2, **kw) == "pending"
    assert d.step(12.0, share=0.5, rank=2, **kw) == "pending"  # 10 s + 2 x 3 s stagger
    assert d.step(16.0, share=0.5, rank=2, **kw) == "request"
    assert d.step(17.0, share=0.5, rank=2, ready=True, faults=0, last_request_at=15.0) == "held:cooldown"
    assert d.step(200.0, share=0.5, rank=2, ready=True, faults=0, last_request_at=15.0) == "request"
    # The share dipping below the threshold starts the wait again.
    assert d.step(201.0, share=0.1, rank=0, **kw) == "ok"
    assert d.step(202.0, share=0.5, rank=0, **kw) == "pending"
    assert d.step(211.0, share=0.5, rank=0, **kw) == "pending"
    assert d.step(212.0, share=0.5, rank=0, **kw) == "request"
    # An input fault holds it and resets the wait; so does a window too small; no partition never asks.
    assert d.step(213.0, share=0.5, rank=0, ready=True, faults=1, last_request_at=None) == "held:input_fault"
    assert d.above_since is None
    assert d.step(214.0, share=0.9, rank=0, ready=False, faults=0, last_request_at=None) == "warming"
    assert d.step(300.0, share=0.9, rank=None, **kw) == "held:no_partitions"
    assert d.step(400.0, share=0.9, rank=None, **kw) == "held:no_partitions"
