"""Shared harness pieces: broker, worker subprocesses with CPU/RSS probes, producing, collecting.

Processes are started, probed and stopped by :mod:`ja4_dev.processes`, as in the demo and the
tests; the rest is the benchmark's own (not imported from ``tests/``: the benchmark must not
break when the tests change).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson
import psutil

from ja4_dev.processes import ProductProcess, get_json
from ja4_dev.tansu import free_port  # noqa: F401  (re-exported for bench modules)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
FAST_GROUP_ENV = {"KAFKA_SESSION_TIMEOUT_S": "6", "KAFKA_HEARTBEAT_S": "1", "KAFKA_REBALANCE_TIMEOUT_S": "6"}
PARTITIONS = 4


#: The pids of the broker the bench started (Tansu's process, or each Apache Kafka JVM): their
#: CPU is reported next to ours. Empty for an external broker.
BROKER_PIDS: list[int] = []


class CpuWindow:
    """Where the box's CPU went over a measurement: all cores busy (``box_cores``, from
    ``/proc/stat``: user+system+irq), the broker, the processes under test and this process
    (load generator + score counter). On a shared box this says whether a rate is bounded by the
    process measured or by the cores left to it."""

    def __init__(self, procs: Iterable["Proc"] = ()) -> None:
        self.procs = list(procs)
        self._t0 = time.perf_counter()
        self._box0 = self._box()
        self._broker0 = self._broker()
        self._procs0 = sum(p.cpu_seconds() for p in self.procs)
        self._self0 = self._self()

    @staticmethod
    def _box() -> float:
        t = psutil.cpu_times()
        return t.user + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "nice", 0.0)

    @staticmethod
    def _broker() -> float:
        total = 0.0
        for pid in BROKER_PIDS:
            try:
                t = psutil.Process(pid).cpu_times()  # a JVM's threads are all in its process
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    @staticmethod
    def _self() -> float:
        t = psutil.Process().cpu_times()
        return t.user + t.system

    def cores(self) -> dict[str, float]:
        """Average cores busy since construction, per party (``box`` is everything)."""
        el = max(time.perf_counter() - self._t0, 1e-9)
        return {"box": round((self._box() - self._box0) / el, 2),
                "broker": round((self._broker() - self._broker0) / el, 2) if BROKER_PIDS else None,
                "measured": round((sum(p.cpu_seconds() for p in self.procs) - self._procs0) / el, 2),
                "bench": round((self._self() - self._self0) / el, 2),
                "of": psutil.cpu_count()}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def topic_env(bootstrap: str, suffix: str, store: Path, **extra: str) -> dict[str, str]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SCORER_APP_ID": f"bench-scorer-{suffix}",
        "TOPIC_FEATURES": f"bench-features-{suffix}",
        "TOPIC_SCORES": f"bench-scores-{suffix}",
        "TOPIC_DLQ": f"bench-dlq-{suffix}",
        "TOPIC_CONTROL": f"bench-control-{suffix}",
        "TOPIC_PARTITIONS": str(PARTITIONS),
        "MODEL_STORE": str(store),
        "LOG_LEVEL": "WARNING",
        **FAST_GROUP_ENV,
    }
    env.update(extra)
    return env


#: ``max.message.bytes`` of the bench's topics: an envelope of 1,000 simulated records is ~1.4 MB,
#: above Apache Kafka's default cap of ~1 MB (Tansu has none); the producer allows 16 MB too.
TOPIC_MAX_MESSAGE_BYTES = str(16 * 1024 * 1024)


def create_topics(bootstrap: str, topics: Iterable[str], partitions: int = PARTITIONS,
                  config: dict[str, str] | None = None) -> None:
    """Create the bench's topics through the product's one topic helper (``ja4_core.kafka_admin``),
    with the broker's default replication factor and room for 1,000-record envelopes."""
    from ja4_core.kafka_admin import TopicSpec, ensure_topics
    from ja4_core.settings import load_settings

    settings = load_settings({"KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    conf = {"max.message.bytes": TOPIC_MAX_MESSAGE_BYTES, **(config or {})}
    ensure_topics(settings, [TopicSpec(t, partitions, -1, conf) for t in topics])


@dataclass
class Proc:
    """A Python subprocess (scorer worker or the Faust counter) with probes."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    name: str = "worker"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    process: ProductProcess | None = None

    def start(self) -> "Proc":
        self.log_path = self.cwd / f"{self.name}-{self.port}.log"
        self.process = ProductProcess(self.name, self.argv, {**self.env, "SCORER_WEB_PORT": str(self.port),
                                                             "PYTHONUNBUFFERED": "1"}, self.log_path, cwd=self.cwd).start()
        self.proc = self.process.proc
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
        return get_json(self.url + path, timeout)

    def stage_totals(self) -> dict[str, tuple[float, float]]:
        """(sum, count) of the worker's ``ja4_stage_seconds`` per stage and of ``ja4_batch_records``
        (key ``records``), read from ``/metrics``: differences of two readings give the mean time
        a batch spent in each stage over a measurement."""
        import re

        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out: dict[str, list[float]] = {}
        for line in text.splitlines():
            m = re.match(r'^(ja4_stage_seconds|ja4_batch_records)_(sum|count)(?:\{stage="(\w+)"\})? (\S+)$', line)
            if m:
                key = m.group(3) or "records"
                out.setdefault(key, [0.0, 0.0])[0 if m.group(2) == "sum" else 1] = float(m.group(4))
        return {k: (v[0], v[1]) for k, v in out.items()}

    def wait_http(self, path: str, ok: Callable[[int, dict], bool], timeout: float = 90.0) -> dict:
        """Poll ``path`` until ``ok``; :class:`~ja4_dev.processes.ProcessError` (a RuntimeError)
        if the process exits or the time is up."""
        assert self.process is not None, f"{self.name} not started"
        return self.process.wait_http(self.url + path, ok, timeout, interval=0.2)

    def log(self) -> str:
        return self.process.log() if self.process is not None else ""

    # -- probes -------------------------------------------------------------------------
    def _ps(self) -> psutil.Process | None:
        try:
            return psutil.Process(self.proc.pid) if self.proc else None
        except psutil.Error:
            return None

    def cpu_seconds(self) -> float:
        p = self._ps()
        if p is None:
            return 0.0
        try:
            t = p.cpu_times()
            total = t.user + t.system
            for c in p.children(recursive=True):
                try:
                    ct = c.cpu_times()
                    total += ct.user + ct.system
                except psutil.Error:
                    pass
            return total
        except psutil.Error:
            return 0.0

    def rss(self) -> int:
        p = self._ps()
        try:
            return p.memory_info().rss if p else 0
        except psutil.Error:
            return 0

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None:
            self.process.stop(grace=timeout)


def scorer_worker(env: dict[str, str], cwd: Path) -> Proc:
    return Proc([sys.executable, "-m", "stream_scorer.cli", "worker"], env, cwd, name="scorer")


def wait_partitions(workers: list[Proc], topic_partitions: int = PARTITIONS, timeout: float = 90.0,
                    poll_s: float = 0.3) -> None:
    """Every worker ready and the partitions split without overlap."""
    for w in workers:
        w.wait_http("/ready", lambda s, b: s == 200, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = [w.get("/model")[1].get("partitions") or [] for w in workers]
        flat = [p for ps in parts for p in ps]
        if all(parts) and len(flat) == len(set(flat)) == topic_partitions:
            return
        time.sleep(poll_s)
    raise RuntimeError(f"partitions not split between workers: {parts}")


def producer(bootstrap: str, **conf: Any):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "queue.buffering.max.messages": 2_000_000,
                     "batch.num.messages": 10000, "message.max.bytes": 16 * 1024 * 1024, **conf})


def produce_all(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> float:
    """Produce every message, flush; return the wall time. Raises if the broker refused any
    (a refused message would otherwise leave the bench waiting for scores that never come)."""
    p = producer(bootstrap)
    refused: list[Any] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            refused.append(err)

    t0 = time.perf_counter()
    for i, (key, value) in enumerate(messages):
        while True:
            try:
                p.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.01)
        if i % 2000 == 0:
            p.poll(0)
    if p.flush(60) != 0:
        raise RuntimeError("undelivered messages")
    if refused:
        raise RuntimeError(f"the broker refused {len(refused)} of {len(messages)} messages to {topic}: {refused[0]}")
    return time.perf_counter() - t0


#: The score counter's fetch wait. A broker that holds a fetch until this expires (Tansu does)
#: adds up to this much to a measured latency; lower costs the shared cores more idle fetches.
COUNTER_FETCH_WAIT_MS = 5


class Counter:
    """Counts messages of a topic from the beginning (confluent-kafka, no commits) in a thread;
    records arrival times, keys and headers when asked, and each message's producer timestamp
    (``created``: when the worker produced it, ms resolution) by key."""

    def __init__(self, bootstrap: str, topic: str, keep: bool = False) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        self.keep = keep
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-count-{topic}-{time.time()}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": COUNTER_FETCH_WAIT_MS, "fetch.min.bytes": 1})
        # Assigned from the beginning, not subscribed: a group join would add ~20 s to the
        # first measurement.
        from confluent_kafka import TopicPartition

        parts: list[int] = []
        deadline = time.monotonic() + 30
        while not parts and time.monotonic() < deadline:
            meta = self.consumer.list_topics(topic, timeout=10).topics.get(topic)
            parts = sorted(meta.partitions) if meta is not None and meta.error is None else []
            if not parts:
                time.sleep(0.2)
        self.consumer.assign([TopicPartition(topic, p, -2) for p in parts])
        self.count = 0
        self.arrivals: list[tuple[float, bytes | None, str | None]] = []  # (time, key, model-version)
        self.created: dict[bytes | None, float] = {}
        self.first_t: float | None = None
        self.last_t: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            # What is already fetched, else wait for the next message only: ``consume(n, t)``
            # would wait for n messages or t, adding up to t to every arrival time.
            msgs = self.consumer.consume(5000, 0)
            if not msgs:
                first = self.consumer.poll(0.05)
                msgs = [first] if first is not None else []
            now = time.time()
            for m in msgs:
                if m.error() is not None:
                    continue
                self.count += 1
                if self.first_t is None:
                    self.first_t = now
                self.last_t = now
                if self.keep:
                    ver = None
                    for k, v in m.headers() or []:
                        if k == "model-version":
                            ver = (v or b"").decode()
                    self.arrivals.append((now, m.key(), ver))
                    self.created[m.key()] = m.timestamp()[1] / 1000.0

    def wait_count(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count >= n:
                return True
            time.sleep(0.005)
        return self.count >= n

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self.consumer.close()
        except Exception:  # noqa: BLE001
            pass


def keys_in_topic(bootstrap: str, topic: str, prefix: bytes, timeout_s: float = 60.0) -> set[bytes]:
    """The keys starting with ``prefix`` that ``topic`` holds, read once more from its start up
    to the end offsets it has now, by a fresh consumer. Tells a record the workers never
    produced from one a live reader missed (on the embedded Tansu the reload section's live
    reader missed 44 of the 284,990 records the topic held)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-reread-{topic}-{time.time()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        done = {p for p, end in ends.items() if end <= 0}
        keys: set[bytes] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends) and time.monotonic() < deadline:
            for m in consumer.consume(5000, 0.5):
                if m.error() is not None:
                    continue
                key = m.key()
                if key and key.startswith(prefix):
                    keys.add(key)
                if m.offset() >= ends[m.partition()] - 1:
                    done.add(m.partition())
        return keys
    finally:
        consumer.close()


def records_messages(records: list[dict[str, Any]], per_message: int, key_prefix: str = "") -> list[tuple[bytes, bytes]]:
    """Messages holding ``per_message`` records each (1 = one JSON object per message)."""
    out = []
    if per_message == 1:
        for i, r in enumerate(records):
            out.append(((key_prefix + str(i)).encode(), orjson.dumps(r)))
    else:
        for i in range(0, len(records), per_message):
            out.append(((key_prefix + str(i)).encode(), orjson.dumps(records[i:i + per_message])))
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return float(np.percentile(np.asarray(values), q))
