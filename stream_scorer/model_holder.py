"""The live model of a replica, and hot reload as explicit steps.

announce (a parsed, verified :class:`ControlMessage`) -> resolve (the uri must name
``<store>/<model>/<version>``) -> fetch + verify + load (off the event loop, in a thread)
-> smoke-score (the manifest's own rows) -> swap (one reference assignment).

The scoring agent reads :attr:`ModelHolder.active` once per batch, so a batch is scored by
exactly one fully loaded model and every score record names the version that scored it.
Which message wins is decided by :func:`.control.supersedes` alone, the rule a starting
replica uses to pick the latest message of the topic: a message counts only when it is later
than the latest one this holder accepted (a replay or an out-of-date rollback changes nothing).
Any failed step keeps the previous model serving and is counted by reason. The old bundle
is released when nothing references it any more (the agent drops its reference at the end
of the batch), so repeated reloads do not grow memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ja4_core.bundle import LoadedBundle, ModelStore, load_bundle, smoke_check
from ja4_core.control import ControlMessage, order_key, supersedes
from ja4_core.errors import BundleError, ControlError
from stream_scorer.heap import trim_heap
from stream_scorer.metrics import MODEL_INFO, RELOADS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActiveModel:
    """What a replica serves: immutable, replaced as a whole on every swap."""

    bundle: LoadedBundle
    issued_at: datetime
    loaded_at: datetime
    load_seconds: float
    source: str  #: "control" or "CURRENT"

    @property
    def name(self) -> str:
        return self.bundle.model

    @property
    def version(self) -> str:
        return self.bundle.version

    def describe(self) -> dict[str, Any]:
        ens = self.bundle.ensemble
        return {"model_name": self.name, "model_version": self.version,
                "loaded_at": self.loaded_at.isoformat(), "issued_at": self.issued_at.isoformat(),
                "load_seconds": round(self.load_seconds, 3), "source": self.source,
                "features": len(ens.features), "members": list(ens.members()),
                "eif_evaluator": ens.eif.evaluator, "eif_evaluator_note": ens.eif.evaluator_note,
                "ae_evaluator": ens.ae.evaluator if ens.ae is not None else None,
                "ae_evaluator_note": ens.ae.evaluator_note if ens.ae is not None else None,
                "bundle_bytes": self.bundle.size_bytes}


#: Seconds after a swap before the heap is trimmed: the batches in flight have released the old model.
TRIM_AFTER_S = 5.0


# A bundle is loaded in a worker thread, so its arrays live in that thread's malloc arena;
# glibc keeps an arena's freed pages by default, and a replica's RSS grew by about 280 MB over
# 50 reloads of a 37 MB bundle in the benchmark without a trim after the swap
# (``trim_heap``: :func:`stream_scorer.heap.trim_heap`, re-exported here for bench/).


#: Pause after each MiB a replica's load hashes (:func:`ja4_core.bundle.paced_sha256`): every
#: replica reloads at the same moment, and unpaced hashes took the box's cores from the
#: pipelines (the longest score gaps of a reload began at the publish, before the swap).
RELOAD_HASH_PAUSE_S = 0.001


def load_verified(path: Path, manifest_sha256: str | None, nthreads: int,
                  eif_evaluator: str = "compiled", ae_evaluator: str = "compiled") -> LoadedBundle:
    """Blocking: verify checksums (paced), load every member, smoke-score. Runs in a thread."""
    bundle = load_bundle(path, expected_manifest_sha256=manifest_sha256, nthreads=nthreads,
                         eif_evaluator=eif_evaluator, ae_evaluator=ae_evaluator,
                         hash_pause_s=RELOAD_HASH_PAUSE_S)
    smoke_check(bundle)
    return bundle


@dataclass
class ModelHolder:
    """Holds the active model of one model name and applies control messages to it."""

    store: ModelStore
    model_name: str
    nthreads: int = 1
    eif_evaluator: str = "compiled"
    ae_evaluator: str = "compiled"
    active: ActiveModel | None = None
    outcomes: Counter[str] = field(default_factory=Counter)
    #: The last message refused because its bundle was unreadable; retried periodically.
    pending_retry: ControlMessage | None = None
    #: The latest message accepted (under :func:`supersedes`), whatever its load outcome:
    #: only a later one may change the model.
    latest: ControlMessage | None = None
    _ready: asyncio.Event | None = None
    _lock: asyncio.Lock | None = None

    @property
    def ready(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        RELOADS.labels(outcome=outcome).inc()

    def _should_apply(self, msg: ControlMessage) -> str | None:
        """Why a verified message is skipped, or None if it is the new latest one."""
        if msg.model != self.model_name:
            return "other-model"
        if not supersedes(msg, self.latest):
            assert self.latest is not None
            return "replayed" if order_key(msg) == order_key(self.latest) else "older"
        return None

    async def apply(self, msg: ControlMessage) -> str:
        """Apply one verified control message; return the outcome (also counted).

        Never raises for a bad message: whatever the message, the follower reads the next."""
        async with self.lock:
            skip = self._should_apply(msg)
            if skip is not None:
                if skip != "other-model":
                    log.info("control: %s/%s issued %s ignored (%s)", msg.model, msg.version, msg.issued_at, skip)
                self.count(f"ignored:{skip}")
                return f"ignored:{skip}"
            self.latest = msg
            self.pending_retry = None
            if self.active is not None and msg.version == self.active.version:
                self.count("ignored:same-version")
                return "ignored:same-version"
            return await self._activate(msg)

    async def _activate(self, msg: ControlMessage) -> str:
        """Resolve, load and swap the version ``msg`` names (the caller holds the lock)."""
        try:
            path = self.store.resolve_uri(msg.uri, msg.model, msg.version)
        except (ControlError, BundleError, ValueError, OSError) as exc:  # urlparse/os may refuse odd URIs too
            log.warning("control: refused %s/%s: %s", msg.model, msg.version, exc)
            self.count("refused:uri")
            return "refused:uri"
        outcome = await self._load_and_swap(path, msg.manifest_sha256, msg.issued_at_dt, "control",
                                            rollback=msg.rollback)
        if outcome == "refused:bundle":
            self.pending_retry = msg
        return outcome

    async def activate_current(self) -> str:
        """Start-up fallback: activate the version the store's ``CURRENT`` names.

        Verified like an announced bundle: every file against the manifest's checksums, and
        the manifest against the sha256 of the trainer's ``PUBLISHED`` record when that names
        the same version (the last announcement the broker confirmed). A malformed ``CURRENT``
        (empty, binary, huge, a path) is refused, logged and counted (``refused:current``);
        nothing here raises, because the follower's bootstrap calls it and an exception
        there would restart the follower over and over."""
        try:
            version = self.store.read_current(self.model_name)
        except BundleError as exc:
            log.warning("reload: refused CURRENT of %s: %s", self.model_name, exc)
            self.count("refused:current")
            return "refused:current"
        except OSError as exc:  # unreadable store: permissions, I/O error
            log.warning("reload: cannot read CURRENT of %s: %s", self.model_name, exc)
            self.count("refused:current")
            return "refused:current"
        if version is None:
            return "none"
        async with self.lock:
            path = self.store.bundle_dir(self.model_name, version)
            sha = self.store.published_sha(self.model_name, version)
            try:
                issued = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
            except OSError:  # missing: the load below refuses it with the reason
                issued = datetime.now(timezone.utc)
            return await self._load_and_swap(path, sha, issued, "CURRENT")

    async def retry_pending(self) -> str | None:
        """Retry the last message whose bundle could not be read (deleted, truncated...)."""
        async with self.lock:
            msg = self.pending_retry
            if msg is None:
                return None
            if msg is not self.latest or (self.active is not None and self.active.version == msg.version):
                self.pending_retry = None  # overtaken by a later message
                return None
            self.pending_retry = None
            return await self._activate(msg)

    async def _load_and_swap(self, path: Path, sha: str | None, issued_at: datetime, source: str,
                             rollback: bool = False) -> str:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            bundle = await loop.run_in_executor(None, load_verified, path, sha, self.nthreads,
                                                        self.eif_evaluator, self.ae_evaluator)
        except BundleError as exc:
            log.warning("reload: refused %s: %s", path, exc)
            self.count("refused:bundle")
            return "refused:bundle"
        except Exception as exc:  # a bug or an unexpected library error must not kill the replica
            log.exception("reload: refused %s: unexpected error %r", path, exc)
            self.count("refused:error")
            return "refused:error"
        if bundle.model != self.model_name:
            log.warning("reload: refused %s: bundle is for model %r", path, bundle.model)
            self.count("refused:bundle")
            return "refused:bundle"
        elapsed = time.perf_counter() - started
        previous = self.active
        # The swap: one reference assignment between two batches of the agent.
        self.active = ActiveModel(bundle=bundle, issued_at=issued_at,
                                  loaded_at=datetime.now(timezone.utc), load_seconds=elapsed, source=source)
        self.ready.set()
        MODEL_INFO.info({"model_name": self.model_name, "model_version": bundle.version})
        self.count("activated")
        log.info("reload: %s %s -> %s in %.3fs (%s%s)", self.model_name,
                 previous.version if previous else "none", bundle.version, elapsed, source,
                 ", rollback" if rollback else "")
        # The old bundle is freed by reference counting as soon as the agent's batches that
        # still use it end (no explicit gc.collect(): a full collection pauses scoring); then
        # the C heap is asked to give the freed pages back (see ``trim_heap``).
        del previous
        loop.call_later(TRIM_AFTER_S, lambda: loop.run_in_executor(None, trim_heap))
        return "activated"
