"""The write step of a trainer run: the bundle, then ``CURRENT``, then the purge.

The bundle is written under a temporary name and renamed into place
(:func:`ja4_core.bundle.write_bundle`: the members' portable files, and the compact array files the
workers map and serve from, each checked against its library on probe rows first and listed
with its sha256 under ``compact_files``), ``CURRENT`` is pointed at it, and old versions (and
their reports) beyond ``MODEL_HISTORY_COUNT`` go. The manifest's hash comes back from the
write itself: the announcement carries it without reading the manifest again.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ja4_core.bundle import BundleInfo, ModelStore, write_bundle
from ja4_core.ensemble import Ensemble

log = logging.getLogger(__name__)

#: Reports live in ``MODEL_STORE/<model>/reports/<version>/``, outside the checksummed bundle.
REPORTS = "reports"


@dataclass(frozen=True)
class Written:
    """A version on disk and current: where, its manifest hash, what the purge removed."""

    info: BundleInfo
    purged: tuple[str, ...] = ()

    @property
    def manifest_sha256(self) -> str:
        return self.info.manifest_sha256


def report_dir(store: ModelStore, model: str, version: str) -> Path:
    return store.model_dir(model) / REPORTS / version


def purge_reports(store: ModelStore, model: str) -> None:
    """Remove the reports of versions older than the oldest one kept."""
    versions = store.versions(model)
    root = store.model_dir(model) / REPORTS
    if not versions or not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.is_dir() and entry.name < versions[0]:
            shutil.rmtree(entry, ignore_errors=True)


def write_version(store: ModelStore, ensemble: Ensemble, *, model: str, version: str, extra: dict[str, Any],
                  smoke_rows: np.ndarray, keep: int, make_current: bool = True) -> Written:
    """Write the bundle, make it current (not a challenger: ``CURRENT`` stays the champion's
    until it is promoted), purge beyond ``keep`` versions."""
    info = write_bundle(store, ensemble, model=model, version=version, extra=extra, smoke_rows=smoke_rows)
    if make_current:
        store.set_current(model, version)
    purged = store.purge(model, keep)
    purge_reports(store, model)
    log.info("wrote %s (%d bytes), CURRENT -> %s%s", info.path, info.size_bytes, store.current(model),
             f"; purged {', '.join(purged)}" if purged else "")
    return Written(info, tuple(purged))
