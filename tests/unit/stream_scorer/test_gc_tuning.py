"""A worker runs the cyclic garbage collector in larger steps (issue 20): a batch's tens of
thousands of short-lived dicts and lists no longer set off a collection every 700, what start-up
built is frozen out of the collector's walks, and cyclic garbage is still collected. Both CLIs'
process entries do the same and freeze the heap before the interpreter's teardown
(``ja4_core/gc_steps.py`` says what that saved)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import tomllib

from tests.helpers import REPO

PROBE = """
import gc, json, sys, weakref
if sys.argv[1] == "tuned":
    from stream_scorer.app import _collect_young_garbage_less_often
    _collect_young_garbage_less_often()
frozen = gc.get_freeze_count()
before = gc.get_stats()[0]["collections"]
batch = [{"score": float(i), "reasons": []} for i in range(20_000)]  # ~40,000 tracked objects
young = gc.get_stats()[0]["collections"] - before
del batch

class Node:
    pass

cycle = Node(); cycle.self = cycle  # garbage only the cyclic collector can free
gone = weakref.ref(cycle); del cycle
for _ in range(3):
    churn = [[i] for i in range(150_000)]  # more than the threshold: the collector runs
    del churn
print(json.dumps({"young_collections": young, "frozen": frozen, "cycle_collected": gone() is None,
                  "threshold": gc.get_threshold()}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_batch_sets_off_no_young_collection_and_cycles_are_still_collected() -> None:
    default, tuned = _probe("default"), _probe("tuned")
    assert default["young_collections"] >= 20, default  # Python's default: one every 700
    assert tuned["young_collections"] == 0, tuned
    assert tuned["frozen"] > 1000 and default["frozen"] == 0, (default, tuned)
    assert tuned["cycle_collected"] and default["cycle_collected"], (default, tuned)
    assert tuned["threshold"][1:] == default["threshold"][1:], "older generations keep Python's thresholds"


EXIT_PROBE = """
import atexit, gc, sys
atexit.register(lambda: print("GC", gc.get_threshold()[0], gc.get_freeze_count() > 0, flush=True))
import {module} as cli
sys.argv = [sys.argv[0], "--help"]
cli.run()
"""


@pytest.mark.parametrize("module", ["trainer.cli", "stream_scorer.cli"])
def test_each_cli_process_collects_in_larger_steps_and_exits_with_its_heap_frozen(module: str) -> None:
    out = subprocess.run([sys.executable, "-c", EXIT_PROBE.format(module=module)], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "GC 100000 True" in out.stdout, out.stdout[-2000:]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert f"{module}:run" in scripts.values(), "the console script is the process entry"
