"""Fitting the ensemble from a prepared baseline: pure computation, no I/O.

The original's recipe: the EIF and the autoencoder learn the *human* baseline (first 80 % in
time order), the last 20 % validates. The validation split gives the autoencoder's error
reference, the threat thresholds (quantiles of the combined score on humans: on the labelled
humans of the validation period when there are enough, see :func:`human_reference`) and the gate:
if more than ``VAL_ANOMALY_GATE`` of the validation rows score above the EIF's anomaly
threshold (the ``1 - EIF_CONTAMINATION`` quantile of the training split), the baseline was
contaminated and the model is refused.

The recipe in the order :func:`trainer.train.fit_and_evaluate` calls it, on data imputed
once with the baseline's medians and cut once (:func:`train_cut`):

1. :func:`fit_members` fits the members and scores every validation row once per member;
2. :func:`decide_weights` decides the members' weights (the one place for it);
3. :func:`assemble` builds the ensemble and derives the thresholds from those scores.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ja4_core.detectors import AutoencoderDetector, EIFDetector, XGBDetector
from ja4_core.ensemble import Ensemble, ScoreBatch, impute
from ja4_core.features import LEVEL_QUANTILES
from trainer.combine import constructed_anomalies, decide_combination, level_rates

#: Quantiles of the combined score on the human validation split that start each level:
#: about 10 % of humans are LOW or above, 3 % MEDIUM, 1 % HIGH, 0.1 % CRITICAL.


@dataclass
class FitConfig:
    """Hyperparameters of one training run (from the settings)."""

    eif_ntrees: int = 300
    eif_ndim: int = 3
    eif_sample_size: int | str = "auto"
    ae_epochs: int = 30
    #: ``AE_WEIGHT``/``XGB_WEIGHT`` when set explicitly (used as is); None: decided from evidence
    #: (:mod:`trainer.combine`).
    ae_weight: float | None = None
    xgb_weight: float | None = None
    train_share: float = 0.8
    contamination: float = 0.05
    nthreads: int = 2
    seed: int = 1
    #: torch threads while the autoencoder trains. Its layers are at most 64 wide and its
    #: batches 256 rows: too little work per operation to share. Two threads were measured
    #: 4-50x slower than one on a busy 2-core machine (OpenMP threads waiting on each other).
    ae_threads: int = 1


@dataclass
class FitResult:
    """A fitted ensemble plus what the gate, the report and the manifest need."""

    ensemble: Ensemble
    eif_threshold: float
    val_anomaly_rate: float
    n_train: int
    n_val: int
    val_scores: dict[str, np.ndarray] = field(default_factory=dict)
    ae_loss_curve: list[float] = field(default_factory=list)
    ae_val_loss_curve: list[float] = field(default_factory=list)


#: Below this many labelled rows XGBoost trains on one thread.
XGB_PARALLEL_MIN_ROWS = 50_000


def xgb_threads(n_rows: int, nthreads: int) -> int:
    """Threads for an XGBoost fit on ``n_rows``.

    XGBoost's ``hist`` method synchronises its threads at every tree node; on a small table
    the work between barriers is tiny, and on a busy machine (CPU oversubscribed, OpenMP
    threads spinning at barriers) two threads were measured 10-30x *slower* than one. Small
    fits therefore use a single thread.

    >>> xgb_threads(5_000, 8), xgb_threads(500_000, 8)
    (1, 8)
    """
    return nthreads if n_rows >= XGB_PARALLEL_MIN_ROWS else 1


def class_weight(y: np.ndarray) -> float:
    """XGBoost's ``scale_pos_weight`` for labels ``y``: negatives per positive (as
    :meth:`ja4_core.detectors.XGBDetector.fit` sets it when none is given).

    >>> class_weight(np.array([1, 0, 0, 0]))
    3.0
    """
    y = np.asarray(y)
    pos = max(int(np.sum(y == 1)), 1)
    return float((len(y) - pos) / pos)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads, then restore the previous number."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def medians_of(X: np.ndarray) -> np.ndarray:
    """Column medians ignoring non-finite values (0 where a column has none)."""
    clean = np.where(np.isfinite(X), X, np.nan)
    with np.errstate(all="ignore"):
        med = np.nanmedian(clean, axis=0) if len(clean) else np.zeros(X.shape[1])
    return np.where(np.isfinite(med), med, 0.0)


def train_cut(n_rows: int, train_share: float) -> int:
    """Index of the first validation row: the one train/validation cut of a run.

    The rows are in time order, so the first ``train_share`` train and the rest validate
    (the newest data judge the model); both parts keep at least one row.

    >>> train_cut(10, 0.8), train_cut(2, 0.99), train_cut(2, 0.0)
    (8, 1, 1)
    """
    cut = int(round(n_rows * train_share))
    return min(max(cut, 1), n_rows - 1)


def split_time_ordered(X: np.ndarray, train_share: float) -> tuple[np.ndarray, np.ndarray]:
    """First ``train_share`` of the rows (already in time order) and the rest."""
    cut = train_cut(len(X), train_share)
    return X[:cut], X[cut:]


#: Human false-alert rates at which the report gives the recall of held-out labelled bots.
ALERT_RATES: tuple[float, ...] = (0.01, 0.05)

#: A level's tail resting on fewer humans than this (labelled humans calibrating it, or human
#: weight without a calibration) is flagged ``enough_humans: false`` (:func:`assemble`): on 9
#: simulated histories of the demo's size CRITICAL's tail held 0-3 labelled humans with 5 %
#: labels and fresh humans reached it at 0.08-0.39 % (design 0.1); with 20 % labels 8-13, and
#: 0.05-0.19 %.
MIN_TAIL_HUMANS = 10

#: Fewer labelled humans than this: the levels are set on the whole validation split instead
#: (when there is no supervised member to tell its bots apart).
MIN_REFERENCE_HUMANS = 200


def calibrate(p_bot: np.ndarray, calibration: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """The supervised member's probabilities mapped to calibrated ones *with the classes
    balanced*: an isotonic regression of the labels on out-of-sample probabilities of labelled
    rows (``calibration`` = (probabilities, labels)), bots weighted negatives / positives.
    Boosted trees are not calibrated: on the simulator a third of the bots scored 0.3-0.9, and
    taken as they were the weights of :func:`human_weights` kept half of each such bot as a
    human (fresh humans then reached MEDIUM at 1.2 % instead of 3 %; calibrated: 2.65 %).
    Unchanged without calibration rows or with a single class."""
    p = np.asarray(p_bot, dtype=np.float64)
    if calibration is None:
        return p
    cp, cy = (np.asarray(a, dtype=np.float64) for a in calibration)
    n_pos = int(np.sum(cy == 1))
    if n_pos == 0 or n_pos == len(cy):
        return p
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=1e-6, y_max=1 - 1e-6, out_of_bounds="clip")
    iso.fit(cp, cy, sample_weight=np.where(cy == 1, (len(cy) - n_pos) / n_pos, 1.0))
    return np.asarray(iso.predict(p), dtype=np.float64)


def human_weights(p_bot: np.ndarray, *, iters: int = 200, tol: float = 1e-7) -> tuple[np.ndarray, float]:
    """Each validation row's probability of being human, from the supervised member's
    probabilities ``p_bot`` (calibrated with the classes balanced, :func:`calibrate`), and the
    validation split's estimated bot share.

    With the classes balanced, the odds ``p / (1 - p)`` estimate the likelihood ratio
    bot : human of a row, not the posterior in the validation split, whose bot share is
    unknown (its unlabelled bots). The share and the posteriors are found together by EM (Saerens, Latinne & Decaestecker 2002, "Adjusting the
    outputs of a classifier to new a priori probabilities"): posterior = share * LR / (share * LR
    + 1 - share), share = mean posterior. On the demo's replay it estimated 6.1 % (true 7.8 %).

    >>> w, share = human_weights(np.array([0.01] * 90 + [0.99] * 10))
    >>> round(share, 2), round(float(w[0]), 3), round(float(w[-1]), 3)
    (0.09, 0.999, 0.091)
    """
    p = np.clip(np.asarray(p_bot, dtype=np.float64), 1e-9, 1 - 1e-9)
    lr = p / (1.0 - p)
    share = 0.1
    post = np.full(len(p), share)
    for _ in range(iters):
        post = share * lr / (share * lr + 1.0 - share)
        new = float(post.mean()) if len(post) else 0.0
        if abs(new - share) < tol:
            share = new
            break
        share = new
    return 1.0 - post, share


def human_reference(members: "Members", humans: Mapping[str, np.ndarray] | None,
                    calibration: tuple[np.ndarray, np.ndarray] | None = None
                    ) -> tuple[Mapping[str, np.ndarray], np.ndarray | None, str]:
    """Raw member scores of the rows the threat levels are set on, their weights (each row's
    probability of being human; None: all count fully), and what they are.

    The levels are quantiles of the combined score *on humans*, the score the worker computes.
    The validation split is that score on thousands of rows the members never trained on, but
    it is unlabelled traffic and holds bots nobody labelled (about 8 % in the demo): taken as
    it is, its upper quantiles land among those bots and live humans reached MEDIUM 100x less
    often than designed. Labelled humans are humans for sure but few: a 99.9 % quantile of a
    few hundred (or even 2,400) of them rests on the top one or two, and the demo's live humans
    reached CRITICAL 2-5x more often than designed. So, in this order:

    1. with a supervised member: the whole validation split, each row weighted by its
       probability of being human (:func:`human_weights` on :func:`calibrate`'s
       probabilities, ``calibration`` being out-of-sample probabilities of labelled rows and
       their labels); on the demo's replay this gave
       9.2 / 2.7 / 0.9 / 0.15 % of live humans (design 10 / 3 / 1 / 0.1), against 9.2-10.7 /
       3.2-3.5 / 1.0-1.1 / 0.1-0.15 % for the validation split's true humans;
    2. else at least :data:`MIN_REFERENCE_HUMANS` analyst-labelled humans
       (:func:`trainer.train.reference_humans`);
    3. else the validation split as it is: no unlabelled estimate was found that holds on both
       the clean ADBench sets and the simulator (trimming the rows above the EIF's
       contamination threshold, or a Gaussian mixture on the score, move every level off by
       more than a factor of 2 on one of them, because the simulator's bots overlap the
       humans' upper tail)."""
    if "xgb" in members.val:
        weights, share = human_weights(calibrate(members.val["xgb"], calibration))
        return members.val, weights, (f"{members.n_val} validation rows weighted by their probability of being human "
                                      f"(supervised member; estimated bot share {share:.3f})")
    if humans is not None and len(humans["eif"]) >= MIN_REFERENCE_HUMANS:
        return humans, None, f"{len(humans['eif'])} analyst-labelled humans"
    return members.val, None, f"{members.n_val} validation rows (unlabelled: may hold bots, then humans alert less)"


def weighted_quantile(values: np.ndarray, q: float, weights: np.ndarray | None = None) -> float:
    """The smallest value at which the weighted share of ``values`` at or below it reaches
    ``q`` (``np.quantile``'s linear interpolation when unweighted).

    >>> weighted_quantile(np.array([1.0, 2.0, 3.0, 4.0]), 0.5, np.array([1.0, 1.0, 1.0, 5.0]))
    4.0
    """
    v = np.asarray(values, dtype=np.float64)
    if weights is None:
        return float(np.quantile(v, q))
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    if not len(cum) or cum[-1] <= 0:
        return float(np.quantile(v, q)) if len(v) else 0.0
    return float(v[order][min(int(np.searchsorted(cum / cum[-1], q)), len(v) - 1)])


def level_thresholds(combined_val: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    """Threat thresholds from the combined score on human rows (``weights``: each row's
    probability of being human), kept increasing."""
    cuts = {k: weighted_quantile(combined_val, q, weights) for k, q in LEVEL_QUANTILES.items()}
    prev = -np.inf
    for k in LEVEL_QUANTILES:  # ties in the quantiles would make a level empty but never disorder
        cuts[k] = max(cuts[k], prev)
        prev = cuts[k]
    return cuts


def tail_evidence(scores: np.ndarray, thresholds: Mapping[str, float],
                  weights: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """What each level's threshold rests on: the reference rows at or above it, the human
    weight they carry (their summed probabilities of being human; the row count when
    unweighted) and its mean per row. A 99.9 % quantile of n humans rests on n/1000 of them
    (its live rate is uncertain by about ``1/sqrt(human_weight)``, relative); a small mean
    says the weight is spread thinly over rows the supervised member calls bots, so the
    level rests on the calibration of those small probabilities rather than on humans seen
    (on the demo's first model: 712 validation rows above CRITICAL, human weight 9.0, of
    which 7.1 on bots and 1.9 on the 28 true humans there).

    >>> tail_evidence(np.arange(10.0), {"HIGH": 8.0}, np.r_[np.ones(8), 0.5, 0.5])["HIGH"]
    {'rows': 2, 'human_weight': 1.0, 'mean_p_human': 0.5}
    """
    s = np.asarray(scores, dtype=np.float64)
    w = np.ones(len(s)) if weights is None else np.asarray(weights, dtype=np.float64)
    out: dict[str, dict[str, float]] = {}
    for level, cut in thresholds.items():
        above = s >= cut
        n, total = int(above.sum()), float(w[above].sum())
        out[level] = {"rows": n, "human_weight": round(total, 3), "mean_p_human": round(total / n, 4) if n else 0.0}
    return out


@dataclass(frozen=True)
class Weights:
    """The members' weights in the combined score (see :meth:`ja4_core.ensemble.Ensemble.combine`)."""

    ae: float
    xgb: float
    #: Per-member quantile tables (one scale for all members); None: raw scores are blended.
    tables: dict[str, dict[str, list[float]]] | None = None
    #: The manifest's ``combination`` section: method, weights, tables and evidence.
    combination: dict[str, Any] | None = None


@dataclass
class Members:
    """The fitted members, and their raw scores on the validation split: each validation row
    is scored once by each member, and the gate, the weights, the thresholds and the
    report all use these scores."""

    eif: EIFDetector
    ae: AutoencoderDetector
    xgb: XGBDetector | None
    eif_threshold: float
    val: dict[str, np.ndarray]
    n_train: int
    n_val: int
    #: Raw member scores on anomalies constructed from the validation rows, by kind
    #: (:func:`trainer.combine.constructed_anomalies`): evidence for the weights.
    constructed: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def score_members(members: Members, X: np.ndarray) -> dict[str, np.ndarray]:
    """Raw member scores (``eif``, ``ae``, ``xgb`` when present) of an imputed matrix."""
    out = {"eif": members.eif.score(X), "ae": members.ae.score(X)}
    if members.xgb is not None:
        out["xgb"] = members.xgb.score(X)
    return out


def fit_members(X_train: np.ndarray, X_val: np.ndarray, config: FitConfig, *,
                xgb_data: tuple[np.ndarray, np.ndarray] | None = None,
                xgb_prefit: XGBDetector | None = None,
                progress: Callable[[str, Any], None] | None = None) -> Members:
    """Fit the EIF and the autoencoder on the (imputed, time-ordered) training split, and
    XGBoost on ``xgb_data`` (imputed with the same medians) or take ``xgb_prefit``.

    The EIF's anomaly threshold is the ``1 - contamination`` quantile of its training scores;
    the autoencoder watches its validation loss on ``X_val``."""
    say = progress or (lambda step, info: None)
    say("eif", {"rows": len(X_train)})
    eif = EIFDetector(ntrees=config.eif_ntrees, ndim=config.eif_ndim, sample_size=config.eif_sample_size,
                      nthreads=config.nthreads, random_seed=config.seed).fit(X_train)
    eif.use_compiled(X_train[:2000])  # the same scores, ~4x faster on the large splits below
    eif_threshold = float(np.quantile(eif.score(X_train), 1.0 - config.contamination))
    eif_val = eif.score(X_val)

    say("ae", {"rows": len(X_train), "epochs": config.ae_epochs})
    with torch_threads(config.ae_threads):
        ae = AutoencoderDetector(epochs=config.ae_epochs, random_seed=config.seed).fit(
            X_train, X_val=X_val, progress=lambda epoch, loss: say("ae_epoch", {"epoch": epoch, "loss": loss}))

    xgb = xgb_prefit
    if xgb_data is not None:
        Xl, yl = xgb_data
        say("xgb", {"rows": len(yl)})
        xgb = XGBDetector(nthreads=xgb_threads(len(yl), config.nthreads), random_seed=config.seed).fit(
            np.asarray(Xl, dtype=np.float64), yl)
    val = {"eif": eif_val, "ae": ae.score(X_val)}
    if xgb is not None:
        val["xgb"] = xgb.score(X_val)
    members = Members(eif=eif, ae=ae, xgb=xgb, eif_threshold=eif_threshold, val=val,
                      n_train=len(X_train), n_val=len(X_val))
    members.constructed = {kind: score_members(members, rows) for kind, rows in
                           constructed_anomalies(X_val, X_train, seed=config.seed).items()}
    return members


def decide_weights(config: FitConfig, val_scores: Mapping[str, np.ndarray], *,
                   labelled: tuple[Mapping[str, np.ndarray], np.ndarray] | None = None,
                   constructed: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> Weights:
    """The one place where the members' weights are decided, before the thresholds are
    derived from the combined score (which depends on them).

    The evidence at hand: ``val_scores``, the raw member scores on the human validation split,
    and ``labelled``, the raw member scores on the labelled rows of the validation period
    with their labels (1 = bot), when there are any, and ``constructed``, the raw member
    scores on anomalies built from the validation rows (:attr:`Members.constructed`).
    :func:`trainer.combine.decide_combination` puts the members on one scale and gives a
    member weight only where that evidence shows it adds ranking power; ``AE_WEIGHT`` /
    ``XGB_WEIGHT`` set explicitly are used as given.

    >>> w = decide_weights(FitConfig(ae_weight=0.3, xgb_weight=0.2), {"eif": np.zeros(3), "ae": np.zeros(3)})
    >>> (w.ae, w.xgb, w.combination["method"])
    (0.3, 0.0, 'override')
    """
    c = decide_combination(val_scores, constructed_scores=constructed, labelled=labelled,
                           ae_override=config.ae_weight, xgb_override=config.xgb_weight)
    return Weights(ae=c.ae_weight, xgb=c.xgb_weight, tables=c.tables or None, combination=c.to_manifest())


def combined(ensemble: Ensemble, scores: Mapping[str, np.ndarray]) -> ScoreBatch:
    """What ``ensemble.score`` returns for rows whose raw member scores are already known,
    without scoring them again."""
    eif, ae, xgb = scores["eif"], scores.get("ae"), scores.get("xgb")
    return ScoreBatch(anomaly=np.clip(ensemble.combine(eif, ae, xgb), 0.0, 1.0), eif=eif, ae=ae, xgb=xgb)


def assemble(members: Members, features: tuple[str, ...], medians: np.ndarray, weights: Weights, *,
             humans: Mapping[str, np.ndarray] | None = None,
             calibration: tuple[np.ndarray, np.ndarray] | None = None) -> FitResult:
    """The ensemble from fitted members and their weights, with the threat thresholds and
    the gate's figure derived from the validation scores the members already produced.

    ``humans``: raw member scores of labelled humans of the validation period (none of them
    trained on), which the levels are set on when there are enough (:func:`human_reference`);
    ``calibration``: out-of-sample supervised probabilities of labelled rows and their labels
    (:func:`calibrate`)."""
    ensemble = Ensemble(features=tuple(features), medians=medians, eif=members.eif, ae=members.ae, xgb=members.xgb,
                        ae_weight=weights.ae, xgb_weight=weights.xgb, tables=weights.tables,
                        combination=weights.combination)
    batch = combined(ensemble, members.val)
    reference, weights_h, described = human_reference(members, humans, calibration)
    ref = batch.anomaly if reference is members.val else combined(ensemble, reference).anomaly
    ensemble.thresholds = level_thresholds(ref, weights_h)
    if ensemble.combination is not None:  # the operating point, recorded with the decision
        # per level: the human false-alert rate on the rows the levels were set on
        # ("validation"; weighted by P(human) when so set), and on the whole validation split
        # ("validation_all"), and on the analysts' humans when given ("labelled_humans")
        levels = level_rates(ref, ensemble.thresholds, LEVEL_QUANTILES, weights_h)
        if humans is not None and len(humans["eif"]):
            for k, r in level_rates(combined(ensemble, humans).anomaly, ensemble.thresholds,
                                    LEVEL_QUANTILES).items():
                levels[k]["labelled_humans"] = r["validation"]
        for k, r in level_rates(batch.anomaly, ensemble.thresholds, LEVEL_QUANTILES).items():
            levels[k]["validation_all"] = r["validation"]
        ensemble.combination["levels"] = levels
        # the cuts at 1 % and 5 % human false alerts on the same humans: the report's recall
        ensemble.combination["alert_cuts"] = {f"{int(r * 100)}pct": weighted_quantile(ref, 1.0 - r, weights_h)
                                              for r in ALERT_RATES}
        ensemble.combination["levels_set_on"] = described
        tail = tail_evidence(ref, ensemble.thresholds, weights_h)
        if calibration is not None and weights_h is not None and "xgb" in reference:
            # how many labelled humans the calibration of each tail rests on: those whose
            # out-of-sample probability reaches the lowest of the rows at or above the cut
            # (none: the isotonic calibration gives every such row P(human) near 0, humans included)
            cal_p, cal_y = (np.asarray(a, dtype=np.float64) for a in calibration)
            for k, cut in ensemble.thresholds.items():
                above = ref >= cut
                low = float(np.min(np.asarray(reference["xgb"])[above])) if above.any() else np.inf
                tail[k]["calibration_humans"] = int(np.sum((cal_y == 0) & (cal_p >= low)))
        for t in tail.values():
            t["enough_humans"] = bool(t.get("calibration_humans", t["human_weight"]) >= MIN_TAIL_HUMANS)
        ensemble.combination["level_tail"] = tail
    val_scores = {"eif": batch.eif, "anomaly": batch.anomaly}
    if batch.ae is not None:
        val_scores["ae"] = batch.ae
    if batch.xgb is not None:
        val_scores["xgb"] = batch.xgb
    return FitResult(ensemble=ensemble, eif_threshold=members.eif_threshold,
                     val_anomaly_rate=float(np.mean(members.val["eif"] > members.eif_threshold)),
                     n_train=members.n_train, n_val=members.n_val, val_scores=val_scores,
                     ae_loss_curve=members.ae.loss_curve_, ae_val_loss_curve=members.ae.val_loss_curve_)


def fit_ensemble(X: np.ndarray, features: tuple[str, ...], config: FitConfig, *,
                 xgb_data: tuple[np.ndarray, np.ndarray] | None = None,
                 progress: Callable[[str, Any], None] | None = None,
                 xgb_prefit: XGBDetector | None = None,
                 labelled_val: tuple[np.ndarray, np.ndarray] | None = None) -> FitResult:
    """Fit EIF + autoencoder on the time-ordered human baseline ``X`` (+ XGBoost when labelled
    data is given) and derive the manifest constants from the validation split.

    For callers holding one raw matrix (``bench/``): it imputes, cuts, fits the members,
    decides the weights and assembles, the same functions the trainer's run calls one by one
    (:func:`trainer.train.fit_and_evaluate`). ``xgb_prefit`` puts an already fitted
    supervised model (e.g. the current bundle's) into the ensemble instead of training one;
    the thresholds are then derived with it, as they must be since it enters the combined score.
    ``labelled_val`` (rows, labels 1 = bot) are labelled rows of the validation period that no
    member trains on: the weights are fitted on them (:func:`decide_weights`)."""
    X = np.asarray(X, dtype=np.float64)
    medians = medians_of(X)
    X, _ = impute(X, medians)
    cut = train_cut(len(X), config.train_share)
    if xgb_data is not None:
        xgb_data = (impute(np.asarray(xgb_data[0], dtype=np.float64), medians)[0], xgb_data[1])
    members = fit_members(X[:cut], X[cut:], config, xgb_data=xgb_data, xgb_prefit=xgb_prefit, progress=progress)
    labelled = humans = None
    if labelled_val is not None:
        Xl = impute(np.asarray(labelled_val[0], dtype=np.float64), medians)[0]
        labelled = (score_members(members, Xl), np.asarray(labelled_val[1]))
        is_human = labelled[1] == 0
        humans = {m: v[is_human] for m, v in labelled[0].items()}
    calibration = None
    if xgb_data is not None:  # out-of-fold probabilities of the labels XGBoost learned from
        yl = np.asarray(xgb_data[1], dtype=np.int32)  # folds weighted like the fitted model (trainer.labels.out_of_fold)
        oof = XGBDetector(nthreads=xgb_threads(len(yl), config.nthreads), random_seed=config.seed,
                          scale_pos_weight=class_weight(yl)).predict_proba_oof(xgb_data[0], yl, seed=config.seed)
        calibration = (oof[:, 1], yl)
    elif labelled is not None and "xgb" in labelled[0]:  # a prefit model: the labelled rows it never saw
        calibration = (labelled[0]["xgb"], labelled[1])
    return assemble(members, features, medians,
                    decide_weights(config, members.val, labelled=labelled, constructed=members.constructed),
                    humans=humans, calibration=calibration)


def quantile_digest(X: np.ndarray, features: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per-feature 9-point quantile digest (p5..p95), mean and std, for drift checks, and the
    1st and 99th percentiles (``p1``, ``p99``) that a score record's reasons compare with
    (:mod:`ja4_core.reasons`)."""
    qs = np.linspace(0.05, 0.95, 9)
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(features):
        col = X[:, j]
        col = col[np.isfinite(col)]
        if not len(col):
            col = np.zeros(1)
        p1, p99 = np.quantile(col, (0.01, 0.99)).tolist()
        out[name] = {"quantiles": np.quantile(col, qs).tolist(), "mean": float(col.mean()),
                     "std": float(col.std()), "p1": p1, "p99": p99}
    return out
