"""The judge of a challenger: figures in, decision out (no I/O).

Inputs are the analyst-labelled records both models scored since the challenger started
shadowing (read by :func:`ja4_core.shadow_table.shadow_pairs` in the trainer's judge step,
:mod:`trainer.champion_step`): for each, the label, the challenger's and the champion's
combined score, and whether the champion's level raised an alert. On exactly those records:

* **ROC AUC** of each model (bots = positive class);
* **recall at the champion's human false-alert rate**: the share of humans the champion
  alerts on, ``f``; each model's recall is the share of bots above its own score's
  ``1 - f`` quantile on the humans, so both are compared at the alert budget the champion
  spends today.

Decision (:func:`judge`): ``wait`` until ``min_bots`` labelled bots and ``min_humans``
labelled humans were scored by both (or retire when ``max_hours`` of shadowing ran out);
then ``promote`` when the challenger's AUC is better by at least ``margin`` and its recall
is not worse, ``retire`` when its AUC or its recall is worse, else ``wait`` (within the
margin: more labels may tell) until the time runs out.

>>> import numpy as np
>>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
>>> champion = np.array([0.1, 0.2, 0.6, 0.3, 0.5, 0.7, 0.2, 0.8])
>>> challenger = np.array([0.1, 0.2, 0.3, 0.25, 0.6, 0.7, 0.8, 0.9])
>>> alerts = champion >= 0.6
>>> v = judge(JudgeInputs(y, challenger, champion, alerts), JudgePolicy(2, 2, 0.01, 24.0), shadow_hours=1.0)
>>> v.action, round(v.figures["challenger_roc_auc"], 3), round(v.figures["champion_roc_auc"], 3)
('promote', 1.0, 0.781)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

WAIT, PROMOTE, RETIRE = "wait", "promote", "retire"


@dataclass(frozen=True)
class JudgePolicy:
    """The settings of the judge (``SHADOW_MIN_BOTS``, ``SHADOW_MIN_HUMANS``,
    ``SHADOW_MARGIN``, ``SHADOW_MAX_HOURS``)."""

    min_bots: int
    min_humans: int
    margin: float
    max_hours: float


@dataclass(frozen=True)
class JudgeInputs:
    """Labelled records scored by both models: ``y`` 1 = bot; ``champion_alert`` True where
    the champion's threat level raised an alert."""

    y: np.ndarray
    challenger: np.ndarray
    champion: np.ndarray
    champion_alert: np.ndarray

    @property
    def n_bots(self) -> int:
        return int(np.sum(self.y == 1))

    @property
    def n_humans(self) -> int:
        return int(np.sum(self.y == 0))


@dataclass(frozen=True)
class Verdict:
    """What to do with the challenger, why, and the figures it was decided on."""

    action: str
    reason: str
    figures: dict[str, Any]


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (bots = positive), NaN when one class is missing.

    >>> roc_auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.5, 0.5]))
    0.875
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, scores))


def recall_at_rate(y: np.ndarray, scores: np.ndarray, rate: float) -> float:
    """Share of bots scoring above the ``1 - rate`` quantile of the humans' scores (so that
    about ``rate`` of the humans would be alerted on).

    >>> recall_at_rate(np.array([0, 0, 0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.9]), 0.25)
    0.5
    """
    humans, bots = scores[y == 0], scores[y == 1]
    if not len(humans) or not len(bots):
        return float("nan")
    cut = float(np.quantile(humans, 1.0 - rate, method="higher")) if rate < 1.0 else -np.inf
    return float(np.mean(bots > cut))


def judge(inputs: JudgeInputs, policy: JudgePolicy, *, shadow_hours: float) -> Verdict:
    """Promote, retire or wait (see the module docstring); pure."""
    n_bots, n_humans = inputs.n_bots, inputs.n_humans
    figures: dict[str, Any] = {"n_bots": n_bots, "n_humans": n_humans, "shadow_hours": round(shadow_hours, 3),
                               "min_bots": policy.min_bots, "min_humans": policy.min_humans,
                               "margin": policy.margin, "max_hours": policy.max_hours}
    timed_out = shadow_hours >= policy.max_hours
    if n_bots < policy.min_bots or n_humans < policy.min_humans:
        if timed_out:
            return Verdict(RETIRE, f"timed out after {shadow_hours:.1f} h with {n_bots} labelled bots and "
                                   f"{n_humans} humans scored by both (needs {policy.min_bots} and "
                                   f"{policy.min_humans})", figures)
        return Verdict(WAIT, f"{n_bots}/{policy.min_bots} labelled bots and {n_humans}/{policy.min_humans} "
                             "humans scored by both so far", figures)
    y = inputs.y
    humans = y == 0
    rate = float(np.mean(inputs.champion_alert[humans])) if n_humans else 0.0
    # No human alerted at all: compare at one human in the sample (the smallest rate it can show).
    rate = max(rate, 1.0 / n_humans)
    auc_ch, auc_c = roc_auc(y, inputs.challenger), roc_auc(y, inputs.champion)
    rec_ch, rec_c = recall_at_rate(y, inputs.challenger, rate), recall_at_rate(y, inputs.champion, rate)
    figures.update(champion_false_alert_rate=rate, challenger_roc_auc=auc_ch, champion_roc_auc=auc_c,
                   challenger_recall=rec_ch, champion_recall=rec_c)
    text = (f"ROC AUC {auc_ch:.4f} vs champion {auc_c:.4f}, recall {rec_ch:.3f} vs {rec_c:.3f} at the champion's "
            f"human false-alert rate {rate:.3f}, on {n_bots} bots and {n_humans} humans")
    if auc_ch >= auc_c + policy.margin and rec_ch >= rec_c:
        return Verdict(PROMOTE, f"better by the margin {policy.margin:g}: {text}", figures)
    if auc_ch < auc_c or rec_ch < rec_c:
        return Verdict(RETIRE, f"worse: {text}", figures)
    if timed_out:
        return Verdict(RETIRE, f"timed out after {shadow_hours:.1f} h, not better by the margin "
                               f"{policy.margin:g}: {text}", figures)
    return Verdict(WAIT, f"within the margin {policy.margin:g} so far: {text}", figures)
