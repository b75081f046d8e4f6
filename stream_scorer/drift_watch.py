"""A replica watching its own input: the live window, its metrics, and the retrain request.

Three hooks tie it to the worker, each one line in a shared module: the parse step hands every
batch's raw matrix to :meth:`DriftWatch.observe` (Python thread); the control follower hands
every control record to :meth:`DriftWatch.on_control` first (a retrain request is taken here
and never reaches the ``activate`` ledger); and a Faust timer calls :meth:`DriftWatch.tick`
every :data:`TICK_S`, which refreshes the metrics and the ``/drift`` page, asks
:class:`~.retrain_decision.RetrainDecider` and, when it says so, publishes a signed
``retrain_request`` (:mod:`ja4_core.retrain_request`) and waits for the broker's ack.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Callable

import numpy as np

from ja4_core.control import ControlRecord
from ja4_core.errors import ControlError
from ja4_core.retrain_request import build_retrain_request, is_retrain_request, key_for, parse_retrain_request
from ja4_core.settings import Settings
from stream_scorer import metrics
from stream_scorer.live_drift import DriftSnapshot, LiveDrift
from stream_scorer.retrain_decision import RetrainDecider

log = logging.getLogger(__name__)

#: How often the window is summarised, the metrics refreshed and a request considered (s).
TICK_S = 1.0
#: Seconds to wait for the broker to confirm a request.
PUBLISH_TIMEOUT_S = 10.0


class DriftWatch:
    """The live drift of one replica and its retrain requests."""

    def __init__(self, settings: Settings, *, replica: str | None = None,
                 assigned: Callable[[], list[int]] | None = None) -> None:
        self.settings = settings
        self.replica = replica or f"{os.uname().nodename}:{os.getpid()}:{settings.scorer_web_port}"
        self.assigned = assigned or (lambda: [])
        self.live = LiveDrift(settings.live_drift_window_s, min_records=settings.live_drift_min_records,
                              imputed_fault_share=settings.input_fault_imputed_share)
        self.decider = RetrainDecider(settings.drift_threshold, settings.drift_request_after_s,
                                      settings.drift_request_cooldown_s)
        #: Wall-clock time of the latest valid request for this model seen on the topic (any replica's).
        self.last_request_at: float | None = None
        self.last_request: dict[str, Any] | None = None
        self.requests_published = 0
        self.last_outcome = "warming"
        self.snapshot: DriftSnapshot | None = None
        self._fault_labels: set[tuple[str, str]] = set()
        self._producer: Any = None

    # -- hooks --------------------------------------------------------------------------
    def observe(self, version: str, features: tuple[str, ...], manifest: dict[str, Any], X: np.ndarray) -> None:
        """Add one batch (Python thread). Never raises: drift must not cost a batch."""
        if not self.live.enabled:
            return
        try:
            self.live.use_bundle(version, features, manifest)
            self.live.observe(X)
        except Exception:  # noqa: BLE001 - a bug here must not fail scoring
            log.exception("live drift: observing a batch failed")

    def on_control(self, record: ControlRecord) -> bool:
        """True when the record is a retrain request (taken here, whatever its validity)."""
        if not is_retrain_request(record.value):
            return False
        s = self.settings
        try:
            req = parse_retrain_request(record.value, s.signing_keys, max_future_skew_s=s.control_max_future_skew_s)
        except ControlError as exc:
            metrics.RETRAIN_REQUESTS.labels(outcome="refused:" + exc.reason).inc()
            log.warning("control: refused retrain request at offset %d (%s): %s", record.offset, exc.reason, exc)
            return True
        if req.model == s.model_name:
            at = req.issued_at_dt.timestamp()
            if self.last_request_at is None or at > self.last_request_at:
                self.last_request_at, self.last_request = at, req.figures()
            metrics.RETRAIN_REQUESTS.labels(outcome="seen").inc()
        return True

    # -- the tick -----------------------------------------------------------------------
    async def tick(self) -> None:
        """One look at the window (every :data:`TICK_S`); never raises into Faust's timer."""
        if not self.live.enabled:
            return
        try:
            await self._tick()
        except Exception:  # noqa: BLE001 - a bug here must not stop the worker
            log.exception("live drift: the periodic check failed")

    async def _tick(self) -> None:
        snap = await asyncio.to_thread(self.live.snapshot)
        self.snapshot = snap
        self._export(snap)
        assigned = self.assigned()
        now = time.time()
        outcome = self.decider.step(now, share=snap.share, ready=snap.ready, faults=len(snap.faults),
                                    rank=min(assigned) if assigned else None, last_request_at=self.last_request_at)
        if outcome != self.last_outcome:
            log.info("live drift: %s (share %.2f, threshold %.2f, %d records, faults %s)", outcome, snap.share,
                     self.settings.drift_threshold, snap.records, {f.feature: f.fault for f in snap.faults} or "none")
        self.last_outcome = outcome
        metrics.DRIFT_SUSTAINED.set(self.decider.sustained(now))
        if outcome == "request" and snap.version is not None:
            await self._request(snap, now)

    def _export(self, snap: DriftSnapshot) -> None:
        metrics.DRIFTED_SHARE.set(snap.share)
        metrics.DRIFT_WINDOW_RECORDS.set(snap.records)
        faults: set[tuple[str, str]] = set()
        for f in snap.features:
            metrics.FEATURE_IMPUTED_SHARE.labels(feature=f.feature).set(f.imputed_share)
            if f.drift is not None and snap.ready:
                metrics.FEATURE_DRIFT.labels(feature=f.feature).set(f.drift.ks)
            if f.fault:
                faults.add((f.feature, f.fault))
                metrics.INPUT_FAULT.labels(feature=f.feature, reason=f.fault).set(1)
        for labels in self._fault_labels - faults:
            metrics.INPUT_FAULT.remove(*labels)
        self._fault_labels = faults

    async def _request(self, snap: DriftSnapshot, now: float) -> None:
        s = self.settings
        assert snap.version is not None
        value = build_retrain_request(
            model=s.model_name, version=snap.version, issued_by=self.replica, drift_share=snap.share,
            threshold=s.drift_threshold, drifted=[f.feature for f in snap.drifted], window_s=snap.window_s,
            window_records=snap.records, sustained_s=self.decider.sustained(now), signing_key=s.control_signing_key)
        try:
            await asyncio.to_thread(self._publish, key_for(s.model_name), value)
        except Exception as exc:  # noqa: BLE001 - the broker may be down: ask again at the next tick
            metrics.RETRAIN_REQUESTS.labels(outcome="publish_failed").inc()
            log.warning("live drift: retrain request not published: %r", exc)
            return
        self.last_request_at = max(self.last_request_at or 0.0, now)  # before our own copy is read back
        self.requests_published += 1
        metrics.RETRAIN_REQUESTS.labels(outcome="published").inc()
        log.warning("live drift: asked for a retrain of %s/%s (drifted share %.2f >= %.2f for %.0f s: %s)",
                    s.model_name, snap.version, snap.share, s.drift_threshold, self.decider.sustained(now),
                    ", ".join(f.feature for f in snap.drifted[:10]))

    def _publish(self, key: bytes, value: bytes) -> None:
        """Blocking: produce one record to the control topic and wait for its ack."""
        from confluent_kafka import KafkaException, Producer

        from ja4_core.kafka_security import confluent_config

        if self._producer is None:
            self._producer = Producer({**confluent_config(self.settings), "acks": "all",
                                       "logger": logging.getLogger("stream_scorer.librdkafka")})
        errors: list[Any] = []
        self._producer.produce(self.settings.topic_control, value, key,
                               on_delivery=lambda err, msg: errors.append(err))
        left = self._producer.flush(PUBLISH_TIMEOUT_S)
        if left or not errors or errors[0] is not None:
            raise KafkaException(errors[0] if errors and errors[0] is not None else "delivery not confirmed")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(2.0)
            self._producer = None

    def describe(self) -> dict[str, Any]:
        """The ``/drift`` page."""
        snap = self.snapshot or self.live.snapshot()
        s = self.settings
        return {"replica": self.replica, "threshold": s.drift_threshold, "request_after_s": s.drift_request_after_s,
                "cooldown_s": s.drift_request_cooldown_s, "outcome": self.last_outcome,
                "sustained_s": round(self.decider.sustained(time.time()), 1),
                "requests_published": self.requests_published, "last_request": self.last_request,
                **snap.to_dict()}


def register(parts: Any) -> None:
    """Tie a worker's :class:`DriftWatch` (``parts.drift``) to its app: the partitions it is
    assigned (its rank), the control follower's records, a timer (see the module docstring)."""
    watch: DriftWatch | None = parts.drift
    if watch is None:
        return
    app, topic = parts.app, parts.settings.topic_features

    def assigned() -> list[int]:
        try:
            return sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == topic)
        except Exception:  # noqa: BLE001 - consumer not started yet
            return []

    watch.assigned = assigned
    parts.follower.on_record = watch.on_control
    app.timer(interval=TICK_S)(watch.tick)
