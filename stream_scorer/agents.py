"""The scoring agent: reads the features topic, batches, scores, produces; only moves data.

The agent takes its input from the worker's consumer a fetch at a time: the consumer puts each
partition's fetched messages, in offset order, into the agent's bounded
:class:`~.batcher.Batcher` (:mod:`.bulk_consumer` says why: Faust's per-message path cost more
than the models); three stage tasks take batches from it. Per batch: read the active
model once, parse (:func:`~.parsing.parse_batch`, Python thread), run the models
(:func:`~.scoring.score_matrix`, pure, scoring thread), turn the scores into records
(:func:`~.scoring.serialise`, Python thread), send the score records and DLQ entries, wait
until the broker confirmed every one of them, and only then ack the input messages through
Faust's consumer so their offsets can be committed. A crash or SIGTERM in between leaves the
batch unacked: it is re-delivered (at-least-once), never skipped. Everything overlaps: the
consumer fetches and hands over while batches move through the stages, and
``ja4_stage_seconds`` says where a batch's time goes.

A batch whose outputs the broker did not all confirm is sent again, only its unconfirmed
records, up to ``OUTPUT_DELIVERY_ATTEMPTS`` times (``/ready`` answers 503 meanwhile). If it
still fails, or a stage fails in any other way, the worker never goes on past the batch: the
agent is not left to Faust's supervisor (which would restart it on the same stream, drop the
batches in hand, and let Faust's offset tracking commit past the hole), but
:func:`fail_worker` stops acking and committing for good, logs why and stops the process
with :data:`EXIT_DELIVERY_FAILED` (or :data:`EXIT_PIPELINE_FAILED`), so the consumer group
hands the partitions, from their last committed offset, to a replica that can deliver.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import cast

import faust
from faust.exceptions import AlreadyConfiguredWarning
from faust.types import Message, StreamT, TopicT

from ja4_core.settings import Settings
from stream_scorer import metrics
from stream_scorer.batcher import Batcher
from stream_scorer.batcher import Closed as BatcherClosed
from stream_scorer.bulk_consumer import BulkConsumer
from stream_scorer.bulk_inbox import BulkApp, BulkInbox
from stream_scorer.control_follower import ControlFollower
from stream_scorer.drift_watch import DriftWatch
from stream_scorer.model_holder import ActiveModel, ModelHolder
from stream_scorer.output_producer import (
    EXIT_DELIVERY_FAILED,
    DeliveryExhausted,
    DeliveryFailed,
    DeliveryHealth,
    Output,
    OutputProducer,
    RetryPolicy,
    producer_config,
)
from stream_scorer.parsing import ParsedBatch, Reject, parse_batch
from stream_scorer.scoring import BatchOutput, ScoredMatrix, reasons_from, score_matrix, serialise
from stream_scorer.shadow import ShadowScored, ShadowSender, score_beside, shadow_outputs
from stream_scorer.worker_parts import WorkerParts

log = logging.getLogger(__name__)

# The worker's parts, bound by :func:`register` when the app is built (one app per process);
# importing this module binds and builds nothing.
app: faust.App
settings: Settings
holder: ModelHolder
follower: ControlFollower
features_topic: TopicT
scores_topic: TopicT
dlq_topic: TopicT


def register(parts: WorkerParts) -> None:
    """Bind this module to a worker's parts and register its agent, task and timer
    with the app (called once by :func:`stream_scorer.app.create_app`)."""
    global app, settings, holder, follower, features_topic, scores_topic, dlq_topic
    app, settings, holder, follower = parts.app, parts.settings, parts.holder, parts.follower
    features_topic, scores_topic, dlq_topic = parts.features_topic, parts.scores_topic, parts.dlq_topic
    app.agent(features_topic)(score_features)
    app.task(follow_control)
    app.timer(interval=SAMPLE_LAG_EVERY_S)(sample_consumer_lag)
    global live_drift
    live_drift = parts.drift

WAIT_LOG_EVERY_S = 5.0
#: How often the consumer lag per assigned partition is sampled (s).
SAMPLE_LAG_EVERY_S = 5.0


async def wait_for_model() -> None:
    """Block (without consuming) until a model is active, logging every few seconds."""
    while not holder.ready.is_set():
        log.warning("no active model for %r yet: waiting, not consuming (store %s, control topic %s)",
                    settings.model_name, holder.store.root, settings.topic_control)
        try:
            await asyncio.wait_for(holder.ready.wait(), WAIT_LOG_EVERY_S)
        except asyncio.TimeoutError:
            pass


def _dlq_headers(msg: Message, rej: Reject) -> list[tuple[str, bytes]]:
    record_index = rej.record_index
    headers = [("error", rej.reason.encode()), ("error-category", rej.category.encode()),
               ("source-topic", msg.topic.encode()),
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
                                                  f"exceeds the producer's request size limit ({limit} bytes)",
                                      category="oversized"))
    out.scores = kept
    for n, rej in enumerate(out.rejects):
        room = max(0, limit - OUTPUT_HEADROOM - len(_fit_key(keys[rej.message_index]) or b""))
        if len(rej.value) > room:
            out.rejects[n] = Reject(rej.message_index, rej.value[:room],
                                    f"{rej.reason} (DLQ value cut from {len(rej.value)} to {room} bytes: above the "
                                    "producer's request size limit)", rej.record_index, category=rej.category)


def _fail_batch(values: list[bytes | None], reason: str) -> BatchOutput:
    """Dead-letter a whole batch when scoring itself failed: nothing is lost or skipped."""
    return BatchOutput(rejects=[Reject(i, v or b"", reason, category="scoring_error") for i, v in enumerate(values)],
                       records_in=len(values))


_OUTPUT: OutputProducer | None = None


def output_producer() -> OutputProducer:
    """The worker's one output producer, created at first use (see :mod:`.output_producer`)."""
    global _OUTPUT
    if _OUTPUT is None:
        _OUTPUT = OutputProducer(producer_config(settings, app.conf.producer_max_request_size,
                                                 linger_ms=OUTPUT_LINGER_MS))
    return _OUTPUT


#: librdkafka waits this long to fill a produce request: a batch's records leave together.
OUTPUT_LINGER_MS = 2


async def close_output_producer() -> None:
    """Flush and close the output producer once the agent has finished its batches (called
    by its stop): what the drain sent is confirmed before the consumer's final commit, and no
    record of the drain needs a producer of its own. (Faust stops the app's services before
    its agents, so a service closed it too early: the drain's batches then opened a second
    producer, a new connection at stop.)"""
    global _OUTPUT
    out, _OUTPUT = _OUTPUT, None
    if out is not None:
        left = await asyncio.get_running_loop().run_in_executor(None, out.close)
        if left:
            log.warning("output producer closed with %d records undelivered (their inputs were not acked)", left)


#: Two threads per worker. The scoring thread runs the models (the EIF and autoencoder
#: evaluators and XGBoost release the GIL); the Python thread does the GIL-bound per-record
#: work, JSON -> matrix for the next batch and scores -> bytes for the batch before. So the
#: models never wait for JSON work, and the event loop keeps fetching, producing and
#: heartbeating meanwhile.
_SCORING_POOL = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="score")
_PYTHON_POOL = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="records")


@dataclass
class ParsedWork:
    """One batch on its way through the stages, with the model it was parsed for."""

    messages: list[Message]         #: the batch's input messages, each partition's in offset order
    values: list[bytes | None]      #: their values, in order
    model: ActiveModel
    parsed: ParsedBatch | None      #: None when parsing itself failed (see ``error``)
    error: str | None = None
    parsed_at: float = 0.0          #: ``time.monotonic()`` when parsing ended
    scored: ScoredMatrix | None = None  #: set by the score stage unless it failed (see ``error``)
    shadow: ShadowScored | None = None  #: the challenger's scores, when one shadows (see :mod:`.shadow`)


def _stage(name: str, since: float) -> float:
    """Record ``now - since`` for a stage (see ``metrics.STAGE_SECONDS``); return now."""
    now = time.monotonic()
    metrics.STAGE[name].observe(max(0.0, now - since))
    return now


#: The replica's live drift (:mod:`.drift_watch`), bound by :func:`register`; None: off.
live_drift: DriftWatch | None = None


def parse_and_watch(values: list[bytes | None], model: ActiveModel) -> ParsedBatch:
    """Parse a batch for ``model`` and hand its raw matrix (NaN where missing, before
    imputation) to the live drift window (Python thread)."""
    parsed = parse_batch(values, model.bundle.ensemble.features, settings.scorer_max_envelope_records)
    if live_drift is not None:
        live_drift.observe(model.version, model.bundle.ensemble.features, model.bundle.manifest, parsed.X)
    return parsed


Queue = asyncio.Queue  # of ParsedWork, then None once the batcher is closed and drained


async def parse_stage(batcher: Batcher[Message], queue: Queue) -> None:
    """Take batches from the batcher and parse them (Python thread) for the active model."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            messages = await batcher.get()
        except BatcherClosed:
            await queue.put(None)
            return
        oldest = batcher.last_oldest or time.monotonic()
        closed = _stage("batch", oldest)
        produced = messages[0].timestamp  # the producer's clock: skew shows up here only
        if produced:
            metrics.STAGE["read"].observe(max(0.0, time.time() - (closed - oldest) - produced))
        model = holder.active  # one reference for the whole batch: never a half-swapped model
        assert model is not None
        values = [m.value for m in messages]
        try:
            parsed = await loop.run_in_executor(_PYTHON_POOL, parse_and_watch, values, model)
            work = ParsedWork(messages, values, model, parsed)
        except Exception as exc:  # a parser bug must not stall the partition or lose the batch
            log.exception("parsing failed for a batch of %d messages", len(values))
            work = ParsedWork(messages, values, model, None, f"parsing failed: {exc!r}"[:500])
        work.parsed_at = _stage("parse", closed)
        await queue.put(work)


async def score_stage(inbox: Queue, outbox: Queue) -> None:
    """Run the models on each parsed batch (scoring thread)."""
    loop = asyncio.get_running_loop()
    while (work := await inbox.get()) is not None:
        started = _stage("queued", work.parsed_at)
        if work.parsed is not None:
            try:
                work.scored = await loop.run_in_executor(_SCORING_POOL, score_matrix, work.parsed, work.model.bundle,
                                                         reasons_from(settings))
            except Exception as exc:  # a model bug must not stall the partition or lose the batch
                log.exception("scoring failed for a batch of %d messages", len(work.values))
                work.error = f"scoring failed: {exc!r}"[:500]
            else:  # the challenger, once, after the champion; its failure only drops it
                work.shadow = await score_beside(follower.shadow, work.parsed, work.values, work.model.bundle,
                                                 settings.scorer_max_envelope_records, settings.shadow_score_timeout_s)
        metrics.SCORING_SECONDS.observe(_stage("score", started) - started)
        await outbox.put(work)
    await outbox.put(None)


def build_outputs(work: ParsedWork) -> tuple[BatchOutput, list[Output]]:
    """Score records as bytes, DLQ entries, and the records to produce (Python thread)."""
    messages, values = work.messages, work.values
    out: BatchOutput | None = None
    if work.scored is not None and work.parsed is not None:
        try:
            out = serialise(work.parsed, work.scored, work.model.bundle)
        except Exception as exc:  # noqa: BLE001 - a bug here must not lose the batch either
            log.exception("serialising failed for a batch of %d messages", len(values))
            work.error = f"scoring failed: {exc!r}"[:500]
    if out is None:
        out = _fail_batch(values, work.error or "scoring failed")
    keys = [m.key for m in messages]
    fit_outputs(out, keys, values, app.conf.producer_max_request_size)
    scores_name, dlq_name = scores_topic.get_topic_name(), dlq_topic.get_topic_name()
    version_header = [("model-version", work.model.version.encode())]
    outputs = [Output(scores_name, keys[idx], value, version_header) for idx, value in out.scores]
    for rej in out.rejects:
        outputs.append(Output(dlq_name, _fit_key(keys[rej.message_index]), rej.value,
                              _dlq_headers(messages[rej.message_index], rej)))
    return out, outputs


async def emit_stage(inbox: Queue) -> None:
    """Build each batch's output records, then send them once the batch before is confirmed
    (acks stay in order), while the next batch is scored."""
    loop = asyncio.get_running_loop()
    inflight: asyncio.Future[None] | None = None
    try:
        while (work := await inbox.get()) is not None:
            started = time.monotonic()
            out, outputs = await loop.run_in_executor(_PYTHON_POOL, build_outputs, work)
            if work.shadow is not None:
                await _send_shadow(loop, work)
            built = _stage("outputs", started)
            if inflight is not None:
                await inflight
            _stage("held", built)
            inflight = asyncio.ensure_future(deliver_and_ack(work.messages, out, outputs))
    finally:
        if inflight is not None:
            await inflight


#: Whether this worker delivers its outputs (read by ``/ready``).
DELIVERY = DeliveryHealth()
#: The challenger's score records leave through this, never holding up the champion's batch.
SHADOW_SENDER = ShadowSender()


async def _send_shadow(loop: asyncio.AbstractEventLoop, work: ParsedWork) -> None:
    """Build the challenger's records of a batch (Python thread) and send them once."""
    assert work.shadow is not None and work.parsed is not None and work.scored is not None
    keys = [m.key for m in work.messages]
    try:
        outputs = await loop.run_in_executor(_PYTHON_POOL, shadow_outputs, work.parsed, work.scored,
                                             work.model.version, work.shadow, keys, settings.topic_shadow_scores)
    except Exception as exc:  # noqa: BLE001 - a bug here drops the challenger, never the champion's batch
        log.exception("shadow: building the challenger's records failed")
        follower.shadow.drop(work.shadow.model.version, "scoring", repr(exc))
        return
    SHADOW_SENDER.send(output_producer(), outputs)


def _retry_policy() -> RetryPolicy:
    return RetryPolicy(settings.output_delivery_attempts, settings.output_retry_backoff_s)


def _on_retry(exc: DeliveryFailed, retry: int, delay: float) -> None:
    DELIVERY.retrying = True
    metrics.DELIVERY_RETRIES.inc()
    for topic, n in exc.topics().items():
        metrics.DELIVERY_FAILURES.labels(topic=topic).inc(n)
    log.warning("%d output record(s) not confirmed by the broker (%s): %s; attempt %d of %d in %.1f s "
                "(the batch stays unacked meanwhile)", len(exc.failed), ", ".join(sorted(exc.topics())), exc.error,
                retry + 1, settings.output_delivery_attempts, delay)


async def deliver(outputs: list[Output]) -> None:
    """Send a batch's records until the broker confirmed all of them, retrying only those it
    did not (see :class:`~.output_producer.RetryPolicy`); raises :class:`DeliveryExhausted`."""
    try:
        await output_producer().send_with_retries(outputs, _retry_policy(), _on_retry)
    except DeliveryExhausted as exc:
        for topic, n in exc.topics().items():
            metrics.DELIVERY_FAILURES.labels(topic=topic).inc(n)
        raise
    finally:
        DELIVERY.retrying = False


async def deliver_and_ack(messages: list[Message], out: BatchOutput, outputs: list[Output]) -> None:
    """Produce a batch's records; once the broker confirmed all of them, ack its inputs
    (through Faust's consumer, which then commits their offsets)."""
    sent = time.monotonic()
    await deliver(outputs)
    if DELIVERY.failed is not None:  # the worker is stopping on lost work: ack nothing more
        return
    cast(BulkConsumer, app.consumer).ack_all(messages)
    _stage("confirm", sent)
    metrics.MESSAGES_IN.inc(len(messages))
    metrics.RECORDS_IN.inc(out.records_in)
    metrics.BATCH_SIZE.observe(len(out.scores))
    for rej in out.rejects:
        metrics.DLQ.labels(reason=rej.category).inc()
    for level, n in Counter(out.levels).items():
        metrics.RECORDS_SCORED.labels(threat_level=level).inc(n)
    for feat, count in out.imputed_counts.items():
        metrics.IMPUTED.labels(feature=feat).inc(count)
    now = time.time()
    for msg in (messages[0], messages[-1]):
        ts = msg.timestamp
        if ts:
            metrics.E2E_LAG.observe(max(0.0, now - ts))


async def run_batches(batcher: Batcher[Message]) -> None:
    """Three stages that overlap, joined by queues of one batch: batch N+1 is parsed (Python
    thread) while batch N is scored (scoring thread) while batch N-1 is turned into records
    (Python thread) and sent, and batch N-2 confirmed by the broker. Acks stay in order. If a
    stage fails, the others are stopped and its error is raised (the agent then stops)."""
    parsed: Queue = asyncio.Queue(maxsize=1)
    scored: Queue = asyncio.Queue(maxsize=1)
    stages = [asyncio.ensure_future(parse_stage(batcher, parsed)), asyncio.ensure_future(score_stage(parsed, scored)),
              asyncio.ensure_future(emit_stage(scored))]
    try:
        done, _ = await asyncio.wait(stages, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in stages:
            task.cancel()
        await asyncio.gather(*stages, return_exceptions=True)  # emit_stage still awaits its delivery


#: How long a stopping worker keeps finishing the batches it has read (then the rest is
#: simply not acked, so the next owner of the partitions reads it again).
DRAIN_TIMEOUT_S = 20.0

#: Exit code of a worker whose scoring loop failed otherwise (a bug; sysexits' EX_SOFTWARE).
EXIT_PIPELINE_FAILED = 70
#: Longest a failed worker takes to stop (leaving the group) before it exits regardless.
FAIL_STOP_GRACE_S = 30.0


def fail_worker(exc: BaseException) -> None:
    """Stop this worker for good because a batch's work is lost to it: never ack or commit
    again, say why, and exit non-zero so the group gives its partitions to a replica that
    re-reads them from the last committed offset (which is before the batch).

    Why not let the agent crash: Faust's supervisor restarts it on the same stream, the
    batches in hand are dropped unacked, and its offset tracking then commits past the hole
    (when the partition had no committed offset or the hole is one offset) or stops
    committing the partition for good. Commits are cut off at the consumer (its ``_commit``)
    because Faust commits again on its way out (stop, rebalance); the stop itself is Faust's
    SIGTERM path (without waiting for the unacked inputs to be acked: they never will be), so
    the consumer leaves the group at once."""
    if DELIVERY.failed is not None:
        return
    delivery = isinstance(exc, DeliveryFailed)
    code = EXIT_DELIVERY_FAILED if delivery else EXIT_PIPELINE_FAILED
    DELIVERY.failed = f"{type(exc).__name__}: {exc}"[:500]
    _stop_committing()
    if delivery:
        log.critical("giving up delivering a batch after %d attempts: %s. Its inputs stay unacked and no offset is "
                     "committed any more; stopping with exit code %d so the group re-delivers the partitions",
                     settings.output_delivery_attempts, exc, code)
    else:
        log.critical("the scoring loop failed: its batches stay unacked and no offset is committed any more; "
                     "stopping with exit code %d so the group re-delivers the partitions", code,
                     exc_info=(type(exc), exc, exc.__traceback__))
    threading.Thread(target=_exit_after_stop, args=(code,), name="fail-exit", daemon=False).start()
    os.kill(os.getpid(), signal.SIGTERM)  # the worker's graceful stop (agents, consumer, group)


def _stop_committing() -> None:
    """From now on Faust's consumer commits nothing (every path ends in its ``_commit``), and
    its stop does not wait for every read message to be acked (``stream_wait_empty``)."""
    consumer = app.consumer

    async def _no_commit(offsets: object) -> bool:
        log.info("not committing %s: the worker is stopping on lost work", offsets)
        return False

    consumer._commit = _no_commit  # type: ignore[attr-defined]  # noqa: SLF001 - no public switch
    with warnings.catch_warnings():  # read when the consumer stops, not only at start
        warnings.simplefilter("ignore", AlreadyConfiguredWarning)
        app.conf.stream_wait_empty = False


def _exit_after_stop(code: int) -> None:
    """Exit with ``code`` once the main thread finished stopping the worker (or after a grace
    period if it hangs): the worker's own exit code would be 0 or 1."""
    threading.main_thread().join(FAIL_STOP_GRACE_S)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _idle() -> None:
    """Read nothing more until the worker stops (it is cancelled then)."""
    await asyncio.Event().wait()


async def score_features(stream: StreamT) -> None:
    """The features topic's agent. Its input does not come through ``stream``: the worker's
    consumer puts each fetched partition batch into this agent's batcher through the app's
    :class:`~.bulk_inbox.BulkInbox` (:mod:`.bulk_consumer` says why and what stays Faust's);
    the stream's channel only has the conductor subscribe the topic, as iterating it would."""
    if DELIVERY.failed is not None:  # restarted after the worker failed: consume nothing
        await _idle()
    # Subscribed at once, so the topic is in the conductor's first subscription (a topic added
    # later waits for Faust's resubscription, which a change during a rebalance never gets);
    # until the model is active the inbox stays closed and the consumer hands nothing over.
    app.topics.add(cast(TopicT, stream.channel))
    await wait_for_model()
    batcher: Batcher[Message] = Batcher(settings.scorer_batch_max, settings.scorer_batch_wait_ms / 1000.0,
                                        max_batch_bytes=settings.scorer_batch_max_bytes)
    inbox = features_inbox()
    runner = asyncio.ensure_future(run_batches(batcher))

    def _on_runner_done(task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            fail_worker(task.exception())  # type: ignore[arg-type]
            inbox.close(batcher)  # the consumer hands nothing more to this agent
            batcher.close()

    runner.add_done_callback(_on_runner_done)
    inbox.open(batcher)
    try:
        await asyncio.wait([runner])  # it ends only once the batcher is closed, or on a failure
        if DELIVERY.failed is not None:  # not a word of it to Faust's supervisor: it would restart us
            await _idle()
    finally:
        # SIGTERM or the agent stopping: take nothing more, finish what was handed over, so
        # the final commit includes it, then stop. (A failed loop was handled above.)
        inbox.close(batcher)
        batcher.close()
        done, _ = await asyncio.wait([runner], timeout=DRAIN_TIMEOUT_S)
        if not done:
            log.warning("stopping with %d read messages not scored: they stay unacked and are read again", len(batcher))
            runner.cancel()
        await asyncio.shield(close_output_producer())


def features_inbox() -> BulkInbox:
    """The app's hand-off point of the features topic (see :class:`~.app.ScorerApp`)."""
    return cast(BulkApp, app).bulk_inboxes[features_topic.get_topic_name()]


async def follow_control() -> None:
    """Every replica follows the whole control topic (see :mod:`.control_follower`)."""
    await follower.run()


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
        committed = consumer._committed_offset.get(tp)  # type: ignore[attr-defined]  # noqa: SLF001 - Faust keeps no public accessor
        if high is None:
            continue
        lag = max(0, int(high) - int(committed or 0))
        metrics.CONSUMER_LAG.labels(partition=str(tp.partition)).set(lag)
        seen.add(str(tp.partition))
    for labels in list(metrics.CONSUMER_LAG._metrics):  # noqa: SLF001 - drop revoked partitions
        if labels[0] not in seen:
            metrics.CONSUMER_LAG.remove(*labels)

