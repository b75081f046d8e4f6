"""No secret reaches any output (issue 13, item 7): real runs of the trainer's CLI and of a
worker, with the test's own secret values, scanned in stdout, stderr, logs and web views.

The ClickHouse DSN carries a user and password and points at a closed port (chdb DSNs carry
no credentials), so every trainer command meets a connection error whose text and traceback
must not show the password either. The broker is plaintext, so the SASL password is set but
unused: it must still appear nowhere."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

import pytest

from ja4_core.bundle import ModelStore
from tests.helpers import REPO, Worker, free_port, quick_bundle, topic_env

pytestmark = pytest.mark.timeout(300)

SECRETS = {"CONTROL_SIGNING_KEY": "sig-K3y-9f1e2d", "CONTROL_SIGNING_KEY_PREVIOUS": "prev-K3y-77ab",
           "KAFKA_SASL_USERNAME": "ja4-sasl-user", "KAFKA_SASL_PASSWORD": "sasl-Pw-51c0"}
CH_PASSWORD = "ch-Pw-8e2f4a"


def _secret_env(port: int) -> dict[str, str]:
    return {**SECRETS, "CLICKHOUSE_URL": f"http://ja4user:{CH_PASSWORD}@127.0.0.1:{port}/ja4"}


def _assert_clean(text: str, where: str) -> None:
    for value in (*(v for k, v in SECRETS.items() if k != "KAFKA_SASL_USERNAME"), CH_PASSWORD):
        assert value not in text, f"{value!r} printed in {where}:\n{text[-4000:]}"


def _trainer(args: list[str], env: dict[str, str], cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainer.cli", *args], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=180)


def test_trainer_commands_print_no_secret(kafka_bootstrap, unique, tmp_path):
    closed = free_port()
    env = {**_secret_env(closed), "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TOPIC_CONTROL": f"control-{unique}",
           "MODEL_STORE": str(tmp_path / "models"), "LOG_LEVEL": "debug", "PYTHONPATH": str(REPO)}
    runs = {
        "init-db": _trainer(["init-db"], env, tmp_path),
        "run-once": _trainer(["run-once"], env, tmp_path),
        "status": _trainer(["status"], env, tmp_path),
        "status --json": _trainer(["status", "--json"], env, tmp_path),
        "init-db json logs": _trainer(["init-db"], {**env, "LOG_FORMAT": "json"}, tmp_path),
        "bad setting": _trainer(["init-db", "--eif-ntrees", "0"], env, tmp_path),  # a trainer setting: a flag of its own
    }
    assert runs["init-db"].returncode == 1 and "init-db failed" in runs["init-db"].stderr
    assert runs["run-once"].returncode == 1
    assert runs["status"].returncode == 0 and "decisions" in runs["status"].stdout
    assert runs["bad setting"].returncode == 2
    for name, run in runs.items():
        _assert_clean(run.stdout + run.stderr, f"stream-trainer {name}")


def test_a_worker_prints_and_serves_no_secret(kafka_bootstrap, unique, tmp_path):
    store = ModelStore(tmp_path / "models")
    quick_bundle(store, ntrees=20, n=1500, epochs=1)
    env = {**topic_env(kafka_bootstrap, unique, store.root), **_secret_env(free_port()), "PYTHONPATH": str(REPO)}
    worker = Worker(env, cwd=tmp_path).start()
    try:
        worker.wait_ready(need_partitions=False)
        bodies = []
        for path in ("/model", "/health", "/ready", "/live", "/metrics"):
            try:
                with urllib.request.urlopen(worker.url + path, timeout=5) as resp:
                    bodies.append(resp.read().decode())
            except urllib.error.HTTPError as exc:  # /ready may say 503 until partitions arrive
                bodies.append(exc.read().decode())
        for path, body in zip(("/model", "/health", "/ready", "/live", "/metrics"), bodies):
            _assert_clean(body, f"GET {path}")
    finally:
        worker.stop()
    _assert_clean(worker.log(), "the worker's log")
    assert "reload:" in worker.log()  # the log was written (the scan looked at something)
