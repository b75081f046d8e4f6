"""The judge of a challenger (``trainer.champion.judge``): figures in, decision out."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.champion import PROMOTE, RETIRE, WAIT, JudgeInputs, JudgePolicy, judge, recall_at_rate

POLICY = JudgePolicy(min_bots=50, min_humans=50, margin=0.02, max_hours=24.0)


def inputs(challenger_shift: float, n: int = 200, seed: int = 0) -> JudgeInputs:
    """Champion and challenger on the same records; the challenger's bots sit
    ``challenger_shift`` further above (positive) or below (negative) the humans."""
    rng = np.random.default_rng(seed)
    y = np.array([0] * n + [1] * n)
    noise = rng.normal(0, 1, 2 * n)
    champion = noise + y * 1.0
    challenger = noise + y * (1.0 + challenger_shift)
    return JudgeInputs(y, challenger, champion, champion > 1.5)


def test_a_better_challenger_is_promoted_with_its_figures() -> None:
    v = judge(inputs(1.0), POLICY, shadow_hours=2.0)
    assert v.action == PROMOTE
    f = v.figures
    assert f["challenger_roc_auc"] >= f["champion_roc_auc"] + POLICY.margin
    assert f["challenger_recall"] >= f["champion_recall"]
    assert 0 < f["champion_false_alert_rate"] < 0.2
    assert (f["n_bots"], f["n_humans"]) == (200, 200)


def test_a_worse_challenger_is_retired() -> None:
    v = judge(inputs(-0.5), POLICY, shadow_hours=2.0)
    assert v.action == RETIRE and v.reason.startswith("worse")


def test_an_equal_challenger_waits_then_is_retired_when_its_time_runs_out() -> None:
    same = inputs(0.0)
    assert judge(same, POLICY, shadow_hours=2.0).action == WAIT
    v = judge(same, POLICY, shadow_hours=24.0)
    assert v.action == RETIRE and v.reason.startswith("timed out")


@pytest.mark.parametrize("n_bots,n_humans", [(49, 500), (500, 49), (0, 0)])
def test_too_few_labels_waits_whatever_the_scores(n_bots: int, n_humans: int) -> None:
    y = np.array([0] * n_humans + [1] * n_bots)
    scores = y.astype(float)  # the challenger would win outright
    v = judge(JudgeInputs(y, scores, -scores, np.zeros(len(y), bool)), POLICY, shadow_hours=1.0)
    assert v.action == WAIT and "challenger_roc_auc" not in v.figures
    assert judge(JudgeInputs(y, scores, -scores, np.zeros(len(y), bool)), POLICY,
                 shadow_hours=30.0).action == RETIRE


def test_recall_is_compared_at_the_champions_human_false_alert_rate() -> None:
    y = np.array([0] * 10 + [1] * 10)
    scores = np.concatenate([np.arange(10) / 10, np.arange(10) / 10 + 0.35])
    # 10 % of the humans alerted: the cut is the highest human score (0.9); 4 bots are above it.
    assert recall_at_rate(y, scores, 0.1) == pytest.approx(0.4)
    assert recall_at_rate(y, scores, 1.0) == 1.0


def test_no_human_alerted_compares_at_one_human_in_the_sample() -> None:
    base = inputs(1.0)
    v = judge(JudgeInputs(base.y, base.challenger, base.champion, np.zeros(len(base.y), bool)), POLICY,
              shadow_hours=1.0)
    assert v.figures["champion_false_alert_rate"] == pytest.approx(1 / 200)
