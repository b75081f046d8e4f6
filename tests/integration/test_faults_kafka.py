"""Fault campaign on a three-node Apache Kafka cluster (issue 15): break a broker, count.

The cluster is what production runs: three combined broker+controller KRaft nodes,
``min.insync.replicas=2``, the product's topics created with ``TOPIC_REPLICATION_FACTOR=3``
(data topics get ``min.insync.replicas=2``, :mod:`ja4_core.kafka_admin`), and every producer
on ``acks=all``: the worker's output producer and the load below (both idempotent too), and
Faust's own (``producer_acks=-1``, which carries no records). One cluster is shared by the
module; after each fault the test brings the node back and waits until every partition is
fully in sync again, so the next fault starts from a healthy cluster (the whole-cluster
restart runs last).

Each test records a row in ``var/test-results/faults.json`` (as the Tansu campaign in
``test_faults.py`` does): records in (distinct records acknowledged by the broker), distinct
scored, lost, duplicated (score records beyond the times a record was sent), and recovery
seconds. Recovery is end to end unless said otherwise: from the
fault until the first record sent after it (into the affected partition, when one is) was
scored, by the score record's broker timestamp.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from typing import Any, Callable

import orjson
import pytest

from ja4_core.bundle import ModelStore
from ja4_core.control import build_activate
from ja4_dev.simulator import TrafficSimulator
from tests.helpers import Collector, Worker, produce, quick_bundle, record_key, topic_env
from tests.integration.test_faults import record
from tests.integration.test_hot_reload import wait_versions

pytestmark = pytest.mark.slow

CLUSTER = "Kafka x3"
RATE = 200.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("the campaign kills brokers: it needs a cluster of its own")
    if os.environ.get("JA4_TEST_BROKER", "").strip().lower() == "tansu":
        pytest.skip("JA4_TEST_BROKER=tansu: the Apache Kafka campaign is not asked for")
    from ja4_dev.apache_kafka import KafkaCluster, available

    if not available():
        pytest.skip("Apache Kafka needs java and mvn")
    c = KafkaCluster(3, min_insync_replicas=2, workdir=tmp_path_factory.mktemp("faults-kafka")).start()
    yield c
    c.stop(grace=10)


@pytest.fixture
def healthy(cluster):
    """Every node running and every partition fully replicated, before and after a test."""
    cluster.wait_in_sync(90)
    yield cluster
    for n in cluster.nodes:
        n.start()
    cluster.wait_ready(120)
    cluster.wait_in_sync(90)


@pytest.fixture
def setup(healthy, unique, tmp_path):
    store = ModelStore(tmp_path / "models")
    info = quick_bundle(store)
    env = topic_env(healthy.bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20", TOPIC_REPLICATION_FACTOR="3")
    return store, info, env


class Load:
    """Simulated records at a steady rate from an ``acks=all`` idempotent producer; remembers
    when each record was sent and which partition the broker acknowledged it on."""

    def __init__(self, bootstrap: str, topic: str, rate: float = RATE) -> None:
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        #: first send time and how often each key was sent (the simulator repeats ~6 % of
        #: its keys: a repeat is sent twice and scored twice, which is not a duplicate)
        self.sent_at: dict[tuple, float] = {}
        self.times_sent: Counter = Counter()
        self.partition: dict[tuple, int] = {}
        self.errors: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "enable.idempotence": True,
                      "linger.ms": 5, "log_level": 3})
        sim = TrafficSimulator(seed=5)
        start, n = time.monotonic(), 0

        def done(key: tuple, err: Any, msg: Any) -> None:
            if err is not None:
                self.errors.append(err)
            else:
                self.partition[key] = msg.partition()

        while not self._stop.is_set():
            for rec in sim.records(20):
                key = record_key(rec)
                self.sent_at.setdefault(key, time.time())
                self.times_sent[key] += 1
                p.produce(self.topic, orjson.dumps(rec), rec["src_ip"].encode(),
                          on_delivery=lambda err, msg, key=key: done(key, err, msg))
                n += 1
            p.poll(0)
            ahead = n / self.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        assert p.flush(120) == 0, "load records left undelivered"

    @property
    def acked(self) -> set:
        return set(self.partition)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(150)
        assert not self._thread.is_alive(), "the load producer did not finish"


def collect(bootstrap: str, topic: str, want: set, timeout: float = 120.0) -> list:
    collector = Collector(bootstrap, topic)
    try:
        return collector.poll_until(lambda ms: {record_key(orjson.loads(m.value())) for m in ms} >= want,
                                    timeout=timeout)
    finally:
        collector.close()


def recovery_after(load: Load, scores: list, fault_at: float, partition: int | None = None) -> float | None:
    """Seconds from ``fault_at`` (wall clock) until the first record sent after it (into
    ``partition``, if given) was scored."""
    after = {k for k, t in load.sent_at.items() if t >= fault_at and load.times_sent[k] == 1
             and (partition is None or load.partition.get(k) == partition)}
    stamps = [m.timestamp()[1] / 1000.0 for m in scores if record_key(orjson.loads(m.value())) in after]
    return min(stamps) - fault_at if stamps else None


def count(fault: str, load: Load, scores: list, recovery_s: float | None) -> dict:
    assert not load.errors, f"the broker refused load records: {load.errors[:3]}"
    sent = load.acked
    scored = Counter(record_key(orjson.loads(m.value())) for m in scores)
    distinct = set(scored) & sent
    duplicates = sum(max(0, n - load.times_sent[k]) for k, n in scored.items())
    row = {"fault": f"{fault} ({CLUSTER})", "broker": "Apache Kafka 4.1.1, 3 nodes, RF 3, min.insync.replicas 2",
           "records_in": len(sent), "distinct_scored": len(distinct), "duplicates": duplicates,
           "lost": len(sent - distinct), "recovery_s": None if recovery_s is None else round(recovery_s, 1)}
    record(row)
    return row


def leader_of(bootstrap: str, topic: str, partition: int) -> int:
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3}).list_topics(topic, timeout=10)
    return meta.topics[topic].partitions[partition].leader


def one_worker_fault(cluster, env: dict[str, str], tmp_path, name: str,
                     fault: Callable[[], tuple[float, int | None]], *, settle_s: float = 2.0,
                     collect_s: float = 120.0) -> dict:
    """One worker under the steady load; ``fault`` breaks the cluster and brings it back, and
    returns when it struck and which features partition it hit (None: all). Then the cluster
    must be whole again, the worker alive, and every acknowledged record scored."""
    w = Worker(env, tmp_path).start()
    try:
        w.wait_ready(90)
        with Load(cluster.bootstrap, env["TOPIC_FEATURES"]) as load:
            time.sleep(3)
            fault_at, partition = fault()
            cluster.wait_ready(120)
            time.sleep(settle_s)
        scores = collect(cluster.bootstrap, env["TOPIC_SCORES"], load.acked, timeout=collect_s)
        assert w.proc.poll() is None, f"the worker survived:\n{w.log()[-3000:]}"
    finally:
        w.stop()
    row = count(name, load, scores, recovery_after(load, scores, fault_at, partition))
    assert row["lost"] == 0
    return row


def test_kill9_the_leader_of_a_features_partition(cluster, setup, tmp_path) -> None:
    _store, _info, env = setup

    def fault() -> tuple[float, int | None]:
        victim = cluster.node(leader_of(cluster.bootstrap, env["TOPIC_FEATURES"], 0))
        fault_at = time.time()
        victim.kill9()
        time.sleep(8)
        victim.start()
        return fault_at, 0

    one_worker_fault(cluster, env, tmp_path, "kill -9 the leader of features partition 0", fault)


def test_kill9_the_active_controller(cluster, setup, tmp_path) -> None:
    _store, _info, env = setup

    def fault() -> tuple[float, int | None]:
        victim = cluster.node(cluster.active_controller())
        fault_at = time.time()
        victim.kill9()
        cluster.wait_controller_other_than(victim.node_id, timeout=30)
        time.sleep(6)
        victim.start()
        return fault_at, None

    one_worker_fault(cluster, env, tmp_path, "kill -9 the active controller", fault)


def test_stop_and_restart_one_broker(cluster, setup, tmp_path) -> None:
    _store, _info, env = setup

    def fault() -> tuple[float, int | None]:
        victim = cluster.node(leader_of(cluster.bootstrap, env["TOPIC_FEATURES"], 1))
        fault_at = time.time()
        victim.stop(grace=30)  # SIGTERM: a controlled shutdown hands its leaderships over first
        assert not victim.running
        time.sleep(5)
        victim.start()
        return fault_at, 1

    one_worker_fault(cluster, env, tmp_path, "stop (SIGTERM) and restart one broker", fault)


def test_kill9_a_worker_while_a_broker_is_down(cluster, setup, tmp_path) -> None:
    store, info, env = setup
    w1, w2 = Worker(env, tmp_path).start(), Worker(env, tmp_path).start()
    try:
        w1.wait_ready(90), w2.wait_ready(90)
        with Load(cluster.bootstrap, env["TOPIC_FEATURES"]) as load:
            time.sleep(3)
            down = cluster.node(leader_of(cluster.bootstrap, env["TOPIC_FEATURES"], 2))
            down.kill9()
            time.sleep(3)
            w2.stop(signal.SIGKILL)
            killed_at = time.monotonic()
            # The survivor takes the dead replica's partitions after its session timeout.
            while time.monotonic() - killed_at < 60 and len(w1.model()["partitions"]) < 4:
                time.sleep(0.2)
            recovery = time.monotonic() - killed_at
            assert len(w1.model()["partitions"]) == 4, w1.model()
            time.sleep(3)
            down.start()
            cluster.wait_ready(120)
            time.sleep(2)
        scores = collect(cluster.bootstrap, env["TOPIC_SCORES"], load.acked)
        assert w1.proc.poll() is None, "the survivor survived"
    finally:
        w1.stop(), w2.stop()
    # Recovery here: until the survivor owned every partition (the Tansu campaign's measure).
    row = count("kill -9 one of two workers while a broker is down", load, scores, recovery)
    assert row["lost"] == 0


def test_a_model_announced_while_a_broker_is_down_reaches_every_replica(cluster, setup, tmp_path) -> None:
    store, info, env = setup
    v2 = quick_bundle(store, seed=2, set_current=False)
    w1, w2 = Worker(env, tmp_path).start(), Worker(env, tmp_path).start()
    try:
        w1.wait_ready(90), w2.wait_ready(90)
        with Load(cluster.bootstrap, env["TOPIC_FEATURES"]) as load:
            time.sleep(3)
            down = cluster.node(leader_of(cluster.bootstrap, env["TOPIC_CONTROL"], 0))  # the control leader
            down.kill9()
            time.sleep(1)
            announced_at = time.monotonic()  # the producer waits for the new leader (acks=all)
            produce(cluster.bootstrap, env["TOPIC_CONTROL"], [(b"default", build_activate(
                model="default", version=v2.version, uri=v2.uri, manifest_sha256=v2.manifest_sha256,
                issued_by="test"))])
            wait_versions([w1, w2], v2.version, timeout=60)
            took = time.monotonic() - announced_at
            time.sleep(2)
            down.start()
            cluster.wait_ready(120)
            time.sleep(2)
        scores = collect(cluster.bootstrap, env["TOPIC_SCORES"], load.acked)
        # A replica started after the broker came back reads the same announcement.
        w3 = Worker(env, tmp_path).start()
        try:
            w3.wait_ready(90, need_partitions=False)
            wait_versions([w3], v2.version, timeout=30)
        finally:
            w3.stop()
    finally:
        w1.stop(), w2.stop()
    versions = {dict(m.headers())["model-version"].decode() for m in scores}
    assert versions <= {info.version, v2.version}
    # Recovery here: from sending the announcement (1 s after the kill) until both running
    # replicas serve it.
    row = count("a model announced while the control partition's leader is down", load, scores, took)
    assert row["lost"] == 0


def test_restart_the_whole_cluster_with_its_data(cluster, setup, tmp_path) -> None:
    """Runs last: every node stopped, then started on its data directory; nothing acknowledged
    before, during or after is lost (the scores read afterwards come from the disk). Recovery:
    from the moment every node was down (2 s down, then started) until the first record sent
    after it was scored."""
    _store, _info, env = setup

    def fault() -> tuple[float, int | None]:
        time.sleep(1)
        cluster.stop(grace=30)  # every node at once, each a clean shutdown
        fault_at = time.time()  # from here no broker runs: the load buffers in its producer
        time.sleep(2)
        for n in cluster.nodes:
            n.start()
        return fault_at, None

    one_worker_fault(cluster, env, tmp_path, "stop the whole cluster, start it on its data", fault,
                     settle_s=4.0, collect_s=180.0)
