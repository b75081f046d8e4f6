"""How to combine the ensemble's members, decided at every training run from evidence.

Pure computation, no I/O. The members' raw scores live on unrelated scales (the EIF's
standardised depth, the autoencoder's error map, XGBoost's probability), so a fixed blend
such as the original's ``0.7*eif + 0.3*ae`` lets a weak member drag the ranking down and
nobody notices. Here each run:

1. puts every member on one scale: its position in its own *human validation* distribution
   (:func:`quantile_table`, an empirical CDF kept in the bundle as two plain arrays and applied
   with :func:`ja4_core.ensemble.normalise`);
2. measures each candidate blend on evidence the members did not train on:

   * without labels, the human validation rows against anomalies built from them
     (:func:`constructed_anomalies`: per-feature marginal shuffles, which break the joint
     structure while keeping every marginal, and single features pushed out of the range
     seen on humans);
   * with analyst labels, the labelled rows of the validation period (stacking by a weight
     search on those rows only; the caller passes nothing the members were fitted on);

3. keeps the best single member unless a blend beats it by more than :data:`MIN_GAIN` of
   ROC AUC: a member that does not earn its place gets weight 0 (it still reports its own
   field). Because the normalisation is strictly increasing, a one-member "blend" ranks
   exactly like that member, so the combined score is never worse than the member chosen.

``AE_WEIGHT``/``XGB_WEIGHT`` set explicitly skip the search: the original's fixed weights,
used as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ja4_core.ensemble import normalise

#: Points of each member's quantile table (the empirical CDF on human validation rows).
TABLE_POINTS = 513
#: ROC AUC a blend must gain over the best single member before a second member gets weight.
MIN_GAIN = 0.005
#: Weight grid of the search (steps of 0.1 from 0 to 1).
GRID = tuple(round(0.1 * i, 1) for i in range(11))
#: Constructed anomalies per validation row (capped by :data:`MAX_CONSTRUCTED`).
MAX_CONSTRUCTED = 20_000
#: Fewer labelled positives or negatives than this in the validation period: no stacking.
MIN_LABELLED = 10


def quantile_table(scores: np.ndarray, points: int = TABLE_POINTS) -> dict[str, list[float]]:
    """The empirical CDF of ``scores`` as a strictly increasing table ``{"q": ..., "p": ...}``.

    ``p[i]`` is the share of scores at or below ``q[i]``, as ``rank / (n + 1)`` (strictly inside
    (0, 1), leaving room for the tails of :func:`ja4_core.ensemble.normalise`); ties collapse to
    one point, so the table can be applied with ``np.interp``.

    >>> t = quantile_table(np.array([0.1, 0.2, 0.2, 0.4]), points=5)
    >>> t["q"], t["p"]
    ([0.1, 0.2, 0.4], [0.2, 0.6, 0.8])
    """
    s = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    if not len(s):
        s = np.zeros(1)
    q = np.quantile(s, np.linspace(0.0, 1.0, points), method="inverted_cdf")
    q = np.unique(q)
    p = np.searchsorted(s, q, side="right") / (len(s) + 1.0)
    return {"q": q.tolist(), "p": p.tolist()}


def roc_auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """ROC AUC of ``pos`` above ``neg`` (ties count half); 0.5 when either side is empty."""
    neg, pos = np.asarray(neg, dtype=np.float64), np.asarray(pos, dtype=np.float64)
    if not len(neg) or not len(pos):
        return 0.5
    allv = np.concatenate([neg, pos])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    r_pos = ranks[len(neg):].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def constructed_anomalies(X_val: np.ndarray, X_train: np.ndarray, *, seed: int = 1,
                          n: int | None = None) -> dict[str, np.ndarray]:
    """Anomalies built from human rows, by kind: ``shuffle`` and ``range``.

    ``shuffle``: each row takes about a third of its features (at least one) from other random
    validation rows, feature by feature: every marginal stays human, the joint does not.
    ``range``: one random feature is pushed beyond the range seen in training by 0.5 to 2
    times its spread: an out-of-range value a human baseline never showed.
    """
    rng = np.random.default_rng(seed)
    X_val = np.asarray(X_val, dtype=np.float64)
    m, d = X_val.shape
    n = min(n or m, MAX_CONSTRUCTED)
    base = X_val[rng.integers(0, m, n)]

    shuffled = base.copy()
    k = max(1, int(round(d / 3)))
    pick = rng.random((n, d)).argsort(axis=1)[:, :k]
    donors = rng.integers(0, m, (n, k))
    rows = np.repeat(np.arange(n), k)
    cols = pick.ravel()
    shuffled[rows, cols] = X_val[donors.ravel(), cols]

    lo, hi = np.quantile(X_train, 0.0, axis=0), np.quantile(X_train, 1.0, axis=0)
    spread = np.where(hi - lo > 0, hi - lo, np.maximum(np.abs(hi), 1.0))
    ranged = base.copy()
    col = rng.integers(0, d, n)
    far = rng.uniform(0.5, 2.0, n) * spread[col]
    up = rng.random(n) < 0.5
    ranged[np.arange(n), col] = np.where(up, hi[col] + far, lo[col] - far)
    span = hi - lo
    box = rng.uniform(lo - 0.1 * span, hi + 0.1 * span, (n, d))
    return {"shuffle": shuffled, "range": ranged, "box": box}


@dataclass
class Combination:
    """The decision: weights of the combination and the evidence behind them."""

    ae_weight: float
    xgb_weight: float
    method: str        #: "evidence" | "labels" | "override" | "single"
    tables: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``combination`` section (plain JSON)."""
        return {"scale": "human_validation_cdf", "method": self.method,
                "weights": {"ae": self.ae_weight, "xgb": self.xgb_weight},
                "tables": self.tables or None, "evidence": self.evidence}


def blend(norm: Mapping[str, np.ndarray], ae_weight: float, xgb_weight: float) -> np.ndarray:
    """The ensemble's formula on already normalised member scores (see ``Ensemble.combine``)."""
    anomaly = norm["eif"]
    if "ae" in norm:
        anomaly = (1.0 - ae_weight) * anomaly + ae_weight * norm["ae"]
    if "xgb" in norm:
        anomaly = (1.0 - xgb_weight) * anomaly + xgb_weight * norm["xgb"]
    return anomaly


def _candidates(members: tuple[str, ...], ae_fixed: float | None,
                xgb_fixed: float | None) -> list[tuple[float, float]]:
    ae_grid = (ae_fixed,) if ae_fixed is not None else (GRID if "ae" in members else (0.0,))
    xgb_grid = (xgb_fixed,) if xgb_fixed is not None else (GRID if "xgb" in members else (0.0,))
    return [(a, b) for a in ae_grid for b in xgb_grid]


def _single(a: float, b: float, members: tuple[str, ...]) -> str | None:
    """The one member a weight pair uses alone, or None for a true blend."""
    used = [m for m, w in (("eif", (1 - a) * (1 - b)), ("ae", a * (1 - b)), ("xgb", b))
            if m in members and w > 0]
    return used[0] if len(used) == 1 else None


def _search(neg: Mapping[str, np.ndarray], pos: Mapping[str, np.ndarray], members: tuple[str, ...],
            ae_fixed: float | None, xgb_fixed: float | None) -> tuple[tuple[float, float], dict[str, Any]]:
    """Best weights on (neg, pos): the best single member, unless a blend gains MIN_GAIN."""
    scored = []
    for a, b in _candidates(members, ae_fixed, xgb_fixed):
        scored.append(((a, b), roc_auc(blend(neg, a, b), blend(pos, a, b))))
    singles = [(w, auc) for w, auc in scored if _single(*w, members) is not None]
    best_single = max(singles, key=lambda t: t[1]) if singles else max(scored, key=lambda t: t[1])
    best = max(scored, key=lambda t: t[1])
    chosen = best if best[1] > best_single[1] + MIN_GAIN else best_single
    member_auc = {m: roc_auc(neg[m], pos[m]) for m in members}
    return chosen[0], {"member_roc_auc": member_auc, "best_blend": {"ae": best[0][0], "xgb": best[0][1],
                                                                    "roc_auc": best[1]},
                       "chosen_roc_auc": chosen[1], "min_gain": MIN_GAIN}


def decide_combination(val_scores: Mapping[str, np.ndarray], *,
                       constructed_scores: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                       labelled: tuple[Mapping[str, np.ndarray], np.ndarray] | None = None,
                       ae_override: float | None = None, xgb_override: float | None = None) -> Combination:
    """Decide the combination from evidence.

    :param val_scores: raw member scores (``eif``, and ``ae``/``xgb`` when present) on the human
        validation split: the normalisation tables come from these.
    :param constructed_scores: raw member scores on :func:`constructed_anomalies`, by kind.
    :param labelled: raw member scores on labelled rows of the validation period and their labels
        (1 = bot); never rows any member was fitted on.
    :param ae_override: ``AE_WEIGHT`` when set explicitly (used as is); likewise ``xgb_override``.
    """
    members = tuple(m for m in ("eif", "ae", "xgb") if m in val_scores)
    tables = {m: quantile_table(val_scores[m]) for m in members}

    def norm(scores: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {m: normalise(np.asarray(scores[m], dtype=np.float64), tables[m]) for m in members}

    neg = norm(val_scores)
    ae_fix = ae_override if "ae" in members else 0.0
    xgb_fix = xgb_override if "xgb" in members else 0.0
    if ae_fix is not None and xgb_fix is not None:
        if ae_override is not None or xgb_override is not None:
            # the original's fixed weights, on the original's raw scores
            return Combination(ae_fix, xgb_fix, "override", {},
                               {"note": "weights set explicitly (AE_WEIGHT/XGB_WEIGHT): raw scores blended as in the original"})
        return Combination(ae_fix, xgb_fix, "single", tables, {"note": "one member only"})

    evidence: dict[str, Any] = {}
    if labelled is not None:
        lab_scores, y = labelled
        y = np.asarray(y).astype(int)
        lab = norm(lab_scores)
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        if n_pos >= MIN_LABELLED:
            # Negatives: the labelled humans of the validation period and the human validation
            # split (neither was trained on by any member).
            l_neg = {m: np.concatenate([lab[m][y == 0], neg[m]]) for m in members}
            l_pos = {m: lab[m][y == 1] for m in members}
            (a, b), info = _search(l_neg, l_pos, members, ae_override, xgb_override)
            info.update(n_pos=n_pos, n_neg=n_neg + len(neg["eif"]), rows="labelled validation period")
            return Combination(a, b, "labels", tables, {"labelled": info})
        evidence["labelled"] = {"n_pos": n_pos, "n_neg": n_neg, "note": f"fewer than {MIN_LABELLED} labelled bots"}

    if not constructed_scores:
        a = ae_override if ae_override is not None else 0.0
        b = xgb_override if xgb_override is not None else 0.0
        evidence["note"] = "no evidence: the EIF alone"
        return Combination(a, b, "evidence", tables, evidence)

    # Without labels the supervised member has nothing to be judged on (constructed rows are
    # not bots): it keeps an explicit XGB_WEIGHT, or none.
    xgb_w = xgb_override if xgb_override is not None else 0.0
    unsup = tuple(m for m in members if m != "xgb")
    if "ae" not in unsup or ae_override is not None:
        a = ae_override if ae_override is not None else 0.0
        return Combination(float(a), float(xgb_w), "evidence", tables, evidence)
    a, info = _anchored(neg, {k: norm(v) for k, v in constructed_scores.items()})
    evidence["constructed"] = info
    return Combination(a, float(xgb_w), "evidence", tables, evidence)


def _anchored(neg: Mapping[str, np.ndarray],
              kinds: Mapping[str, Mapping[str, np.ndarray]]) -> tuple[float, dict[str, Any]]:
    """The autoencoder's weight from constructed anomalies, with the EIF as the anchor.

    The autoencoder enters (at the weight that gains most on average) only if that blend beats
    the EIF alone by :data:`MIN_GAIN` on *every* kind of constructed anomaly. Why so strict:
    on the ADBench sets the constructed shuffles and out-of-range values favoured the
    autoencoder (e.g. shuttle 0.95 vs 0.75) while the real anomalies did not (0.986 vs 0.999),
    and on a baseline holding unlabelled anomalies (always the case in production: bots are in
    the traffic) the autoencoder learns to reconstruct them (cardio: 0.74 vs the EIF's 0.91)
    while the constructed anomalies, which it never saw, still flatter it. A blend that
    does not help on every kind is not evidence of ranking power."""
    per_kind: dict[str, dict[str, float]] = {}
    blends: dict[float, dict[str, float]] = {a: {} for a in GRID}
    for kind, pos in kinds.items():
        per_kind[kind] = {m: roc_auc(neg[m], pos[m]) for m in ("eif", "ae")}
        for a in GRID:
            blends[a][kind] = roc_auc(blend({"eif": neg["eif"], "ae": neg["ae"]}, a, 0.0),
                                      blend({"eif": pos["eif"], "ae": pos["ae"]}, a, 0.0))
    anchor = blends[0.0]
    earned = [a for a in GRID if a > 0 and all(blends[a][k] >= anchor[k] + MIN_GAIN for k in kinds)]
    mean = {a: float(np.mean(list(v.values()))) for a, v in blends.items()}
    chosen = max(earned, key=lambda a: mean[a]) if earned else 0.0
    return float(chosen), {"member_roc_auc": per_kind,
                           "blend_roc_auc": {f"{a:.1f}": v for a, v in blends.items()},
                           "rule": f"the autoencoder enters only if a blend beats the EIF alone by {MIN_GAIN} "
                                   "ROC AUC on every kind of constructed anomaly",
                           "ae_weight": float(chosen), "earned": bool(earned)}


def level_rates(scores: np.ndarray, thresholds: Mapping[str, float],
                design: Mapping[str, float], weights: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Per threat level, the share of human validation rows at or above its threshold (the
    validation false-alert rate) next to the design rate ``1 - quantile``; ``weights``: each
    row's probability of being human (a weighted share).

    >>> level_rates(np.arange(100) / 100, {"LOW": 0.9, "HIGH": 0.99}, {"LOW": 0.9, "HIGH": 0.99})
    {'LOW': {'design': 0.1, 'validation': 0.1}, 'HIGH': {'design': 0.01, 'validation': 0.01}}
    """
    s = np.asarray(scores, dtype=np.float64)
    w = np.ones(len(s)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = float(w.sum())
    # the scorer's rule (ja4_core.ensemble.decide): a score reaches a level at or above its cut
    return {k: {"design": round(1.0 - design[k], 6),
                "validation": float(w[s >= thresholds[k]].sum() / total) if total > 0 else 0.0} for k in thresholds}

