"""The Apache Kafka harness on real JVMs: a 3-node cluster survives a kill -9 and restarts,
and no broker outlives the process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ja4_dev import apache_kafka as ak
from tests.helpers import REPO

pytestmark = pytest.mark.skipif(not ak.available(), reason=f"Apache Kafka needs {ak.missing_tools()} on PATH")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): read its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": 30000})
    for v in values:
        p.produce(topic, v)
    assert p.flush(40) == 0, "undelivered"


def _read_all(bootstrap: str, topic: str, n: int, timeout: float = 40.0) -> list[bytes]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{time.time()}", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, -2)])
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            for m in c.consume(500, 0.5):
                if m.error() is None:
                    got.append(m.value())
        return got
    finally:
        c.close()


def test_three_nodes_kill9_node_restart_and_cluster_restart(tmp_path: Path) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    cluster = ak.KafkaCluster(3, workdir=tmp_path / "kafka", min_insync_replicas=2)
    try:
        cluster.start()
        print(f"3 nodes ready in {cluster.ready_seconds[0]:.1f}s")
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        admin.create_topics([NewTopic("t", 1, 3)])["t"].result(30)
        _produce(cluster.bootstrap, "t", [b"a%d" % i for i in range(50)])

        victim = cluster.node(2)
        pid = victim.pid
        victim.kill9()
        assert not victim.running and pid is not None and not _alive(pid)
        _produce(cluster.bootstrap, "t", [b"b%d" % i for i in range(50)])  # 2 of 3 in sync: still writable

        victim.start()
        cluster.wait_ready(nodes=cluster.nodes)
        assert {n.port for n in cluster.running_nodes()} == {n.port for n in cluster.nodes}

        pids = [n.pid for n in cluster.nodes]
        cluster.restart()
        assert len(cluster.ready_seconds) == 2 and all(not _alive(p) for p in pids if p)
        assert sorted(_read_all(cluster.bootstrap, "t", 100)) == sorted([b"a%d" % i for i in range(50)] +
                                                                         [b"b%d" % i for i in range(50)])
        pids = [n.pid for n in cluster.nodes]
    finally:
        cluster.stop()
    assert all(not n.running for n in cluster.nodes)
    assert not any(_alive(p) for p in pids if p), "a broker outlived stop()"


def test_no_broker_outlives_a_killed_parent(tmp_path: Path) -> None:
    """kill -9 of the Python process that started a node takes the node with it."""
    code = ("import sys, time\n"
            "from ja4_dev.apache_kafka import KafkaCluster\n"
            f"c = KafkaCluster(1, workdir={str(tmp_path / 'k')!r}).start()\n"
            "print(c.nodes[0].pid, flush=True)\n"
            "time.sleep(300)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        line = parent.stdout.readline() if parent.stdout else ""
        assert line.strip().isdigit(), f"no pid printed (exit {parent.poll()})"
        jvm = int(line)
        assert _alive(jvm)
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(10)
    deadline = time.monotonic() + 10
    while _alive(jvm) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = _alive(jvm)
    if alive:
        os.kill(jvm, signal.SIGKILL)
    assert not alive, "the broker outlived its parent"
