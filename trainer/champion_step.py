"""The judge step of a trainer run, and the operator's ``promote`` / ``retire``.

Read (the live challenger from the control topic through the one reader,
:func:`trainer.publish.read_control_latest`; its labelled records from ClickHouse,
:func:`ja4_core.shadow_table.shadow_pairs`, every value bound as a parameter) -> judge
(:func:`trainer.champion.judge`, pure) -> act: a promotion is an ordinary activation of the
challenger's version (``CURRENT`` first, then ``activate``, then the ``PUBLISHED`` marker),
a retirement a signed ``retire``. Every verdict, waiting included, is recorded in
``model_training_history`` with its figures (decision ``shadowing``, ``promoted`` or
``retired``); the run's ``trainer.prom`` and summary show the last one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ja4_core.bundle import ModelStore, load_bundle, read_manifest, smoke_check
from ja4_core.clickhouse_io import Decision
from ja4_core.control import ControlMessage
from ja4_core.errors import BundleError, Ja4StreamError
from ja4_core.settings import Settings
from ja4_core.shadow_table import shadow_pairs
from trainer.announce import announce, announce_challenger
from trainer.champion import PROMOTE, RETIRE, WAIT, JudgeInputs, JudgePolicy, Verdict, judge
from trainer.publish import PUBLISH_TIMEOUT_S, PublishError, issued_by, read_control_latest

if TYPE_CHECKING:
    from ja4_core.clickhouse_io import ClickHouseIO

log = logging.getLogger(__name__)

#: History decisions of the judge, by verdict.
DECISION_OF = {WAIT: "shadowing", PROMOTE: "promoted", RETIRE: "retired"}


class NoChallengerError(Ja4StreamError):
    """``promote`` / ``retire`` without a version while no challenger shadows."""


@dataclass
class Judged:
    """What the judge step did: the verdict on which challenger, and the outcome of acting."""

    challenger: str
    champion: str
    verdict: Verdict
    published: str | None = None
    publish_error: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def decision(self) -> str:
        return DECISION_OF[self.verdict.action]

    def as_metrics(self) -> dict[str, Any]:
        """For the run's metrics (``trainer.prom``, the summary)."""
        return {"decision": self.decision, "challenger": self.challenger, "champion": self.champion,
                "reason": self.verdict.reason, **self.verdict.figures}


def policy(settings: Settings) -> JudgePolicy:
    return JudgePolicy(settings.shadow_min_bots, settings.shadow_min_humans, settings.shadow_margin,
                       settings.shadow_max_hours)


def live_challenger(settings: Settings, model: str) -> tuple[ControlMessage | None, ControlMessage | None]:
    """(the live challenger's ``shadow`` message, the champion's ``activate``), as every
    replica would choose them; raises :class:`PublishError` when Kafka cannot be read."""
    entry = read_control_latest(settings).get(model)
    if entry is None:
        return None, None
    return entry.challenger, entry.message


def judge_challenger(ch: "ClickHouseIO", settings: Settings, store: ModelStore, *, now: datetime | None = None,
                     publish_timeout_s: float = PUBLISH_TIMEOUT_S) -> Judged | None:
    """Judge the live challenger, act on the verdict and record it; None when none shadows."""
    model = settings.model_name
    challenger, champion = live_challenger(settings, model)
    if challenger is None or champion is None:
        return None
    now = now or datetime.now(timezone.utc)
    pairs = shadow_pairs(ch, model=model, challenger_version=challenger.version, champion_version=champion.version,
                         since=challenger.issued_at_dt)
    hours = max(0.0, (now - challenger.issued_at_dt).total_seconds() / 3600.0)
    verdict = judge(JudgeInputs(pairs.y, pairs.challenger, pairs.champion, pairs.champion_alert), policy(settings),
                    shadow_hours=hours)
    judged = Judged(challenger.version, champion.version, verdict)
    log.info("challenger %s/%s vs champion %s: %s (%s)", model, challenger.version, champion.version,
             judged.decision, verdict.reason)
    if verdict.action == PROMOTE:
        _act(judged, lambda: _promote_locked(settings, store, challenger.version, publish_timeout_s))
    elif verdict.action == RETIRE:
        _act(judged, lambda: retire_version(settings, store, challenger.version, timeout=publish_timeout_s))
    record(ch, model, judged, issued_by())
    return judged


def _act(judged: Judged, action: Any) -> None:
    try:
        judged.published = action()
    except (PublishError, BundleError) as exc:  # the next run judges again
        log.warning("could not %s %s: %s", judged.verdict.action, judged.challenger, exc)
        judged.publish_error = str(exc)


def record(ch: "ClickHouseIO", model: str, judged: Judged, by: str) -> None:
    """One ``model_training_history`` row for a verdict (with its figures)."""
    promoted = judged.verdict.action == PROMOTE and judged.publish_error is None
    ch.record_decision(Decision(model, judged.decision, judged.verdict.reason
                                + (f"; NOT carried out: {judged.publish_error}" if judged.publish_error else ""),
                                version=judged.challenger, previous_version=judged.champion,
                                current_version=judged.challenger if promoted else judged.champion,
                                metrics=judged.as_metrics(), issued_by=by))


def promote_version(settings: Settings, store: ModelStore, version: str, *,
                    timeout: float = PUBLISH_TIMEOUT_S) -> str:
    """Make a stored version the champion: verify it, point ``CURRENT`` at it, announce
    ``activate`` (which ends its shadowing on every replica). Returns the version."""
    model = settings.model_name
    with store.lock(model, wait_s=5.0):
        return _promote_locked(settings, store, version, timeout)


def _promote_locked(settings: Settings, store: ModelStore, version: str, timeout: float) -> str:
    model = settings.model_name
    if version not in store.versions(model):
        raise BundleError(f"no version {version!r} of model {model!r} in {store.model_dir(model)}")
    smoke_check(load_bundle(store.bundle_dir(model, version)))
    _, sha = read_manifest(store.bundle_dir(model, version))
    store.set_current(model, version)
    return announce(settings, store, model, version, sha, timeout=timeout)


def retire_version(settings: Settings, store: ModelStore, version: str, *, timeout: float = PUBLISH_TIMEOUT_S) -> str:
    """Announce ``retire`` for a challenger: every replica stops shadowing it."""
    model = settings.model_name
    try:
        _, sha = read_manifest(store.bundle_dir(model, version))
    except BundleError:  # deleted since: the retirement still names it
        sha = "0" * 64
    return announce_challenger(settings, store, model, version, sha, retire=True, timeout=timeout)


def operator_decision(settings: Settings, store: ModelStore, action: str, version: str | None) -> Judged:
    """``stream-trainer promote|retire [VERSION]``: act on the named version (default: the
    live challenger) and record the decision; raises :class:`NoChallengerError`."""
    challenger, champion = live_challenger(settings, settings.model_name)
    version = version or (challenger.version if challenger is not None else None)
    if version is None:
        raise NoChallengerError(f"no challenger of {settings.model_name!r} is shadowing; name a VERSION")
    verdict = Verdict(action, f"operator {'promotion' if action == PROMOTE else 'retirement'}", {})
    judged = Judged(version, champion.version if champion is not None else "", verdict)
    if action == PROMOTE:
        judged.published = promote_version(settings, store, version)
    else:
        judged.published = retire_version(settings, store, version)
    try:
        from ja4_core.clickhouse_io import connect

        with connect(settings.clickhouse_url) as ch:
            record(ch, settings.model_name, judged, issued_by())
    except Exception as exc:  # noqa: BLE001 - done on the control topic; the history row is a courtesy
        log.warning("operator %s of %s not recorded in model_training_history: %s", action, version, exc)
    return judged


def add_challenger_gauges(result: Any, registry: Any) -> None:
    """The last verdict's figures in ``trainer.prom`` (called by :mod:`trainer.metrics`)."""
    from prometheus_client import Gauge

    ch = getattr(result, "challenger", None) or {}
    decision = Gauge("ja4_trainer_challenger_decision", "1 for the last run's challenger decision",
                     ["decision"], registry=registry)
    for d in ("shadow", *DECISION_OF.values()):
        decision.labels(decision=d).set(1.0 if ch.get("decision") == d else 0.0)
    auc = Gauge("ja4_trainer_challenger_roc_auc", "ROC AUC on the labelled records both models scored",
                ["model"], registry=registry)
    recall = Gauge("ja4_trainer_challenger_recall", "Recall at the champion's human false-alert rate on the same "
                   "records", ["model"], registry=registry)
    labels = Gauge("ja4_trainer_challenger_labels", "Labelled records scored by both models", ["label"],
                   registry=registry)
    for role in ("champion", "challenger"):
        if ch.get(f"{role}_roc_auc") is not None:
            auc.labels(model=role).set(float(ch[f"{role}_roc_auc"]))
        if ch.get(f"{role}_recall") is not None:
            recall.labels(model=role).set(float(ch[f"{role}_recall"]))
    for label, key in (("bot", "n_bots"), ("human", "n_humans")):
        if ch.get(key) is not None:
            labels.labels(label=label).set(float(ch[key]))
