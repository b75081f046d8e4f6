"""A worker serving the compiled evaluators from the bundle's compact files loads neither torch nor
isotree, nor scikit-learn and pandas (issue 20): checked on the running process's memory map,
before and after a hot reload."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from ja4_core.bundle import ModelStore
from ja4_core.control import build_activate
from tests.helpers import Worker, produce, quick_bundle, topic_env


#: Packages a scoring worker needs none of (torch and isotree: the compact files serve; scikit-learn
#: and pandas: xgboost's optional extras; scipy.stats: the drift test's p-value is computed without
#: it, ~40 MB), by their directory in site-packages.
HEAVY = ("/torch/", "/isotree/", "/sklearn/", "/pandas/", "/scipy/stats/")


def _loaded_libraries(pid: int) -> set[str]:
    """The paths of the shared objects mapped into the process."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {line.split(None, 5)[-1] for line in maps.splitlines() if ".so" in line}


def _heavy(libraries: set[str]) -> list[str]:
    return sorted({part for path in libraries for part in HEAVY if part in path})


def test_worker_maps_neither_torch_nor_isotree_and_keeps_it_so_across_a_reload(kafka_bootstrap, tmp_path) -> None:
    store = ModelStore(tmp_path / "models")
    quick_bundle(store, seed=1)
    v2 = quick_bundle(store, seed=2, set_current=False)
    env = topic_env(kafka_bootstrap, uuid.uuid4().hex[:8], store.root)
    worker = Worker(env, tmp_path).start()
    try:
        worker.wait_ready()
        assert worker.model()["active"]["eif_evaluator"] == "compiled"
        assert worker.proc is not None
        first = _loaded_libraries(worker.proc.pid)
        assert any("libxgboost" in path for path in first), "the map lists the model libraries"
        assert _heavy(first) == [], _heavy(first)
        produce(kafka_bootstrap, env["TOPIC_CONTROL"], [(b"default", build_activate(
            model="default", version=v2.version, uri=v2.uri, manifest_sha256=v2.manifest_sha256, issued_by="test"))])
        deadline = time.monotonic() + 30
        while worker.model()["active"]["model_version"] != v2.version:
            assert time.monotonic() < deadline, "the worker did not switch to v2"
            time.sleep(0.2)
        assert _heavy(_loaded_libraries(worker.proc.pid)) == []
    finally:
        worker.stop()
