"""Web views of a scorer replica (Faust's web server on ``SCORER_WEB_PORT``).

``/health`` (and ``/live``): liveness, 200 while the event loop answers, with the readiness
state in the body; ``/ready``: 200 only when a model is active, partitions of the
features topic are assigned and outputs are being delivered (not retried, not given up on),
else 503; ``/model``: the active model, the challenger beside it
(see :mod:`.shadow`), reload outcomes and the last control message; ``/drift``: the live drift
of the replica's input (:mod:`.drift_watch`); ``/metrics``: Prometheus text format.
"""

from __future__ import annotations

import os

import faust
import psutil
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ja4_core.settings import Settings
from stream_scorer import metrics
from stream_scorer.agents import DELIVERY
from stream_scorer.control_follower import ControlFollower
from stream_scorer.drift_watch import DriftWatch
from stream_scorer.model_holder import ModelHolder
from stream_scorer.worker_parts import WorkerParts

# The worker's parts, bound by :func:`register` (see :mod:`.agents`).
app: faust.App
settings: Settings
holder: ModelHolder
follower: ControlFollower
#: The live drift of the replica (:mod:`.drift_watch`), None when off.
parts_drift: DriftWatch | None = None


def register(parts: WorkerParts) -> None:
    """Bind this module to a worker's parts and add its pages to the app's web server."""
    global app, settings, holder, follower
    app, settings, holder, follower = parts.app, parts.settings, parts.holder, parts.follower
    global parts_drift
    parts_drift = parts.drift
    for path, view in PAGES.items():
        app.page(path)(view)


def _assigned() -> list[int]:
    try:
        assignment = app.consumer.assignment()
    except Exception:  # consumer not started yet
        return []
    return sorted(tp.partition for tp in assignment if tp.topic == settings.topic_features)


def readiness() -> dict:
    active = holder.active
    parts = _assigned()
    delivery = DELIVERY.state
    return {"ready": active is not None and bool(parts) and delivery == "ok", "model_active": active is not None,
            "model_version": active.version if active else None, "partitions": parts, "delivery": delivery}


class Health(View):
    """Liveness: answering at all proves the event loop is responsive (200). The body also
    says whether the replica is ready, for humans and simple checks."""

    async def get(self, request: Request) -> Response:
        return self.json({"alive": True, "pid": os.getpid(), **readiness()})


class Ready(View):
    """Readiness: 200 only when a model is active, partitions are assigned and outputs are
    delivered (``delivery`` is ``ok``, not ``retrying`` or ``failed``), else 503."""

    async def get(self, request: Request) -> Response:
        state = readiness()
        return self.json(state, status=200 if state["ready"] else 503)


class Live(Health):
    """Alias of ``/health`` (liveness) for orchestrators that probe by this name."""


class Model(View):
    async def get(self, request: Request) -> Response:
        active = holder.active
        return self.json({
            "replica": f"{os.uname().nodename}:{os.getpid()}:{settings.scorer_web_port}",
            "active": active.describe() if active else None,
            "challenger": follower.shadow.describe(),
            "outcomes": dict(holder.outcomes),
            "pending_retry": holder.pending_retry.version if holder.pending_retry else None,
            "control_messages_seen": follower.messages_seen,
            "partitions": _assigned(),
        })


class Drift(View):
    """The live drift of this replica's input (see :mod:`.drift_watch`): the window, each
    feature's statistic and input fault, the baseline's and the window's quantiles."""

    async def get(self, request: Request) -> Response:
        watch = parts_drift
        if watch is None:
            return self.json({"enabled": False})
        return self.json({"enabled": watch.live.enabled, **watch.describe()})


class Metrics(View):
    async def get(self, request: Request) -> Response:
        metrics.RSS_BYTES.set(psutil.Process().memory_info().rss)
        body = generate_latest(metrics.REGISTRY)
        return self.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])


#: The pages a worker serves, by path.
PAGES: dict[str, type[View]] = {"/health": Health, "/ready": Ready, "/live": Live, "/model": Model, "/metrics": Metrics,
                              "/drift": Drift}
