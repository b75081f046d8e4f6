"""The control path on a real broker and real workers (issue 13, items 1 and 3).

A poison message is refused and the next good one applies; a fresh worker still becomes
ready. One order for every message: a replayed rollback changes nothing, a message dated in
the future is refused, and a restarted replica ends where a running one is.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import orjson

from ja4_core.bundle import ModelStore
from ja4_core.control import build_activate
from ja4_core.settings import load_settings
from ja4_core.control_log import read_control
from tests.helpers import Worker, produce, quick_bundle, topic_env

KEY = "control-order-test-key"


def activate(info, *, rollback: bool = False, issued_at: datetime | None = None) -> bytes:
    return build_activate(model=info.model, version=info.version, uri=info.uri,
                          manifest_sha256=info.manifest_sha256, issued_by="test", signing_key=KEY,
                          rollback=rollback, issued_at=issued_at)


def send(bootstrap: str, topic: str, *values: bytes) -> None:
    produce(bootstrap, topic, [(b"default", v) for v in values])


def wait_for(worker: Worker, version: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    info: dict = {}
    while time.monotonic() < deadline:
        info = worker.model()
        if (info.get("active") or {}).get("model_version") == version:
            return info
        time.sleep(0.2)
    raise AssertionError(f"not on {version}: {info}\n{worker.log()[-3000:]}")


def wait_seen(worker: Worker, n: int, timeout: float = 30.0) -> dict:
    """Until the worker's follower has read ``n`` control messages."""
    deadline = time.monotonic() + timeout
    info: dict = {}
    while time.monotonic() < deadline:
        info = worker.model()
        if info.get("control_messages_seen", 0) >= n:
            return info
        time.sleep(0.2)
    raise AssertionError(f"follower saw fewer than {n} messages: {info}\n{worker.log()[-3000:]}")


def test_poison_message_is_refused_and_the_next_applies(kafka_bootstrap, unique, tmp_path) -> None:
    store = ModelStore(tmp_path / "models")
    v1 = quick_bundle(store, seed=1, n=1500, ntrees=20, epochs=1)
    v2 = quick_bundle(store, seed=2, n=1500, ntrees=20, epochs=1, set_current=False)
    env = topic_env(kafka_bootstrap, unique, store.root, CONTROL_SIGNING_KEY=KEY)
    running = Worker(env, tmp_path).start()
    fresh = Worker(env, tmp_path)
    try:
        running.wait_ready(need_partitions=False)
        assert running.model()["active"]["model_version"] == v1.version  # from CURRENT
        poison = orjson.dumps({**orjson.loads(activate(v2)), "signature": "é" * 64})
        send(kafka_bootstrap, env["TOPIC_CONTROL"], poison, activate(v2))
        info = wait_for(running, v2.version)
        assert info["outcomes"].get("refused:signature") == 1, info
        fresh.start()
        fresh.wait_ready(need_partitions=False)
        info = fresh.model()
        assert info["active"]["model_version"] == v2.version and info["active"]["source"] == "control"
        assert info["outcomes"].get("refused:signature") == 1, info
        # Both status readers read past the poison message to the good one.
        settings = load_settings({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPIC_CONTROL": env["TOPIC_CONTROL"],
                                  "CONTROL_SIGNING_KEY": KEY})
        ledger = read_control(settings)
        assert ledger.latest["default"].message.version == v2.version and ledger.refused == {"signature": 1}
        from trainer.publish import read_control_latest

        entry = read_control_latest(settings)["default"]
        assert entry.message.version == v2.version and entry.refused == {"signature": 1}
    finally:
        running.stop()
        fresh.stop()
    assert "Traceback" not in running.log() + fresh.log()


def test_replay_and_future_dated_messages_change_nothing(kafka_bootstrap, unique, tmp_path) -> None:
    store = ModelStore(tmp_path / "models")
    v1, v2, v3 = (quick_bundle(store, seed=s, n=1500, ntrees=20, epochs=1, set_current=(s == 1)) for s in (1, 2, 3))
    env = topic_env(kafka_bootstrap, unique, store.root, CONTROL_SIGNING_KEY=KEY)
    topic = env["TOPIC_CONTROL"]
    now = datetime.now(timezone.utc)
    running = Worker(env, tmp_path).start()
    restarted = Worker(env, tmp_path)
    try:
        running.wait_ready(need_partitions=False)
        rollback = activate(v1, rollback=True, issued_at=now + timedelta(seconds=2))
        send(kafka_bootstrap, topic, activate(v1, issued_at=now), activate(v2, issued_at=now + timedelta(seconds=1)),
             rollback)  # v1, v2, then an operator's rollback to v1
        wait_for(running, v1.version)
        send(kafka_bootstrap, topic, activate(v2, issued_at=now + timedelta(seconds=3)))
        wait_for(running, v2.version)
        # The rollback, replayed byte for byte: every replica stays on v2.
        send(kafka_bootstrap, topic, rollback)
        info = wait_seen(running, 5)
        assert info["active"]["model_version"] == v2.version, info
        assert info["outcomes"].get("ignored:older") == 1, info
        # Dated a year ahead (signed, valid otherwise): refused, and it pins nothing.
        send(kafka_bootstrap, topic, activate(v3, issued_at=now + timedelta(days=365)))
        info = wait_seen(running, 6)
        assert info["active"]["model_version"] == v2.version, info
        assert info["outcomes"].get("refused:future") == 1, info
        # The next good message still applies: dated after the latest accepted one (v2 at now + 3 s;
        # the test may get here sooner than 3 s after ``now``).
        send(kafka_bootstrap, topic, activate(v1, rollback=True, issued_at=max(datetime.now(timezone.utc),
                                                                               now + timedelta(seconds=4))))
        wait_for(running, v1.version)
        # A replica that starts now ends on the version the running one serves.
        restarted.start()
        restarted.wait_ready(need_partitions=False)
        assert restarted.model()["active"]["model_version"] == v1.version
        assert restarted.model()["outcomes"].get("refused:future") == 1
        assert running.model()["active"]["model_version"] == v1.version
    finally:
        running.stop()
        restarted.stop()
