"""The training report: one self-contained HTML page (PNG plots embedded as base64) plus
``metrics.json``, written to ``MODEL_STORE/<model>/reports/<version>/`` (outside the bundle
directory, whose files are checksummed by its manifest).

Evaluation data, stated in the page: negatives are the baseline's *validation split* (the
last 20 % in time, humans as far as the labels know); positives are *held-out labelled bots*
(labelled rows at or after the start of the validation split, never used for training) when
labels exist. As the validation split also holds bots nobody labelled, a second table
compares held-out *labelled* humans with the same bots. Without labelled bots there are no
ROC/PR curves, only the score distribution of the validation humans.

:func:`report_run` is the report step of a run: the history row in ``model_training_history``
and, for a run that fitted a model, these files (``trainer.prom`` follows when the run ends,
see :func:`trainer.metrics.write_run_metrics`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from matplotlib.figure import Figure  # the object API: no pyplot global state, Agg by default

from ja4_core.clickhouse_io import Decision
from trainer.drift import DriftReport

if TYPE_CHECKING:
    from ja4_core.clickhouse_io import ClickHouseIO

#: Score columns shown, in this order, when present.
COMPONENTS: tuple[str, ...] = ("eif", "ae", "xgb", "anomaly", "ensemble")
LABELS = {"eif": "EIF", "ae": "autoencoder", "xgb": "XGBoost", "anomaly": "EIF+AE", "ensemble": "ensemble"}


def evaluate(neg: Mapping[str, np.ndarray], pos: Mapping[str, np.ndarray] | None) -> dict[str, dict[str, float]]:
    """ROC AUC and average precision (PR AUC) per component, bots = positive class."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    out: dict[str, dict[str, float]] = {}
    if not pos:
        return out
    for name in COMPONENTS:
        if name not in neg or name not in pos or not len(pos[name]) or not len(neg[name]):
            continue
        y = np.concatenate([np.zeros(len(neg[name])), np.ones(len(pos[name]))])
        s = np.concatenate([neg[name], pos[name]])
        out[name] = {"roc_auc": float(roc_auc_score(y, s)), "pr_auc": float(average_precision_score(y, s)),
                     "n_neg": int(len(neg[name])), "n_pos": int(len(pos[name]))}
    return out


def operating_point(bots: np.ndarray, thresholds: Mapping[str, float],
                    alert_cuts: Mapping[str, float] | None = None,
                    kinds: np.ndarray | None = None) -> dict[str, Any]:
    """Recall of held-out labelled bots (their combined scores ``bots``) at each threat level
    and at the cuts of 1 % and 5 % human false alerts (``alert_cuts``, set on the same humans
    as the levels, see :func:`trainer.fit.assemble`); ``kinds``: each bot's kind, for the
    recall per kind at each of those points. The scorer's rule: at or above a cut.

    >>> op = operating_point(np.array([0.2, 0.6, 0.95, 0.99]), {"LOW": 0.5, "HIGH": 0.9},
    ...                      {"1pct": 0.97, "5pct": 0.9}, kinds=np.array(["a", "a", "b", "b"]))
    >>> op["recall"]
    {'LOW': 0.75, 'HIGH': 0.5, 'at_1pct_human_alerts': 0.25, 'at_5pct_human_alerts': 0.5}
    >>> op["by_kind"]["b"]["recall"]["at_1pct_human_alerts"], op["by_kind"]["a"]["n_bots"]
    (0.5, 2)
    """
    s = np.asarray(bots, dtype=np.float64)
    cuts = {**{k: float(v) for k, v in thresholds.items()},
            **{f"at_{k}_human_alerts": float(v) for k, v in (alert_cuts or {}).items()}}

    def recall(sel: np.ndarray) -> dict[str, float]:
        return {k: float(np.mean(sel >= c)) if len(sel) else 0.0 for k, c in cuts.items()}

    out: dict[str, Any] = {"n_bots": int(len(s)), "recall": recall(s)}
    if kinds is not None:
        kinds = np.asarray(kinds, dtype=object)
        out["by_kind"] = {str(k): {"n_bots": int(np.sum(kinds == k)), "recall": recall(s[kinds == k])}
                          for k in sorted(set(kinds.tolist()))}
    return out


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def plot_distributions(neg: Mapping[str, np.ndarray], pos: Mapping[str, np.ndarray] | None) -> str:
    names = [n for n in COMPONENTS if n in neg]
    fig = Figure(figsize=(4.2 * len(names), 3.2))
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        bins = np.linspace(0.0, 1.0, 41).tolist()
        ax.hist(neg[name], bins=bins, alpha=0.6, density=True, label=f"validation humans ({len(neg[name])})")
        if pos and name in pos and len(pos[name]):
            ax.hist(pos[name], bins=bins, alpha=0.6, density=True, label=f"held-out bots ({len(pos[name])})")
        ax.set_title(LABELS[name])
        ax.set_xlabel("score")
        if i == 0:
            ax.legend(fontsize=7)
    return _png(fig)


def plot_curves(neg: Mapping[str, np.ndarray], pos: Mapping[str, np.ndarray]) -> str:
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig = Figure(figsize=(10, 4))
    roc_ax, pr_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name in COMPONENTS:
        if name not in neg or name not in pos or not len(pos[name]):
            continue
        y = np.concatenate([np.zeros(len(neg[name])), np.ones(len(pos[name]))])
        s = np.concatenate([neg[name], pos[name]])
        fpr, tpr, _ = roc_curve(y, s)
        prec, rec, _ = precision_recall_curve(y, s)
        roc_ax.plot(fpr, tpr, label=LABELS[name])
        pr_ax.plot(rec, prec, label=LABELS[name])
    roc_ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    roc_ax.set(title="ROC (validation split)", xlabel="false positive rate", ylabel="true positive rate")
    pr_ax.set(title="precision-recall", xlabel="recall", ylabel="precision")
    roc_ax.legend(fontsize=8)
    pr_ax.legend(fontsize=8)
    return _png(fig)


def plot_drift(drift: DriftReport) -> str:
    feats = sorted(drift.features, key=lambda f: f.ks)
    fig = Figure(figsize=(10, max(3.0, 0.22 * len(feats) + 1)))
    ks_ax, kl_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    names = [f.feature for f in feats]
    colors = ["tab:red" if f.drifted else "tab:blue" for f in feats]
    y = np.arange(len(feats))
    ks_ax.barh(y, [f.ks for f in feats], color=colors)
    ks_ax.set_yticks(y, names, fontsize=7)
    from trainer.drift import KL_LIMIT, KS_DISTANCE
    ks_ax.axvline(KS_DISTANCE, color="k", ls=":")
    ks_ax.set_title("KS distance to the previous digest")
    kl_ax.barh(y, [min(f.kl, 5.0) for f in feats], color=colors)
    kl_ax.set_yticks(y, [""] * len(feats))
    kl_ax.axvline(KL_LIMIT, color="k", ls=":")
    kl_ax.set_title("KL on quantile bins (nats)")
    return _png(fig)


def plot_loss(train: list[float], val: list[float]) -> str:
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(range(1, len(train) + 1), train, marker=".", label="training")
    if val:
        ax.plot(range(1, len(val) + 1), val, marker=".", label="validation")
    ax.set(title="autoencoder loss (MSE)", xlabel="epoch", yscale="log")
    ax.legend(fontsize=8)
    return _png(fig)


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "-"
    return "-" if value is None else str(value)


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _evaluation_table(evaluation: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(LABELS.get(k, k))}</th><td>{v['roc_auc']:.4f}</td><td>{v['pr_auc']:.4f}</td>"
                   f"<td>{v['n_neg']}</td><td>{v['n_pos']}</td></tr>" for k, v in evaluation.items())
    return f"<table><tr><th></th><th>ROC AUC</th><th>PR AUC</th><th>humans</th><th>bots</th></tr>{rows}</table>"


def write_report(directory: Path, *, metrics: Mapping[str, Any], neg: Mapping[str, np.ndarray],
                 pos: Mapping[str, np.ndarray] | None, drift: DriftReport | None,
                 ae_loss: list[float], ae_val_loss: list[float]) -> Path:
    """Write ``report.html`` and ``metrics.json`` into ``directory``; return the HTML path."""
    directory.mkdir(parents=True, exist_ok=True)
    clean = _clean(dict(metrics))
    (directory / "metrics.json").write_text(json.dumps(clean, indent=1, sort_keys=True))
    summary = [(k, clean.get(k)) for k in ("model", "version", "decision", "reason", "previous_version",
                                            "n_baseline", "n_train", "n_val", "features_used",
                                            "pruned_features", "val_anomaly_rate", "val_anomaly_gate",
                                            "eif_threshold", "thresholds", "xgb", "duration_s")]
    parts = [f"<h1>Training report: {html.escape(str(clean.get('model')))} / {html.escape(str(clean.get('version')))}</h1>",
             _table(summary),
             "<h2>Evaluation</h2>",
             "<p>Negatives: the baseline's validation split (last 20 % in time). Positives: held-out "
             "labelled bots (labelled rows in the validation period, never trained on).</p>"]
    evaluation = clean.get("evaluation") or {}
    if evaluation:
        parts.append(_evaluation_table(evaluation))
        if clean.get("evaluation_labelled"):
            parts.append("<p>Held-out <em>labelled</em> humans vs the same bots (the validation split above also "
                         "holds bots nobody labelled, which count as humans there):</p>")
            parts.append(_evaluation_table(clean["evaluation_labelled"]))
    else:
        parts.append(f"<p>No held-out labelled bots: {html.escape(str(clean.get('evaluation_note', '')))}</p>")
    levels = (clean.get("combination") or {}).get("levels") or {}
    if levels:  # the operating point (issue 16): human false-alert rate per level against its design
        tail = (clean.get("combination") or {}).get("level_tail") or {}
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v.get('design'))}</td><td>{_fmt(v.get('validation'))}</td>"
                       f"<td>{_fmt(v.get('labelled_humans'))}</td><td>{_fmt(v.get('validation_all'))}</td>"
                       f"<td>{_fmt(tail.get(k, {}).get('rows'))}</td><td>{_fmt(tail.get(k, {}).get('human_weight'))}</td>"
                       f"<td>{_fmt(tail.get(k, {}).get('calibration_humans'))}</td></tr>"
                       for k, v in levels.items())
        parts.append("<h3>Threat levels</h3><p>Share of humans at or above each level; set on "
                     f"{html.escape(str(clean['combination'].get('levels_set_on', 'the validation split')))}. "
                     "What each rests on: the rows at or above it, their human weight (summed probabilities of "
                     "being human) and the labelled humans that calibrate that tail (few or none: its live rate "
                     "may be several times the design; label more humans).</p>"
                     "<table><tr><th></th><th>design</th><th>humans of the validation split (levels' rows)</th>"
                     "<th>analyst-labelled humans</th><th>whole validation split (bots included)</th>"
                     "<th>rows at or above</th><th>human weight there</th><th>labelled humans calibrating it</th></tr>"
                     f"{rows}</table>")
    op = clean.get("operating_point") or {}
    if op.get("recall"):
        head = "".join(f"<th>{html.escape(k)}</th>" for k in op["recall"])
        body = f"<tr><th>all ({op.get('n_bots')})</th>" + "".join(f"<td>{_fmt(v)}</td>" for v in op["recall"].values()) + "</tr>"
        for kind, k in (op.get("by_kind") or {}).items():
            body += (f"<tr><th>{html.escape(kind)} ({k.get('n_bots')})</th>"
                     + "".join(f"<td>{_fmt(v)}</td>" for v in k["recall"].values()) + "</tr>")
        parts.append("<h3>Recall of held-out labelled bots</h3><p>Share at or above each level, and at the cuts "
                     "where 1 % and 5 % of humans alert.</p>"
                     f"<table><tr><th>bots</th>{head}</tr>{body}</table>")
    parts.append(f"<h3>Score distributions by label</h3><img src='data:image/png;base64,{plot_distributions(neg, pos)}'>")
    if pos and evaluation:
        parts.append(f"<h3>ROC and precision-recall</h3><img src='data:image/png;base64,{plot_curves(neg, pos)}'>")
    parts.append("<h2>Drift against the previous version</h2>")
    if drift is not None and drift.features:
        parts.append(f"<p>{len(drift.drifted)} of {len(drift.features)} features drifted "
                     f"(share {drift.share:.2f}, threshold {drift.threshold:.2f}): "
                     f"{html.escape(', '.join(drift.drifted) or 'none')}</p>")
        parts.append(f"<img src='data:image/png;base64,{plot_drift(drift)}'>")
    else:
        parts.append("<p>No previous version to compare with.</p>")
    if ae_loss:
        parts.append(f"<h2>Autoencoder</h2><img src='data:image/png;base64,{plot_loss(ae_loss, ae_val_loss)}'>")
    if clean.get("labels"):
        parts.append("<h2>Labels</h2>" + _table(sorted(clean["labels"].items())))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>ja4-stream training report</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
            "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}img{max-width:100%}</style>"
            "</head><body>" + "\n".join(parts) + "</body></html>")
    path = directory / "report.html"
    path.write_text(page)
    return path


@dataclass(frozen=True)
class RunReport:
    """What the report step records: the history row and, when a model was fitted, the
    report files (``directory`` and the figures)."""

    decision: Decision
    directory: Path | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    neg: Mapping[str, np.ndarray] = field(default_factory=dict)
    pos: Mapping[str, np.ndarray] | None = None
    drift: DriftReport | None = None
    ae_loss: list[float] = field(default_factory=list)
    ae_val_loss: list[float] = field(default_factory=list)


def report_run(ch: "ClickHouseIO", report: RunReport) -> Path | None:
    """Record the decision in ``model_training_history``, then write the report files (when
    there are any); return the HTML path."""
    ch.record_decision(report.decision)
    if report.directory is None:
        return None
    return write_report(report.directory, metrics=report.metrics, neg=report.neg, pos=report.pos, drift=report.drift,
                        ae_loss=report.ae_loss, ae_val_loss=report.ae_val_loss)
