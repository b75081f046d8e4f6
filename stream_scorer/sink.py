"""The score sink: a Faust agent (its own consumer group) that batch-inserts score records
into ClickHouse ``ml_all_scores``.

At-least-once like the scorer: a batch is acked only after ClickHouse accepted the insert,
so a crash re-inserts at most one batch. Re-inserted rows do not duplicate query results:
``ml_all_scores`` is a ReplacingMergeTree keyed by (window_start, src_ip, ja4, host,
model_version), read with ``FINAL``. A score record that cannot become a row (it should
never happen: we produce them) goes to the DLQ with the reason instead of blocking the
partition.

With the embedded ClickHouse (chdb) only one process may open the database directory at a
time; the sink holds it while it runs. With a ClickHouse server there is no such limit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
import orjson
from faust.types import StreamT

from .settings import Settings

log = logging.getLogger(__name__)


def build_sink_app(settings: Settings) -> faust.App:
    """The sink's Faust app with its one agent."""
    from trainer.clickhouse_io import connect

    from .faust_tuning import app_settings

    app = faust.App(settings.sink_app_id,
                    **app_settings(settings, settings.sink_app_id, web_port=settings.sink_web_port,
                                   batch_max=settings.sink_batch_max,
                                   batch_wait_ms=min(settings.sink_batch_wait_ms, 500)))
    scores = app.topic(settings.topic_scores, key_serializer="raw", value_serializer="raw")
    dlq = app.topic(settings.topic_dlq, key_serializer="raw", value_serializer="raw")
    ch = connect(settings.clickhouse_url)
    ch.init_db()
    state: dict[str, Any] = {"inserted": 0, "batches": 0, "rejected": 0}

    @app.agent(scores)
    async def sink_scores(stream: StreamT) -> None:
        within = settings.sink_batch_wait_ms / 1000.0
        loop = asyncio.get_running_loop()
        async for events in stream.noack_take(settings.sink_batch_max, within=within):
            rows, bad = [], []
            for ev in events:
                try:
                    doc = orjson.loads(ev.message.value)
                    if not isinstance(doc, dict):
                        raise ValueError("not a JSON object")
                    rows.append(doc)
                except ValueError as exc:
                    bad.append((ev, f"sink: unreadable score record: {exc}"))
            delay = 1.0
            while True:  # ClickHouse down: keep the batch, retry with backoff, never skip it
                try:
                    await loop.run_in_executor(None, ch.insert_scores, rows)
                    break
                except Exception as exc:
                    if _is_data_error(exc):
                        # A row the table cannot take: insert the rest one by one, DLQ the bad.
                        bad.extend(await loop.run_in_executor(None, _insert_one_by_one, ch, rows, good_events(events, bad)))
                        break
                    log.warning("sink: insert of %d rows failed (%r); retrying in %.0fs", len(rows), exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
            pending = []
            for ev, reason in bad:
                m = ev.message
                pending.append(await app.producer.send(dlq.get_topic_name(), m.key, m.value, None, None, [
                    ("error", reason.encode()[:1000]), ("source-topic", m.topic.encode()),
                    ("source-partition", str(m.partition).encode()), ("source-offset", str(m.offset).encode())]))
            if pending:
                await asyncio.gather(*pending)
            state["inserted"] += len(rows)
            state["batches"] += 1
            state["rejected"] += len(bad)
            for ev in events:
                await stream.ack(ev)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json(state)

    return app


def _is_data_error(exc: Exception) -> bool:
    """A row the table cannot take (bad type/value), as opposed to ClickHouse being down."""
    from .errors import SchemaError

    return isinstance(exc, (SchemaError, ValueError, TypeError, KeyError, OverflowError))


def good_events(events: list, bad: list) -> list:
    """The events whose values parsed (in the same order as the rows built from them)."""
    bad_ids = {id(ev) for ev, _ in bad}
    return [ev for ev in events if id(ev) not in bad_ids]


def _insert_one_by_one(ch: Any, rows: list[dict], events: list) -> list:
    """Slow path after a data error: insert row by row, return (event, reason) of the bad."""
    bad = []
    for row, ev in zip(rows, events):
        try:
            ch.insert_scores([row])
        except Exception as exc:
            if not _is_data_error(exc):
                raise
            bad.append((ev, f"sink: score record does not fit ml_all_scores: {exc}"))
    return bad


def run_sink(settings: Settings) -> int:
    """``stream-scorer sink``: run the sink worker until SIGTERM/Ctrl-C."""
    from faust.worker import Worker

    from .cli import ensure_topics, setup_logging

    setup_logging(settings)
    ensure_topics(settings, [settings.topic_scores, settings.topic_dlq])
    app = build_sink_app(settings)
    worker = Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker.spinner = None  # its terminal escapes would corrupt log lines (and JSON logs)
    worker.on_setup_root_logger = lambda logger, level: setup_logging(settings)  # type: ignore[method-assign]
    worker.execute_from_commandline()
    return 0
