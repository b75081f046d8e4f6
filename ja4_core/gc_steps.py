"""Python's cyclic garbage collector in larger steps, for our processes (never on import).

Nearly every object our processes make is freed by reference counting: a scored batch's dicts
and lists, a training run's frames and arrays. With Python's default threshold the cyclic
collector still runs every 700 new objects, and its older generations then walk everything
that is alive: torch, scikit-learn, pandas and Faust are hundreds of thousands of objects.

- In the worker a third of the Python thread's work per record was collections (19.1 -> 12.8 us
  a record, parse + serialise in process; README, issue 20's fifth pass).
- In the trainer, ``stream-trainer run-once`` on the demo's history (6,589 rows, 40 trees, 3
  epochs) took 39-74 s from start to exit here (five runs), 23-39 s with the young generation at
  100,000 and the heap frozen before the interpreter's teardown (five runs, three of each
  interleaved); the teardown's collections alone took 4-20 s of it, 1-3 s frozen.

Cyclic garbage is still collected, just in larger steps. A process calls :func:`collect_in_larger_steps`
where it starts and :func:`freeze_heap` once what it built is meant to live until it exits; a
command-line process runs its ``main`` through :func:`run_process`, which does both.
"""

from __future__ import annotations

import gc
import sys
from typing import Callable, NoReturn

#: Young objects between two collections (Python's default is 700).
GEN0_THRESHOLD = 100_000


def collect_in_larger_steps(gen0: int = GEN0_THRESHOLD) -> None:
    """Collect the young generation every ``gen0`` new objects; the older ones keep Python's
    thresholds (relative to the collections below them)."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)


def freeze_heap() -> None:
    """Move every object alive now out of the collector's walks (``gc.freeze``): what start-up
    built, or, just before exit, everything, so the interpreter's teardown does not walk it."""
    gc.freeze()


def run_process(main: Callable[[], int]) -> NoReturn:
    """A CLI's process entry: ``main`` with the collector in larger steps, then its exit code,
    with the heap frozen before the interpreter's teardown (also when ``main`` raises)."""
    collect_in_larger_steps()
    try:
        code = main()
    finally:
        freeze_heap()
    sys.exit(code)
