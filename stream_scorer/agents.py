"""The scoring agent: takes batches from the features topic and only moves data.

Per batch: read the active model once, call :func:`~.scoring.score_values` (pure), send
the score records and DLQ entries, wait until the broker confirmed every one of them, and
only then ack the input events so their offsets can be committed. A crash or SIGTERM in
between leaves the batch unacked: it is re-delivered (at-least-once), never skipped.
``noack_take`` is used because ``take`` acks in a ``finally`` even when the body fails.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import Counter

from faust.types import EventT, StreamT

from . import metrics
from .app import app, dlq_topic, features_topic, holder, follower, scores_topic, settings
from .parsing import Reject
from .scoring import BatchOutput, score_values

log = logging.getLogger(__name__)

WAIT_LOG_EVERY_S = 5.0


async def wait_for_model() -> None:
    """Block (without consuming) until a model is active, logging every few seconds."""
    while not holder.ready.is_set():
        log.warning("no active model for %r yet: waiting, not consuming (store %s, control topic %s)",
                    settings.model_name, holder.store.root, settings.topic_control)
        try:
            await asyncio.wait_for(holder.ready.wait(), WAIT_LOG_EVERY_S)
        except asyncio.TimeoutError:
            pass


def _dlq_headers(event: EventT, reason: str, record_index: int | None) -> list[tuple[str, bytes]]:
    msg = event.message
    headers = [("error", reason.encode()), ("source-topic", msg.topic.encode()),
               ("source-partition", str(msg.partition).encode()), ("source-offset", str(msg.offset).encode())]
    if record_index is not None:
        headers.append(("source-record-index", str(record_index).encode()))
    return headers


#: Room left in a producer request for headers and framing.
OUTPUT_HEADROOM = 64 * 1024
#: Longest key we send to the DLQ; a longer one would not fit a request either.
MAX_DLQ_KEY = 1024


def _fit_key(key: bytes | None) -> bytes | None:
    return key if key is None or len(key) <= MAX_DLQ_KEY else key[:MAX_DLQ_KEY]


def fit_outputs(out: BatchOutput, keys: list[bytes | None], values: list[bytes | None], limit: int) -> None:
    """Keep every output within the producer's request size, so one giant record can never
    crash the agent: a score record that would not fit (a huge echoed field or key) is
    dead-lettered instead, and a DLQ value that would not fit is cut, saying so in ``error``.
    (The contract's "original bytes" holds for every message below the broker's size limit.)"""
    kept = []
    for idx, value in out.scores:
        key_len = len(keys[idx] or b"")
        if len(value) + key_len <= limit - OUTPUT_HEADROOM:
            kept.append((idx, value))
        else:
            out.rejects.append(Reject(idx, values[idx] or b"", f"score record of {len(value)} bytes (key {key_len} bytes) "
                                                  f"exceeds the producer's request size limit ({limit} bytes)"))
    out.scores = kept
    for n, rej in enumerate(out.rejects):
        room = max(0, limit - OUTPUT_HEADROOM - len(_fit_key(keys[rej.message_index]) or b""))
        if len(rej.value) > room:
            out.rejects[n] = Reject(rej.message_index, rej.value[:room],
                                    f"{rej.reason} (DLQ value cut from {len(rej.value)} to {room} bytes: above the "
                                    "producer's request size limit)", rej.record_index)


def _fail_batch(values: list[bytes | None], reason: str) -> BatchOutput:
    """Dead-letter a whole batch when scoring itself failed: nothing is lost or skipped."""
    return BatchOutput(rejects=[Reject(i, v or b"", reason) for i, v in enumerate(values)],
                       records_in=len(values))


#: One scoring thread per worker: isotree, XGBoost and torch release the GIL, so the event
#: loop keeps fetching, producing and heartbeating while a batch is scored.
_SCORING_POOL = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="score")


async def process_batch(events: list[EventT]) -> None:
    model = holder.active  # one reference for the whole batch: never a half-swapped model
    assert model is not None
    values = [e.message.value for e in events]
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    try:
        out = await loop.run_in_executor(_SCORING_POOL, score_values, values, model.bundle)
    except Exception as exc:  # a model bug must not stall the partition or lose the batch
        log.exception("scoring failed for a batch of %d messages", len(values))
        out = _fail_batch(values, f"scoring failed: {exc!r}"[:500])
    metrics.SCORING_SECONDS.observe(time.perf_counter() - started)
    keys = [e.message.key for e in events]
    fit_outputs(out, keys, values, app.conf.producer_max_request_size)
    producer = app.producer
    scores_name, dlq_name = scores_topic.get_topic_name(), dlq_topic.get_topic_name()
    version_header = [("model-version", model.version.encode())]
    # Queue every record (each ``send`` only appends to the producer's buffer and returns a
    # delivery future; awaiting it in turn is cheaper than a task per record), then wait
    # until the broker confirmed each one: only then may the input offsets be committed.
    send = producer.send
    delivered = []
    for idx, value in out.scores:
        delivered.append(await send(scores_name, keys[idx], value, None, None, version_header))
    for rej in out.rejects:
        ev = events[rej.message_index]
        delivered.append(await send(dlq_name, _fit_key(keys[rej.message_index]), rej.value, None, None,
                                    _dlq_headers(ev, rej.reason, rej.record_index)))
        metrics.DLQ.labels(reason=metrics.dlq_category(rej.reason)).inc()
    if delivered:
        await asyncio.gather(*delivered)
    metrics.MESSAGES_IN.inc(len(events))
    metrics.RECORDS_IN.inc(out.records_in)
    metrics.BATCH_SIZE.observe(len(out.scores))
    for level, n in Counter(out.levels).items():
        metrics.RECORDS_SCORED.labels(threat_level=level).inc(n)
    for feat, count in out.imputed_counts.items():
        metrics.IMPUTED.labels(feature=feat).inc(count)
    now = time.time()
    for ev in (events[0], events[-1]):
        ts = ev.message.timestamp
        if ts:
            metrics.E2E_LAG.observe(max(0.0, now - ts))


@app.agent(features_topic)
async def score_features(stream: StreamT) -> None:
    await wait_for_model()
    within = settings.scorer_batch_wait_ms / 1000.0
    async for events in stream.noack_take(settings.scorer_batch_max, within=within):
        batch = list(events)
        task = asyncio.ensure_future(process_batch(batch))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # SIGTERM/rebalance while a batch is in hand: finish it (its outputs are already
            # being produced), ack it so the final commit includes it, then stop.
            await task
            for event in batch:
                await stream.ack(event)
            raise
        for event in batch:
            await stream.ack(event)


@app.task
async def follow_control() -> None:
    """Every replica follows the whole control topic (see :mod:`.control_follower`)."""
    await follower.run()


@app.timer(interval=5.0)
async def sample_consumer_lag() -> None:
    """Consumer lag per assigned partition: high watermark minus committed offset."""
    consumer = app.consumer
    try:
        assigned = [tp for tp in consumer.assignment() if tp.topic == settings.topic_features]
    except Exception:  # consumer not started yet
        return
    metrics.ASSIGNED_PARTITIONS.set(len(assigned))
    seen = set()
    for tp in assigned:
        try:
            high = consumer.highwater(tp)
        except Exception:
            continue
        committed = consumer._committed_offset.get(tp)  # noqa: SLF001 - Faust keeps no public accessor
        if high is None:
            continue
        lag = max(0, int(high) - int(committed or 0))
        metrics.CONSUMER_LAG.labels(partition=str(tp.partition)).set(lag)
        seen.add(str(tp.partition))
    for labels in list(metrics.CONSUMER_LAG._metrics):  # noqa: SLF001 - drop revoked partitions
        if labels[0] not in seen:
            metrics.CONSUMER_LAG.remove(*labels)

