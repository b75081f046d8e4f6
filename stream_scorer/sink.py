"""The score sink: a Faust agent (its own consumer group) that batch-inserts score records
into ClickHouse ``ml_all_scores``, and a second one that writes the challenger's records of
``TOPIC_SHADOW_SCORES`` to ``ml_shadow_scores`` (:mod:`ja4_core.shadow_table`). The label
feed (:mod:`.label_sink`: analyst labels of ``TOPIC_LABELS`` into ``soc_labels``) and the review
console's read (``/console/rows``, :mod:`.console_data`) share its ClickHouse connection and thread.

At-least-once like the scorer: a batch is acked only after ClickHouse accepted its rows and
the broker confirmed its DLQ entries, so a crash re-inserts at most one batch. Re-inserted
rows do not duplicate query results: ``ml_all_scores`` is a ReplacingMergeTree keyed by
(window_start, src_ip, ja4, host, model_version), read with ``FINAL``.

Per batch: every score record is read and checked on its own (:func:`read_score`: JSON, the
fields a row needs, a ``window_start`` the contract accepts, e.g. from an older scorer that
did not check it); one that cannot become a row goes to the DLQ with the reason. The rest is
written by :class:`~.sink_writer.ScoreWriter`: rows ClickHouse refuses are found by splitting
the batch in halves and dead-lettered, an outage is retried ``OUTPUT_DELIVERY_ATTEMPTS``
times with backoff (``/ready`` says 503 meanwhile). If the batch still cannot be written, the
sink reads nothing more, stops (committing only what was acked, never the unwritten batch)
and exits with :data:`EXIT_WRITE_FAILED`, so the group re-delivers the batch to the next sink.
``inserted`` (``/health``) and ``ja4_sink_rows_inserted_total`` (``/metrics``) count the rows
written, not the dead-lettered ones.

With the embedded ClickHouse (chdb) only one process may open the database directory at a
time; the sink holds it while it runs. With a ClickHouse server there is no such limit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any, Callable, Iterator

import faust
import orjson
from faust.types import StreamT

from ja4_core.errors import SchemaError
from ja4_core.settings import Settings
from stream_scorer.parsing import RejectCategory
from stream_scorer.sink_writer import ScoreWriter, consume_batches

log = logging.getLogger(__name__)

#: Exit status when a batch could not be written after every attempt (``EX_TEMPFAIL``):
#: restart the sink; its consumer group re-delivers the unwritten batch.
EXIT_WRITE_FAILED = 75


def read_score(value: bytes | None) -> list[Any]:
    """A score record's bytes -> its ``ml_all_scores`` row, or :class:`SchemaError` with the
    reason (not JSON, not an object, a field missing or unusable)."""
    from ja4_core.clickhouse_io import score_row

    if value is None:
        raise SchemaError("unreadable score record: no value")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"unreadable score record: {str(exc).splitlines()[0][:200]}") from None
    try:
        return score_row(doc)
    except SchemaError as exc:
        raise SchemaError(f"score record does not fit ml_all_scores: {exc}") from None


def _stop_process(exc: BaseException) -> None:
    """The worker's own graceful stop (as on SIGTERM): commits what was acked, then exits."""
    signal.raise_signal(signal.SIGTERM)


class _SinkCollector:
    """``/metrics`` of the sink, read from its counters at scrape time."""

    def __init__(self, state: dict[str, Any], writer: ScoreWriter, ready: Callable[[], bool]) -> None:
        self.state, self.writer, self.ready = state, writer, ready

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        w, st = self.writer, self.state
        yield CounterMetricFamily("ja4_sink_rows_inserted", "Score rows written to ml_all_scores", value=st["inserted"])
        yield CounterMetricFamily("ja4_sink_batches", "Batches written and acked", value=st["batches"])
        dlq = CounterMetricFamily("ja4_sink_dlq", "Score records the sink dead-lettered, by reason", labels=["reason"])
        dlq.add_metric(["invalid"], st["rejected"] - w.refused_rows)  # could not become a row
        dlq.add_metric(["refused"], w.refused_rows)                    # ClickHouse refused the row
        yield dlq
        yield CounterMetricFamily("ja4_sink_inserts", "INSERT statements sent to ClickHouse", value=w.inserts)
        yield CounterMetricFamily("ja4_sink_write_failures", "Insert attempts that failed for a reason not about "
                                  "the data (ClickHouse down, timeout, table unusable)", value=w.failed_attempts)
        yield CounterMetricFamily("ja4_sink_write_retries", "Inserts tried again after such a failure", value=w.retries)
        yield GaugeMetricFamily("ja4_sink_write_blocked", "1 while a batch waits to be written (retrying)",
                                value=int(w.blocked or st["failed"] is not None))
        yield GaugeMetricFamily("ja4_sink_ready", "1 when partitions are assigned and writes succeed", value=int(self.ready()))


def build_sink_app(settings: Settings, on_fatal: Callable[[BaseException], None] = _stop_process) -> faust.App:
    """The sink's Faust app with its one agent and its web views. ``on_fatal`` is called once
    when a batch cannot be written; the agent then reads nothing more."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    from ja4_core.clickhouse_io import connect, is_data_error
    from stream_scorer.faust_app_args import app_settings

    app = faust.App(settings.sink_app_id,
                    **app_settings(settings, settings.sink_app_id, web_port=settings.sink_web_port,
                                   batch_max=settings.sink_batch_max),
                    # On stop or rebalance, commit what was acked and go: never wait for a batch
                    # that cannot be written (it is re-delivered; re-inserts do not duplicate).
                    stream_wait_empty=False)
    scores = app.topic(settings.topic_scores, key_serializer="raw", value_serializer="raw")
    shadow_scores = app.topic(settings.topic_shadow_scores, key_serializer="raw", value_serializer="raw")
    dlq = app.topic(settings.topic_dlq, key_serializer="raw", value_serializer="raw")
    ch = connect(settings.clickhouse_url)
    ch.init_db()
    writer: ScoreWriter = ScoreWriter(ch.insert_score_rows, attempts=settings.output_delivery_attempts,
                                      backoff_s=settings.output_retry_backoff_s, is_data_error=is_data_error)
    state: dict[str, Any] = {"inserted": 0, "batches": 0, "rejected": 0, "failed": None,
                             "shadow_inserted": 0, "shadow_rejected": 0}
    from ja4_core.shadow_table import insert_shadow_rows

    # The challenger's records (issue 17) share the writer's rules but not its rows' table.
    shadow_writer: ScoreWriter = ScoreWriter(lambda rows: insert_shadow_rows(ch, rows),
                                             attempts=settings.output_delivery_attempts,
                                             backoff_s=settings.output_retry_backoff_s, is_data_error=is_data_error,
                                             pool=writer.pool)  # one thread per connection (chdb)

    def assigned() -> list[int]:
        try:
            return sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == settings.topic_scores)
        except Exception:  # consumer not started yet
            return []

    def ready() -> bool:
        return bool(assigned()) and not writer.blocked and state["failed"] is None

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SinkCollector(state, writer, ready))

    async def dead_letter(bad: list[tuple[Any, RejectCategory, str]]) -> None:
        """Each (event, category, reason) to the DLQ, confirmed; the category is set where the
        reject is made (``sink_invalid``: not a row; ``sink_refused``: ClickHouse refused it)."""
        pending = []
        for ev, category, reason in bad:
            m = ev.message
            pending.append(await app.producer.send(dlq.get_topic_name(), m.key, m.value, None, None, [
                ("error", reason.encode()[:1000]), ("error-category", category.encode()),
                ("source-topic", m.topic.encode()),
                ("source-partition", str(m.partition).encode()), ("source-offset", str(m.offset).encode())]))
        if pending:
            await asyncio.gather(*pending)  # confirmed by the broker before the batch is acked

    # The label feed (TOPIC_LABELS -> soc_labels) and the review console's read of ClickHouse.
    from stream_scorer.console_data import install_review_api
    from stream_scorer.label_sink import install_label_feed, label_health

    labels = install_label_feed(app, settings, ch, writer, registry, dead_letter, state, on_fatal)
    install_review_api(app, settings, ch, writer.pool)

    async def sink_batch(stream: StreamT, events: list) -> None:
        rows, row_events = [], []
        bad: list[tuple[Any, RejectCategory, str]] = []
        for ev in events:
            try:
                rows.append(read_score(ev.message.value))
                row_events.append(ev)
            except SchemaError as exc:
                bad.append((ev, "sink_invalid", f"sink: {exc}"[:1000]))
        refused = await writer.write(rows, row_events)
        await dead_letter(bad + [(ev, "sink_refused", reason) for ev, reason in refused])
        state["inserted"] += len(rows) - len(refused)
        state["batches"] += 1
        state["rejected"] += len(bad) + len(refused)
        for ev in events:
            await stream.ack(ev)

    @app.agent(scores)
    async def sink_scores(stream: StreamT) -> None:
        await consume_batches(stream, sink_batch, what="score records", batch_max=settings.sink_batch_max,
                              within_s=settings.sink_batch_wait_ms / 1000.0, state=state, on_fatal=on_fatal)

    async def sink_shadow_batch(stream: StreamT, events: list) -> None:
        """Shadow score records -> ``ml_shadow_scores``, with the same at-least-once rule and
        the same dead-lettering of records that cannot be rows."""
        from ja4_core.shadow_table import shadow_row

        rows, row_events = [], []
        bad: list[tuple[Any, RejectCategory, str]] = []
        for ev in events:
            try:
                value = ev.message.value
                rows.append(shadow_row(orjson.loads(value) if value is not None else None))  # type: ignore[arg-type]
                row_events.append(ev)
            except (SchemaError, orjson.JSONDecodeError) as exc:
                bad.append((ev, "sink_invalid", f"sink: shadow score record: {exc}"[:1000]))
        refused = await shadow_writer.write(rows, row_events)
        await dead_letter(bad + [(ev, "sink_refused", reason) for ev, reason in refused])
        state["shadow_inserted"] += len(rows) - len(refused)
        state["shadow_rejected"] += len(bad) + len(refused)
        for ev in events:
            await stream.ack(ev)

    @app.agent(shadow_scores)
    async def sink_shadow_scores(stream: StreamT) -> None:
        await consume_batches(stream, sink_shadow_batch, what="shadow score records",
                              batch_max=settings.sink_batch_max, within_s=settings.sink_batch_wait_ms / 1000.0,
                              state=state, on_fatal=on_fatal)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"alive": True, **state, "ready": ready(), "partitions": assigned(),
                         "labels": label_health(labels)})

    @app.page("/ready")
    async def readiness(web: Any, request: Any) -> Any:
        ok = ready()
        return web.json({"ready": ok, "partitions": assigned(), "write_blocked": writer.blocked,
                         "failed": state["failed"]}, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    return app


def run_sink(settings: Settings) -> int:
    """``stream-scorer sink``: run the sink worker until SIGTERM/Ctrl-C."""
    from ja4_core.kafka_admin import ensure_topics, sink_topics
    from stream_scorer.faust_app_args import prepare_process
    from stream_scorer.faust_worker import run_worker, setup_logging

    setup_logging(settings)
    prepare_process(settings, settings.sink_app_id, batch_wait_ms=min(settings.sink_batch_wait_ms, 500))
    ensure_topics(settings, sink_topics(settings))
    failures: list[BaseException] = []

    def on_fatal(exc: BaseException) -> None:
        failures.append(exc)
        _stop_process(exc)

    app = build_sink_app(settings, on_fatal)
    try:
        run_worker(app, settings)
    except SystemExit:
        if not failures:
            raise
    return EXIT_WRITE_FAILED if failures else 0
