"""The product driven with the ``kcat`` command-line client, as an operator would, on Apache Kafka.

Debian's kcat (librdkafka 2.0) cannot talk to the embedded Tansu: its ApiVersions request fails
("Read underflow"), so this runs on Apache Kafka only (``JA4_TEST_BROKER=kafka``, the default
where java and mvn are installed) or an external broker.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import orjson
import pytest

from ja4_core.bundle import ModelStore
from ja4_dev.simulator import TrafficSimulator
from tests.helpers import Worker, quick_bundle, record_key, topic_env

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


@pytest.fixture
def kcat_bootstrap(broker_kind: str, kafka_bootstrap: str) -> str:
    if KCAT is None:
        pytest.skip("no kcat binary on PATH (apt-get install kcat; .ci/run installs it)")
    if broker_kind == "tansu":
        pytest.skip("kcat (librdkafka 2.0) cannot talk to the embedded Tansu: its ApiVersions request fails; "
                    "run with JA4_TEST_BROKER=kafka")
    return kafka_bootstrap


def kcat(*args: str, stdin: bytes | None = None, timeout: float = 60.0) -> bytes:
    out = subprocess.run([KCAT, *args], input=stdin, capture_output=True, timeout=timeout)
    assert out.returncode == 0, f"kcat {' '.join(args)} failed ({out.returncode}): {out.stderr.decode()[-2000:]}"
    return out.stdout


def consume_json(bootstrap: str, topic: str, count: int) -> list[dict]:
    """``count`` messages of ``topic`` from the beginning, as kcat's JSON envelopes (-J)."""
    raw = kcat("-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-c", str(count), "-J", "-q")
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def group_type(bootstrap: str, group_id: str, timeout: float = 20.0) -> str:
    """The group's protocol as the broker lists it: ``CLASSIC`` or ``CONSUMER`` (KIP-848)."""
    import time

    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    groups: dict[str, str] = {}
    while group_id not in groups and time.monotonic() < deadline:
        # a new admin client may list before it knows the brokers: ask again
        groups = {g.group_id: g.type.name for g in admin.list_consumer_groups(request_timeout=10).result(15).valid}
        time.sleep(0.2)
    assert group_id in groups, groups
    return groups[group_id]


def headers(envelope: dict) -> dict[str, str]:
    """kcat -J gives headers as a flat list: [name, value, name, value, ...]."""
    flat = envelope.get("headers") or []
    return dict(zip(flat[0::2], flat[1::2]))


def test_kcat_produces_features_and_reads_scores_and_dlq(kcat_bootstrap, unique, tmp_path) -> None:
    """Keyed JSON lines and an envelope in with ``kcat -P``; scores out with their
    ``model-version`` header and DLQ entries with their ``error`` header via ``kcat -C``."""
    bootstrap = kcat_bootstrap
    store = ModelStore(tmp_path / "models")
    info = quick_bundle(store)
    env = topic_env(bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20")
    records = TrafficSimulator(seed=11, bot_share=0.2).records(40)
    envelope = [dict(r, src_ip=f"10.20.{i}.1") for i, r in enumerate(records[:5])]
    lines = [f"{r['src_ip']}\t".encode() + orjson.dumps(r) for r in records]
    lines.append(b"envelope\t" + orjson.dumps(envelope))
    bad = {b"bad-json": b"{not json", b"bad-scalar": b"42"}
    lines += [k + b"\t" + v for k, v in bad.items()]

    worker = Worker(env, tmp_path).start()
    try:
        worker.wait_ready()
        kcat("-P", "-b", bootstrap, "-t", env["TOPIC_FEATURES"], "-K", "\t", stdin=b"\n".join(lines) + b"\n")
        scores = consume_json(bootstrap, env["TOPIC_SCORES"], len(records) + len(envelope))
        dlq = consume_json(bootstrap, env["TOPIC_DLQ"], len(bad))
        protocol = group_type(bootstrap, env["SCORER_APP_ID"])
    finally:
        worker.stop()

    docs = [json.loads(m["payload"]) for m in scores]
    assert {record_key(d) for d in docs} == {record_key(r) for r in records + envelope}
    for msg, doc in zip(scores, docs):
        assert headers(msg)["model-version"] == info.version == doc["model_version"]
        assert msg["key"] == ("envelope" if doc["src_ip"].startswith("10.20.") else doc["src_ip"])
    by_key = {m["key"]: m for m in dlq}
    assert set(by_key) == {k.decode() for k in bad}
    for key, value in bad.items():
        entry = by_key[key.decode()]
        assert entry["payload"] == value.decode(), "the DLQ keeps the bytes kcat sent"
        h = headers(entry)
        assert h["error"] and h["source-topic"] == env["TOPIC_FEATURES"]
    assert "not valid JSON" in headers(by_key["bad-json"])["error"]
    # Kafka 4 also offers the KIP-848 `consumer` protocol; Faust (aiokafka) joins with the
    # classic one and its own partition assignor (docs/operations.md, "Kafka 4").
    assert protocol == "CLASSIC"
