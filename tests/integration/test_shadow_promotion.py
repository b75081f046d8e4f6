"""A promotion and a retirement of a challenger switch every replica (issue 17): the
operator's ``stream-trainer promote`` / ``retire``, and ``stream-scorer status`` showing both."""

from __future__ import annotations

import os
import subprocess
import sys

from ja4_core.bundle import ModelStore
from tests.helpers import Worker, quick_bundle, topic_env
from tests.integration.test_shadow import KEY, announce, challenger, champion, wait_for


def cli(module: str, *args: str, env: dict, cwd) -> str:
    proc = subprocess.run([sys.executable, "-m", module, *args], env={**os.environ, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_a_promotion_and_a_retirement_switch_every_replica(kafka_bootstrap, unique, tmp_path) -> None:
    store = ModelStore(tmp_path / "models")
    v1 = quick_bundle(store, seed=1)
    v2 = quick_bundle(store, seed=2, set_current=False)
    v3 = quick_bundle(store, seed=3, set_current=False)
    env = topic_env(kafka_bootstrap, unique, store.root, SCORER_BATCH_WAIT_MS="20", CONTROL_SIGNING_KEY=KEY)
    workers = [Worker(env, tmp_path).start(), Worker(env, tmp_path).start()]
    try:
        for w in workers:
            w.wait_ready(need_partitions=False)
        announce(kafka_bootstrap, env["TOPIC_CONTROL"], v1)
        announce(kafka_bootstrap, env["TOPIC_CONTROL"], v2, "shadow")
        wait_for(workers, lambda i: champion(i) == v1.version and challenger(i) == v2.version, "v2 shadows")
        status = cli("stream_scorer.cli", "status", "--replica", workers[0].url, "--replica", workers[1].url,
                     env=env, cwd=tmp_path)
        assert f"challenger {v2.version} shadowing since" in status, status
        assert status.count(f"challenger {v2.version} loaded") == 2, status
        # The operator promotes the live challenger: CURRENT, then an ordinary activation.
        promoted = cli("trainer.cli", "promote", env=env, cwd=tmp_path)
        assert v2.version in promoted and store.current("default") == v2.version, promoted
        wait_for(workers, lambda i: champion(i) == v2.version and challenger(i) is None
                 and (i["challenger"]["dropped"] or {}).get("reason") == "promoted", "v2 promoted")
        announce(kafka_bootstrap, env["TOPIC_CONTROL"], v3, "shadow")
        wait_for(workers, lambda i: challenger(i) == v3.version, "v3 shadows")
        cli("trainer.cli", "retire", v3.version, env=env, cwd=tmp_path)
        wait_for(workers, lambda i: champion(i) == v2.version and challenger(i) is None
                 and (i["challenger"]["dropped"] or {}).get("reason") == "retired", "v3 retired")
    finally:
        for w in workers:
            w.stop()
