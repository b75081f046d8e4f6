"""``faust -A stream_scorer.app worker`` (the contract's second way to start a replica) still
builds the app on first access, starts up and scores (issue 14: importing the app module
builds nothing, so this path must build it)."""

from __future__ import annotations

from ja4_core.bundle import ModelStore
from ja4_dev.processes import ProductProcess, python_module
from ja4_dev.simulator import TrafficSimulator
from tests.helpers import Collector, free_port, produce, quick_bundle, records_to_messages, topic_env


def test_faust_dash_a_starts_a_scoring_replica(kafka_bootstrap, unique, tmp_path) -> None:
    store = ModelStore(tmp_path / "models")
    info = quick_bundle(store)
    port = free_port()
    env = topic_env(kafka_bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20", SCORER_WEB_PORT=str(port))
    worker = ProductProcess("faust -A", python_module("faust", "-A", "stream_scorer.app", "worker", "-l", "info"),
                            env, tmp_path / "faust-worker.log", cwd=tmp_path).start()
    try:
        ready = worker.wait_http(f"http://127.0.0.1:{port}/ready", lambda status, body: status == 200, 90)
        assert ready["model_version"] == info.version
        records = TrafficSimulator(seed=4).records(50)
        produce(kafka_bootstrap, env["TOPIC_FEATURES"], records_to_messages(records))
        scores = Collector(kafka_bootstrap, env["TOPIC_SCORES"]).until_count(len(records), timeout=60)
        assert len(scores) >= len(records)
        assert (tmp_path / "var" / "faust" / env["SCORER_APP_ID"]).is_dir()  # start-up ran (data directory)
    finally:
        code = worker.stop(grace=30)
    assert code == 0, worker.log()[-3000:]
