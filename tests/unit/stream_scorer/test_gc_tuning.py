"""A worker runs the cyclic garbage collector in larger steps (issue 20): a batch's tens of
thousands of short-lived dicts and lists no longer set off a collection every 700, what start-up
built is frozen out of the collector's walks, and cyclic garbage is still collected."""

from __future__ import annotations

import json
import subprocess
import sys

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
