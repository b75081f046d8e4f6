"""The store's ``CURRENT`` fallback through a real worker and broker (issue 13, item 8).

With no announcement on the control topic, a replica activates the version ``CURRENT`` names,
verified like an announced bundle: files against the manifest, the manifest against the
trainer's ``PUBLISHED`` record of that version. A tampered bundle or a malformed ``CURRENT``
is refused, counted and logged; the replica stays up, does not loop, and still activates the
next valid announcement."""

from __future__ import annotations

import json
import time

import pytest

from ja4_core.bundle import CURRENT, MANIFEST, ModelStore
from ja4_core.control import build_activate
from tests.helpers import Worker, produce, quick_bundle, topic_env

pytestmark = pytest.mark.timeout(240)


def _outcomes_when(worker: Worker, predicate, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        if worker.proc is not None and worker.proc.poll() is not None:
            raise AssertionError(f"worker exited with {worker.proc.returncode}:\n{worker.log()[-3000:]}")
        try:
            last = worker.model()
            if predicate(last):
                return last
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"condition not met within {timeout}s; /model {last}\n{worker.log()[-3000:]}")


def _publish_marker(store: ModelStore, info) -> None:
    """What the trainer writes once the broker confirmed the announcement of ``info``."""
    (store.model_dir(info.model) / "PUBLISHED").write_text(json.dumps(
        {"version": info.version, "manifest_sha256": info.manifest_sha256}))


def test_current_naming_a_consistently_tampered_bundle_is_refused(kafka_bootstrap, unique, tmp_path):
    """The attacker rewrote a threshold in the manifest (its own file checksums still match):
    the manifest no longer matches the sha256 the trainer recorded as published, so it is refused."""
    store = ModelStore(tmp_path / "models")
    info = quick_bundle(store)
    _publish_marker(store, info)
    manifest = json.loads((info.path / MANIFEST).read_text())
    manifest["thresholds"]["CRITICAL"] = 0.999999
    (info.path / MANIFEST).write_text(json.dumps(manifest))
    worker = Worker(topic_env(kafka_bootstrap, unique, store.root), cwd=tmp_path).start()
    try:
        body = _outcomes_when(worker, lambda m: m.get("outcomes", {}).get("refused:bundle"))
        assert body["active"] is None
        assert "differs from the announced" in worker.log()
        status, health = worker.get("/health")
        assert status == 200 and health["model_active"] is False
    finally:
        worker.stop()


@pytest.mark.parametrize("content", [b"../../etc/passwd\n", b"\xff\xfe\x00\x01 not ascii", b"", b"v" * 100_000])
def test_malformed_current_is_refused_and_the_worker_stays_up(kafka_bootstrap, unique, tmp_path, content):
    store = ModelStore(tmp_path / "models")
    info = quick_bundle(store, set_current=False, ntrees=20, n=1500, epochs=1)
    (store.model_dir("default") / CURRENT).write_bytes(content)
    env = topic_env(kafka_bootstrap, unique, store.root)
    worker = Worker(env, cwd=tmp_path).start()
    try:
        body = _outcomes_when(worker, lambda m: m.get("outcomes", {}).get("refused:current"))
        assert body["active"] is None
        time.sleep(5.0)  # a follower that crashed on CURRENT would restart and refuse it again
        again = worker.model()
        assert again["outcomes"].get("refused:current") == 1, again
        assert "refused CURRENT" in worker.log() and "follower error" not in worker.log()
        # The follower is alive: a valid announcement is activated.
        produce(kafka_bootstrap, env["TOPIC_CONTROL"], [(b"default", build_activate(
            model="default", version=info.version, uri=info.uri, manifest_sha256=info.manifest_sha256,
            issued_by="test"))])
        active = _outcomes_when(worker, lambda m: (m.get("active") or {}).get("model_version") == info.version)
        assert active["outcomes"]["activated"] == 1
    finally:
        worker.stop()
