"""Supervised labels: eligibility, a held-out split and cleanlab label-noise filtering.

Labels come from ClickHouse (analyst labels winning over score-derived ones, see
:meth:`ja4_core.clickhouse_io.ClickHouseIO.labelled`). Score-derived labels are the models' own
past verdicts and analysts make mistakes too, so before the final XGBoost fit the rows whose
label disagrees confidently with out-of-fold predictions are removed: cleanlab's
``find_label_issues`` on ``XGBDetector.predict_proba_oof`` (confident learning; the
probabilities must be out-of-sample, hence the folds). The same out-of-fold probabilities
are the supervised member's scores on the held-out labelled rows when the combination is
fitted on them (:func:`out_of_fold`, used by :mod:`trainer.train`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ja4_core.detectors import XGBDetector
from trainer.fit import class_weight, xgb_threads

log = logging.getLogger(__name__)

#: The original's rule: at least this many positives besides ``XGB_MIN_LABELS`` labels.
MIN_POSITIVES = 10
#: ... and as many negatives, or there is no second class to learn.
MIN_NEGATIVES = 10


@dataclass
class LabelReport:
    """Counts for the manifest, the history table and the report."""

    n_labels: int = 0
    n_pos: int = 0
    n_neg: int = 0
    n_analyst: int = 0
    n_score: int = 0
    n_train: int = 0
    n_holdout: int = 0
    n_flagged: int = 0
    n_removed: int = 0
    eligible: bool = False
    reason: str = ""
    flagged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "flagged"}


def eligibility(y: np.ndarray, min_labels: int) -> tuple[bool, str]:
    """Whether there are enough labels to train the supervised model, and why not.

    >>> eligibility(np.array([1] * 10 + [0] * 90), 100)
    (True, 'ok')
    >>> eligibility(np.array([1] * 9 + [0] * 200), 100)[0]
    False
    """
    y = np.asarray(y)
    n, pos = len(y), int(np.sum(y == 1))
    if n < min_labels:
        return False, f"{n} labels < XGB_MIN_LABELS={min_labels}"
    if pos < MIN_POSITIVES:
        return False, f"{pos} positive labels < {MIN_POSITIVES}"
    if n - pos < MIN_NEGATIVES:
        return False, f"{n - pos} negative labels < {MIN_NEGATIVES}"
    return True, "ok"


def out_of_fold(X: np.ndarray, y: np.ndarray, *, nthreads: int = 1, seed: int = 1,
                folds: int = 5) -> np.ndarray:
    """Out-of-fold XGBoost probabilities of both classes (rows x 2): each row's from a model
    that never saw it. cleanlab needs them, and they are also the supervised member's honest
    scores on the labelled rows of the validation period (the final XGBoost learns from every
    label, those included, so its own scores there are in-sample).

    The fold models weigh the classes as the shipped model does (``scale_pos_weight`` =
    negatives / positives, :meth:`XGBDetector.fit`'s default): unweighted folds put humans on
    another probability scale than the model the worker runs, and the threat levels set on
    their scores then meant other rates live (:func:`trainer.fit.human_reference`)."""
    y = np.asarray(y, dtype=np.int32)
    return XGBDetector(nthreads=xgb_threads(len(y), nthreads), random_seed=seed,
                       scale_pos_weight=class_weight(y)).predict_proba_oof(
        np.asarray(X, dtype=np.float64), y, folds=folds, seed=seed)


def noisy_from(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Indices of rows whose label cleanlab flags, given out-of-fold probabilities."""
    from cleanlab.filter import find_label_issues

    # n_jobs=1: cleanlab's multiprocessing would fork a process holding torch and chdb.
    issues = find_label_issues(labels=np.asarray(y, dtype=np.int32), pred_probs=proba,
                               filter_by="prune_by_noise_rate", n_jobs=1)
    return np.flatnonzero(issues)


def find_noisy(X: np.ndarray, y: np.ndarray, *, nthreads: int = 1, seed: int = 1,
               folds: int = 5) -> np.ndarray:
    """Indices of rows whose label cleanlab flags, from out-of-fold XGBoost probabilities."""
    return noisy_from(y, out_of_fold(X, y, nthreads=nthreads, seed=seed, folds=folds))


def clean_labels(X: np.ndarray, y: np.ndarray, *, nthreads: int = 1, seed: int = 1,
                 folds: int = 5, proba: np.ndarray | None = None,
                 removable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, y)`` without the flagged rows, plus the flagged indices.

    ``proba``: the rows' out-of-fold probabilities (:func:`out_of_fold`) when the caller already
    has them (they are computed once per run). ``removable``: the rows the filter may remove
    (None: all). The trainer passes the score-derived labels only: confident learning flags
    the rows that look like the other class, and the analysts' bots that look most human are
    exactly what the supervised member must learn. On the demo's labels it flagged 9 of the
    42 analyst-labelled headless impersonators (true labels) and 1 of the 30 score-derived
    "bots" that were humans; analyst labels win over score-derived ones (the contract), so
    flagged analyst labels are reported (``n_flagged``), not removed. If removing every
    removable flagged row would leave fewer than the minimum of either class, the filter is
    not applied (a model on a handful of positives is worse than a noisy one).
    """
    if proba is None:
        proba = out_of_fold(X, y, nthreads=nthreads, seed=seed, folds=folds)
    flagged = noisy_from(y, proba)
    keep = np.ones(len(y), dtype=bool)
    keep[flagged] = False
    if removable is not None:
        keep |= ~np.asarray(removable, dtype=bool)
    kept_pos = int(np.sum(y[keep] == 1))
    if kept_pos < MIN_POSITIVES or int(keep.sum()) - kept_pos < MIN_NEGATIVES:
        log.warning("cleanlab flagged %d of %d labels; removing them would leave too few of a class, kept all",
                    len(flagged), len(y))
        return X, y, flagged
    log.info("cleanlab flagged %d of %d labels as likely wrong; removed them before the final fit",
             len(flagged), len(y))
    return X[keep], y[keep], flagged


#: The kind of a labelled bot whose label names none (score-derived, or an analyst's without ``kind``).
UNSPECIFIED_KIND = "unspecified"


def bot_kinds(kind: np.ndarray | None, n: int) -> np.ndarray:
    """Each labelled row's bot kind for the recall per kind (:func:`trainer.report.operating_point`):
    the analyst label's ``kind``, else :data:`UNSPECIFIED_KIND`; ``kind`` None (labels read
    without kinds): all ``n`` unspecified.

    >>> bot_kinds(np.array(["scraper", "", None], dtype=object), 3).tolist()
    ['scraper', 'unspecified', 'unspecified']
    """
    if kind is None:
        return np.full(n, UNSPECIFIED_KIND, dtype=object)
    return np.array([str(k) if k else UNSPECIFIED_KIND for k in kind], dtype=object)


def split_holdout(times: np.ndarray, y: np.ndarray, cut_time: int, min_labels: int) -> np.ndarray | None:
    """Boolean mask of rows held out for evaluation (window at or after ``cut_time``, the start
    of the baseline's validation split), or None when the rest would not be enough to train
    on: then the model trains on every label and the report has no held-out bots."""
    holdout = np.asarray(times) >= cut_time
    ok, _ = eligibility(y[~holdout], min_labels)
    if not ok or not np.any(y[holdout] == 1):
        return None
    return holdout
