"""The write step of a trainer run: the bundle, then ``CURRENT``, then the purge.

The bundle is written under a temporary name and renamed into place
(:func:`ja4_core.bundle.write_bundle`), ``CURRENT`` is pointed at it, and old versions (and
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
                  smoke_rows: np.ndarray, keep: int) -> Written:
    """Write the bundle, make it current, purge beyond ``keep`` versions."""
    info = write_bundle(store, ensemble, model=model, version=version, extra=extra, smoke_rows=smoke_rows)
    store.set_current(model, version)
    purged = store.purge(model, keep)
    purge_reports(store, model)
    log.info("wrote %s (%d bytes), CURRENT -> %s%s", info.path, info.size_bytes, version,
             f"; purged {', '.join(purged)}" if purged else "")
    return Written(info, tuple(purged))
