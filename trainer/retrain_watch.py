"""The trainer's ear on the control topic: a replica's retrain request wakes ``stream-trainer loop``.

A thread follows the control topic (no consumer group, from the start: a request published
while the trainer was down still counts) and keeps the retrain requests
(:mod:`ja4_core.retrain_request`) that pass every check of :meth:`RequestWatcher.accept`:

* verified (signed with an accepted key when ``CONTROL_SIGNING_KEY`` is set, well formed);
* for this trainer's model, and about the version the store serves now (``CURRENT``): a
  request about a version already replaced is stale, so once the retrain has made a new
  version current the rest of a flood changes nothing;
* issued within the last ``DRIFT_REQUEST_COOLDOWN_S`` (an old request replayed from the topic
  is history, not news), and at most one accepted per cool-down: a flood, or requests of
  several replicas at once, give one retrain.

The loop waits on :meth:`RequestWatcher.wait` instead of sleeping, runs at once with the
request (:func:`requested_plan` makes it a ``drift`` run that records the request's figures
in ``model_training_history``), then goes back to its interval.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from typing import Any, Callable

from ja4_core.bundle import ModelStore
from ja4_core.errors import ControlError
from ja4_core.retrain_request import RetrainRequest, is_retrain_request, parse_retrain_request
from ja4_core.settings import Settings
from trainer.plan import TrainingPlan

log = logging.getLogger(__name__)

_RDKAFKA_LOG = logging.getLogger("trainer.librdkafka")


def requested_plan(plan: TrainingPlan, request: RetrainRequest) -> TrainingPlan:
    """A training plan made a ``drift`` run by a replica's request (its figures recorded)."""
    if plan.action != "train":
        return plan
    return dataclasses.replace(plan, reason="drift", requested=request.figures())


class RequestWatcher:
    """Follows the control topic in a thread; :meth:`wait` returns an accepted request."""

    def __init__(self, settings: Settings, store: ModelStore, stop: threading.Event, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.stop = stop
        self.clock = clock
        self.outcomes: Counter[str] = Counter()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pending: RetrainRequest | None = None
        self._accepted_at: float | None = None
        self._thread: threading.Thread | None = None

    # -- the checks (no Kafka) ----------------------------------------------------------
    def offer(self, value: bytes | None) -> str:
        """Parse, verify and judge one raw control value; returns the outcome (counted)."""
        if not is_retrain_request(value):
            return "not_a_request"
        try:
            request = parse_retrain_request(value, self.settings.signing_keys,
                                            max_future_skew_s=self.settings.control_max_future_skew_s)
        except ControlError as exc:
            outcome = "refused:" + exc.reason
            log.warning("retrain request refused (%s): %s", exc.reason, exc)
        else:
            outcome = self.accept(request)
        self.outcomes[outcome] += 1
        return outcome

    def accept(self, request: RetrainRequest) -> str:
        """``accepted`` (the loop runs now) or ``ignored:<why>``: see the module docstring."""
        s = self.settings
        if request.model != s.model_name:
            return "ignored:other_model"
        now = self.clock()
        if request.issued_at_dt.timestamp() < now - s.drift_request_cooldown_s:
            return "ignored:old"
        current = self.store.current(s.model_name)
        if request.version != current:
            return "ignored:stale_version"
        with self._lock:
            if self._accepted_at is not None and now - self._accepted_at < s.drift_request_cooldown_s:
                return "ignored:cooldown"
            self._accepted_at = now
            self._pending = request
        log.warning("retrain requested by %s for %s/%s (drifted share %.2f >= %.2f: %s): running now",
                    request.issued_by, request.model, request.version, request.drift_share, request.threshold,
                    request.drifted or "-")
        self._wake.set()
        return "accepted"

    def wait(self, timeout: float) -> RetrainRequest | None:
        """Sleep up to ``timeout`` (less on a stop or an accepted request); the request, if any."""
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._wake.wait(min(left, 0.5)):
                break
        with self._lock:
            self._wake.clear()
            request, self._pending = self._pending, None
        return request

    # -- the thread ---------------------------------------------------------------------
    def start(self) -> "RequestWatcher":
        self._thread = threading.Thread(target=self._follow, name="retrain-watch", daemon=True)
        self._thread.start()
        return self

    def _follow(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

        from ja4_core.kafka_security import confluent_config

        if not log.isEnabledFor(logging.DEBUG):
            _RDKAFKA_LOG.setLevel(logging.CRITICAL)
        consumer: Any = None
        try:
            consumer = Consumer({**confluent_config(self.settings), "logger": _RDKAFKA_LOG,
                                 "group.id": f"ja4-trainer-watch-{int(time.time() * 1000)}",
                                 "enable.auto.commit": False, "auto.offset.reset": "earliest"})
            # The control topic has one partition (ja4_core.kafka_admin.control_topic).
            consumer.assign([TopicPartition(self.settings.topic_control, 0, OFFSET_BEGINNING)])
            while not self.stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.debug("retrain watch: %s", msg.error())
                    continue
                try:
                    self.offer(msg.value())
                except Exception:  # noqa: BLE001 - one bad message must not stop the watch
                    log.exception("retrain watch: a control message could not be judged")
        except Exception:  # noqa: BLE001 - the loop keeps its interval without the watch
            log.exception("retrain watch stopped; the loop keeps checking every %g s",
                          self.settings.trainer_check_interval_s)
        finally:
            if consumer is not None:
                consumer.close()
