"""When a replica asks for a retrain: pure decision logic, no I/O, no clock of its own.

A request is due when the live drifted share (:class:`~.live_drift.DriftSnapshot`) has stayed
at or above ``DRIFT_THRESHOLD`` for ``DRIFT_REQUEST_AFTER_S``, no feature is an input fault,
and no request for the model (this replica's or another's, as read on the control topic) was
issued within ``DRIFT_REQUEST_COOLDOWN_S``.

**One request across the replicas** without a coordinator: replicas see the same traffic
change at about the same time, so each waits ``rank * STAGGER_S`` longer, where its rank is
the lowest features partition it is assigned. Partitions are assigned to one replica each, so
the ranks differ, and the first replica's request reaches the others (they read the whole
control topic) well within :data:`STAGGER_S`; they then hold off for the cool-down. A replica
assigned no partition scores nothing and never asks. The trainer acts on at most one request
per cool-down too (:mod:`trainer.retrain_watch`), so a race still retrains once.

>>> d = RetrainDecider(threshold=0.3, after_s=10, cooldown_s=600)
>>> [d.step(t, share=0.5, ready=True, faults=0, rank=0, last_request_at=None) for t in (0, 5, 10)]
['pending', 'pending', 'request']
>>> d.step(11, share=0.5, ready=True, faults=0, rank=0, last_request_at=10)
'held:cooldown'
>>> d.step(12, share=0.5, ready=True, faults=1, rank=0, last_request_at=None)
'held:input_fault'
"""

from __future__ import annotations

from dataclasses import dataclass

#: Extra wait per rank (s): longer than a control message takes to reach every replica.
STAGGER_S = 3.0

#: Outcomes of :meth:`RetrainDecider.step` (the ``outcome`` label of the request counter).
OUTCOMES = ("ok", "warming", "pending", "request", "held:cooldown", "held:input_fault", "held:no_partitions")


@dataclass
class RetrainDecider:
    """Tracks how long the drifted share has stayed high; says when to ask."""

    threshold: float
    after_s: float
    cooldown_s: float
    stagger_s: float = STAGGER_S
    #: When (the caller's clock, s) the share went and stayed at or above the threshold.
    above_since: float | None = None

    def sustained(self, now: float) -> float:
        return 0.0 if self.above_since is None else max(0.0, now - self.above_since)

    def step(self, now: float, *, share: float, ready: bool, faults: int, rank: int | None,
             last_request_at: float | None) -> str:
        """One look at the window; returns one of :data:`OUTCOMES` (``request``: ask now)."""
        if not ready:
            self.above_since = None
            return "warming"
        if faults:
            self.above_since = None  # the broken input must be fixed, not learned
            return "held:input_fault"
        if share <= 0.0 or share < self.threshold:
            self.above_since = None
            return "ok"
        if self.above_since is None:
            self.above_since = now
        if rank is None:
            return "held:no_partitions"
        if now - self.above_since < self.after_s + rank * self.stagger_s:
            return "pending"
        if last_request_at is not None and now - last_request_at < self.cooldown_s:
            return "held:cooldown"
        return "request"
