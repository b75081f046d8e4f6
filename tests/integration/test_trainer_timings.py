"""A training run's timings account for every step (issue 20: the 1M-row benchmark could not
tell where a quarter of the run went), on the embedded ClickHouse and the real test broker."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ja4_core.clickhouse_io import connect
from ja4_core.features import KEY_FIELDS
from ja4_core.settings import load_settings
from ja4_dev.simulator import TrafficSimulator
from trainer.run import Trainer

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
STEPS = {"baseline query", "labels query", "plan", "labels", "fit", "write", "announce", "report"}


def test_a_training_run_times_every_step_and_they_add_up_to_the_run(
        chdb_url: str, tmp_path: Path, kafka_bootstrap: str, unique: str) -> None:
    rows = TrafficSimulator(seed=3, bot_share=0.1).history(3, 120, end=NOW)
    rng = np.random.default_rng(3)
    with connect(chdb_url) as ch:
        ch.init_db()
        ch.insert_features(rows)
        ch.insert_labels([{**{k: r[k] for k in KEY_FIELDS}, "label": r["label"]} for r in rows if rng.random() < 0.3])
    s = load_settings({"CLICKHOUSE_URL": chdb_url, "MODEL_STORE": str(tmp_path / "models"),
                       "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPIC_CONTROL": f"timings-control-{unique}",
                       "EIF_NTREES": "50", "AE_EPOCHS": "3", "BASELINE_DAYS": "3", "LOG_LEVEL": "warning",
                       "PROMOTION_POLICY": "direct"})

    result = Trainer(s).run_once(now=NOW)

    assert result.decision == "trained", result.reason
    assert STEPS <= set(result.timings), sorted(result.timings)
    # What is not a named step (opening ClickHouse, loading the current bundle) is small.
    assert sum(result.timings.values()) >= 0.8 * result.duration_s, (result.timings, result.duration_s)
