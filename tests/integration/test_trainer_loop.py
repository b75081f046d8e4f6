"""``stream-trainer loop`` as a real process: it trains while Kafka is down, keeps retrying,
announces the version once a broker appears, and exits 0 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ja4_core.bundle import ModelStore
from ja4_dev.tansu import TansuBroker
from ja4_core.settings import load_settings
from ja4_dev.simulator import TrafficSimulator
from ja4_core.clickhouse_io import connect
from trainer.publish import PublishError, read_control_latest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        assert proc.poll() is None, f"loop exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def test_loop_survives_kafka_outage_then_stops_cleanly_on_sigterm(chdb_url: str, tmp_path: Path, unique: str) -> None:
    rows = TrafficSimulator(seed=11, bot_share=0.05).history(1, 100, end=datetime.now(timezone.utc))
    with connect(chdb_url) as ch:  # closed before the loop opens the same embedded database
        ch.init_db()
        ch.insert_features(rows)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CLICKHOUSE_", "MODEL_", "TOPIC_"))}
    env.update({"PYTHONPATH": str(REPO), "CLICKHOUSE_URL": chdb_url, "MODEL_STORE": str(tmp_path / "models"),
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "TOPIC_CONTROL": f"trainer-loop-{unique}",
                "TRAINER_CHECK_INTERVAL_S": "2", "EIF_NTREES": "20", "AE_EPOCHS": "1", "BASELINE_DAYS": "1",
                "LOG_LEVEL": "info"})
    settings = load_settings(env)
    store = ModelStore(settings.model_store)
    log = tmp_path / "loop.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "trainer.cli", "loop"], env=env, cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT)
    broker = None
    try:
        _wait("a first version on disk", lambda: store.current("default") is not None, 90, proc, log)
        _wait("a failed announcement and a retry", lambda: "retry" in log.read_text(), 60, proc, log)
        broker = TansuBroker(port=port, log_path=tmp_path / "broker.log").start()

        def announced() -> bool:
            try:
                entry = read_control_latest(settings, timeout=3).get("default")
            except PublishError:
                return False
            return entry is not None and entry.message is not None and entry.message.version == store.current("default")
        _wait("the announcement once Kafka is up", announced, 90, proc, log)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if broker is not None:
            broker.stop()
    text = log.read_text()
    assert "trainer loop stopped" in text and "Traceback" not in text
    with connect(chdb_url) as ch:
        assert ch.last_decisions("default")[-1]["decision"] == "trained"
