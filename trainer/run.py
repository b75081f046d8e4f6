"""One trainer run, and the loop that repeats it.

A run, under the model store's lock (a second trainer waits a moment, then gives up with a
message and changes nothing):

1. announce the current version if an earlier run could not (Kafka was down): the
   ``PUBLISHED`` marker next to ``CURRENT`` says what was last confirmed, where;
2. read the human baseline from ClickHouse and prepare it (:mod:`trainer.prepare`);
3. compare it with the current bundle's digest (:mod:`trainer.drift`);
4. decide: train (first model, ``--force``, drift, schedule, changed features) or reuse;
5. fit (:func:`trainer.fit.fit_ensemble`), with XGBoost when there are enough labels (noise
   filtered by :mod:`trainer.labels`) or the current bundle's XGBoost while it is younger
   than ``XGB_RETRAIN_INTERVAL_H``;
6. gate: a validation anomaly rate above ``VAL_ANOMALY_GATE`` refuses the model (the
   baseline was contaminated); the previous version stays current;
7. write the bundle (temp dir + rename), point ``CURRENT`` at it, purge old versions;
8. record the decision in ``model_training_history``; announce (only now, after the bundle
   and the pointer are on disk); write the report.

Every decision, including reuse and refusal, is recorded with the drift figures.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ja4_core.bundle import (TMP_PREFIX, LoadedBundle, ModelStore, load_bundle, new_version, read_manifest,
                                  smoke_check, write_bundle)
from ja4_core.ensemble import impute
from ja4_core.errors import BundleError, Ja4StreamError, StoreLockedError
from ja4_core.settings import Settings

from ja4_core import clickhouse_io
from ja4_core.clickhouse_io import ClickHouseIO, Decision, connect
from trainer.drift import DriftReport, check_drift
from trainer.fit import FitConfig, FitResult, fit_ensemble, medians_of, quantile_digest
from trainer.labels import LabelReport, clean_labels, eligibility, split_holdout
from trainer.metrics import write_run_metrics
from trainer.prepare import Prepared, prepare_baseline, select
from trainer.publish import PUBLISH_TIMEOUT_S, PublishError, issued_by, publish_activate
from trainer.report import evaluate, write_report

log = logging.getLogger(__name__)

#: How long a run waits for another trainer's lock before giving up.
LOCK_WAIT_S = 5.0
#: Fewer baseline rows than this and nothing is trained (the split would be meaningless).
MIN_BASELINE_ROWS = 200
#: Baseline rows stored in the manifest for the scorer's load-time smoke test.
SMOKE_ROWS = 8
PUBLISHED = "PUBLISHED"
REPORTS = "reports"
#: Loop retry backoff after a ClickHouse/Kafka failure: 5 s, 10 s, 20 s ... up to 5 minutes.
BACKOFF_BASE_S = 5.0
BACKOFF_MAX_S = 300.0

E_LOCKED = ("another trainer holds the model store lock for {model!r} ({path}); "
            "nothing was changed, try again when it has finished")


class RunInterrupted(Ja4StreamError):
    """A stop (SIGTERM / Ctrl-C) was requested during a run; nothing new was made current."""


@dataclass
class RunResult:
    """What a run decided and did; ``summary()`` is what the CLI prints."""

    decision: str  # trained | drift | reused | rejected | skipped | locked
    reason: str
    model: str
    version: str | None = None
    current: str | None = None
    previous: str | None = None
    published: str | None = None  # version announced by this run
    publish_error: str | None = None
    drift: DriftReport | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    report_dir: Path | None = None
    purged: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.decision != "locked" and self.publish_error is None

    def summary(self) -> list[tuple[str, str]]:
        rows = [("decision", self.decision), ("reason", self.reason), ("model", self.model),
                ("version", self.version or "-"), ("current", self.current or "-")]
        if self.drift is not None and self.drift.features:
            rows.append(("drift", f"{len(self.drift.drifted)}/{len(self.drift.features)} features "
                                  f"(share {self.drift.share:.2f}, threshold {self.drift.threshold:.2f})"))
        m = self.metrics
        if "n_baseline" in m:
            rows.append(("baseline rows", f"{m['n_baseline']} (train {m.get('n_train', '-')}, validation {m.get('n_val', '-')})"))
        if m.get("val_anomaly_rate") is not None:
            rows.append(("validation anomaly rate", f"{m['val_anomaly_rate']:.4f} (gate {m.get('val_anomaly_gate')})"))
        if m.get("xgb"):
            rows.append(("xgboost", str(m["xgb"])))
        labelled = m.get("evaluation_labelled") or {}
        for name, ev in (m.get("evaluation") or {}).items():
            text = f"{ev['roc_auc']:.4f} vs validation split"
            if name in labelled:
                text += f", {labelled[name]['roc_auc']:.4f} vs labelled humans"
            rows.append((f"ROC AUC {name}", text))
        if self.purged:
            rows.append(("purged", ", ".join(self.purged)))
        if self.published:
            rows.append(("announced", self.published))
        if self.publish_error:
            rows.append(("NOT announced", self.publish_error + " (the next run retries)"))
        if self.report_dir:
            rows.append(("report", str(self.report_dir / "report.html")))
        for step, secs in self.timings.items():
            rows.append((f"time {step}", f"{secs:.1f} s"))
        rows.append(("duration", f"{self.duration_s:.1f} s"))
        return rows


@dataclass
class SupervisedPlan:
    """The supervised part of a training run."""

    mode: str  # trained | reused | none
    fit_kwargs: dict[str, Any]  # xgb_data or xgb_prefit for fit_ensemble
    manifest: dict[str, Any] | None  # the manifest's "supervised" section (when trained)
    report: LabelReport
    #: Labelled rows (imputed matrix, labels) for the evaluation: those of the validation
    #: period, unless the supervised model had to train on them.
    held_out: tuple[np.ndarray, np.ndarray] | None


def fit_config(settings: Settings, nthreads: int | None = None) -> FitConfig:
    sample = settings.eif_sample_size
    return FitConfig(eif_ntrees=settings.eif_ntrees, eif_ndim=settings.eif_ndim,
                     eif_sample_size=int(sample) if sample != "auto" else "auto",
                     ae_epochs=settings.ae_epochs, ae_weight=settings.ae_weight, xgb_weight=settings.xgb_weight,
                     contamination=settings.eif_contamination, nthreads=nthreads or min(os.cpu_count() or 1, 8))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(float(epoch), tz=timezone.utc).isoformat()


def _parse_time(value: Any) -> datetime | None:
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


class Trainer:
    """Runs of one model: ``run_once`` decides and (maybe) trains; ``loop`` repeats it."""

    def __init__(self, settings: Settings, *, stop: threading.Event | None = None,
                 publish_timeout_s: float = PUBLISH_TIMEOUT_S, nthreads: int | None = None) -> None:
        self.settings = settings
        self.store = ModelStore(settings.model_store)
        self.model = settings.model_name
        self.stop = stop or threading.Event()
        self.publish_timeout_s = publish_timeout_s
        self.nthreads = nthreads
        self.lock_wait_s = LOCK_WAIT_S

    # -- helpers ----------------------------------------------------------------------
    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise RunInterrupted("stop requested; the run ended before making anything current")

    def _progress(self) -> Callable[[str, Any], None]:
        epochs = self.settings.ae_epochs
        every = max(1, epochs // 10)
        started = time.monotonic()

        def say(step: str, info: Any) -> None:
            self._check_stop()
            if step == "ae_epoch":
                if info["epoch"] % every == 0 or info["epoch"] == epochs:
                    log.info("  autoencoder epoch %d/%d, loss %.5f (%.0f s)", info["epoch"], epochs,
                             info["loss"], time.monotonic() - started)
                return
            log.info("  fitting %s: %s", step, ", ".join(f"{k}={v}" for k, v in info.items()))
        return say

    @property
    def marker_path(self) -> Path:
        return self.store.model_dir(self.model) / PUBLISHED

    def read_marker(self) -> dict[str, Any]:
        try:
            return json.loads(self.marker_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _write_marker(self, version: str, sha: str) -> None:
        """Record a confirmed announcement (atomically: temp file + rename)."""
        base = self.store.model_dir(self.model)
        tmp = base / f"{TMP_PREFIX}{PUBLISHED}-{secrets.token_hex(4)}"
        tmp.write_text(json.dumps({"version": version, "manifest_sha256": sha, "topic": self.settings.topic_control,
                                   "bootstrap": self.settings.kafka_bootstrap_servers,
                                   "published_at": datetime.now(timezone.utc).isoformat()}))
        os.replace(tmp, self.marker_path)

    def announce(self, version: str, *, rollback: bool = False) -> str:
        """Publish ``activate`` for a version on disk and record it in the marker."""
        path = self.store.bundle_dir(self.model, version)
        _, sha = read_manifest(path)
        publish_activate(self.settings, model=self.model, version=version, uri=self.store.uri(self.model, version),
                         manifest_sha256=sha, rollback=rollback, timeout=self.publish_timeout_s)
        self._write_marker(version, sha)
        return version

    def publish_pending(self) -> tuple[str | None, str | None]:
        """Announce ``CURRENT`` unless the marker says it was confirmed on this topic and
        broker. Returns (version announced, error)."""
        current = self.store.current(self.model)
        if current is None or current not in self.store.versions(self.model):
            return None, None
        try:
            _, sha = read_manifest(self.store.bundle_dir(self.model, current))
        except BundleError as exc:
            return None, f"current bundle unreadable: {exc}"
        marker = self.read_marker()
        if (marker.get("version") == current and marker.get("manifest_sha256") == sha
                and marker.get("topic") == self.settings.topic_control
                and marker.get("bootstrap") == self.settings.kafka_bootstrap_servers):
            return None, None
        # An older current than the newest bundle can only be an operator's rollback.
        rollback = current != self.store.versions(self.model)[-1]
        try:
            log.info("announcing %s/%s, not yet confirmed on %s", self.model, current, self.settings.topic_control)
            return self.announce(current, rollback=rollback), None
        except PublishError as exc:
            log.warning("could not announce %s/%s: %s", self.model, current, exc)
            return None, str(exc)

    def _load_current(self) -> tuple[LoadedBundle | None, str]:
        current = self.store.current(self.model)
        if current is None:
            return None, "first model"
        try:
            bundle = load_bundle(self.store.bundle_dir(self.model, current))
            smoke_check(bundle)
            return bundle, ""
        except BundleError as exc:
            log.warning("current bundle %s is unusable, training a replacement: %s", current, exc)
            return None, f"current bundle unusable ({exc})"

    def _purge_reports(self) -> None:
        versions = self.store.versions(self.model)
        root = self.store.model_dir(self.model) / REPORTS
        if not versions or not root.is_dir():
            return
        for entry in root.iterdir():
            if entry.is_dir() and entry.name < versions[0]:
                shutil.rmtree(entry, ignore_errors=True)

    # -- one run ----------------------------------------------------------------------
    def run_once(self, *, force: bool = False, now: datetime | None = None) -> RunResult:
        """Decide, maybe train, announce. ``now`` (default: the clock) ends the data window."""
        started = time.monotonic()
        now = now or datetime.now(timezone.utc)
        try:
            with self.store.lock(self.model, wait_s=self.lock_wait_s):
                result = self._run_locked(force=force, now=now)
        except StoreLockedError:
            message = E_LOCKED.format(model=self.model, path=self.store.model_dir(self.model))
            log.warning(message)
            return RunResult("locked", message, self.model, current=self.store.current(self.model),
                             duration_s=time.monotonic() - started)
        result.duration_s = time.monotonic() - started
        self._write_metrics(result)
        return result

    def _write_metrics(self, result: RunResult) -> None:
        """Refresh ``MODEL_STORE/<model>/trainer.prom`` (node-exporter textfile collector)."""
        try:
            write_run_metrics(result, self.store.model_dir(self.model) / "trainer.prom")
        except OSError as exc:  # metrics must never fail a run
            log.warning("could not write trainer metrics: %r", exc)

    def _run_locked(self, *, force: bool, now: datetime) -> RunResult:
        s = self.settings
        timings: dict[str, float] = {}
        t = time.monotonic()
        pending_version, pending_error = self.publish_pending()
        if pending_version or pending_error:
            timings["announce pending"] = time.monotonic() - t
        previous = self.store.current(self.model)
        t = time.monotonic()
        with connect(s.clickhouse_url) as ch:
            log.info("reading the baseline: last %g days of %s.%s", s.baseline_days, ch.database,
                     clickhouse_io.FEATURES_TABLE)
            features = ch.usable_features(s.features)
            base = ch.baseline(features, days=s.baseline_days, row_filter=s.baseline_filter,
                               max_rows=s.baseline_max_rows, now=now)
            timings["baseline query"] = time.monotonic() - t
            log.info("baseline: %d rows x %d features (%.1f s)", len(base), len(features), timings["baseline query"])
            current, why_none = self._load_current()

            def finish(decision: Decision, result: RunResult) -> RunResult:
                ch.record_decision(decision)
                if result.published is None and pending_version:
                    result.published = pending_version
                if result.publish_error is None and pending_error and not result.published:
                    result.publish_error = pending_error
                result.timings = timings
                return result

            if len(base) < MIN_BASELINE_ROWS:
                reason = f"{len(base)} baseline rows < {MIN_BASELINE_ROWS}: nothing trained"
                log.warning(reason)
                return finish(Decision(self.model, "skipped", reason, current_version=previous or "",
                                       previous_version=previous or "", n_baseline=len(base)),
                              RunResult("skipped", reason, self.model, current=previous, previous=previous))
            prepared = prepare_baseline(base.X, features, base.times, variance_threshold=s.prune_variance_threshold)

            drift: DriftReport | None = None
            if current is not None and current.manifest.get("digest"):
                common = [f for f in current.ensemble.features if f in features]
                drift = check_drift(select(base.X, features, common), common, current.manifest["digest"],
                                    threshold=s.drift_threshold, n_ref=current.manifest.get("digest_rows"))
                log.info("drift against %s: %d/%d features drifted (share %.2f, threshold %.2f)%s",
                         current.version, len(drift.drifted), len(drift.features), drift.share, s.drift_threshold,
                         ": " + ", ".join(drift.drifted) if drift.drifted else "")

            reason = self._decide(force, current, why_none, drift, prepared, now)
            drift_fields = dict(drift_share=drift.share if drift else None, drift_forced=bool(drift and drift.forced),
                                drifted_features=drift.drifted if drift else [],
                                drift=drift.to_dict() if drift else {})
            if reason is None:
                age = self._age_h(current, now)
                why = (f"trained {age:.1f} h ago (< RETRAIN_INTERVAL_H={s.retrain_interval_h:g}) and "
                       f"drift share {drift.share if drift else 0:.2f} < {s.drift_threshold:.2f}")
                log.info("reusing %s: %s", previous, why)
                return finish(Decision(self.model, "reused", why, version=previous or "", previous_version=previous or "",
                                       current_version=previous or "", n_baseline=len(prepared), **drift_fields),
                              RunResult("reused", why, self.model, version=previous, current=previous,
                                        previous=previous, drift=drift, metrics={"n_baseline": len(prepared)}))
            self._check_stop()
            return self._train(ch, prepared, base.start, base.end, current, previous, reason, drift,
                               drift_fields, now, timings, finish)

    def _age_h(self, current: LoadedBundle | None, now: datetime) -> float:
        if current is None:
            return float("inf")
        trained = _parse_time(current.manifest.get("trained_at") or current.manifest.get("created_at"))
        return (now - trained).total_seconds() / 3600.0 if trained else float("inf")

    def _decide(self, force: bool, current: LoadedBundle | None, why_none: str, drift: DriftReport | None,
                prepared: Prepared, now: datetime) -> str | None:
        """The reason to train, or None to reuse the current version."""
        if force:
            return "forced"
        if current is None:
            return why_none
        if drift is not None and drift.forced:
            return "drift"
        age = self._age_h(current, now)
        if age >= self.settings.retrain_interval_h:
            return f"scheduled: trained {age:.1f} h ago (RETRAIN_INTERVAL_H={self.settings.retrain_interval_h:g})"
        if tuple(current.ensemble.features) != prepared.features:
            return "the usable features changed"
        if current.manifest.get("digest") is None:
            return "current bundle has no drift digest"
        return None

    # -- training ---------------------------------------------------------------------
    def _supervised(self, ch: ClickHouseIO, prepared: Prepared, cut_time: int, current: LoadedBundle | None,
                    now: datetime) -> "SupervisedPlan":
        """Choose the supervised part: train (cleaned labels), reuse the current one, or none."""
        s = self.settings
        labels = ch.labelled(prepared.features, max_rows=s.baseline_max_rows, now=now)
        report = LabelReport(n_labels=len(labels), n_pos=labels.n_pos, n_neg=len(labels) - labels.n_pos,
                             n_analyst=int(np.sum(labels.source == "analyst")),
                             n_score=int(np.sum(labels.source == "score")))
        medians = medians_of(prepared.X)
        X_lab = impute(labels.X, medians)[0] if len(labels) else labels.X
        ok, why = eligibility(labels.y, s.xgb_min_labels)
        report.eligible, report.reason = ok, why
        reusable = None
        if current is not None and current.ensemble.xgb is not None and tuple(current.ensemble.features) == prepared.features:
            trained = _parse_time((current.manifest.get("supervised") or {}).get("trained_at"))
            if trained and (now - trained).total_seconds() / 3600.0 < s.xgb_retrain_interval_h:
                reusable = current
        later = labels.times >= cut_time
        held_out = (X_lab[later], labels.y[later]) if len(labels) else None
        if reusable is not None:
            log.info("reusing the XGBoost of %s (younger than XGB_RETRAIN_INTERVAL_H=%g h)",
                     reusable.version, s.xgb_retrain_interval_h)
            report.reason = f"reused from {reusable.version}"
            return SupervisedPlan("reused", {"xgb_prefit": reusable.ensemble.xgb},
                                  dict(reusable.manifest.get("supervised") or {}), report, held_out)
        if not ok:
            log.info("no supervised model: %s", why)
            return SupervisedPlan("none", {}, None, report, held_out)
        holdout = split_holdout(labels.times, labels.y, cut_time, s.xgb_min_labels)
        # The shipped model learns from every label, the newest included: a campaign that
        # analysts just labelled is exactly what it must catch. (The held-out period is still
        # reported, but for XGBoost it is then in-sample; the report says so.)
        train = np.ones(len(labels), dtype=bool)
        report.n_train, report.n_holdout = int(train.sum()), int(holdout.sum()) if holdout is not None else 0
        log.info("  cleanlab: out-of-fold XGBoost on %d labels (%d positive)", report.n_train,
                 int(labels.y[train].sum()))
        Xc, yc, flagged = clean_labels(X_lab[train], labels.y[train], nthreads=fit_config(s, self.nthreads).nthreads)
        report.n_flagged, report.n_removed = len(flagged), int(train.sum()) - len(yc)
        report.flagged = np.flatnonzero(train)[flagged]
        held = (X_lab[holdout], labels.y[holdout]) if holdout is not None else None
        return SupervisedPlan("trained", {"xgb_data": (Xc, yc)},
                              {"trained_at": now.isoformat(), "labels": report.to_dict(),
                               "note": "trained on all labels; held-out figures are in-sample for XGBoost"},
                              report, held)

    def _train(self, ch: ClickHouseIO, prepared: Prepared, start: int, end: int, current: LoadedBundle | None,
               previous: str | None, reason: str, drift: DriftReport | None, drift_fields: dict[str, Any],
               now: datetime, timings: dict[str, float], finish: Callable[[Decision, RunResult], RunResult]) -> RunResult:
        s = self.settings
        version = new_version()
        log.info("training %s/%s (%s) on %d rows x %d features", self.model, version, reason, len(prepared),
                 len(prepared.features))
        config = fit_config(s, self.nthreads)
        cut = min(max(int(round(len(prepared) * config.train_share)), 1), len(prepared) - 1)
        cut_time = int(prepared.times[cut])
        t = time.monotonic()
        plan = self._supervised(ch, prepared, cut_time, current, now)
        mode, supervised, label_report, held = plan.mode, plan.manifest, plan.report, plan.held_out
        timings["labels"] = time.monotonic() - t
        t = time.monotonic()
        fit: FitResult = fit_ensemble(prepared.X, prepared.features, config, progress=self._progress(),
                                      **plan.fit_kwargs)
        timings["fit"] = time.monotonic() - t
        ens = fit.ensemble

        # Evaluation (see trainer.report): the validation split vs held-out labelled bots, and
        # held-out labelled humans vs the same bots (the validation split holds unlabelled bots).
        X_val = impute(prepared.X[cut:], ens.medians)[0]
        neg = self._components(ens, X_val)
        pos = neg_labelled = None
        if held is not None and np.any(held[1] == 1):
            pos = self._components(ens, held[0][held[1] == 1])
            if np.any(held[1] == 0):
                neg_labelled = self._components(ens, held[0][held[1] == 0])
        evaluation = evaluate(neg, pos)
        evaluation_labelled = evaluate(neg_labelled, pos) if neg_labelled is not None else {}
        metrics: dict[str, Any] = {
            "model": self.model, "version": version, "reason": reason, "previous_version": previous,
            "n_baseline": len(prepared), "n_train": fit.n_train, "n_val": fit.n_val,
            "features_used": list(prepared.features), "pruned_features": list(prepared.pruned),
            "val_anomaly_rate": fit.val_anomaly_rate, "val_anomaly_gate": s.val_anomaly_gate,
            "eif_threshold": fit.eif_threshold, "thresholds": dict(ens.thresholds), "xgb": mode,
            "labels": label_report.to_dict(), "evaluation": evaluation, "evaluation_labelled": evaluation_labelled,
            "evaluation_note": "no labelled bots in the validation period" if pos is None else "",
            "training_window": {"start": _iso(start), "end": _iso(end), "first_row": _iso(prepared.times[0]),
                                "last_row": _iso(prepared.times[-1]), "validation_from": _iso(cut_time)},
            "drift": drift.to_dict() if drift else None,
            "ae_loss": fit.ae_loss_curve, "ae_val_loss": fit.ae_val_loss_curve,
        }
        decision_fields = dict(version=version, previous_version=previous or "", n_baseline=len(prepared),
                               n_train=fit.n_train, n_val=fit.n_val, n_labels=label_report.n_labels,
                               xgb_trained=mode == "trained", val_anomaly_rate=fit.val_anomaly_rate, **drift_fields)
        report_dir = self.store.model_dir(self.model) / REPORTS / version

        if fit.val_anomaly_rate > s.val_anomaly_gate:
            why = (f"validation anomaly rate {fit.val_anomaly_rate:.3f} > VAL_ANOMALY_GATE={s.val_anomaly_gate:g}: "
                   f"baseline looks contaminated; {previous or 'no version'} stays current")
            log.warning("refused %s: %s", version, why)
            metrics.update(decision="rejected", duration_s=sum(timings.values()))
            result = finish(Decision(self.model, "rejected", f"{reason}; {why}", current_version=previous or "",
                                     metrics=_slim(metrics), **decision_fields),
                            RunResult("rejected", why, self.model, version=version, current=previous, previous=previous,
                                      drift=drift, metrics=metrics))
            result.report_dir = report_dir
            write_report(report_dir, metrics=metrics, neg=neg, pos=pos, drift=drift,
                         ae_loss=fit.ae_loss_curve, ae_val_loss=fit.ae_val_loss_curve)
            return result

        self._check_stop()
        t = time.monotonic()
        smoke = prepared.X[cut:cut + SMOKE_ROWS]
        extra = {"digest": quantile_digest(prepared.X, prepared.features), "digest_rows": len(prepared),
                 "trained_at": now.isoformat(), "reason": reason, "previous_version": previous,
                 "validation": {"val_anomaly_rate": fit.val_anomaly_rate, "n_train": fit.n_train,
                                "n_val": fit.n_val, "evaluation": evaluation},
                 "eif_threshold": fit.eif_threshold, "eif_contamination": s.eif_contamination,
                 "training_window": metrics["training_window"], "pruned_features": list(prepared.pruned),
                 "supervised": supervised}
        info = write_bundle(self.store, ens, model=self.model, version=version, extra=extra, smoke_rows=smoke)
        self.store.set_current(self.model, version)
        purged = self.store.purge(self.model, s.model_history_count)
        self._purge_reports()
        timings["write"] = time.monotonic() - t
        log.info("wrote %s (%d bytes), CURRENT -> %s%s", info.path, info.size_bytes, version,
                 f"; purged {', '.join(purged)}" if purged else "")
        decision = "drift" if reason == "drift" else "trained"
        metrics.update(decision=decision)
        result = finish(Decision(self.model, decision, reason, current_version=version, metrics=_slim(metrics),
                                 **decision_fields),
                        RunResult(decision, reason, self.model, version=version, current=version, previous=previous,
                                  drift=drift, metrics=metrics, purged=purged))
        t = time.monotonic()
        try:
            result.published = self.announce(version)
            result.publish_error = None
        except PublishError as exc:
            log.warning("%s/%s is current on disk but was not announced: %s", self.model, version, exc)
            result.publish_error = str(exc)
        timings["announce"] = time.monotonic() - t
        metrics.update(duration_s=sum(timings.values()), published=result.published is not None)
        result.report_dir = report_dir
        write_report(report_dir, metrics=metrics, neg=neg, pos=pos, drift=drift,
                     ae_loss=fit.ae_loss_curve, ae_val_loss=fit.ae_val_loss_curve)
        return result

    @staticmethod
    def _components(ens: Any, X: np.ndarray) -> dict[str, np.ndarray]:
        batch = ens.score(X)
        out = {"eif": batch.eif, "ensemble": batch.anomaly}
        if batch.ae is not None:
            out["ae"] = batch.ae
            out["anomaly"] = ens.combine(batch.eif, batch.ae, None)
        if batch.xgb is not None:
            out["xgb"] = batch.xgb
        return out

    # -- rollback ---------------------------------------------------------------------
    def activate(self, version: str) -> RunResult:
        """Operator rollback: verify a stored version, point CURRENT at it, announce it with
        ``rollback=True``."""
        started = time.monotonic()
        with self.store.lock(self.model, wait_s=self.lock_wait_s):
            if version not in self.store.versions(self.model):
                raise BundleError(f"no version {version!r} of model {self.model!r} in {self.store.model_dir(self.model)}")
            bundle = load_bundle(self.store.bundle_dir(self.model, version))
            smoke_check(bundle)
            previous = self.store.current(self.model)
            self.store.set_current(self.model, version)
            result = RunResult("rollback", f"operator activation (was {previous or 'none'})", self.model,
                               version=version, current=version, previous=previous)
            try:
                result.published = self.announce(version, rollback=True)
            except PublishError as exc:
                result.publish_error = str(exc)
        try:
            with connect(self.settings.clickhouse_url) as ch:
                ch.record_decision(Decision(self.model, "rollback", result.reason, version=version,
                                            previous_version=previous or "", current_version=version,
                                            issued_by=issued_by()))
        except Exception as exc:  # the rollback itself is done; the history row is a courtesy
            log.warning("rollback not recorded in %s: %s", clickhouse_io.HISTORY_TABLE, exc)
        result.duration_s = time.monotonic() - started
        return result


def _slim(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics for the history table: without the long loss curves and per-feature drift."""
    return {k: v for k, v in metrics.items() if k not in ("ae_loss", "ae_val_loss", "drift", "features_used")}


# --- the loop ----------------------------------------------------------------------------

def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors the loop survives with a retry: ClickHouse and Kafka outages, disk hiccups."""
    from clickhouse_connect.driver.exceptions import ClickHouseError
    from confluent_kafka import KafkaException

    return (ClickHouseError, KafkaException, PublishError, OSError)


def loop(settings: Settings, stop: threading.Event, *, trainer: Trainer | None = None,
         on_result: Callable[[RunResult], None] | None = None) -> int:
    """Run every ``TRAINER_CHECK_INTERVAL_S`` (each run checks drift and trains when the model
    is older than ``RETRAIN_INTERVAL_H`` or has drifted) until ``stop`` is set. Failures of
    ClickHouse or Kafka are retried with exponential backoff; returns 0 on a clean stop."""
    trainer = trainer or Trainer(settings, stop=stop)
    transient = transient_errors()
    failures = 0
    log.info("trainer loop: checking every %g s, retraining every %g h (model %s)",
             settings.trainer_check_interval_s, settings.retrain_interval_h, settings.model_name)
    while not stop.is_set():
        try:
            result = trainer.run_once()
            if on_result:
                on_result(result)
            if result.publish_error:
                raise PublishError(result.publish_error)
            failures = 0
            wait = settings.trainer_check_interval_s
        except RunInterrupted:
            break
        except transient as exc:
            failures += 1
            wait = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (failures - 1), settings.trainer_check_interval_s)
            log.warning("run failed (%s: %s); retry %d in %.0f s", type(exc).__name__, exc, failures, wait)
        stop.wait(wait)
    log.info("trainer loop stopped")
    return 0
