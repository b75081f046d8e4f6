"""Trainer outages as real processes (issue 7, fault 5).

* ClickHouse unreachable, then back: with the embedded engine, another process holding the
  ``chdb://`` directory makes it unreachable (chdb allows one process per directory). The
  ``stream-trainer loop`` retries with exponential backoff, publishes nothing meanwhile, and
  trains and announces once the holder has gone; SIGTERM then stops it cleanly.
* Two ``stream-trainer run-once`` started at the same moment: one trains, the other gives up
  on the store lock with exit code 0 and a message; the store holds exactly one complete
  version, ``CURRENT`` names it, and one announcement names it too.

(A Kafka outage in the loop is covered by ``test_trainer_loop.py``; the lock held in-process
by ``test_trainer_run.py``.)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest

from ja4_core.bundle import TMP_PREFIX, ModelStore, load_bundle, read_manifest, smoke_check
from ja4_core.control import parse_control
from ja4_core.settings import Settings, load_settings
from ja4_dev.simulator import TrafficSimulator
from ja4_core.clickhouse_io import connect
from trainer.publish import ensure_control_topic
from trainer.run import BACKOFF_BASE_S

REPO = Path(__file__).resolve().parents[2]

#: Opens the embedded ClickHouse directory, fills it, says so, and keeps it open until its
#: stdin is closed (also when the test process dies), so nobody else can open it meanwhile.
HOLDER = r"""
import sys
from datetime import datetime, timezone
from ja4_dev.simulator import TrafficSimulator
from ja4_core.clickhouse_io import connect
rows = TrafficSimulator(seed=11, bot_share=0.05).history(1, 150, end=datetime.now(timezone.utc))
with connect(sys.argv[1]) as ch:
    ch.init_db()
    ch.insert_features(rows)
    print("HOLDING", len(rows), flush=True)
    sys.stdin.read()
print("RELEASED", flush=True)
"""


def _env(chdb_url: str, tmp_path: Path, bootstrap: str, topic: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CLICKHOUSE_", "MODEL_", "TOPIC_"))}
    env.update({"PYTHONPATH": str(REPO), "CLICKHOUSE_URL": chdb_url, "MODEL_STORE": str(tmp_path / "models"),
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TOPIC_CONTROL": topic, "BASELINE_DAYS": "1",
                "LOG_LEVEL": "info", **extra})
    return env


def _wait(what: str, check: Callable[[], bool], timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        assert proc.poll() is None, f"process exited with {proc.returncode} while waiting for {what}:\n" \
                                    f"{log.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"timed out ({timeout:g} s) waiting for {what}:\n{log.read_text()[-3000:]}")


class ControlReader:
    """Every message on the (one-partition) control topic, read without a consumer group."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        ensure_control_topic(settings)  # what the trainer would create: compacted, one partition
        self.consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "unused",
                                  "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(settings.topic_control, 0, OFFSET_BEGINNING)])
        self.messages: list = []

    def read(self, seconds: float = 0.5) -> list:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for msg in self.consumer.consume(100, 0.1):
                if msg.error() is None:
                    self.messages.append(msg)
        return self.messages

    def close(self) -> None:
        self.consumer.close()


def _failed_runs(text: str) -> list[tuple[float, int, float]]:
    """(log time, retry number, announced wait) of each 'run failed ... retry N in W s' line."""
    out = []
    for m in re.finditer(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) WARNING trainer\.run: run failed .*?; "
                         r"retry (\d+) in (\d+) s$", text, re.M):
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        out.append((t, int(m.group(2)), float(m.group(3))))
    return out


def test_loop_backs_off_while_clickhouse_is_held_publishes_nothing_then_trains(
        chdb_url: str, tmp_path: Path, kafka_bootstrap: str, unique: str) -> None:
    """The loop's first runs fail on the held database: retries 1 and 2 wait 5 s and 10 s,
    the control topic stays empty and the store has no version; once the holder exits, the
    next retry trains, writes CURRENT and announces it; SIGTERM exits 0."""
    env = _env(chdb_url, tmp_path, kafka_bootstrap, f"outage-control-{unique}",
               # A long check interval, so that the backoff (5 s, 10 s, 20 s ...) is not capped by it.
               TRAINER_CHECK_INTERVAL_S="60", EIF_NTREES="20", AE_EPOCHS="1")
    settings = load_settings(env)
    store = ModelStore(settings.model_store)
    reader = ControlReader(settings)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, chdb_url], env=env, cwd=tmp_path,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = tmp_path / "loop.log"
    proc = None
    try:
        line = holder.stdout.readline().decode()
        assert line.startswith("HOLDING"), line + holder.stdout.read().decode()[-3000:]
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "trainer.cli", "loop"], env=env, cwd=tmp_path,
                                    stdout=out, stderr=subprocess.STDOUT)
        _wait("a second failed run (retry 2)", lambda: len(_failed_runs(log.read_text())) >= 2, 60, proc, log)
        # While ClickHouse is unreachable: nothing on the control topic, nothing in the store.
        assert reader.read(1.0) == [], "announced while ClickHouse was unreachable"
        assert store.current("default") is None and store.versions("default") == []
        failures = _failed_runs(log.read_text())
        text = log.read_text()
        assert "chdb allows one process per directory" in text, text[-3000:]

        released = time.monotonic()
        holder.stdin.close()  # the holder closes the database and exits
        assert holder.wait(30) == 0
        assert b"RELEASED" in holder.stdout.read()

        def announced() -> bool:
            current = store.current("default")
            return current is not None and any(parse_control(m.value()).version == current for m in reader.read(0.3))
        _wait("training and the announcement after ClickHouse came back", announced, 60, proc, log)
        recovered_s = time.monotonic() - released
        assert proc.poll() is None, "the loop keeps running after a successful run"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        for p in (proc, holder):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
        reader.close()

    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "trainer loop stopped" in text
    # Exponential backoff: retry n waits BACKOFF_BASE_S * 2**(n-1), and the log times agree.
    (t1, n1, w1), (t2, n2, w2) = failures[:2]
    assert (n1, w1, n2, w2) == (1, BACKOFF_BASE_S, 2, 2 * BACKOFF_BASE_S), failures
    assert w1 - 0.5 <= t2 - t1 <= w1 + 3.0, f"second attempt {t2 - t1:.1f} s after the first, expected ~{w1:g} s"
    # The next attempt came at most one backoff step (10 s) after the release, plus the run itself.
    assert recovered_s < w2 + 30, recovered_s
    # Exactly one announcement, naming the one version on disk, and it is what CURRENT names.
    versions = store.versions("default")
    assert len(versions) == 1 and store.current("default") == versions[0]
    announcements = [parse_control(m.value()) for m in reader.messages]
    assert [a.version for a in announcements] == versions, announcements
    with connect(chdb_url) as ch:
        decisions = ch.last_decisions("default", 10)
    assert [d["decision"] for d in decisions] == ["trained"], decisions
    assert decisions[0]["version"] == versions[0]


def test_two_trainers_at_the_same_moment_one_trains_the_other_exits_cleanly(
        chdb_url: str, tmp_path: Path, kafka_bootstrap: str, unique: str) -> None:
    """Two ``run-once`` at once: one trains; the other waits LOCK_WAIT_S for the store lock,
    then exits 0 saying another trainer holds it, having changed nothing. The store ends with
    exactly one complete version, CURRENT names it, and exactly one announcement names it."""
    rows = TrafficSimulator(seed=5, bot_share=0.05).history(1, 300, end=datetime.now(timezone.utc))
    with connect(chdb_url) as ch:  # closed before the trainers open the same embedded database
        ch.init_db()
        ch.insert_features(rows)
    # Training must outlast the loser's lock wait (5 s): 300 trees and 30 epochs on 7200 rows
    # take ~10 s here, on top of the baseline query.
    env = _env(chdb_url, tmp_path, kafka_bootstrap, f"twin-control-{unique}", EIF_NTREES="300", AE_EPOCHS="30")
    settings = load_settings(env)
    store = ModelStore(settings.model_store)
    reader = ControlReader(settings)
    logs = [tmp_path / "trainer-a.log", tmp_path / "trainer-b.log"]
    errs = [tmp_path / "trainer-a.err", tmp_path / "trainer-b.err"]
    procs = []
    try:
        for out, err in zip(logs, errs):
            procs.append(subprocess.Popen([sys.executable, "-m", "trainer.cli", "run-once"], env=env, cwd=tmp_path,
                                          stdout=open(out, "wb"), stderr=open(err, "wb")))
        codes = [p.wait(120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    outputs = [o.read_text() + e.read_text() for o, e in zip(logs, errs)]
    report = "\n=====\n".join(outputs)[-6000:]
    assert codes == [0, 0], report
    locked = [i for i, text in enumerate(outputs) if "another trainer holds the model store lock" in text]
    assert len(locked) == 1, report
    loser, winner = locked[0], 1 - locked[0]
    assert "another trainer holds the model store lock" in errs[loser].read_text(), "the message is on stderr"
    assert "trained" in logs[winner].read_text() and "Traceback" not in report, report

    versions = store.versions("default")
    assert len(versions) == 1, versions
    version = versions[0]
    assert store.current("default") == version
    model_dir = store.model_dir("default")
    assert not [p.name for p in model_dir.iterdir() if p.name.startswith(TMP_PREFIX)], "no half-written bundle left"
    bundle = load_bundle(store.bundle_dir("default", version))  # every file present and matching its sha256
    smoke_check(bundle)
    _, sha = read_manifest(store.bundle_dir("default", version))
    messages = reader.read(2.0)
    reader.close()
    announcements = [parse_control(m.value()) for m in messages]
    assert [(a.version, a.manifest_sha256) for a in announcements] == [(version, sha)], announcements
    with connect(chdb_url) as ch:
        decisions = ch.last_decisions("default", 10)
    assert [(d["decision"], d["version"]) for d in decisions] == [("trained", version)], decisions


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
