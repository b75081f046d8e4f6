"""One batch of raw message values -> score record bytes and DLQ entries.

Pure apart from reading the clock: :func:`score_values` parses the whole batch
(:mod:`.parsing`), imputes once, calls each ensemble member once on the whole matrix
(:mod:`ja4_core.ensemble`), decides the threat levels, and serialises the score records. The
agent only moves the bytes it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import orjson

from ja4_core.bundle import LoadedBundle
from ja4_core.ensemble import ScoreBatch, decide, impute
from ja4_core.reasons import Baseline, Reasons, anomalous, explain
from ja4_core.settings import Settings
from stream_scorer.parsing import ParsedBatch, Reject, parse_batch


@dataclass
class BatchOutput:
    """What the agent sends: one score per valid record, one DLQ entry per reject."""

    scores: list[tuple[int, bytes]] = field(default_factory=list)   #: (message index, value)
    rejects: list[Reject] = field(default_factory=list)
    levels: list[str] = field(default_factory=list)
    imputed_counts: dict[str, int] = field(default_factory=dict)
    records_in: int = 0


def _opt(arr: np.ndarray | None, n: int) -> list[float | None]:
    return arr.tolist() if arr is not None else [None] * n


#: The default of ``SCORE_REASONS_MIN_LEVEL``: records from this level on get reasons.
REASONS_FROM = "LOW"


def reasons_from(settings: Settings) -> str | None:
    """The ``reasons_from`` argument the settings ask for (``SCORE_REASONS``, ``SCORE_REASONS_MIN_LEVEL``)."""
    return settings.score_reasons_min_level if settings.score_reasons == "on" else None


def score_values(values: list[bytes | None], bundle: LoadedBundle, now: datetime | None = None,
                 reasons_from: str | None = REASONS_FROM) -> BatchOutput:
    """Score the values of a batch of messages with one loaded bundle (``reasons_from``: see
    :func:`score_matrix`)."""
    return score_parsed(parse_batch(values, bundle.ensemble.features), bundle, now, reasons_from)


def score_parsed(parsed: ParsedBatch, bundle: LoadedBundle, now: datetime | None = None,
                 reasons_from: str | None = REASONS_FROM) -> BatchOutput:
    """Score an already parsed batch (parsed for ``bundle``'s features)."""
    return serialise(parsed, score_matrix(parsed, bundle, reasons_from), bundle, now)


@dataclass
class ScoredMatrix:
    """The numbers of one parsed batch: scores, levels and which cells were imputed."""

    batch: ScoreBatch
    levels: list[str]
    missing: np.ndarray   #: (rows, features) bool: the cell was missing and imputed
    reasons: Reasons | None = None       #: None: reasons off (every record gets [])
    baseline: Baseline | None = None


def score_matrix(parsed: ParsedBatch, bundle: LoadedBundle, reasons_from: str | None = REASONS_FROM) -> ScoredMatrix:
    """The numeric half of scoring: impute, every member once on the whole matrix, threat
    levels, and the reasons of the records from level ``reasons_from`` on (None: no reasons;
    :mod:`ja4_core.reasons`). Mostly GIL-free (the models), so a worker runs it on its scoring
    thread while another thread turns the previous batch into bytes (:func:`serialise`)."""
    ens = bundle.ensemble
    if len(parsed) == 0:  # nothing valid: no model is called
        empty = np.empty(0, dtype=np.float64)
        return ScoredMatrix(ScoreBatch(anomaly=empty, eif=empty, ae=None, xgb=None), [],
                            np.zeros((0, ens.n_features), dtype=bool))
    X, missing = impute(parsed.X, ens.medians)
    batch = ens.score(X, ae_cells=reasons_from is not None)
    records = parsed.records
    bot_name = [bool(r.get("bot_name")) for r in records]
    browser = [bool(r.get("browser_family")) for r in records]
    ci = ens.coherence_index
    levels = decide(batch.anomaly, ens.thresholds, bot_name=bot_name, browser_family=browser,
                    coherence=X[:, ci] if ci is not None else None).tolist()
    if reasons_from is None:
        return ScoredMatrix(batch, levels, missing)
    baseline = Baseline.from_digest(bundle.manifest.get("digest"), ens.features, ens.medians)
    rows = anomalous(batch.anomaly, ens.thresholds, levels, reasons_from)
    return ScoredMatrix(batch, levels, missing, explain(X, missing, rows, baseline, batch.ae_cells), baseline)


def serialise(parsed: ParsedBatch, scored: ScoredMatrix, bundle: LoadedBundle,
              now: datetime | None = None) -> BatchOutput:
    """The Python half: one score record (bytes) per parsed record, and the batch's counts."""
    out = BatchOutput(rejects=parsed.rejects, records_in=len(parsed) + sum(1 for r in parsed.rejects))
    n = len(parsed)
    if n == 0:
        return out
    feats = bundle.ensemble.features
    missing, levels, batch = scored.missing, scored.levels, scored.batch
    records = parsed.records
    any_missing = missing.any(axis=1)
    imputed_lists: list[list[str]] = [[] for _ in range(n)]
    if any_missing.any():
        rows, cols = np.nonzero(missing)
        for r, c in zip(rows.tolist(), cols.tolist()):
            imputed_lists[r].append(feats[c])
        col_counts = missing.sum(axis=0)
        out.imputed_counts = {feats[j]: int(c) for j, c in enumerate(col_counts.tolist()) if c}
    scored_at = (now or datetime.now(timezone.utc)).isoformat(timespec="milliseconds")
    model_name, version = bundle.model, bundle.version
    anomaly, eif = batch.anomaly.tolist(), batch.eif.tolist()
    ae, xgb = _opt(batch.ae, n), _opt(batch.xgb, n)
    if scored.reasons is not None and scored.baseline is not None:
        reasons = scored.reasons.as_lists(feats, scored.baseline)
    else:
        reasons = [[] for _ in range(n)]
    dumps = orjson.dumps
    origin = parsed.message_index
    scores = out.scores
    for i in range(n):
        rec = records[i]
        rec.update(anomaly_score=anomaly[i], eif_score=eif[i], ae_score=ae[i], xgb_prob=xgb[i],
                   threat_level=levels[i], model_name=model_name, model_version=version,
                   scored_at=scored_at, imputed=imputed_lists[i], reasons=reasons[i])
        scores.append((origin[i], dumps(rec)))
    out.levels = levels
    return out
