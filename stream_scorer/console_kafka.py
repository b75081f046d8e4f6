"""The review console's Kafka side: the label producer and the fleet's figures (the model
served and its challenger, DLQ entries, the scorers' consumer lag).

Everything here blocks (librdkafka calls); the console runs it on a worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson

from ja4_core.errors import Ja4StreamError
from ja4_core.label_record import Label
from ja4_core.logs import redact
from ja4_core.settings import Settings

log = logging.getLogger(__name__)


class LabelNotDelivered(Ja4StreamError):
    """The broker did not confirm a label (Kafka down, the topic refusing it)."""


class LabelProducer:
    """Sends labels to ``TOPIC_LABELS`` (key = ``src_ip``), each confirmed (``acks=all``)
    before :meth:`send` returns."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Producer

        from ja4_core.kafka_security import confluent_config

        self.topic = settings.topic_labels
        self._producer = Producer({**confluent_config(settings), "acks": "all", "enable.idempotence": True,
                                   "linger.ms": 0, "message.timeout.ms": 15000})
        self._lock = threading.Lock()

    def send(self, label: Label, timeout_s: float = 20.0) -> None:
        outcome: dict[str, Any] = {}

        def delivered(err: Any, msg: Any) -> None:
            outcome["err"] = err

        with self._lock:
            self._producer.produce(self.topic, orjson.dumps(label.as_message()), label.src_ip.encode(),
                                   on_delivery=delivered)
            self._producer.flush(timeout_s)
        if outcome.get("err") is not None or "err" not in outcome:
            raise LabelNotDelivered(f"label not confirmed by the broker: {redact(outcome.get('err', 'timeout'))}")

    def close(self) -> None:
        self._producer.flush(5)


class FleetStatus:
    """The model served (and its challenger), DLQ entries and the scorers' lag, cached for
    ``ttl_s`` (the page polls; the control topic is read from its start each time)."""

    def __init__(self, settings: Settings, ttl_s: float = 5.0) -> None:
        self.settings = settings
        self.ttl_s = ttl_s
        self._at = 0.0
        self._last: dict[str, Any] = {}
        self._consumer: Any = None
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl_s:
                self._last = {"model": self._model(), **self._offsets(), "checked_at": time.time()}
                self._at = time.monotonic()
            return self._last

    def _model(self) -> dict[str, Any]:
        from ja4_core.control_log import read_control_latest

        try:
            entry = read_control_latest(self.settings, timeout_s=5.0).get(self.settings.model_name)
        except Exception as exc:  # Kafka down: say so on the page
            return {"error": f"control topic unreadable: {redact(exc)}"[:300]}
        if entry is None or entry.message is None:
            return {"champion": None, "challenger": None,
                    "error": entry.error if entry is not None else "no model announced yet"}
        msg = entry.message
        challenger = getattr(entry, "challenger", None)  # present once champion/challenger exists
        return {"champion": {"version": msg.version, "issued_at": str(msg.issued_at), "issued_by": msg.issued_by},
                "challenger": None if challenger is None else {"version": getattr(challenger, "version", None),
                                                               "issued_at": str(getattr(challenger, "issued_at", ""))}}

    def _offsets(self) -> dict[str, Any]:
        from confluent_kafka import Consumer, TopicPartition

        from ja4_core.kafka_security import confluent_config

        s = self.settings
        try:
            if self._consumer is None:
                # The scorers' group id, to read its committed offsets; it never subscribes, so it
                # never joins the group.
                self._consumer = Consumer({**confluent_config(s), "group.id": s.scorer_app_id,
                                           "enable.auto.commit": False, "log_level": 2})
            c = self._consumer
            meta = c.list_topics(timeout=5)
            out: dict[str, Any] = {}
            for name, topic in ((s.topic_dlq, "dlq"), (s.topic_features, "lag"), (s.topic_labels, "labels")):
                t = meta.topics.get(name)
                parts = sorted(t.partitions) if t is not None and t.error is None else []
                tps = [TopicPartition(name, p) for p in parts]
                marks = [c.get_watermark_offsets(tp, timeout=5, cached=False) for tp in tps]
                if topic == "lag":
                    committed = c.committed(tps, timeout=5) if tps else []
                    out["lag"] = sum(hi - (cm.offset if cm.offset >= 0 else lo)
                                     for (lo, hi), cm in zip(marks, committed))
                else:
                    out[topic] = sum(hi - lo for lo, hi in marks)
            return out
        except Exception as exc:  # Kafka down
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
            return {"kafka_error": f"{redact(exc)}"[:300]}

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
