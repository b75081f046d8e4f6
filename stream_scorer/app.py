"""The scorer's Faust app and its topics: declarations only.

Every replica started with the same ``SCORER_APP_ID`` joins one consumer group, and the
partitions of the features topic are split between them. Start with ``stream-scorer worker``
or ``faust -A stream_scorer.app worker``. Agents live in :mod:`.agents`, web views in
:mod:`.views`; both are imported at the bottom so that importing this module registers them.
"""

from __future__ import annotations

import faust

from ja4_core.bundle import ModelStore
from stream_scorer.control_follower import ControlFollower
from stream_scorer.faust_app_args import app_settings
from stream_scorer.model_holder import ModelHolder
from ja4_core.settings import get_settings

settings = get_settings()

app = faust.App(
    settings.scorer_app_id,
    **app_settings(settings, settings.scorer_app_id, web_port=settings.scorer_web_port,
                   batch_max=settings.scorer_batch_max, batch_wait_ms=settings.scorer_batch_wait_ms),
    producer_acks=-1,
    producer_linger_ms=2,
    # Score records are ~1 KB: Faust's 16 KB default would hold a dozen per request.
    producer_max_batch_size=1_048_576,
)


def _limit_torch_threads(n: int) -> None:
    """Torch's default intra-op pool (one thread per core) spin-waits between the small
    forward passes of a scorer: a 10-row batch took 30 ms instead of 0.3 ms. The worker
    gives its models ``SCORER_THREADS`` threads; scale out with replicas instead."""
    import torch

    torch.set_num_threads(n)


_limit_torch_threads(settings.scorer_threads)


def _shorten_gil_switch_interval(seconds: float = 0.0005) -> None:
    """The scoring and parse threads release the GIL around every model call (torch op,
    compiled EIF, XGBoost) and must take it back from the event loop, which holds it for up
    to ``sys.getswitchinterval()`` (5 ms by default) while it reads messages: dozens of such
    waits per batch made scoring stall behind reading. A shorter interval hands it back sooner."""
    import sys

    sys.setswitchinterval(seconds)


_shorten_gil_switch_interval()

features_topic = app.topic(settings.topic_features, key_type=bytes, value_type=bytes,
                           key_serializer="raw", value_serializer="raw",
                           partitions=settings.topic_partitions)
scores_topic = app.topic(settings.topic_scores, key_serializer="raw", value_serializer="raw",
                         partitions=settings.topic_partitions)
dlq_topic = app.topic(settings.topic_dlq, key_serializer="raw", value_serializer="raw",
                      partitions=settings.topic_partitions)

holder = ModelHolder(ModelStore(settings.model_store), settings.model_name, nthreads=settings.scorer_threads,
                     eif_evaluator=settings.eif_evaluator, ae_evaluator=settings.ae_evaluator)
follower = ControlFollower(settings, holder)

from stream_scorer import agents, views  # noqa: E402,F401  (registers the agent and the web views)

if __name__ == "__main__":
    app.main()
