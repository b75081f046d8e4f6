"""The fit-and-evaluate step of a trainer run: from the plan to an accepted or refused model. No I/O.

In this order, on the data :mod:`trainer.inputs` read and the cut :mod:`trainer.plan` made:

1. **impute once**: the baseline and the labelled rows, with the baseline's medians;
2. **supervised data**: the labels cleaned by cleanlab (:mod:`trainer.labels`), the current
   bundle's XGBoost, or none, as planned;
3. **fit the members** (:func:`trainer.fit.fit_members`): each validation row is scored once
   per member, and the held-out labelled rows once. The supervised member never judges
   itself on rows it trained on: a freshly trained XGBoost learns from every label, so its
   scores on the held-out rows are its *out-of-fold* probabilities (the ones cleanlab needs
   anyway, :func:`trainer.labels.out_of_fold`); a reused one is judged only on labels of
   windows after it was trained;
4. **decide the weights** (:func:`trainer.fit.decide_weights`) from those scores;
5. **assemble** (:func:`trainer.fit.assemble`): the ensemble and its thresholds;
6. **evaluate** on the validation split and the held-out labelled rows, from the scores of
   steps 3-5 (nothing is scored twice);
7. **gate**: a validation anomaly rate above ``VAL_ANOMALY_GATE`` refuses the model (the
   baseline was contaminated).

What it returns (:class:`FitOutcome`) is all the write, announce and report steps need.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import numpy as np

from ja4_core.clickhouse_io import Labelled
from ja4_core.ensemble import Ensemble, impute
from trainer.fit import (
    FitConfig,
    FitResult,
    Members,
    assemble,
    combined,
    decide_weights,
    fit_members,
    medians_of,
    quantile_digest,
    score_members,
)
from trainer.inputs import TrainingInputs
from trainer.labels import LabelReport, bot_kinds, clean_labels, out_of_fold
from trainer.plan import TrainingPlan
from trainer.prepare import select
from trainer.report import evaluate, operating_point

log = logging.getLogger(__name__)

#: Validation rows stored in the manifest for the scorer's load-time smoke test.
SMOKE_ROWS = 8
SUPERVISED_NOTE = ("trained on all labels; on the held-out rows (evaluation and combination) XGBoost's scores "
                   "are its out-of-fold probabilities, so they are out-of-sample")
REUSED_NOTE = "reused: judged only on labels of windows after it was trained"


@dataclass(frozen=True)
class FitOutcome:
    """A fitted, evaluated and gated model with what the manifest and the report need."""

    fit: FitResult
    xgb_mode: str  # trained | reused | none
    labels: LabelReport
    #: The manifest's "supervised" section (None without a supervised member).
    supervised: dict[str, Any] | None
    #: Report score columns (see :func:`report_scores`) on the validation split ...
    neg: dict[str, np.ndarray]
    #: ... on the held-out labelled bots and humans (None when there are none).
    pos: dict[str, np.ndarray] | None
    evaluation: dict[str, Any]
    evaluation_labelled: dict[str, Any]
    #: Recall of the held-out labelled bots at each level and at 1 % / 5 % human false alerts
    #: (:func:`trainer.report.operating_point`; empty without held-out bots).
    operating_point: dict[str, Any]
    #: Imputed validation rows for the manifest's smoke test.
    smoke_rows: np.ndarray
    #: Why the gate refused the model; None when it is accepted.
    rejected: str | None
    seconds: Mapping[str, float] = field(default_factory=dict)

    @property
    def ensemble(self) -> Ensemble:
        return self.fit.ensemble


def report_scores(ensemble: Ensemble, members: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The report's score columns from raw member scores: each member, ``ensemble`` (the
    combined score the scorer emits) and ``anomaly`` (EIF + autoencoder without XGBoost)."""
    out = {"eif": members["eif"], "ensemble": combined(ensemble, members).anomaly}
    if members.get("ae") is not None:
        out["ae"] = members["ae"]
        out["anomaly"] = ensemble.combine(members["eif"], members["ae"], None)
    if members.get("xgb") is not None:
        out["xgb"] = members["xgb"]
    return out


def _held_out_scores(members: Members, X: np.ndarray, y: np.ndarray | None, xgb: np.ndarray | None = None
                     ) -> tuple[dict[str, np.ndarray] | None, dict[str, np.ndarray] | None]:
    """Raw member scores of the held-out labelled bots and humans (None for a class with no
    rows); ``xgb``, when given, replaces the supervised member's scores of these rows (its
    out-of-fold probabilities: the final model trained on the rows themselves)."""
    if y is None or not len(y):
        return None, None
    scores = score_members(members, X)
    if xgb is not None and "xgb" in scores:
        scores["xgb"] = np.asarray(xgb, dtype=np.float64)
    bots = {m: v[y == 1] for m, v in scores.items()} if np.any(y == 1) else None
    humans = {m: v[y == 0] for m, v in scores.items()} if np.any(y == 0) else None
    return bots, humans


def _unseen_by(section: Mapping[str, Any], times: np.ndarray) -> np.ndarray:
    """Labelled rows a reused supervised model cannot have trained on: windows that started
    after it was trained (all False when its training time is unknown)."""
    trained = section.get("trained_at")
    try:
        at = datetime.fromisoformat(str(trained).replace("Z", "+00:00"))
    except ValueError:
        return np.zeros(len(times), dtype=bool)
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return np.asarray(times) >= int(at.timestamp())


def reference_humans(members: Members, L: np.ndarray, labels: Labelled, mode: str, oof_xgb: np.ndarray | None,
                     section: Mapping[str, Any] | None) -> dict[str, np.ndarray] | None:
    """Raw member scores of the analysts' humans: every row an analyst labelled human in the
    label window, each scored as the worker scores it, except that the supervised member's
    score is one it did not learn from the row itself. Without a supervised member the threat
    levels are set on them (:func:`trainer.fit.human_reference`); with one, the report gives
    their rate per level next to the validation split's (``labelled_humans``).

    Why all of them, not only those of the validation period: a level is a quantile of the
    humans' combined score, and the 99.9 % one (CRITICAL) rests on the few humans above it; the
    validation period holds a few hundred labelled humans, whose top one or two set CRITICAL
    (the demo's live humans then reached it 4-5x more often than designed). Those of the
    training period are in the EIF's and the autoencoder's training split (slightly lower
    scores there; the supervised member's are out-of-fold). Score-derived
    "humans" are left out: they are rows a model already scored low, a biased sample of the
    humans' upper tail. The supervised member's score of each row is its out-of-fold
    probability when it was trained in this run (:func:`trainer.labels.out_of_fold`, the fold
    models weighted like the shipped one), and for a reused one only rows it cannot have
    trained on count. None when no analyst labelled a human."""
    if not len(labels):
        return None
    rows = (labels.y == 0) & (labels.source == "analyst")
    if mode == "reused" and section is not None:
        rows &= _unseen_by(section, labels.times)
    if not rows.any():
        return None
    scores = score_members(members, L[rows])
    if oof_xgb is not None and "xgb" in scores:
        scores["xgb"] = np.asarray(oof_xgb, dtype=np.float64)[rows]
    return scores


def fit_and_evaluate(inputs: TrainingInputs, plan: TrainingPlan, config: FitConfig, *, val_anomaly_gate: float,
                     progress: Callable[[str, Any], None] | None = None) -> FitOutcome:
    """Fit, evaluate and gate the planned model (see the module docstring); raises whatever
    ``progress`` raises (the run's stop request)."""
    prepared, sup = plan.prepared, plan.supervised
    if plan.action != "train" or prepared is None or sup is None:
        raise ValueError(f"fit_and_evaluate needs a training plan, got action {plan.action!r}")
    labels = inputs.labels
    # 1. One imputation: the baseline's medians fill the baseline and the labelled rows.
    medians = medians_of(prepared.X)
    X, _ = impute(prepared.X, medians)
    L = impute(select(labels.X, labels.features, prepared.features), medians)[0] if len(labels) else \
        np.zeros((0, len(prepared.features)))
    X_train, X_val = X[:plan.cut], X[plan.cut:]

    # 2. Supervised data.
    t = time.monotonic()
    report = LabelReport(n_labels=len(labels), n_pos=labels.n_pos, n_neg=len(labels) - labels.n_pos,
                         n_analyst=int(np.sum(labels.source == "analyst")),
                         n_score=int(np.sum(labels.source == "score")), eligible=sup.eligible, reason=sup.reason)
    xgb_data = xgb_prefit = oof_xgb = None
    held = sup.held_out
    section: dict[str, Any] | None = None
    if sup.mode == "trained":
        # The shipped model learns from every label, the newest included: a campaign that
        # analysts just labelled is exactly what it must catch. On the held-out period (the
        # evidence for the combination and the report's figures) it is represented by its
        # out-of-fold probabilities, each from a fold model that never saw the row.
        report.n_train = len(labels)
        report.n_holdout = int(sup.held_out.sum()) if sup.held_out is not None else 0
        log.info("  cleanlab: out-of-fold XGBoost on %d labels (%d positive)", report.n_train, labels.n_pos)
        proba = out_of_fold(L, labels.y, nthreads=config.nthreads)
        oof_xgb = proba[:, 1]
        Xc, yc, flagged = clean_labels(L, labels.y, nthreads=config.nthreads, proba=proba,
                                       removable=labels.source != "analyst")
        report.n_flagged, report.n_removed = len(flagged), len(labels) - len(yc)
        report.flagged = np.asarray(flagged)
        xgb_data = (Xc, yc)
        section = {"trained_at": inputs.now.isoformat(), "labels": report.to_dict(), "note": SUPERVISED_NOTE}
    elif sup.mode == "reused" and inputs.current is not None:
        xgb_prefit = inputs.current.ensemble.xgb
        section = dict(inputs.current.manifest.get("supervised") or {})
        if held is not None:  # it may have trained on older labels of the validation period
            held = held & _unseen_by(section, labels.times)
            held = held if held.any() else None
        section["judged_on"] = REUSED_NOTE
    seconds = {"labels": time.monotonic() - t}

    # 3-5. Members (each row set scored once), weights, ensemble.
    t = time.monotonic()
    members = fit_members(X_train, X_val, config, xgb_data=xgb_data, xgb_prefit=xgb_prefit, progress=progress)
    bots, humans = (_held_out_scores(members, L[held], labels.y[held], None if oof_xgb is None else oof_xgb[held])
                    if held is not None else (None, None))
    evidence = None
    if bots is not None:
        rows = [bots] if humans is None else [bots, humans]
        y = np.concatenate([np.full(len(r["eif"]), 1 - i) for i, r in enumerate(rows)])
        evidence = ({m: np.concatenate([r[m] for r in rows]) for m in bots}, y)
    weights = decide_weights(config, members.val, labelled=evidence, constructed=members.constructed)
    # The supervised member's calibration (trainer.fit.calibrate): its out-of-fold
    # probabilities of every label when trained now, a reused one's scores of the labels it
    # cannot have trained on.
    calibration = None
    if oof_xgb is not None:
        calibration = (oof_xgb, labels.y)
    elif evidence is not None and "xgb" in evidence[0]:
        calibration = (evidence[0]["xgb"], evidence[1])
    fit = assemble(members, prepared.features, medians, weights,
                   humans=reference_humans(members, L, labels, sup.mode, oof_xgb, section), calibration=calibration)
    seconds["fit"] = time.monotonic() - t

    # 6. Evaluation (see trainer.report): the validation split vs held-out labelled bots, and
    # held-out labelled humans vs the same bots (the validation split holds unlabelled bots).
    ens = fit.ensemble
    neg = report_scores(ens, members.val)
    pos = report_scores(ens, bots) if bots is not None else None
    neg_labelled = report_scores(ens, humans) if humans is not None else None
    evaluation = evaluate(neg, pos)
    evaluation_labelled = evaluate(neg_labelled, pos) if neg_labelled is not None and pos is not None else {}
    # recall per bot kind (issue 16): the held-out bots' label kinds, "unspecified" when none
    kinds = None
    if pos is not None and held is not None:
        kinds = bot_kinds(labels.kind, len(labels))[held][labels.y[held] == 1]
    operating = (operating_point(pos["ensemble"], ens.thresholds, (ens.combination or {}).get("alert_cuts"), kinds=kinds)
                 if pos is not None else {})

    # 7. The gate.
    rejected = None
    if fit.val_anomaly_rate > val_anomaly_gate:
        rejected = (f"validation anomaly rate {fit.val_anomaly_rate:.3f} > VAL_ANOMALY_GATE={val_anomaly_gate:g}: "
                    f"baseline looks contaminated; {inputs.previous or 'no version'} stays current")
    return FitOutcome(fit=fit, xgb_mode=sup.mode, labels=report, supervised=section, neg=neg, pos=pos,
                      evaluation=evaluation, evaluation_labelled=evaluation_labelled, operating_point=operating,
                      smoke_rows=X_val[:SMOKE_ROWS], rejected=rejected, seconds=seconds)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(float(epoch), tz=timezone.utc).isoformat()


def run_metrics(inputs: TrainingInputs, plan: TrainingPlan, outcome: FitOutcome, *, version: str,
                val_anomaly_gate: float) -> dict[str, Any]:
    """The run's figures: ``metrics.json`` of the report, and (slimmed) the history row."""
    prepared, fit, base = plan.prepared, outcome.fit, inputs.baseline
    assert prepared is not None
    return {
        "model": inputs.model, "version": version, "reason": plan.reason, "previous_version": inputs.previous,
        "n_baseline": len(prepared), "n_train": fit.n_train, "n_val": fit.n_val,
        "features_used": list(prepared.features), "pruned_features": list(prepared.pruned),
        "val_anomaly_rate": fit.val_anomaly_rate, "val_anomaly_gate": val_anomaly_gate,
        "eif_threshold": fit.eif_threshold, "thresholds": dict(fit.ensemble.thresholds), "xgb": outcome.xgb_mode,
        "labels": outcome.labels.to_dict(), "evaluation": outcome.evaluation,
        "evaluation_labelled": outcome.evaluation_labelled, "operating_point": outcome.operating_point,
        "evaluation_note": "no labelled bots in the validation period" if outcome.pos is None else "",
        "training_window": {"start": _iso(base.start), "end": _iso(base.end), "first_row": _iso(prepared.times[0]),
                            "last_row": _iso(prepared.times[-1]), "validation_from": _iso(plan.cut_time)},
        "drift": plan.drift.to_dict() if plan.drift else None,
        "ae_loss": fit.ae_loss_curve, "ae_val_loss": fit.ae_val_loss_curve,
        # how the members are combined and why (trainer.combine), without the quantile tables
        "combination": {k: v for k, v in (fit.ensemble.combination or {}).items() if k != "tables"},
    }


def manifest_extra(inputs: TrainingInputs, plan: TrainingPlan, outcome: FitOutcome, metrics: Mapping[str, Any],
                   *, contamination: float) -> dict[str, Any]:
    """What the bundle's manifest records about the run besides the ensemble itself."""
    prepared, fit = plan.prepared, outcome.fit
    assert prepared is not None
    return {"digest": quantile_digest(prepared.X, prepared.features), "digest_rows": len(prepared),
            "trained_at": inputs.now.isoformat(), "reason": plan.reason, "previous_version": inputs.previous,
            "validation": {"val_anomaly_rate": fit.val_anomaly_rate, "n_train": fit.n_train,
                           "n_val": fit.n_val, "evaluation": outcome.evaluation},
            "eif_threshold": fit.eif_threshold, "eif_contamination": contamination,
            "training_window": metrics["training_window"], "pruned_features": list(prepared.pruned),
            "supervised": outcome.supervised}
