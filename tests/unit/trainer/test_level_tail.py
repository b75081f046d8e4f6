"""What each threat level rests on (issue 16, item 3), recorded next to the levels: the
reference rows at or above each threshold, the human weight they carry, its mean per row and,
with a supervised member, how many labelled humans calibrate that tail. The demo's first model
over-alerted at CRITICAL because its tail rested on none (see ``trainer.fit.tail_evidence``)."""

from __future__ import annotations

import numpy as np

from ja4_core.features import LEVEL_QUANTILES
from ja4_dev.simulator import TrafficSimulator
from tests.unit.trainer.test_levels import FEATURES, SMALL, _matrix
from trainer.fit import fit_ensemble


def test_with_labels_the_manifest_says_how_much_human_weight_and_how_many_labelled_humans_each_level_rests_on():
    sim = TrafficSimulator(seed=7, bot_share=0.1)
    base, _ = _matrix(sim, 20000)
    fit = fit_ensemble(base, FEATURES, SMALL, xgb_data=_matrix(sim, 2500))
    combination = fit.ensemble.combination
    assert combination is not None
    tail = combination["level_tail"]
    assert list(tail) == list(LEVEL_QUANTILES)
    low = tail["LOW"]["human_weight"]  # about 10 % of the split's human weight
    for level, q in LEVEL_QUANTILES.items():
        t = tail[level]
        assert 0 < t["human_weight"] <= t["rows"]
        # the weighted share at or above each cut is its design rate (the quantile's definition)
        expected = low * (1.0 - q) / 0.1
        assert abs(t["human_weight"] - expected) <= expected / 4 + 1.0, (level, t, expected)
        assert abs(t["mean_p_human"] - t["human_weight"] / t["rows"]) <= 1e-4
    # the tail's human weight sits on rows the supervised member calls bots: thinner per row
    # the higher the level, and calibrated on fewer labelled humans
    assert tail["CRITICAL"]["mean_p_human"] < tail["LOW"]["mean_p_human"]
    assert tail["CRITICAL"]["calibration_humans"] < tail["LOW"]["calibration_humans"]
    for t in tail.values():  # flagged when fewer than trainer.fit.MIN_TAIL_HUMANS calibrate it
        assert t["enough_humans"] == (t["calibration_humans"] >= 10)
    assert tail["LOW"]["enough_humans"]


def test_without_labels_each_level_rests_on_plain_rows():
    sim = TrafficSimulator(seed=8, bot_share=0.0)
    base, _ = _matrix(sim, 5000)
    fit = fit_ensemble(base, FEATURES, SMALL)
    tail = fit.ensemble.combination["level_tail"]
    for level in LEVEL_QUANTILES:
        assert tail[level]["human_weight"] == tail[level]["rows"]
        assert tail[level]["mean_p_human"] == 1.0
        assert "calibration_humans" not in tail[level]
    assert abs(tail["LOW"]["rows"] - 0.1 * fit.n_val) <= 2
    assert tail["LOW"]["enough_humans"] and not tail["CRITICAL"]["enough_humans"]  # 1 of 1,000 rows


def test_tail_evidence_counts_rows_and_weight_at_or_above_each_cut():
    from trainer.fit import tail_evidence

    s = np.array([0.1, 0.5, 0.9, 0.95, 0.99])
    w = np.array([1.0, 1.0, 0.5, 0.1, 0.0])
    assert tail_evidence(s, {"LOW": 0.9, "CRITICAL": 0.99}, w) == {
        "LOW": {"rows": 3, "human_weight": 0.6, "mean_p_human": 0.2},
        "CRITICAL": {"rows": 1, "human_weight": 0.0, "mean_p_human": 0.0}}
    assert tail_evidence(s, {"HIGH": 2.0})["HIGH"] == {"rows": 0, "human_weight": 0.0, "mean_p_human": 0.0}


def test_trainer_prom_gives_what_each_level_rests_on(tmp_path):
    from types import SimpleNamespace

    from trainer.metrics import write_run_metrics

    tail = {"CRITICAL": {"rows": 712, "human_weight": 8.99, "mean_p_human": 0.0126, "calibration_humans": 3}}
    result = SimpleNamespace(decision="trained", duration_s=1.0, timings={}, drift=None, publish_error=None,
                             metrics={"combination": {"level_tail": tail}})
    path = tmp_path / "trainer.prom"
    write_run_metrics(result, path)
    text = path.read_text()
    assert 'ja4_trainer_level_tail{kind="calibration_humans",level="CRITICAL"} 3.0' in text
    assert 'ja4_trainer_level_tail{kind="human_weight",level="CRITICAL"} 8.99' in text
    assert 'ja4_trainer_level_tail{kind="rows",level="CRITICAL"} 712.0' in text
