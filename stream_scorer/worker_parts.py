"""What the agents and the web views of one scorer worker share.

:func:`stream_scorer.app.create_app` builds these once per process and hands them to
:func:`stream_scorer.agents.register` and :func:`stream_scorer.views.register`; neither module
imports the app module, so the imports run one way (``app`` -> ``agents``/``views``) and
importing any of them builds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from ja4_core.settings import Settings
from stream_scorer.control_follower import ControlFollower
from stream_scorer.drift_watch import DriftWatch
from stream_scorer.model_holder import ModelHolder


@dataclass(frozen=True)
class WorkerParts:
    """The Faust app, its three topics, the live model and the control follower of a worker."""

    app: faust.App
    settings: Settings
    features_topic: Any
    scores_topic: Any
    dlq_topic: Any
    holder: ModelHolder
    follower: ControlFollower
    #: The replica's live drift and retrain requests (see :mod:`.drift_watch`).
    drift: DriftWatch | None = None
