"""The scorer's Faust app and its topics, built when a worker starts.

Every replica started with the same ``SCORER_APP_ID`` joins one consumer group, and the
partitions of the features topic are split between them. Start with ``stream-scorer worker``
or ``faust -A stream_scorer.app worker``.

Importing this module builds nothing and reads no setting: :func:`create_app` builds the app
from the settings, declares the topics, and registers the agents (:mod:`.agents`) and the web
views (:mod:`.views`) with :func:`~.agents.register`/:func:`~.views.register`, so imports run
one way (this module -> agents, views; they never import it back). ``stream_scorer.app.app``,
the attribute ``faust -A`` looks up, is built on first access from the process's settings
(:func:`~ja4_core.settings.get_settings`). The process start-up (:func:`start_process`: model
threads, the GIL switch interval, Faust's data directory, the fetch-wait limit) runs when the
worker starts: ``stream-scorer worker`` calls it, and Faust's ``on_worker_init`` signal does
for ``faust -A``; it also creates the scorer's topics when missing, as on either path.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.types import TransportT

from ja4_core.bundle import ModelStore
from ja4_core.gc_steps import collect_in_larger_steps, freeze_heap
from ja4_core.settings import Settings, get_settings
from stream_scorer import agents, drift_watch, heap, views
from stream_scorer.bulk_consumer import BulkTransport
from stream_scorer.bulk_inbox import BulkInbox
from stream_scorer.control_follower import ControlFollower
from stream_scorer.faust_app_args import app_settings, prepare_process
from stream_scorer.model_holder import ModelHolder
from stream_scorer.worker_parts import WorkerParts


class ScorerApp(faust.App):
    """Faust's App whose consumer hands the features topic to the agent a fetch at a time
    (:mod:`.bulk_consumer`: why, and what stays Faust's); every other part is Faust's own."""

    #: Topic name -> the agent's hand-off point; a topic not here takes Faust's per-message path.
    bulk_inboxes: dict[str, BulkInbox]

    def _new_transport(self) -> TransportT:
        return BulkTransport(self.conf.broker_consumer, self)


def create_app(settings: Settings) -> faust.App:
    """The scorer's Faust app for ``settings``, with its topics, agents and web views."""
    app = ScorerApp(
        settings.scorer_app_id,
        **app_settings(settings, settings.scorer_app_id, web_port=settings.scorer_web_port,
                       batch_max=settings.scorer_batch_max),
        producer_acks=-1,
        producer_linger_ms=2,
        # Score records are ~1 KB: Faust's 16 KB default would hold a dozen per request.
        producer_max_batch_size=1_048_576,
    )
    features_topic = app.topic(settings.topic_features, key_type=bytes, value_type=bytes,
                               key_serializer="raw", value_serializer="raw",
                               partitions=settings.topic_partitions)
    app.bulk_inboxes = {settings.topic_features: BulkInbox(settings.topic_features)}
    scores_topic = app.topic(settings.topic_scores, key_serializer="raw", value_serializer="raw",
                             partitions=settings.topic_partitions)
    dlq_topic = app.topic(settings.topic_dlq, key_serializer="raw", value_serializer="raw",
                          partitions=settings.topic_partitions)
    holder = ModelHolder(ModelStore(settings.model_store), settings.model_name, nthreads=settings.scorer_threads,
                         eif_evaluator=settings.eif_evaluator, ae_evaluator=settings.ae_evaluator)
    parts = WorkerParts(app=app, settings=settings, features_topic=features_topic, scores_topic=scores_topic,
                        dlq_topic=dlq_topic, holder=holder, follower=ControlFollower(settings, holder),
                        drift=drift_watch.DriftWatch(settings))
    agents.register(parts)
    views.register(parts)
    drift_watch.register(parts)

    @app.on_worker_init.connect
    def _on_worker_init(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """``faust -A stream_scorer.app worker`` does not go through our CLI: start up here."""
        start_process(settings)

    return app


def start_process(settings: Settings) -> None:
    """The start-up work of a scorer worker process, the same for both ways to start one
    (idempotent): warn when control messages are not signed, create the scorer's topics when
    missing (Faust does not create an agent's source topic), then tune the process."""
    import logging

    from ja4_core.kafka_admin import ensure_topics, scorer_topics

    if not settings.control_signing_key:
        from ja4_core.control import W_UNSIGNED

        logging.getLogger("stream_scorer").warning(W_UNSIGNED)
    ensure_topics(settings, scorer_topics(settings))
    _limit_torch_threads(settings.scorer_threads)
    _shorten_gil_switch_interval()
    _collect_young_garbage_less_often()
    _return_freed_memory()
    heap.keep_rss_low()  # then a lower mmap threshold and the heap trimmer (stream_scorer/heap.py)
    from ja4_core.detectors.xgb import import_for_scoring

    import_for_scoring()  # before the first bundle load: xgboost without scikit-learn and pandas
    from ja4_core.detectors.warm_up import warm_up_in_background

    warm_up_in_background()  # the kernels' machine code loads beside Faust's start and the group join
    prepare_process(settings, settings.scorer_app_id, batch_wait_ms=settings.scorer_batch_wait_ms)


def _limit_torch_threads(n: int) -> None:
    """Torch's default intra-op pool (one thread per core) spin-waits between the small
    forward passes of a scorer: a 10-row batch took 30 ms instead of 0.3 ms. The worker
    gives its models ``SCORER_THREADS`` threads; scale out with replicas instead. torch itself
    is imported only if a model needs it (``AE_EVALUATOR=torch`` or a bundle without compact files)."""
    from ja4_core.detectors.autoencoder import limit_torch_threads

    limit_torch_threads(n)


def _shorten_gil_switch_interval(seconds: float = 0.0005) -> None:
    """The scoring and parse threads release the GIL around every model call (torch op,
    compiled EIF, XGBoost) and must take it back from the event loop, which holds it for up
    to ``sys.getswitchinterval()`` (5 ms by default) while it reads messages: dozens of such
    waits per batch made scoring stall behind reading. A shorter interval hands it back sooner."""
    import sys

    sys.setswitchinterval(seconds)


def _collect_young_garbage_less_often() -> None:
    """A batch of 2,000 records makes tens of thousands of dicts and lists (the JSON, the rows,
    the score records), nearly all freed by reference counting when the batch is done; with
    Python's default threshold the cyclic collector still ran every 700 of them and walked every
    young object of the batches in flight, holding the GIL that the scoring thread and the event
    loop wait for: a third of the Python thread's work per record (19.1 -> 12.8 us a record,
    parse + serialise in process; a worker on envelopes of 1,000 20-22k -> 24-27k records/s, one
    record a message 19-20k -> 23-25k, Apache Kafka, README issue 20's fifth pass). What start-up
    built (modules, Faust, the kernels' code) is frozen out of the collector's walks altogether
    (:mod:`ja4_core.gc_steps`)."""
    collect_in_larger_steps()
    freeze_heap()


#: glibc ``mallopt`` parameters (malloc.h): ``M_MMAP_THRESHOLD`` and ``M_ARENA_MAX``.
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8


def _return_freed_memory(mmap_threshold: int = 256 * 1024, arenas: int = 2) -> None:
    """Keep the worker's RSS near what it uses (issue 20: 400 MB). glibc raises its mmap threshold
    each time a large block is freed (up to 32 MB), after which a batch's large arrays come from
    the heap and their pages can stay with the process after the batch; a fixed threshold keeps
    blocks from 256 KB up in their own mappings, returned on free, and two arenas bound the
    per-thread heaps of the parse and scoring threads. Measured: envelopes of 1,000 at 337-340 MB
    with this, 412 MB without (quick runs, Apache Kafka and Tansu). A no-op without glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        libc.mallopt(_M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass


_app: faust.App | None = None


def __getattr__(name: str) -> Any:
    """``stream_scorer.app.app``: the process's app, built on first access (``faust -A``)."""
    global _app
    if name == "app":
        if _app is None:
            _app = create_app(get_settings())
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    __getattr__("app").main()
