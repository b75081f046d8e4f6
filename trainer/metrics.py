"""Trainer metrics for Prometheus via node-exporter's textfile collector.

The trainer is a batch job, so rather than serving ``/metrics`` it rewrites one file after
every run, atomically (``write_to_textfile`` writes a temp file and renames it):
``MODEL_STORE/<model>/trainer.prom``. Point node-exporter's
``--collector.textfile.directory`` at that directory (or copy the file there).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

DECISIONS = ("trained", "drift", "reused", "rejected", "skipped", "locked", "rollback")


def write_recall(reg: CollectorRegistry, op: dict[str, Any]) -> None:
    """``ja4_trainer_recall{at, kind}``: recall of held-out labelled bots at each threat level
    and at 1 % / 5 % human false alerts (``at="at_1pct_human_alerts"``), overall (``kind="all"``)
    and per bot kind when the labels name kinds (:func:`trainer.report.operating_point`)."""
    recall = Gauge("ja4_trainer_recall", "Recall of held-out labelled bots at each threat level and at "
                   "1 %/5 % human false alerts", ["at", "kind"], registry=reg)
    groups = [("all", op.get("recall") or {})]
    groups += [(kind, k.get("recall") or {}) for kind, k in (op.get("by_kind") or {}).items()]
    for kind, values in groups:
        for at, v in values.items():
            recall.labels(at=at, kind=kind).set(float(v))


def write_run_metrics(result: Any, path: Path) -> None:
    """Write the last run's figures (decision, durations by phase, AUCs, drift share)."""
    reg = CollectorRegistry()
    Gauge("ja4_trainer_last_run_timestamp_seconds", "When the last run ended", registry=reg).set(time.time())
    decision = Gauge("ja4_trainer_last_decision", "1 for the last run's decision", ["decision"], registry=reg)
    for d in DECISIONS:
        decision.labels(decision=d).set(1.0 if result.decision == d else 0.0)
    Gauge("ja4_trainer_run_duration_seconds", "Wall time of the last run", registry=reg).set(result.duration_s)
    phases = Gauge("ja4_trainer_phase_seconds", "Wall time by phase of the last run", ["phase"], registry=reg)
    for phase, secs in (result.timings or {}).items():
        phases.labels(phase=phase).set(secs)
    auc = Gauge("ja4_trainer_roc_auc", "ROC AUC of each component on the validation split", ["component"], registry=reg)
    for name, ev in ((result.metrics or {}).get("evaluation") or {}).items():
        if isinstance(ev, dict) and ev.get("roc_auc") is not None:
            auc.labels(component=name).set(float(ev["roc_auc"]))
    drift = Gauge("ja4_trainer_drift_share", "Share of drifted features in the last run", registry=reg)
    if result.drift is not None and getattr(result.drift, "share", None) is not None:
        drift.set(float(result.drift.share))
    combination = (result.metrics or {}).get("combination") or {}
    weight = Gauge("ja4_trainer_member_weight", "Weight the last run gave each member in the combined score",
                   ["member"], registry=reg)
    for member, w in (combination.get("weights") or {}).items():
        weight.labels(member=member).set(float(w))
    rate = Gauge("ja4_trainer_level_false_alert_rate",
                 ("Share of human validation rows (those the levels were set on) at or above each threat level; "
                  "design: 1 - its quantile; labelled_humans: the analysts' humans; "
                  "validation_all: the whole validation split"),
                 ["level", "kind"], registry=reg)
    for level, r in (combination.get("levels") or {}).items():
        rate.labels(level=level, kind="validation").set(float(r["validation"]))
        rate.labels(level=level, kind="design").set(float(r["design"]))
        if r.get("validation_all") is not None:  # the whole validation split, unlabelled bots included
            rate.labels(level=level, kind="validation_all").set(float(r["validation_all"]))
        if r.get("labelled_humans") is not None:  # the analysts' humans
            rate.labels(level=level, kind="labelled_humans").set(float(r["labelled_humans"]))
    tail = Gauge("ja4_trainer_level_tail",
                 ("What each threat level rests on: rows at or above it, their human weight (summed P(human)) "
                  "and the labelled humans calibrating that tail (few: its live rate is uncertain)"),
                 ["level", "kind"], registry=reg)
    for level, t in (combination.get("level_tail") or {}).items():
        for kind in ("rows", "human_weight", "calibration_humans"):
            if t.get(kind) is not None:
                tail.labels(level=level, kind=kind).set(float(t[kind]))
    write_recall(reg, (result.metrics or {}).get("operating_point") or {})
    Gauge("ja4_trainer_publish_ok", "1 when the last run's announcement was confirmed (or none was due)",
          registry=reg).set(0.0 if result.publish_error else 1.0)
    from trainer.champion_step import add_challenger_gauges  # champion and challenger (issue 17)

    add_challenger_gauges(result, reg)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), reg)
