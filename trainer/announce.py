"""The announce step of a trainer run: ``activate`` on the control topic, then the marker.

Only after the bundle and ``CURRENT`` are on disk (:mod:`trainer.write`). A confirmed
announcement is recorded in the ``PUBLISHED`` marker next to ``CURRENT`` (version, manifest
hash, topic, broker), so a run whose announcement failed (Kafka down) is caught up by the next
one: :func:`announce_pending` runs first in every run, before anything is read, so that an
outage of ClickHouse does not hold back an announcement that only needs Kafka.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ja4_core.bundle import PUBLISHED, ModelStore, read_manifest
from ja4_core.errors import BundleError
from ja4_core.settings import Settings
from trainer.publish import PUBLISH_TIMEOUT_S, PublishError, publish_activate, publish_control

log = logging.getLogger(__name__)

def marker_path(store: ModelStore, model: str) -> Path:
    return store.model_dir(model) / PUBLISHED


def read_marker(store: ModelStore, model: str) -> dict[str, Any]:
    """The last confirmed announcement ({} when none or unreadable); the store owns the file."""
    return store.read_published(model)


def write_marker(store: ModelStore, model: str, settings: Settings, version: str, sha: str) -> None:
    """Record a confirmed announcement in the store's ``PUBLISHED`` marker."""
    store.write_published(model, {"version": version, "manifest_sha256": sha, "topic": settings.topic_control,
                                  "bootstrap": settings.kafka_bootstrap_servers,
                                  "published_at": datetime.now(timezone.utc).isoformat()})


def announce(settings: Settings, store: ModelStore, model: str, version: str, manifest_sha256: str, *,
             rollback: bool = False, timeout: float = PUBLISH_TIMEOUT_S) -> str:
    """Publish ``activate`` for a version on disk, wait for the broker's confirmation, record
    it in the marker; return the version. Raises :class:`PublishError`."""
    publish_activate(settings, model=model, version=version, uri=store.uri(model, version),
                     manifest_sha256=manifest_sha256, rollback=rollback, timeout=timeout)
    write_marker(store, model, settings, version, manifest_sha256)
    return version


def announce_pending(settings: Settings, store: ModelStore, model: str, *,
                     timeout: float = PUBLISH_TIMEOUT_S) -> tuple[str | None, str | None]:
    """Announce ``CURRENT`` unless the marker says it was confirmed on this topic and broker.
    Returns (version announced, error)."""
    current = store.current(model)
    if current is None or current not in store.versions(model):
        return None, None
    try:
        _, sha = read_manifest(store.bundle_dir(model, current))
    except BundleError as exc:
        return None, f"current bundle unreadable: {exc}"
    marker = read_marker(store, model)
    if (marker.get("version") == current and marker.get("manifest_sha256") == sha
            and marker.get("topic") == settings.topic_control
            and marker.get("bootstrap") == settings.kafka_bootstrap_servers):
        return None, None
    # An older current than the newest bundle can only be an operator's rollback.
    rollback = current != store.versions(model)[-1]
    try:
        log.info("announcing %s/%s, not yet confirmed on %s", model, current, settings.topic_control)
        return announce(settings, store, model, current, sha, rollback=rollback, timeout=timeout), None
    except PublishError as exc:
        log.warning("could not announce %s/%s: %s", model, current, exc)
        return None, str(exc)


def announce_challenger(settings: Settings, store: ModelStore, model: str, version: str, manifest_sha256: str, *,
                        retire: bool = False, timeout: float = PUBLISH_TIMEOUT_S) -> str:
    """Publish ``shadow`` (or, with ``retire``, ``retire``) for a version on disk and wait for
    the broker's confirmation; return the version. The ``PUBLISHED`` marker stays the
    champion's: a challenger is never what ``CURRENT`` names. Raises :class:`PublishError`."""
    publish_control(settings, "retire" if retire else "shadow", model=model, version=version,
                    uri=store.uri(model, version), manifest_sha256=manifest_sha256, timeout=timeout)
    return version
