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
                  "design: 1 - its quantile; validation_all: the whole validation split"),
                 ["level", "kind"], registry=reg)
    for level, r in (combination.get("levels") or {}).items():
        rate.labels(level=level, kind="validation").set(float(r["validation"]))
        rate.labels(level=level, kind="design").set(float(r["design"]))
        if r.get("validation_all") is not None:  # the whole validation split, unlabelled bots included
            rate.labels(level=level, kind="validation_all").set(float(r["validation_all"]))
    Gauge("ja4_trainer_publish_ok", "1 when the last run's announcement was confirmed (or none was due)",
          registry=reg).set(0.0 if result.publish_error else 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), reg)
