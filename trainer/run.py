"""One trainer run, and the loop that repeats it.

A run goes one way, under the model store's lock (a second trainer waits a moment, then
gives up with a message and changes nothing). Each step is a function with a named input and
output; only the read, write, announce and report steps touch ClickHouse, the store or Kafka:

0. **catch up** (:func:`trainer.announce.announce_pending`): announce ``CURRENT`` if an
   earlier run could not (Kafka was down); the ``PUBLISHED`` marker says what was confirmed;
1. **read** (:func:`trainer.inputs.read_inputs` -> :class:`~trainer.inputs.TrainingInputs`):
   the baseline and the labels from ClickHouse, the current bundle from the store;
2. **plan** (:func:`trainer.plan.plan_run` -> :class:`~trainer.plan.TrainingPlan`, no I/O):
   skip, reuse or train, and why (first model, ``--force``, drift, schedule, changed
   features); for training, the one train/validation cut and the supervised plan;
3. **fit and evaluate** (:func:`trainer.train.fit_and_evaluate` ->
   :class:`~trainer.train.FitOutcome`, no I/O): one imputation, the members, the weights
   (:func:`trainer.fit.decide_weights`), the thresholds, the evaluation from the validation
   scores the fit produced, the gate (``VAL_ANOMALY_GATE``: a contaminated baseline is refused
   and the previous version stays current);
4. **write** (:func:`trainer.write.write_version` -> :class:`~trainer.write.Written`): the
   bundle (temp dir + rename), ``CURRENT``, the purge;
5. **announce** (:func:`trainer.announce.announce`): only now, after the bundle and the
   pointer are on disk, with the manifest hash the write returned;
6. **report** (:func:`trainer.report.report_run`): the decision in ``model_training_history``
   and the report files; ``trainer.prom`` when the run ends (also for a locked run).

Every decision, including reuse and refusal, is recorded with the drift figures.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ja4_core import clickhouse_io
from ja4_core.bundle import ModelStore, load_bundle, new_version, read_manifest, smoke_check
from ja4_core.clickhouse_io import Decision, connect
from ja4_core.errors import BundleError, Ja4StreamError, StoreLockedError
from ja4_core.retrain_request import RetrainRequest
from ja4_core.settings import Settings
from trainer.announce import PUBLISHED, announce_challenger, announce_pending, marker_path, read_marker
from trainer.announce import announce as announce_version
from trainer.champion import WAIT
from trainer.champion_step import Judged, judge_challenger
from trainer.drift import DriftReport
from trainer.fit import FitConfig
from trainer.inputs import TrainingInputs, read_inputs
from trainer.metrics import write_run_metrics
from trainer.plan import MIN_BASELINE_ROWS, TrainingPlan, plan_run
from trainer.publish import PUBLISH_TIMEOUT_S, PublishError, issued_by
from trainer.report import RunReport, report_run
from trainer.retrain_watch import RequestWatcher, requested_plan
from trainer.train import SMOKE_ROWS, FitOutcome, fit_and_evaluate, manifest_extra, run_metrics
from trainer.write import REPORTS, report_dir, write_version

__all__ = ["BACKOFF_BASE_S", "BACKOFF_MAX_S", "LOCK_WAIT_S", "MIN_BASELINE_ROWS", "PUBLISHED", "REPORTS",
           "SMOKE_ROWS", "RunInterrupted", "RunResult", "Trainer", "fit_config", "loop", "transient_errors"]

log = logging.getLogger(__name__)

#: How long a run waits for another trainer's lock before giving up.
LOCK_WAIT_S = 5.0
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
    #: The judge's verdict on a shadowing challenger this run (see :mod:`trainer.champion_step`),
    #: or, for a run that announced its version as a challenger, ``{"decision": "shadow", ...}``.
    challenger: dict[str, Any] | None = None

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
        if self.challenger:
            ch = self.challenger
            rows.append(("challenger", f"{ch.get('challenger', '-')}: {ch.get('decision')} ({ch.get('reason', '')})"))
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


def fit_config(settings: Settings, nthreads: int | None = None) -> FitConfig:
    """The fit's hyperparameters from the settings."""
    sample = settings.eif_sample_size
    return FitConfig(eif_ntrees=settings.eif_ntrees, eif_ndim=settings.eif_ndim,
                     eif_sample_size=int(sample) if sample != "auto" else "auto",
                     ae_epochs=settings.ae_epochs, ae_weight=settings.ae_weight, xgb_weight=settings.xgb_weight,
                     contamination=settings.eif_contamination, nthreads=nthreads or min(os.cpu_count() or 1, 8))


@dataclass(frozen=True)
class Pending:
    """What step 0 announced for an earlier run, or why it could not."""

    version: str | None = None
    error: str | None = None

    def merge_into(self, result: RunResult) -> None:
        """A run that announces nothing itself reports the catch-up's outcome."""
        if result.published is None and self.version:
            result.published = self.version
        if result.publish_error is None and self.error and not result.published:
            result.publish_error = self.error


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
        """The fit's progress callback: logs, and ends the run when a stop was requested."""
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
        return marker_path(self.store, self.model)

    def read_marker(self) -> dict[str, Any]:
        return read_marker(self.store, self.model)

    def announce(self, version: str, *, rollback: bool = False) -> str:
        """Publish ``activate`` for a version on disk (its manifest hash read from disk: for
        versions this process did not just write) and record it in the marker."""
        _, sha = read_manifest(self.store.bundle_dir(self.model, version))
        return announce_version(self.settings, self.store, self.model, version, sha, rollback=rollback,
                                timeout=self.publish_timeout_s)

    def publish_pending(self) -> tuple[str | None, str | None]:
        """Step 0: announce ``CURRENT`` unless confirmed already. Returns (version announced, error)."""
        return announce_pending(self.settings, self.store, self.model, timeout=self.publish_timeout_s)

    def _judge(self, ch: Any, now: datetime) -> Judged | None:
        """Step 0b: the verdict on the live challenger, if any (Kafka unreadable: no verdict now)."""
        if self.settings.promotion_policy != "shadow":
            return None
        try:
            return judge_challenger(ch, self.settings, self.store, now=now, publish_timeout_s=self.publish_timeout_s)
        except PublishError as exc:
            log.warning("challenger not judged this run: %s", exc)
            return None

    # -- one run ----------------------------------------------------------------------
    def run_once(self, *, force: bool = False, now: datetime | None = None,
                 request: RetrainRequest | None = None) -> RunResult:
        """Decide, maybe train, announce. ``now`` (default: the clock) ends the data window;
        a replica's ``request`` (:mod:`trainer.retrain_watch`) makes it a ``drift`` run."""
        started = time.monotonic()
        now = now or datetime.now(timezone.utc)
        try:
            with self.store.lock(self.model, wait_s=self.lock_wait_s):
                result = self._run_locked(force=force, now=now, request=request)
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

    def _run_locked(self, *, force: bool, now: datetime, request: RetrainRequest | None = None) -> RunResult:
        s = self.settings
        timings: dict[str, float] = {}
        t = time.monotonic()
        pending = Pending(*self.publish_pending())  # 0. catch up
        if pending.version or pending.error:
            timings["announce pending"] = time.monotonic() - t
        with connect(s.clickhouse_url) as ch:
            judged = self._judge(ch, now)  # 0b. judge a shadowing challenger (trainer.champion_step)
            if judged is not None and judged.verdict.action == WAIT and not force and request is None:
                result = RunResult("shadowing", judged.verdict.reason, self.model, version=judged.challenger,
                                   current=judged.champion, previous=judged.champion,
                                   challenger=judged.as_metrics(), timings=timings)
                pending.merge_into(result)
                return result  # no retrain while a challenger is being judged (its verdict is recorded)
            inputs = read_inputs(ch, self.store, s, now=now)  # 1. read
            timings.update(inputs.seconds)
            t = time.monotonic()
            plan = plan_run(inputs, s, force=force or request is not None)  # 2. plan
            timings["plan"] = time.monotonic() - t
            if request is not None:
                plan = requested_plan(plan, request)
            if plan.action == "train":
                result, report = self._train(inputs, plan, pending, timings)  # 3.-5.
            else:
                result, report = _not_trained(inputs, plan)
                pending.merge_into(result)
            result.timings = timings
            if judged is not None and result.challenger is None:
                result.challenger = judged.as_metrics()
            result.report_dir = report.directory
            t = time.monotonic()
            report_run(ch, report)  # 6. report
            timings["report"] = time.monotonic() - t
        return result

    def _train(self, inputs: TrainingInputs, plan: TrainingPlan, pending: Pending,
               timings: dict[str, float]) -> tuple[RunResult, RunReport]:
        """Steps 3 (fit and evaluate), 4 (write) and 5 (announce) of a training run."""
        s, model, previous, prepared = self.settings, self.model, inputs.previous, plan.prepared
        assert prepared is not None
        self._check_stop()
        version = new_version()
        log.info("training %s/%s (%s) on %d rows x %d features", model, version, plan.reason, len(prepared),
                 len(prepared.features))
        outcome = fit_and_evaluate(inputs, plan, fit_config(s, self.nthreads), val_anomaly_gate=s.val_anomaly_gate,
                                   progress=self._progress())
        timings.update(outcome.seconds)
        fit = outcome.fit
        metrics = run_metrics(inputs, plan, outcome, version=version, val_anomaly_gate=s.val_anomaly_gate)
        fields = dict(version=version, previous_version=previous or "", n_baseline=len(prepared),
                      n_train=fit.n_train, n_val=fit.n_val, n_labels=outcome.labels.n_labels,
                      xgb_trained=outcome.xgb_mode == "trained", val_anomaly_rate=fit.val_anomaly_rate,
                      **plan.drift_fields)
        directory = report_dir(self.store, model, version)

        if outcome.rejected is not None:
            log.warning("refused %s: %s", version, outcome.rejected)
            metrics.update(decision="rejected", duration_s=sum(timings.values()))
            decision = Decision(model, "rejected", f"{plan.reason}; {outcome.rejected}", current_version=previous or "",
                                metrics=_slim(metrics), **fields)
            result = RunResult("rejected", outcome.rejected, model, version=version, current=previous,
                               previous=previous, drift=plan.drift, metrics=metrics)
            pending.merge_into(result)
            return result, _run_report(decision, directory, metrics, outcome, plan.drift)

        self._check_stop()
        # PROMOTION_POLICY=shadow once a champion serves: the new version is announced as a
        # challenger and CURRENT stays the champion's until the judge promotes it.
        shadow = s.promotion_policy == "shadow" and previous is not None
        t = time.monotonic()
        written = write_version(self.store, outcome.ensemble, model=model, version=version,  # 4. write
                                extra=manifest_extra(inputs, plan, outcome, metrics, contamination=s.eif_contamination),
                                smoke_rows=outcome.smoke_rows, keep=s.model_history_count, make_current=not shadow)
        timings["write"] = time.monotonic() - t
        kind = "drift" if plan.reason == "drift" else "trained"
        metrics.update(decision=kind)
        reason = plan.reason + ("; announced as a challenger (PROMOTION_POLICY=shadow)" if shadow else "")
        current = previous if shadow else version
        decision = Decision(model, kind, reason, current_version=current or "", metrics=_slim(metrics), **fields)
        result = RunResult(kind, reason, model, version=version, current=current, previous=previous,
                           drift=plan.drift, metrics=metrics, purged=list(written.purged),
                           challenger={"decision": "shadow", "challenger": version, "champion": previous,
                                       "reason": "announced as a challenger"} if shadow else None)
        pending.merge_into(result)
        t = time.monotonic()
        try:  # 5. announce, with the hash the write returned
            if shadow:
                result.published = announce_challenger(s, self.store, model, version, written.manifest_sha256,
                                                       timeout=self.publish_timeout_s)
            else:
                result.published = announce_version(s, self.store, model, version, written.manifest_sha256,
                                                    timeout=self.publish_timeout_s)
            result.publish_error = None
        except PublishError as exc:
            log.warning("%s/%s is current on disk but was not announced: %s", model, version, exc)
            result.publish_error = str(exc)
        timings["announce"] = time.monotonic() - t
        metrics.update(duration_s=sum(timings.values()), published=result.published is not None)
        return result, _run_report(decision, directory, metrics, outcome, plan.drift)

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




def _not_trained(inputs: TrainingInputs, plan: TrainingPlan) -> tuple[RunResult, RunReport]:
    """The result and history row of a run that skipped or reused."""
    model, previous = inputs.model, inputs.previous
    if plan.action == "skip":
        return (RunResult("skipped", plan.reason, model, current=previous, previous=previous),
                RunReport(Decision(model, "skipped", plan.reason, current_version=previous or "",
                                   previous_version=previous or "", n_baseline=len(inputs.baseline))))
    n = len(plan.prepared) if plan.prepared is not None else 0
    return (RunResult("reused", plan.reason, model, version=previous, current=previous, previous=previous,
                      drift=plan.drift, metrics={"n_baseline": n}),
            RunReport(Decision(model, "reused", plan.reason, version=previous or "", previous_version=previous or "",
                               current_version=previous or "", n_baseline=n, **plan.drift_fields)))


def _run_report(decision: Decision, directory: Path, metrics: dict[str, Any], outcome: FitOutcome,
                drift: DriftReport | None) -> RunReport:
    return RunReport(decision, directory, metrics=metrics, neg=outcome.neg, pos=outcome.pos, drift=drift,
                     ae_loss=outcome.fit.ae_loss_curve, ae_val_loss=outcome.fit.ae_val_loss_curve)


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
         on_result: Callable[[RunResult], None] | None = None, watch_requests: bool = True) -> int:
    """Run every ``TRAINER_CHECK_INTERVAL_S`` (each run checks drift and trains when the model
    is older than ``RETRAIN_INTERVAL_H`` or has drifted) until ``stop`` is set, and at once when
    a replica's retrain request is accepted (:mod:`trainer.retrain_watch`). Failures of
    ClickHouse or Kafka are retried with exponential backoff; returns 0 on a clean stop."""
    trainer = trainer or Trainer(settings, stop=stop)
    transient = transient_errors()
    failures = 0
    watcher = RequestWatcher(settings, trainer.store, stop).start() if watch_requests else None
    request: RetrainRequest | None = None
    log.info("trainer loop: checking every %g s, retraining every %g h (model %s)",
             settings.trainer_check_interval_s, settings.retrain_interval_h, settings.model_name)
    while not stop.is_set():
        try:
            result = trainer.run_once(request=request) if request is not None else trainer.run_once()
            request = None  # acted on (a failed run above keeps it for the retry)
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
        if watcher is None:
            stop.wait(wait)
        else:
            request = watcher.wait(wait) or request
    log.info("trainer loop stopped")
    return 0
