"""A shortened demo, end to end, twice in the same ./var (the README's run command)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import session_broker_kind

QUICK = {"EIF_NTREES": "40", "AE_EPOCHS": "3", "SCORER_BATCH_WAIT_MS": "20"}


def run_demo(var, duration: int, broker: str = "tansu") -> dict:
    env = {**os.environ, **QUICK}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the demo starts its own broker
    out = subprocess.run([sys.executable, "-m", "stream_scorer.cli", "demo", "--duration", str(duration), "--rate", "150",
                          "--history-rate", "40", "--var", str(var), "--no-live", "--broker", broker],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads((var / "demo" / "summary.json").read_text())


#: The demo on each broker the session has: `--broker kafka` (Apache Kafka, where java and mvn
#: are installed) and the embedded default `--broker tansu` (tests/conftest.py).
pytestmark = pytest.mark.both_brokers


@pytest.fixture(scope="module")
def demo_broker(broker_kind: str) -> str:
    if broker_kind not in ("kafka", "tansu"):
        pytest.skip(f"the demo starts its own broker: kafka or tansu, not {broker_kind}")
    return broker_kind


@pytest.fixture(scope="module")
def demo_var(tmp_path_factory, demo_broker):
    return tmp_path_factory.mktemp(f"demo-{demo_broker}") / "var"


def test_demo_end_to_end(demo_var, demo_broker) -> None:
    var = demo_var
    s = run_demo(var, 30, demo_broker)
    assert s["records_scored"] == s["records_sent"] > 0
    assert len(s["replicas_served"]) == 2 and all(v > 0 for v in s["replicas_served"].values())
    assert s["retrained_version"] and s["retrained_version"] != s["first_version"]
    assert set(s["replica_versions"].values()) == {s["retrained_version"]}
    # The retrain shadowed as a challenger and was promoted on the analysts' labels (issue 17).
    assert s["challenger_act"]["decision"] == "promoted" and s["challenger_act"]["challenger"] == s["retrained_version"]
    assert s["ml_all_scores_distinct_records"] == s["records_scored"]
    # The review console ran beside the sink (issue 18) and said where.
    assert s["console"].startswith("http://127.0.0.1:")
    assert "review console on " + s["console"] in (var / "demo" / "logs" / "console.log").read_text()
    # Recall on the campaign at the same false-alert rate on humans (5 %), per version.
    before = s["before"]["by_kind"]["campaign"]["recall_at_5pct_human_alerts"]
    after = s["after"]["by_kind"]["campaign"]["recall_at_5pct_human_alerts"]
    assert after > before, (before, after)


@pytest.mark.slow
def test_demo_rerun_in_same_var(demo_var, demo_broker) -> None:
    """Re-running in the same ./var works (history and models are reused). Nothing in it
    depends on the broker, so it runs once, on the session's broker (it saves CI a demo run)."""
    if demo_broker != session_broker_kind() and session_broker_kind() in ("kafka", "tansu"):
        pytest.skip("a rerun in the same ./var is broker-independent: run once, on the session's broker")
    s2 = run_demo(demo_var, 15, demo_broker)
    assert s2["records_scored"] == s2["records_sent"] > 0
