"""Test helpers: worker processes, a producer and a collector on the real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import orjson

from ja4_core.bundle import BundleInfo, ModelStore, write_bundle
from ja4_core.features import DEFAULT_FEATURES
from ja4_dev.processes import ProcessError, ProductProcess, get_json, python_module
from ja4_dev.tansu import free_port  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parent.parent
#: The brokers a test session can run on (``JA4_TEST_BROKER``; see tests/conftest.py).
BROKER_KINDS = ("kafka", "kafka3", "tansu")


def session_broker_kind() -> str:
    """``external``, or the broker that ``JA4_TEST_BROKER`` (or what is installed) picks."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return "external"
    kind = os.environ.get("JA4_TEST_BROKER", "").strip().lower()
    if kind:
        if kind not in BROKER_KINDS:
            import pytest

            raise pytest.UsageError(f"JA4_TEST_BROKER: must be one of {', '.join(BROKER_KINDS)}, got {kind!r}")
        return kind
    from ja4_dev.apache_kafka import available

    return "kafka" if available() else "tansu"


FAST_GROUP_ENV = {"KAFKA_SESSION_TIMEOUT_S": "6", "KAFKA_HEARTBEAT_S": "1", "KAFKA_REBALANCE_TIMEOUT_S": "6"}


def topic_env(bootstrap: str, suffix: str, store: Path, **extra: str) -> dict[str, str]:
    """Environment for a worker whose topics and group are private to one test."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SCORER_APP_ID": f"scorer-{suffix}",
        "TOPIC_FEATURES": f"features-{suffix}",
        "TOPIC_SCORES": f"scores-{suffix}",
        "TOPIC_DLQ": f"dlq-{suffix}",
        "TOPIC_SHADOW_SCORES": f"shadow-{suffix}",
        "TOPIC_CONTROL": f"control-{suffix}",
        "TOPIC_PARTITIONS": "4",
        "MODEL_STORE": str(store),
        **FAST_GROUP_ENV,
    }
    env.update(extra)
    return env


def quick_bundle(store: ModelStore, *, seed: int = 1, n: int = 4000, ntrees: int = 60, epochs: int = 3,
                 model: str = "default", set_current: bool = True) -> BundleInfo:
    """A small but real bundle trained on simulated human traffic."""
    from ja4_dev.simulator import TrafficSimulator
    from trainer.fit import FitConfig, fit_ensemble

    recs = TrafficSimulator(seed=seed, bot_share=0.0).records(n)
    X = np.array([[r[f] for f in DEFAULT_FEATURES] for r in recs], dtype=np.float64)
    fit = fit_ensemble(X, DEFAULT_FEATURES, FitConfig(eif_ntrees=ntrees, ae_epochs=epochs, seed=seed, nthreads=1))
    info = write_bundle(store, fit.ensemble, model=model, smoke_rows=X[:5])
    if set_current:
        store.set_current(model, info.version)
    return info


@dataclass
class Worker:
    """A ``stream-scorer worker`` subprocess (started and stopped by :mod:`ja4_dev.processes`)."""

    env: dict[str, str]
    cwd: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    process: ProductProcess | None = None

    def start(self) -> "Worker":
        self.log_path = self.cwd / f"worker-{self.port}.log"
        self.process = ProductProcess(f"worker {self.port}", python_module("stream_scorer.cli", "worker"),
                                      {**self.env, "SCORER_WEB_PORT": str(self.port)}, self.log_path,
                                      cwd=self.cwd).start()
        self.proc = self.process.proc
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        return get_json(self.url + path)

    def wait_ready(self, timeout: float = 60.0, need_partitions: bool = True) -> dict[str, Any]:
        assert self.process is not None, "worker not started"
        try:
            return self.process.wait_http(self.url + "/ready", lambda status, body: status == 200 or (
                not need_partitions and bool(body.get("model_active"))), timeout)
        except ProcessError as exc:
            raise AssertionError(str(exc)) from None

    def model(self) -> dict[str, Any]:
        return self.get("/model")[1]

    def log(self) -> str:
        return self.process.log() if self.process is not None else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        return self.process.stop(grace=timeout, sig=sig) if self.process is not None else None


def producer(bootstrap: str) -> Any:
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> int:
    p = producer(bootstrap)
    n = 0
    for key, value in messages:
        p.produce(topic, value, key)
        n += 1
        if n % 1000 == 0:
            p.poll(0)
    assert p.flush(30) == 0, "undelivered messages"
    return n


def records_to_messages(records: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    return [(str(r["src_ip"]).encode(), orjson.dumps(r)) for r in records]


def record_key(rec: dict[str, Any]) -> tuple[str, str, str, str]:
    return (str(rec["window_start"]), rec["src_ip"], rec["ja4"], rec["host"])


class Collector:
    """Reads a topic from the beginning with confluent-kafka (no group commits)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        from confluent_kafka import TopicPartition

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"collector-{topic}-{os.getpid()}-{time.time()}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                  "topic.metadata.refresh.interval.ms": 1000})
        # Assigned from the beginning rather than subscribed: no group join to wait for.
        deadline = time.monotonic() + 30
        parts: list[int] = []
        while time.monotonic() < deadline and not parts:
            meta = self.consumer.list_topics(topic, timeout=10).topics.get(topic)
            parts = sorted(meta.partitions) if meta is not None and meta.error is None else []
            if not parts:
                time.sleep(0.3)
        self.consumer.assign([TopicPartition(topic, p, -2) for p in parts])
        self.messages: list[Any] = []

    def poll_until(self, predicate, timeout: float = 60.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate(self.messages):
            for msg in self.consumer.consume(1000, 0.5):
                if msg.error() is None:
                    self.messages.append(msg)
        return self.messages

    def until_count(self, n: int, timeout: float = 60.0) -> list[Any]:
        return self.poll_until(lambda m: len(m) >= n, timeout)

    def drain(self, quiet_s: float = 2.0, timeout: float = 30.0) -> list[Any]:
        """Read until nothing arrives for ``quiet_s`` seconds."""
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet_s:
            got = self.consumer.consume(1000, 0.3)
            for msg in got:
                if msg.error() is None:
                    self.messages.append(msg)
                    last = time.monotonic()
        return self.messages

    def close(self) -> None:
        self.consumer.close()


def headers_of(msg: Any) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in (msg.headers() or [])}
