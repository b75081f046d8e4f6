"""Live drift on real workers and the broker (issue 19): stable traffic raises no retrain
request; shifted traffic raises exactly one, from one of two replicas, within the set time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ja4_core.bundle import BundleInfo, ModelStore, write_bundle
from ja4_core.control_log import read_control_records
from ja4_core.features import DEFAULT_FEATURES
from ja4_core.retrain_request import RetrainRequest, is_retrain_request, parse_retrain_request
from ja4_core.settings import load_settings
from tests.helpers import Worker, produce, records_to_messages, topic_env

KEY = "live-drift-test-key"
#: The drift settings of these tests: a short window, a short wait before asking.
DRIFT_ENV = {"CONTROL_SIGNING_KEY": KEY, "LIVE_DRIFT_WINDOW_S": "20", "LIVE_DRIFT_MIN_RECORDS": "300",
             "DRIFT_REQUEST_AFTER_S": "3", "DRIFT_REQUEST_COOLDOWN_S": "600", "SCORER_BATCH_WAIT_MS": "20"}


def digest_bundle(store: ModelStore, *, seed: int = 1, n: int = 3000) -> BundleInfo:
    """A small real bundle with the quantile digest the trainer writes."""
    from ja4_dev.simulator import TrafficSimulator
    from trainer.fit import FitConfig, fit_ensemble, quantile_digest

    recs = TrafficSimulator(seed=seed, bot_share=0.0).records(n)
    X = np.array([[r[f] for f in DEFAULT_FEATURES] for r in recs], dtype=np.float64)
    fit = fit_ensemble(X, DEFAULT_FEATURES, FitConfig(eif_ntrees=20, ae_epochs=1, seed=seed, nthreads=1))
    info = write_bundle(store, fit.ensemble, model="default", smoke_rows=X[:5],
                        extra={"digest": quantile_digest(X, DEFAULT_FEATURES), "digest_rows": n})
    store.set_current("default", info.version)
    return info


def human_records(seed: int, n: int) -> list[dict[str, Any]]:
    from ja4_dev.simulator import TrafficSimulator

    return TrafficSimulator(seed=seed, bot_share=0.0).records(n)


def shifted(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Traffic that moved: every feature scaled and offset (no feature becomes constant)."""
    return [{**r, **{f: float(r[f]) * 2.0 + 1.0 for f in DEFAULT_FEATURES}} for r in recs]


def stream(bootstrap: str, topic: str, recs: list[dict[str, Any]], seconds: float,
           until: Callable[[], bool] | None = None) -> None:
    """Send ``recs`` evenly over ``seconds`` (in ~0.25 s slices); stop early when ``until()``."""
    slices = max(1, int(seconds / 0.25))
    step = max(1, len(recs) // slices)
    for i in range(0, len(recs), step):
        started = time.monotonic()
        produce(bootstrap, topic, records_to_messages(recs[i:i + step]))
        if until is not None and until():
            return
        time.sleep(max(0.0, 0.25 - (time.monotonic() - started)))


def requests_on_topic(env: dict[str, str]) -> list[RetrainRequest]:
    settings = load_settings(env)
    return [parse_retrain_request(r.value, (KEY,)) for r in read_control_records(settings, timeout_s=5)
            if is_retrain_request(r.value)]


def drift_of(worker: Worker) -> dict[str, Any]:
    status, body = worker.get("/drift")
    assert status == 200, body
    return body


def test_stable_traffic_asks_nothing_and_shifted_traffic_asks_exactly_once(kafka_bootstrap, unique, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    info = digest_bundle(store)
    env = topic_env(kafka_bootstrap, unique, store.root, **DRIFT_ENV)
    workers = [Worker(env, tmp_path).start() for _ in range(2)]
    try:
        for w in workers:
            w.wait_ready(90)
        deadline = time.monotonic() + 30
        while not all(w.get("/ready")[0] == 200 for w in workers) and time.monotonic() < deadline:
            time.sleep(0.3)
        # Stable traffic for longer than the lowest-ranked replica waits before asking.
        stream(kafka_bootstrap, env["TOPIC_FEATURES"], human_records(2, 4000), 9.0)
        for w in workers:
            body = drift_of(w)
            assert body["ready"], body
            assert body["drifted_share"] < 0.3 and body["outcome"] == "ok", body
            assert body["model_version"] == info.version and not body["input_faults"], body
            assert body["features"]["hits"]["baseline_quantiles"] and body["features"]["hits"]["window_quantiles"]
        assert requests_on_topic(env) == []

        # The traffic moves: one of the two replicas asks within the configured time, once.
        moved = shifted(human_records(3, 12000))
        shift_at = time.monotonic()
        asked: list[float] = []

        def one_asked() -> bool:
            if not asked and sum(drift_of(w)["requests_published"] for w in workers) >= 1:
                asked.append(time.monotonic())
            return bool(asked) and time.monotonic() - asked[0] > 8.0  # then past the other's stagger
        stream(kafka_bootstrap, env["TOPIC_FEATURES"], moved, 30.0, until=one_asked)
        assert asked, [drift_of(w) for w in workers]
        # Within: the share crossing the threshold + DRIFT_REQUEST_AFTER_S + the stagger of rank 0,
        # with the window (20 s) still half full of the stable traffic.
        assert asked[0] - shift_at < 15.0, asked[0] - shift_at
        bodies = [drift_of(w) for w in workers]
        assert sum(b["requests_published"] for b in bodies) == 1, bodies
        assert all(b["drifted_share"] >= 0.3 for b in bodies), bodies
        assert all(b["outcome"] in ("held:cooldown", "pending") for b in bodies), bodies
        reqs = requests_on_topic(env)
        assert len(reqs) == 1, reqs
        req = reqs[0]
        assert req.model == "default" and req.version == info.version and req.drift_share >= 0.3
        assert req.window_records >= 300 and req.drifted_features
    finally:
        for w in workers:
            w.stop()
