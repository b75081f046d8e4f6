"""The plan step of a trainer run: what to do and why, from what was read. No I/O.

From :class:`trainer.inputs.TrainingInputs` it prepares the baseline (:mod:`trainer.prepare`),
measures drift against the current bundle's digest (:mod:`trainer.drift`), decides

* **skip** when the baseline is too small to split;
* **train** when forced, when there is no usable current model, on drift, on schedule
  (``RETRAIN_INTERVAL_H``), when the usable features changed or the current bundle has no
  digest;
* **reuse** otherwise,

and, for a training run, makes the one train/validation cut and the supervised plan: train
XGBoost (enough labels), reuse the current bundle's (younger than ``XGB_RETRAIN_INTERVAL_H``)
or none, and which labelled rows are held out for the evaluation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from ja4_core.bundle import LoadedBundle
from ja4_core.features import utc_time
from ja4_core.settings import Settings
from trainer.drift import DriftReport, check_drift
from trainer.fit import FitConfig, train_cut
from trainer.inputs import TrainingInputs
from trainer.labels import eligibility, split_holdout
from trainer.prepare import Prepared, prepare_baseline, select

log = logging.getLogger(__name__)

#: Fewer baseline rows than this and nothing is trained (the split would be meaningless).
MIN_BASELINE_ROWS = 200
#: Share of the (time-ordered) baseline the members train on; the rest validates.
TRAIN_SHARE: float = FitConfig.train_share


@dataclass(frozen=True)
class SupervisedPlan:
    """The supervised member of a training run."""

    mode: str  # trained | reused | none (the manifest's and the report's words)
    #: Why: "ok", the eligibility's reason ("12 labels < XGB_MIN_LABELS=100") or "reused from V".
    reason: str
    eligible: bool
    #: Labelled rows (a mask over ``TrainingInputs.labels``) the evaluation uses: those of the
    #: validation period; None when there are none to use.
    held_out: np.ndarray | None


@dataclass(frozen=True)
class TrainingPlan:
    """What the run does, why, and on which data."""

    action: str  # train | reuse | skip
    #: For ``train`` the reason recorded in the manifest (``forced``, ``drift``, ``scheduled: ...``),
    #: otherwise the explanation recorded in the history.
    reason: str
    drift: DriftReport | None = None
    #: The prepared baseline (None when skipped).
    prepared: Prepared | None = None
    #: Index of the first validation row in ``prepared`` and its window start.
    cut: int = 0
    cut_time: int = 0
    supervised: SupervisedPlan | None = None
    #: A replica's retrain request that made this run (its figures, see :mod:`trainer.retrain_watch`).
    requested: dict[str, Any] | None = None

    @property
    def drift_fields(self) -> dict[str, Any]:
        """The drift columns of the history row (a replica's request's figures when it asked)."""
        d = self.drift
        if self.requested is not None:
            req = self.requested
            return dict(drift_share=req.get("drift_share"), drift_forced=True,
                        drifted_features=list(req.get("drifted") or []),
                        drift={"requested": req, "trainer": d.to_dict() if d else {}})
        return dict(drift_share=d.share if d else None, drift_forced=bool(d and d.forced),
                    drifted_features=d.drifted if d else [], drift=d.to_dict() if d else {})


def parse_time(value: Any) -> datetime | None:
    """An ISO time from a manifest (UTC when it names no zone), or None when unreadable.

    >>> parse_time("2026-06-01T00:00:00Z").isoformat(), parse_time("never")
    ('2026-06-01T00:00:00+00:00', None)
    """
    try:
        return utc_time(value)  # the product's one time parser (control messages use it too)
    except ValueError:
        return None


def age_h(bundle: LoadedBundle | None, now: datetime) -> float:
    """Hours since ``bundle`` was trained (infinite when unknown)."""
    if bundle is None:
        return float("inf")
    trained = parse_time(bundle.manifest.get("trained_at") or bundle.manifest.get("created_at"))
    return (now - trained).total_seconds() / 3600.0 if trained else float("inf")


def measure_drift(inputs: TrainingInputs, threshold: float) -> DriftReport | None:
    """Drift of the raw baseline against the current bundle's digest, on the features both know."""
    current = inputs.current
    if current is None or not current.manifest.get("digest"):
        return None
    base = inputs.baseline
    common = [f for f in current.ensemble.features if f in inputs.features]
    drift = check_drift(select(base.X, inputs.features, common), common, current.manifest["digest"],
                        threshold=threshold, n_ref=current.manifest.get("digest_rows"))
    log.info("drift against %s: %d/%d features drifted (share %.2f, threshold %.2f)%s",
             current.version, len(drift.drifted), len(drift.features), drift.share, threshold,
             ": " + ", ".join(drift.drifted) if drift.drifted else "")
    return drift


def reason_to_train(inputs: TrainingInputs, settings: Settings, *, force: bool, drift: DriftReport | None,
                    features: tuple[str, ...]) -> str | None:
    """The reason to train, or None to reuse the current version."""
    current = inputs.current
    if force:
        return "forced"
    if current is None:
        return inputs.why_no_current
    if drift is not None and drift.forced:
        return "drift"
    age = age_h(current, inputs.now)
    if age >= settings.retrain_interval_h:
        return f"scheduled: trained {age:.1f} h ago (RETRAIN_INTERVAL_H={settings.retrain_interval_h:g})"
    if tuple(current.ensemble.features) != features:
        return "the usable features changed"
    if current.manifest.get("digest") is None:
        return "current bundle has no drift digest"
    return None


def plan_supervised(inputs: TrainingInputs, settings: Settings, *, features: tuple[str, ...],
                    cut_time: int) -> SupervisedPlan:
    """Train XGBoost (enough labels), reuse the current bundle's while it is young, or none."""
    labels = inputs.labels
    ok, why = eligibility(labels.y, settings.xgb_min_labels)
    later = labels.times >= cut_time if len(labels) else None
    current = inputs.current
    if current is not None and current.ensemble.xgb is not None and tuple(current.ensemble.features) == features:
        trained = parse_time((current.manifest.get("supervised") or {}).get("trained_at"))
        if trained and (inputs.now - trained).total_seconds() / 3600.0 < settings.xgb_retrain_interval_h:
            log.info("reusing the XGBoost of %s (younger than XGB_RETRAIN_INTERVAL_H=%g h)",
                     current.version, settings.xgb_retrain_interval_h)
            return SupervisedPlan("reused", f"reused from {current.version}", ok, later)
    if not ok:
        log.info("no supervised model: %s", why)
        return SupervisedPlan("none", why, ok, later)
    return SupervisedPlan("trained", why, ok,
                          split_holdout(labels.times, labels.y, cut_time, settings.xgb_min_labels))


def plan_run(inputs: TrainingInputs, settings: Settings, *, force: bool = False) -> TrainingPlan:
    """Decide what the run does (see the module docstring)."""
    s = settings
    n = len(inputs.baseline)
    if n < MIN_BASELINE_ROWS:
        reason = f"{n} baseline rows < {MIN_BASELINE_ROWS}: nothing trained"
        log.warning(reason)
        return TrainingPlan("skip", reason)
    prepared = prepare_baseline(inputs.baseline.X, inputs.features, inputs.baseline.times,
                                variance_threshold=s.prune_variance_threshold)
    drift = measure_drift(inputs, s.drift_threshold)
    why_train = reason_to_train(inputs, s, force=force, drift=drift, features=prepared.features)
    if why_train is None:
        why = (f"trained {age_h(inputs.current, inputs.now):.1f} h ago (< RETRAIN_INTERVAL_H={s.retrain_interval_h:g}) "
               f"and drift share {drift.share if drift else 0:.2f} < {s.drift_threshold:.2f}")
        log.info("reusing %s: %s", inputs.previous, why)
        return TrainingPlan("reuse", why, drift=drift, prepared=prepared)
    cut = train_cut(len(prepared), TRAIN_SHARE)
    cut_time = int(prepared.times[cut])
    return TrainingPlan("train", why_train, drift=drift, prepared=prepared, cut=cut, cut_time=cut_time,
                        supervised=plan_supervised(inputs, s, features=prepared.features, cut_time=cut_time))
