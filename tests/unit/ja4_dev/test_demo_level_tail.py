"""The demo's summary says when a threat level's tail rests on too few labelled humans for its
live rate to mean its design rate (issue 16, item 3: the first model's CRITICAL)."""

from __future__ import annotations

from pathlib import Path

from ja4_dev.demo import Demo


def _summary(tail: dict) -> dict:
    rates = {"CRITICAL": {"live": 0.0031, "design": 0.001}}
    ev = {"records": 10, "precision": 0.9, "recall": 0.9, "roc_auc": 0.98, "human_score_rates": rates, "by_kind": {}}
    return {"records_sent": 10, "records_scored": 10, "score_messages": 10, "duplicates": 0,
            "throughput_records_per_s": 1.0, "replicas_served": {}, "replica_versions": {},
            "ml_all_scores_rows": 10, "ml_all_scores_distinct_records": 10, "first_version": "v1",
            "retrained_version": None, "before": ev, "after": None, "level_tail": {"v1": tail},
            "reports": [], "logs": "logs"}


def _printed(tail: dict) -> list[str]:
    demo = object.__new__(Demo)
    lines: list[str] = []
    demo.say = lines.append  # type: ignore[method-assign]
    demo.var = Path("var")
    demo._print_summary(_summary(tail))
    return lines


def test_the_summary_names_a_level_whose_tail_rests_on_too_few_labelled_humans():
    lines = _printed({"HIGH": {"calibration_humans": 31, "enough_humans": True},
                      "CRITICAL": {"calibration_humans": 3, "enough_humans": False}})
    warned = [line for line in lines if "labelled humans calibrating the tail" in line]
    assert len(warned) == 1 and "CRITICAL (3)" in warned[0] and "HIGH" not in warned[0]
    # and nothing when every tail rests on enough of them
    lines = _printed({"CRITICAL": {"calibration_humans": 12, "enough_humans": True}})
    assert not [line for line in lines if "labelled humans calibrating the tail" in line]
