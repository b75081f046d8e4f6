"""The read step of a trainer run: everything the run needs, read once, before any decision.

A run reads the human baseline and the labelled rows from ClickHouse, and the current
bundle (loaded and smoke-checked) from the model store, here and nowhere else; the steps
after it (:mod:`trainer.plan`, :mod:`trainer.train`) are pure functions of what this returns.
The labels are read for every usable feature, because which features the run keeps is only
known after preparation (low-variance ones are pruned); the plan selects the kept columns.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping

from ja4_core import clickhouse_io
from ja4_core.bundle import LoadedBundle, ModelStore, load_bundle, smoke_check
from ja4_core.clickhouse_io import Baseline, ClickHouseIO, Labelled
from ja4_core.errors import BundleError
from ja4_core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingInputs:
    """What one run read: the data, the store's state when it started, and the read times."""

    model: str
    #: The end of the data window and the run's clock for every age it compares.
    now: datetime
    #: Numeric feature columns of the table that the settings allow (``FEATURES``).
    features: tuple[str, ...]
    baseline: Baseline
    #: Labelled rows, every column of ``features``.
    labels: Labelled
    #: ``CURRENT`` when the run started (None: no model yet).
    previous: str | None
    #: The current bundle, loaded and smoke-checked; None when there is none or it is unusable.
    current: LoadedBundle | None
    #: Why ``current`` is None ("first model", "current bundle unusable (...)"); "" otherwise.
    why_no_current: str = ""
    #: Seconds spent reading, by source ("baseline query", "labels query").
    seconds: Mapping[str, float] = field(default_factory=dict)


def load_current(store: ModelStore, model: str, version: str | None) -> tuple[LoadedBundle | None, str]:
    """The bundle ``version`` loaded and smoke-checked, or None and why: an unusable current
    bundle is replaced by training, not fatal."""
    if version is None:
        return None, "first model"
    try:
        bundle = load_bundle(store.bundle_dir(model, version))
        smoke_check(bundle)
        return bundle, ""
    except BundleError as exc:
        log.warning("current bundle %s is unusable, training a replacement: %s", version, exc)
        return None, f"current bundle unusable ({exc})"


def read_inputs(ch: ClickHouseIO, store: ModelStore, settings: Settings, *, now: datetime) -> TrainingInputs:
    """Read the baseline, the current bundle and the labels (in that order)."""
    s = settings
    t = time.monotonic()
    log.info("reading the baseline: last %g days of %s.%s", s.baseline_days, ch.database, clickhouse_io.FEATURES_TABLE)
    features = ch.usable_features(s.features)
    baseline = ch.baseline(features, days=s.baseline_days, row_filter=s.baseline_filter,
                           max_rows=s.baseline_max_rows, now=now)
    seconds = {"baseline query": time.monotonic() - t}
    log.info("baseline: %d rows x %d features (%.1f s)", len(baseline), len(features), seconds["baseline query"])
    previous = store.current(s.model_name)
    current, why_none = load_current(store, s.model_name, previous)
    t = time.monotonic()
    labels = ch.labelled(features, max_rows=s.baseline_max_rows, now=now)
    seconds["labels query"] = time.monotonic() - t
    return TrainingInputs(model=s.model_name, now=now, features=tuple(features), baseline=baseline, labels=labels,
                          previous=previous, current=current, why_no_current=why_none, seconds=seconds)
