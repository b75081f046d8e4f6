"""The demo's drift act (issue 19) as steps, with stand-ins for the processes it drives."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from ja4_core.features import DEFAULT_FEATURES
from ja4_dev import demo_drift
from ja4_dev.demo_drift import RELEASE_FEATURES, DriftPhase, browser_release


def test_the_release_moves_only_its_features_and_none_becomes_constant() -> None:
    from ja4_dev.simulator import TrafficSimulator

    recs = TrafficSimulator(seed=3, bot_share=0.0).records(500)
    moved = [browser_release(r) for r in recs]
    assert set(RELEASE_FEATURES) <= set(DEFAULT_FEATURES)
    for f in DEFAULT_FEATURES:
        before = np.array([float(r[f]) for r in recs])
        after = np.array([float(r[f]) for r in moved])
        if f in RELEASE_FEATURES:
            assert np.allclose(after, before * 1.5 + 1.0)
            assert (after.min() == after.max()) == (before.min() == before.max())
        else:
            assert np.array_equal(after, before)


def test_the_act_goes_shift_request_retrain_reload(monkeypatch) -> None:
    state: dict[str, Any] = {"runs": 0, "current": "v1", "versions": {"scorer-1": "v1"}, "request": None}
    monkeypatch.setattr(demo_drift, "request_seen", lambda replicas, version: state["request"])
    traffic = SimpleNamespace(shift=None)
    said: list[str] = []
    act = DriftPhase(replicas=[], traffic=traffic, served="v1", say=said.append,
                     start_loop=lambda: "loop", loop_runs=lambda: state["runs"], current=lambda: state["current"],
                     versions=lambda: state["versions"])
    assert not act.step() and act.loop == "loop" and traffic.shift is None
    assert not act.step()  # the loop's first run not done: no shift yet
    state["runs"] = 1
    assert not act.step() and traffic.shift is browser_release
    assert not act.step()  # no request yet
    state["request"] = {"issued_by": "scorer-1", "drift_share": 0.4, "threshold": 0.3, "version": "v1"}
    assert not act.step() and act.summary["request"]["issued_by"] == "scorer-1"
    state["current"], state["runs"] = "v2", 2
    assert not act.step() and act.summary["version"] == "v2"
    assert not act.step()  # a replica still on v1
    state["versions"] = {"scorer-1": "v2"}
    assert act.step()
    assert {"shift_at", "request_after_s", "retrain_after_s", "live_after_s"} <= set(act.summary)
