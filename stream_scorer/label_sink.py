"""The label feed: a second agent of the sink that stores analyst labels from
``TOPIC_LABELS`` in ClickHouse ``soc_labels``, where the trainer reads them.

It lives in the sink because the sink already holds the ClickHouse connection (with the
embedded engine, the only one a process may hold) and already dead-letters what it cannot
store. Each message is checked on its own by :func:`ja4_core.label_record.read_label` (the
same check as ``stream-trainer label --file``); a bad one goes to ``TOPIC_DLQ`` with
``error-category: label_invalid``, ``source-topic`` = ``TOPIC_LABELS`` and an ``error``
starting ``labels: ``, and the rest of the batch is stored. A label whose key
``ml_all_scores`` has never seen is stored too, and counted apart (``unscored``): an analyst
may label from another tool, and the trainer joins labels to feature rows, not to scores.

Delivery is at-least-once, as for scores: a batch is acked after ClickHouse took its labels
(retried like the score inserts, on the same ClickHouse thread) and the broker confirmed its
DLQ entries. A label stored twice changes nothing: the newest label of a key wins.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Iterator, Sequence

from faust.types import StreamT

from ja4_core.label_record import Label, LabelError, read_label
from ja4_core.settings import Settings
from stream_scorer.sink_writer import ScoreWriter, consume_batches

log = logging.getLogger(__name__)

DeadLetter = Callable[[list[tuple[Any, Any, str]]], Awaitable[None]]


class LabelStore:
    """Stores valid labels (called on the ClickHouse thread) and counts what happened."""

    def __init__(self, ch: Any) -> None:
        self.ch = ch
        self.stored = 0    #: labels written to soc_labels
        self.unscored = 0  #: ... of which for a key ml_all_scores has no row for
        self.rejected = 0  #: labels dead-lettered

    def store(self, labels: Sequence[Label]) -> None:
        scored = self.ch.scored_keys([lab.key for lab in labels])
        self.ch.insert_labels([lab.as_row() for lab in labels])
        self.stored += len(labels)
        self.unscored += sum(lab.key not in scored for lab in labels)


class _LabelCollector:
    """``ja4_sink_labels_total{outcome}`` on the sink's ``/metrics``."""

    def __init__(self, store: LabelStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        st = self.store
        c = CounterMetricFamily("ja4_sink_labels", "Analyst labels of TOPIC_LABELS, by outcome: stored (for a "
                                "scored window), unscored (stored; no score of that window), dead-lettered",
                                labels=["outcome"])
        c.add_metric(["stored"], st.stored - st.unscored)
        c.add_metric(["unscored"], st.unscored)
        c.add_metric(["dead_lettered"], st.rejected)
        yield c


def install_label_feed(app: Any, settings: Settings, ch: Any, scores_writer: ScoreWriter, registry: Any,
                       dead_letter: DeadLetter, state: dict[str, Any],
                       on_fatal: Callable[[BaseException], None]) -> LabelStore:
    """Add the label agent to the sink ``app``; its counters go to ``registry`` (and to
    ``/health`` through :func:`label_health`). ``state["failed"]`` and ``on_fatal`` are the
    sink's own: a batch of labels that cannot be written stops the sink like one of scores."""
    from ja4_core.clickhouse_io import is_data_error

    store = LabelStore(ch)
    writer: ScoreWriter = ScoreWriter(store.store, attempts=settings.output_delivery_attempts,
                                      backoff_s=settings.output_retry_backoff_s, is_data_error=is_data_error,
                                      pool=scores_writer.pool)
    registry.register(_LabelCollector(store))
    topic = app.topic(settings.topic_labels, key_serializer="raw", value_serializer="raw")

    async def label_batch(stream: StreamT, events: list) -> None:
        labels, label_events, bad = [], [], []
        for ev in events:
            try:
                labels.append(read_label(ev.message.value))
                label_events.append(ev)
            except LabelError as exc:
                bad.append((ev, "label_invalid", f"labels: {exc}"[:1000]))
        refused = await writer.write(labels, label_events)
        bad += [(ev, "label_invalid", "labels: " + reason.removeprefix("sink: score record "))
                for ev, reason in refused]
        await dead_letter(bad)
        store.rejected += len(bad)
        for ev in events:
            await stream.ack(ev)

    @app.agent(topic, name="stream_scorer.label_sink.labels")
    async def sink_labels(stream: StreamT) -> None:
        await consume_batches(stream, label_batch, what="labels", batch_max=500,
                              within_s=settings.sink_batch_wait_ms / 1000.0, state=state, on_fatal=on_fatal)

    return store


def label_health(store: LabelStore) -> dict[str, int]:
    """The label counters for the sink's ``/health``."""
    return {"stored": store.stored, "unscored": store.unscored, "dead_lettered": store.rejected}
