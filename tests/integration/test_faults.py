"""Fault campaign: under a steady stream of known records, break something, then count.

Each test prints and records one row (fault, records in, distinct scored, duplicates, lost,
recovery time) in ``var/test-results/faults.json``; the README's "Reliability" table is
filled from the last CI run. This campaign runs on the embedded Tansu; the same kind of
campaign on a three-node Apache Kafka cluster is ``test_faults_kafka.py``. "Duplicates" here
also counts a record the simulator sent twice (``SteadyStream`` keeps a set of keys). These
tests are slow (minutes), so they are marked ``slow``: the default suite skips them,
``.ci/run`` runs them. They use a broker of their own, so
stopping it never disturbs other tests.
"""

from __future__ import annotations

import json
import os
import signal
import time

import orjson
import pytest

from ja4_core.bundle import ModelStore
from ja4_core.control import build_activate
from ja4_dev.tansu import TansuBroker
from tests.helpers import REPO, Collector, Worker, free_port, produce, quick_bundle, record_key, topic_env
from tests.integration.test_hot_reload import SteadyStream, wait_versions

pytestmark = pytest.mark.slow

RESULTS = REPO / "var" / "test-results" / "faults.json"


def record(row: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    rows[row["fault"]] = row
    RESULTS.write_text(json.dumps(rows, indent=1))
    print(row)


def count(fault: str, sent: set, scores: list, recovery_s: float | None = None) -> dict:
    keys = [record_key(orjson.loads(m.value())) for m in scores]
    distinct = set(keys) & sent
    row = {"fault": fault, "broker": "embedded Tansu", "records_in": len(sent), "distinct_scored": len(distinct),
           "duplicates": len(keys) - len(set(keys)), "lost": len(sent - distinct),
           "recovery_s": None if recovery_s is None else round(recovery_s, 1)}
    record(row)
    return row


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("fault tests stop and resume the broker: they need the embedded one")
    b = TansuBroker(free_port(), tmp_path_factory.mktemp("faults") / "broker.log").start()
    yield b
    if b.proc and b.proc.poll() is None:
        try:
            os.kill(b.proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    b.stop()


@pytest.fixture
def setup(broker, unique, tmp_path):
    store = ModelStore(tmp_path / "models")
    info = quick_bundle(store)
    env = topic_env(broker.bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20")
    return store, info, env


def collect_all(bootstrap: str, topic: str, sent: set, timeout: float = 90.0) -> list:
    return Collector(bootstrap, topic).poll_until(
        lambda msgs: {record_key(orjson.loads(m.value())) for m in msgs} >= sent, timeout=timeout)


def test_kill9_one_of_two_workers(broker, setup, tmp_path) -> None:
    store, info, env = setup
    w1, w2 = Worker(env, tmp_path).start(), Worker(env, tmp_path).start()
    try:
        w1.wait_ready(), w2.wait_ready()
        with SteadyStream(broker.bootstrap, env["TOPIC_FEATURES"]) as stream:
            time.sleep(4)
            w2.stop(signal.SIGKILL)
            killed_at = time.monotonic()
            # The survivor takes over the dead replica's partitions after the session timeout.
            while time.monotonic() - killed_at < 60 and len(w1.model()["partitions"]) < 4:
                time.sleep(0.2)
            recovery = time.monotonic() - killed_at
            time.sleep(4)
        scores = collect_all(broker.bootstrap, env["TOPIC_SCORES"], stream.sent)
    finally:
        w1.stop(), w2.stop()
    row = count("kill -9 one of two workers", stream.sent, scores, recovery)
    assert row["lost"] == 0


def test_third_replica_joins_then_leaves(broker, setup, tmp_path) -> None:
    store, info, env = setup
    # With 4 partitions a third replica joining two others was left without any (the two
    # kept 2 each) on the embedded broker; 6 partitions split 2/2/2.
    env = {**env, "TOPIC_PARTITIONS": "6"}
    w1, w2 = Worker(env, tmp_path).start(), Worker(env, tmp_path).start()
    w3 = Worker(env, tmp_path)
    try:
        w1.wait_ready(), w2.wait_ready()
        with SteadyStream(broker.bootstrap, env["TOPIC_FEATURES"]) as stream:
            time.sleep(3)
            w3.start().wait_ready()
            time.sleep(4)
            assert w3.model()["partitions"], "the third replica got partitions"
            left_at = time.monotonic()
            assert w3.stop(signal.SIGTERM) is not None
            recovery = time.monotonic() - left_at
            time.sleep(4)
        scores = collect_all(broker.bootstrap, env["TOPIC_SCORES"], stream.sent)
    finally:
        for w in (w1, w2, w3):
            w.stop()
    row = count("third replica joins, then leaves (SIGTERM)", stream.sent, scores, recovery)
    assert row["lost"] == 0
    assert "Traceback" not in w3.log(), w3.log()[-3000:]


def test_broker_stalls_20s(broker, setup, tmp_path) -> None:
    store, info, env = setup
    w1 = Worker(env, tmp_path).start()
    try:
        w1.wait_ready()
        with SteadyStream(broker.bootstrap, env["TOPIC_FEATURES"], rate=200) as stream:
            time.sleep(3)
            os.kill(broker.proc.pid, signal.SIGSTOP)
            time.sleep(20)
            os.kill(broker.proc.pid, signal.SIGCONT)
            resumed = time.monotonic()
            collector = Collector(broker.bootstrap, env["TOPIC_SCORES"])
            before = len(collector.drain(quiet_s=0.5, timeout=3))
            # Recovery: the first new score after the broker resumed.
            collector.poll_until(lambda m: len(m) > before, timeout=90)
            recovery = time.monotonic() - resumed
            time.sleep(3)
        assert w1.proc.poll() is None, "the worker survived the stall"
        scores = collect_all(broker.bootstrap, env["TOPIC_SCORES"], stream.sent, timeout=120)
    finally:
        w1.stop()
    row = count("broker stalls 20 s (SIGSTOP/SIGCONT)", stream.sent, scores, recovery)
    assert row["lost"] == 0


def test_reload_and_refused_reload_under_load(broker, setup, tmp_path) -> None:
    store, info, env = setup
    v2 = quick_bundle(store, seed=2, set_current=False)
    v3 = quick_bundle(store, seed=3, set_current=False)
    (v3.path / "eif.isotree").write_bytes((v3.path / "eif.isotree").read_bytes()[:-100])  # truncated
    w1, w2 = Worker(env, tmp_path).start(), Worker(env, tmp_path).start()
    try:
        w1.wait_ready(), w2.wait_ready()
        with SteadyStream(broker.bootstrap, env["TOPIC_FEATURES"]) as stream:
            time.sleep(3)
            for v in (v2, v3):
                produce(broker.bootstrap, env["TOPIC_CONTROL"], [(b"default", build_activate(
                    model="default", version=v.version, uri=v.uri, manifest_sha256=v.manifest_sha256,
                    issued_by="test"))])
                time.sleep(2)
            took = wait_versions([w1, w2], v2.version)
            time.sleep(3)
        scores = collect_all(broker.bootstrap, env["TOPIC_SCORES"], stream.sent)
        refused = [w.model()["outcomes"].get("refused:bundle", 0) for w in (w1, w2)]
    finally:
        w1.stop(), w2.stop()
    versions = {m.headers()[0][1].decode() for m in scores}
    assert versions <= {info.version, v2.version}, "nothing scored by the truncated bundle"
    assert all(r >= 1 for r in refused)
    row = count("reload + refused reload (truncated bundle) under load", stream.sent, scores, took)
    assert row["lost"] == 0


def test_bundle_deleted_then_restored(broker, setup, tmp_path) -> None:
    """An accepted announcement whose bundle vanished: refused, old model serves, retried."""
    store, info, env = setup
    v2 = quick_bundle(store, seed=2, set_current=False)
    hidden = tmp_path / "hidden"
    w1 = Worker(env, tmp_path).start()
    try:
        w1.wait_ready()
        v2.path.rename(hidden)
        produce(broker.bootstrap, env["TOPIC_CONTROL"], [(b"default", build_activate(
            model="default", version=v2.version, uri=v2.uri, manifest_sha256=v2.manifest_sha256, issued_by="test"))])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not w1.model()["outcomes"].get("refused:bundle"):
            time.sleep(0.2)
        info_now = w1.model()
        assert info_now["active"]["model_version"] == info.version
        assert info_now["pending_retry"] == v2.version
        hidden.rename(v2.path)
        took = wait_versions([w1], v2.version, timeout=30)
    finally:
        w1.stop()
    record({"fault": "announced bundle deleted, then restored", "records_in": 0, "distinct_scored": 0,
            "duplicates": 0, "lost": 0, "recovery_s": round(took, 1)})
