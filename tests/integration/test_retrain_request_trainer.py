"""``stream-trainer loop`` acts on a replica's retrain request at once (issue 19, item 3), on the
real broker and the embedded ClickHouse: requests from several replicas give one retrain, which
records the request's figures as its ``drift``; a forged, a malformed, an other model's and a
stale one change nothing, and neither does a flood after the retrain."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ja4_core.bundle import ModelStore
from ja4_core.clickhouse_io import connect
from ja4_core.retrain_request import build_retrain_request, key_for
from ja4_core.settings import load_settings
from ja4_dev.simulator import TrafficSimulator
from tests.helpers import produce
from trainer.run import RunResult, loop

KEY = "retrain-request-test-key"


def request(version: str, replica: str, *, model: str = "default", key: str | None = KEY) -> bytes:
    return build_retrain_request(model=model, version=version, issued_by=replica, drift_share=0.42, threshold=0.3,
                                 drifted=["hits", "header_count"], window_s=300.0, window_records=5000,
                                 sustained_s=61.0, signing_key=key)


def test_requests_of_several_replicas_give_one_retrain_and_bad_ones_nothing(kafka_bootstrap, chdb_url, unique,
                                                                            tmp_path: Path) -> None:
    from datetime import datetime, timezone

    rows = TrafficSimulator(seed=5, bot_share=0.0).history(1, 60, end=datetime.now(timezone.utc))
    with connect(chdb_url) as ch:
        ch.init_db()
        ch.insert_features(rows)
    settings = load_settings({
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CLICKHOUSE_URL": chdb_url, "MODEL_STORE": str(tmp_path / "models"),
        "TOPIC_CONTROL": f"control-{unique}", "CONTROL_SIGNING_KEY": KEY, "TRAINER_CHECK_INTERVAL_S": "3600",
        "RETRAIN_INTERVAL_H": "1000", "EIF_NTREES": "20", "AE_EPOCHS": "1", "BASELINE_DAYS": "1",
        "DRIFT_REQUEST_COOLDOWN_S": "600", "PROMOTION_POLICY": "direct"})
    store = ModelStore(settings.model_store)
    results: list[RunResult] = []
    stop = threading.Event()
    thread = threading.Thread(target=loop, args=(settings, stop), kwargs={"on_result": results.append}, daemon=True)
    thread.start()

    def wait_runs(n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(results) < n and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.2)
        assert len(results) >= n, results

    try:
        wait_runs(1, 120)
        first = store.current("default")
        assert results[0].decision == "trained" and first
        bad = [
            (key_for("default"), request(first, "forger", key="not-the-key")),      # forged
            (key_for("default"), b'{"type": "retrain_request", "model": "default"}'),  # malformed
            (key_for("other"), request(first, "other", model="other")),              # another model
            (key_for("default"), request("20200101T000000000Z-dead", "stale")),      # a version not served
            (key_for("default"), request(first, "unsigned", key=None)),              # unsigned
        ]
        produce(kafka_bootstrap, settings.topic_control, bad)
        time.sleep(4.0)
        assert len(results) == 1, [r.decision for r in results]  # nothing happened
        asked = time.monotonic()
        produce(kafka_bootstrap, settings.topic_control,
                [(key_for("default"), request(first, f"replica-{i}")) for i in range(3)])
        wait_runs(2, 120)
        assert time.monotonic() - asked < 60  # at once, not after TRAINER_CHECK_INTERVAL_S (an hour)
        retrained = results[1]
        assert retrained.decision == "drift" and retrained.version and retrained.version != first, retrained
        # A flood after the retrain (about the old version, or the new one within the cool-down).
        produce(kafka_bootstrap, settings.topic_control,
                [(key_for("default"), request(v, f"flood-{i}")) for i in range(20) for v in (first, retrained.version)])
        time.sleep(5.0)
        assert len(results) == 2, [r.decision for r in results]
    finally:
        stop.set()
        thread.join(60)
    with connect(chdb_url) as ch:
        history = ch.last_decisions("default", limit=10)
    drift_rows = [h for h in history if h["decision"] == "drift"]
    assert len(drift_rows) == 1, history
    row = drift_rows[0]
    requested = row["drift"]["requested"]
    assert requested["issued_by"] == "replica-0" and requested["drift_share"] == 0.42, requested
    assert requested["version"] == first and requested["drifted"] == ["hits", "header_count"]
    assert row["drift_forced"] and abs(row["drift_share"] - 0.42) < 1e-9, row
