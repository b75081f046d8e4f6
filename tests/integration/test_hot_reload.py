"""Hot reload across replicas on a real broker: switch, refuse, rollback, late joiner, memory."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import orjson
import pytest

from ja4_core.bundle import ModelStore
from ja4_core.control import build_activate
from ja4_dev.simulator import TrafficSimulator
from tests.helpers import Collector, Worker, headers_of, produce, producer, quick_bundle, record_key, topic_env

KEY = "test-signing-key"


def announce(bootstrap: str, topic: str, info, *, key: str | None = KEY, rollback: bool = False) -> None:
    produce(bootstrap, topic, [(info.model.encode(), build_activate(
        model=info.model, version=info.version, uri=info.uri, manifest_sha256=info.manifest_sha256,
        issued_by="test", signing_key=key, rollback=rollback))])


class SteadyStream:
    """Produces simulated records at a steady rate in a thread; remembers every key sent."""

    def __init__(self, bootstrap: str, topic: str, rate: float = 300.0) -> None:
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.sent: set[tuple] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        sim = TrafficSimulator(seed=5)
        p = producer(self.bootstrap)
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            for rec in sim.records(30):
                p.produce(self.topic, orjson.dumps(rec), rec["src_ip"].encode())
                self.sent.add(record_key(rec))
                n += 1
            p.poll(0)
            ahead = n / self.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        assert p.flush(30) == 0

    def __enter__(self) -> "SteadyStream":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def wait_versions(workers: list[Worker], version: str, timeout: float = 30.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if all((w.model().get("active") or {}).get("model_version") == version for w in workers):
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not all replicas on {version}: {[w.model() for w in workers]}")


def test_two_replicas_switch_refuse_and_rollback(kafka_bootstrap, unique, tmp_path) -> None:
    store = ModelStore(tmp_path / "models")
    v1 = quick_bundle(store, seed=1)
    v2 = quick_bundle(store, seed=2, set_current=False)
    v3 = quick_bundle(store, seed=3, set_current=False)
    v4 = quick_bundle(store, seed=4, set_current=False)
    env = topic_env(kafka_bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20", CONTROL_SIGNING_KEY=KEY)
    workers = [Worker(env, tmp_path).start(), Worker(env, tmp_path).start()]
    try:
        for w in workers:
            w.wait_ready()
        announce(kafka_bootstrap, env["TOPIC_CONTROL"], v1)
        wait_versions(workers, v1.version)
        with SteadyStream(kafka_bootstrap, env["TOPIC_FEATURES"]) as stream:
            time.sleep(3)
            t_announce_v2 = time.time()
            announce(kafka_bootstrap, env["TOPIC_CONTROL"], v2)
            wait_versions(workers, v2.version)
            t_all_v2 = time.time()
            time.sleep(2)
            # A tampered bundle (one byte changed) and an unsigned message: both refused.
            ae = v3.path / "ae.pt"
            data = bytearray(ae.read_bytes())
            data[len(data) // 2] ^= 0x01
            ae.write_bytes(bytes(data))
            announce(kafka_bootstrap, env["TOPIC_CONTROL"], v3)
            announce(kafka_bootstrap, env["TOPIC_CONTROL"], v4, key=None)
            time.sleep(3)
            for w in workers:
                info = w.model()
                assert info["active"]["model_version"] == v2.version
                assert info["outcomes"].get("refused:bundle", 0) >= 1, info
                assert info["outcomes"].get("refused:signature", 0) >= 1, info
            # An operator's rollback to v1 (older version, explicit).
            t_announce_rollback = time.time()
            announce(kafka_bootstrap, env["TOPIC_CONTROL"], v1, rollback=True)
            wait_versions(workers, v1.version)
            t_all_rollback = time.time()
            time.sleep(2)
        sent = stream.sent
        scores = Collector(kafka_bootstrap, env["TOPIC_SCORES"]).poll_until(
            lambda msgs: {record_key(orjson.loads(m.value())) for m in msgs} >= sent, timeout=60)
    finally:
        for w in workers:
            w.stop()
    scored = {record_key(orjson.loads(m.value())) for m in scores}
    assert scored >= sent, f"lost {len(sent - scored)} records"
    # Before the announcement every score is v1; once every replica switched, every score is
    # v2 until the rollback; after the rollback is everywhere, v1 again. (Scores of the short
    # moments while replicas switch may carry either; the 0.5 s margin covers a batch in flight.)
    from datetime import datetime

    seen = defaultdict(int)
    for m in scores:
        doc = orjson.loads(m.value())
        version = headers_of(m)["model-version"]
        assert version == doc["model_version"] in (v1.version, v2.version), "refused versions never score"
        at = datetime.fromisoformat(doc["scored_at"]).timestamp()
        if at < t_announce_v2:
            assert version == v1.version
            seen["v1-before"] += 1
        elif t_all_v2 + 0.5 < at < t_announce_rollback:
            assert version == v2.version
            seen["v2"] += 1
        elif at > t_all_rollback + 0.5:
            assert version == v1.version
            seen["v1-after"] += 1
    assert min(seen["v1-before"], seen["v2"], seen["v1-after"]) > 0, dict(seen)


def test_late_replica_activates_latest(kafka_bootstrap, unique, tmp_path) -> None:
    """A replica started after three versions were announced activates the third."""
    store = ModelStore(tmp_path / "models")
    infos = [quick_bundle(store, seed=s, set_current=(s == 1)) for s in (1, 2, 3)]
    env = topic_env(kafka_bootstrap, unique, store.root)
    for info in infos:
        announce(kafka_bootstrap, env["TOPIC_CONTROL"], info, key=None)
        time.sleep(0.01)
    worker = Worker(env, tmp_path).start()
    try:
        worker.wait_ready(need_partitions=False)
        active = worker.model()["active"]
    finally:
        worker.stop()
    assert active["model_version"] == infos[-1].version
    assert active["source"] == "control"


def _rss(worker: Worker) -> float:
    import urllib.request

    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("ja4_process_rss_bytes "):
                return float(line.split()[1])
    raise AssertionError("no RSS metric")


def test_fifty_reloads_keep_memory_flat(kafka_bootstrap, unique, tmp_path) -> None:
    """Old bundles are released: RSS after 50 reloads stays near RSS after the first few."""
    store = ModelStore(tmp_path / "models")
    bundles = [quick_bundle(store, seed=s, set_current=(s == 1), n=3000, ntrees=100) for s in (1, 2, 3)]
    env = topic_env(kafka_bootstrap, unique, store.root)
    worker = Worker(env, tmp_path).start()
    try:
        worker.wait_ready(need_partitions=False)
        for i in range(50):
            info = bundles[(i + 1) % 3]
            announce(kafka_bootstrap, env["TOPIC_CONTROL"], info, key=None, rollback=True)
            wait_versions([worker], info.version)
            if i == 5:
                rss_early = _rss(worker)
        rss_end = _rss(worker)
        outcomes = worker.model()["outcomes"]
    finally:
        worker.stop()
    assert outcomes.get("activated", 0) >= 50
    print(f"RSS after 6 reloads {rss_early / 2**20:.0f} MiB, after 50 {rss_end / 2**20:.0f} MiB")
    assert rss_end - rss_early < 100 * 2**20, (rss_early, rss_end)
