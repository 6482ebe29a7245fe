"""Paired k-fold cross-validation of one or more heads.

Every head is fitted on exactly the same splits, so fold scores can be
compared pairwise (:func:`featcache.evaluate.stats.corrected_ttest`).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import sklearn
from sklearn.base import clone
from tqdm.auto import tqdm

from featcache.evaluate._common import prepare_run
from featcache.evaluate.views import check_augmented, training_rows
from featcache.evaluate.metrics import BOUNDS, METRICS, fold_scores
from featcache.evaluate.parallel import check_n_jobs, fold_jobs, map_folds
from featcache.evaluate.splits import SplitPlan, as_features, make_splits, straddling_groups
from featcache.evaluate.stats import compare_to_best, summarize
from featcache.evaluate.verdicts import split_verdict
from featcache.files import jsonable

FOLD_KEYS = METRICS + ("train_accuracy", "train_score", "gap", "fit_time")


def progress_bar(total, desc, progress):
    """A tqdm bar on stderr; ``progress=None`` shows it only on a terminal."""
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False,
                disable=None if progress is None else not progress)


@dataclass
class HeadCV:
    """Cross-validation result of one head.

    Attributes
    ----------
    name : str
    params : dict, the head's ``get_params(deep=False)`` (repr'd when not JSON-able).
    folds : dict metric -> list of float, one entry per split (see ``FOLD_KEYS``);
        ``train_score`` and ``gap`` are in the run's ranking metric.
    summary : dict metric -> dict(mean, std, ci_low, ci_high, n).
    confusion : int ndarray (K, K), validation confusion summed over splits.
    """

    name: str
    params: dict
    folds: dict
    summary: dict
    confusion: np.ndarray

    def to_dict(self) -> dict:
        return {"name": self.name, "params": self.params,
                "folds": jsonable(self.folds), "summary": jsonable(self.summary),
                "confusion": self.confusion.tolist()}


@dataclass
class PairedRun:
    """Several heads evaluated on one shared set of splits (so comparisons are paired).

    Attributes
    ----------
    heads : dict name -> per-head result
    plan : SplitPlan, the shared splits.
    class_names : list of str
    metric : str, the metric that ranks heads (and settings).
    comparison : dict, :func:`compare_to_best` on ``metric`` (best head and
        Nadeau-Bengio corrected t-tests against each other head).
    """

    heads: dict
    plan: SplitPlan
    class_names: list
    metric: str = "accuracy"
    comparison: dict = field(default_factory=dict)

    @property
    def best(self) -> str:
        """Name of the head with the best mean ``metric``."""
        return self.comparison["best"]


@dataclass
class CVResult(PairedRun):
    """Paired cross-validation of several heads; ``heads`` maps name -> HeadCV."""

    def to_dict(self) -> dict:
        return {"metric": self.metric, "splits": self.plan.to_dict(),
                "class_names": list(self.class_names),
                "heads": {k: h.to_dict() for k, h in self.heads.items()},
                "comparison": jsonable(self.comparison)}


def cross_validate_heads(data, heads="logreg", *, folds: int = 5, repeats: int = 1,
                         group_by=None, seed: int = 0, cv=None, head_params: dict | None = None,
                         metric: str = "accuracy", progress=False,
                         plan: SplitPlan | None = None, n_jobs=-1,
                         augmented: bool = False) -> CVResult:
    """Cross-validate one or more heads on the same splits.

    Parameters
    ----------
    data : Features or (X, y)
    heads : str, estimator, list of those, or dict name -> estimator
        Head names (``"logreg"``, ``"svm"``, ``"softmax"``, or ``"logreg,svm"``)
        or any scikit-learn classifiers.
    folds, repeats, group_by, seed, cv
        How to split; see :func:`featcache.evaluate.make_splits`.
    head_params : dict, optional
        Parameters for heads given by name; ``{"reg": v}`` sets each head's
        regularisation parameter (``C`` for logreg/svm).
    metric : str, default "accuracy"
        Ranks heads for the paired comparison (one of ``SCORE_METRICS``).
    progress : bool or None
        Show a progress bar on stderr (None: only on a terminal).
    plan : SplitPlan, optional
        Splits from :func:`make_splits` to reuse (then the split arguments are ignored).
    n_jobs : int, default -1
        Threads running folds, one BLAS thread each; -1 uses every core. Results
        equal ``n_jobs=1`` exactly (the Keras softmax head always runs its folds
        one after another).
    augmented : bool, default False
        Train each fold on its clean rows plus their cached views
        (``Features.views``); validate on clean rows only. See
        :mod:`featcache.evaluate.views`.

    Returns
    -------
    CVResult
    """
    check_n_jobs(n_jobs)
    augmented = check_augmented(as_features(data), augmented)  # before any split work
    features, plan, ests = prepare_run(data, heads, folds=folds, repeats=repeats,
                                       group_by=group_by, seed=seed, cv=cv,
                                       head_params=head_params, metric=metric, plan=plan)
    return run_cv(features, ests, plan, metric, progress, n_jobs, augmented)


def run_cv(features, heads: dict, plan: SplitPlan, metric="accuracy", progress=False,
           n_jobs=-1, augmented=False):
    """Cross-validate already-built ``heads`` on an existing ``plan`` (train score on clean rows).

    ``n_jobs`` threads run the folds (see :func:`featcache.evaluate.parallel.map_folds`).
    """
    K = len(features.class_names)
    out = {}
    with progress_bar(len(heads) * plan.n_splits, "cv", progress) as bar:
        for name, head in heads.items():
            results = map_folds(partial(_cv_fold, features, head, metric, augmented),
                                plan.splits, fold_jobs(head, n_jobs), bar)
            folds = {k: [scores[k] for scores, _ in results] for k in FOLD_KEYS}
            cm = sum((fold_cm for _, fold_cm in results), np.zeros((K, K), dtype=np.int64))
            summary = {k: summarize(folds[k], plan.n_train, plan.n_test, bounds=BOUNDS.get(k))
                       for k in FOLD_KEYS}
            out[name] = HeadCV(name, _params(head), folds, summary, cm)
    comparison = compare_to_best({k: h.folds[metric] for k, h in out.items()},
                                 plan.n_train, plan.n_test)
    return CVResult(out, plan, list(features.class_names), metric, comparison)


def _cv_fold(features, head, metric, augmented, split):
    """``(scores incl. fit_time, confusion)`` of ``head`` on one ``(train, test)`` split."""
    X, y, K = features.X, features.y, len(features.class_names)
    tr, te = split
    Xtr, ytr = X[tr], y[tr]
    with sklearn.config_context(assume_finite=True):  # make_splits checked it
        t0 = time.perf_counter()
        est = clone(head).fit(*training_rows(features, tr, augmented))
        fit_time = time.perf_counter() - t0
        scores, fold_cm = fold_scores(est, Xtr, ytr, X[te], y[te], K, metric=metric)
    return {**scores, "fit_time": fit_time}, fold_cm


@dataclass
class SplitComparison:
    """The same heads under random and under grouped splits.

    Attributes
    ----------
    random, grouped : CVResult
    straddling : int, multi-row groups that random splits put on both sides.
    believe : str, ``"grouped"`` or ``"random"``: the estimate to trust.
    verdict : str, one plain sentence saying which score to believe and why.
    """

    random: CVResult
    grouped: CVResult
    straddling: int
    believe: str
    verdict: str

    def to_dict(self) -> dict:
        return {"random": self.random.to_dict(), "grouped": self.grouped.to_dict(),
                "straddling_groups": self.straddling, "believe": self.believe,
                "verdict": self.verdict}


def compare_random_grouped(data, heads="logreg", *, group_by="near-duplicates",
                           folds: int = 5, repeats: int = 1, seed: int = 0,
                           head_params: dict | None = None, metric: str = "accuracy",
                           progress=False, n_jobs=-1,
                           augmented: bool = False) -> SplitComparison:
    """Cross-validate under random stratified splits and under grouped splits.

    When groups (e.g. near-duplicate frames) straddle random folds, the random
    score is optimistic and the grouped one is the estimate to believe.

    Parameters
    ----------
    data : Features or (X, y)
    heads : str, estimator, list of those, or dict name -> estimator
    group_by : ``"near-duplicates"``, ``"folder"``, a regex, or an array of group ids
    folds, repeats, seed
        Shared by both splittings (see :func:`featcache.evaluate.make_splits`).
    head_params : dict, optional
        Parameters for heads given by name (``{"reg": v}`` sets ``C``/``l2``).
    metric : str, default "accuracy"
    progress : bool or None
    n_jobs : int, default -1
        Threads running folds, as in :func:`cross_validate_heads`.
    augmented : bool, default False
        Train on clean rows plus their views (see :func:`cross_validate_heads`).

    Returns
    -------
    SplitComparison
    """
    check_n_jobs(n_jobs)
    augmented = check_augmented(as_features(data), augmented)
    features, grouped_plan, ests = prepare_run(data, heads, folds=folds, repeats=repeats,
                                               group_by=group_by, seed=seed,
                                               head_params=head_params, metric=metric)
    random_plan = make_splits(features, folds, repeats, None, seed)
    grouped = run_cv(features, ests, grouped_plan, metric, progress, n_jobs, augmented)
    random = run_cv(features, ests, random_plan, metric, progress, n_jobs, augmented)
    n = straddling_groups(random_plan.splits, grouped_plan.groups)
    best = grouped.best
    what = ("near-duplicate groups" if grouped_plan.group_by == "near-duplicates"
            else "groups")
    v = split_verdict(best, metric, random.heads[best].summary[metric]["mean"],
                      grouped.heads[best].summary[metric]["mean"], n, what)
    return SplitComparison(random, grouped, n, v.kind, v.sentence)


def _params(est):
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
            for k, v in est.get_params(deep=False).items()}
