"""The Faust App arguments the scorer and the sink share, and the process start-up they need.

:func:`app_settings` only computes arguments; :func:`prepare_process` does the work a Faust
worker process needs before it starts (the data directory, the fetch-wait patch below). It is
called when a worker starts (``stream-scorer worker``/``sink``, or Faust's ``on_worker_init``
for ``faust -A stream_scorer.app worker``), never on import or when an app is merely built.

Faust transport tuning that Faust does not expose as settings:

Faust creates its aiokafka consumer with a hard-coded ``fetch_max_wait_ms=1500``. A broker
may hold a fetch that long when a partition has little data (Tansu does, even with data
waiting), which puts a floor of about 1.5 s under end-to-end latency however small
``SCORER_BATCH_WAIT_MS`` is. We lower it to half the batch wait: a record then waits at most
half a batch wait at the broker and one batch wait in the batch. (Apache Kafka answers a
fetch as soon as data arrives, so there this only bounds how long an idle fetch is held.)

The price is idle fetches: with a 10 ms wait an idle worker sends ~100 fetches a second, which
cost the embedded broker ~0.1 core and the worker ~0.1 core (measured). On Apache Kafka, where
the wait adds no latency, ``KAFKA_FETCH_MAX_WAIT_MS=500`` (Kafka's default) removes that load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_patched: dict[str, int] = {}


def limit_fetch_wait(max_wait_ms: int) -> None:
    """Make every Faust worker consumer in this process use ``fetch_max_wait_ms <= max_wait_ms``."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    _patched["ms"] = max(1, int(max_wait_ms))
    if getattr(AIOKafkaConsumerThread, "_ja4_fetch_patched", False):
        return
    original = AIOKafkaConsumerThread._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        # aiokafka reads this attribute when it builds its Fetcher in start().
        consumer._fetch_max_wait_ms = min(consumer._fetch_max_wait_ms, _patched["ms"])
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    AIOKafkaConsumerThread._ja4_fetch_patched = True  # type: ignore[attr-defined]


def fetch_wait_ms(settings: Any, batch_wait_ms: int) -> int:
    """The longest fetch wait a worker's consumer may use: ``KAFKA_FETCH_MAX_WAIT_MS``, else
    half the batch wait."""
    return int(settings.kafka_fetch_max_wait_ms or max(1, batch_wait_ms // 2))


def datadir(app_id: str) -> Path:
    """Faust's data directory of an app (relative to the working directory)."""
    return Path("var") / "faust" / app_id


def prepare_process(settings: Any, app_id: str, *, batch_wait_ms: int) -> None:
    """Start-up work of a Faust worker process: create the data directory's parents (Faust
    creates the last level only) and limit the consumer's fetch wait (see above)."""
    datadir(app_id).mkdir(parents=True, exist_ok=True)
    limit_fetch_wait(fetch_wait_ms(settings, batch_wait_ms))


def app_settings(settings: Any, app_id: str, *, web_port: int, batch_max: int) -> dict[str, Any]:
    """Faust App keyword arguments shared by the scorer and the sink: broker and security,
    group timing, at-least-once commits, in-memory state, the web server and a data directory
    (Faust wants one even with the memory store; nothing durable goes there). Pure: nothing
    is created or patched here (see :func:`prepare_process`)."""
    from ja4_core.kafka_security import faust_credentials

    return dict(
        broker=[f"kafka://{s}" for s in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(settings),
        store="memory://",
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_s,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        # Commit often: on a crash at most this much is processed again (never lost).
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4096, 2 * batch_max),
        web_port=web_port,
        web_bind=settings.scorer_web_host,
        web_host=settings.scorer_web_host,
        datadir=str(datadir(app_id)),
    )
