"""Paired k-fold cross-validation of one or more heads.

Every head is fitted on exactly the same splits, so fold scores can be
compared pairwise (:func:`featcache.evaluate.stats.corrected_ttest`).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
import sklearn
from sklearn.base import clone
from tqdm.auto import tqdm

from featcache.errors import FeatcacheError
from featcache.evaluate._heads import resolve_heads
from featcache.evaluate.metrics import BOUNDS, METRICS, SCORE_METRICS, fold_scores
from featcache.evaluate.splits import SplitPlan, as_features, make_splits, straddling_groups
from featcache.evaluate.stats import compare_to_best, summarize

FOLD_KEYS = METRICS + ("train_accuracy", "gap", "fit_time")


def progress_bar(total, desc, progress):
    """A tqdm bar on stderr; ``progress=None`` shows it only on a terminal."""
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False,
                disable=None if progress is None else not progress)


def one_blas_thread():
    """One BLAS thread while scoring (see :func:`featcache.threads.blas_thread_limit`)."""
    from featcache.threads import blas_thread_limit
    return blas_thread_limit(1)


@dataclass
class HeadCV:
    """Cross-validation result of one head.

    Attributes
    ----------
    name : str
    params : dict, the head's ``get_params(deep=False)`` (repr'd when not JSON-able).
    folds : dict metric -> list of float, one entry per split (see ``FOLD_KEYS``).
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
                "folds": {k: [_num(v) for v in vals] for k, vals in self.folds.items()},
                "summary": {k: {kk: _num(vv) for kk, vv in s.items()}
                            for k, s in self.summary.items()},
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
                "comparison": _jsonable(self.comparison)}


def cross_validate_heads(data, heads="logreg", *, folds: int = 5, repeats: int = 1,
                         group_by=None, seed: int = 0, cv=None, head_params: dict | None = None,
                         metric: str = "accuracy", progress=False) -> CVResult:
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

    Returns
    -------
    CVResult
    """
    _check_metric(metric)
    features = as_features(data)
    plan = make_splits(features, folds, repeats, group_by, seed, cv)
    ests = resolve_heads(heads, head_params, seed)
    return run_cv(features, ests, plan, metric, progress)


def run_cv(features, heads: dict, plan: SplitPlan, metric="accuracy", progress=False):
    """Cross-validate already-built ``heads`` on an existing ``plan``."""
    X, y, K = features.X, features.y, len(features.class_names)
    out = {}
    with progress_bar(len(heads) * plan.n_splits, "cv", progress) as bar, one_blas_thread():
        for name, head in heads.items():
            folds = {k: [] for k in FOLD_KEYS}
            cm = np.zeros((K, K), dtype=np.int64)
            for tr, te in plan.splits:
                Xtr, ytr = X[tr], y[tr]
                with sklearn.config_context(assume_finite=True):  # make_splits checked it
                    t0 = time.perf_counter()
                    est = clone(head).fit(Xtr, ytr)
                    fit_time = time.perf_counter() - t0
                    scores, fold_cm = fold_scores(est, Xtr, ytr, X[te], y[te], K)
                for k, v in {**scores, "fit_time": fit_time}.items():
                    folds[k].append(v)
                cm += fold_cm
                bar.update()
            summary = {k: summarize(folds[k], plan.n_train, plan.n_test, bounds=BOUNDS.get(k))
                       for k in FOLD_KEYS}
            out[name] = HeadCV(name, _params(head), folds, summary, cm)
    comparison = compare_to_best({k: h.folds[metric] for k, h in out.items()},
                                 plan.n_train, plan.n_test)
    return CVResult(out, plan, list(features.class_names), metric, comparison)


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
                           progress=False) -> SplitComparison:
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

    Returns
    -------
    SplitComparison
    """
    _check_metric(metric)
    features = as_features(data)
    grouped_plan = make_splits(features, folds, repeats, group_by, seed)
    random_plan = make_splits(features, folds, repeats, None, seed)
    ests = resolve_heads(heads, head_params, seed)
    grouped = run_cv(features, ests, grouped_plan, metric, progress)
    random = run_cv(features, ests, random_plan, metric, progress)
    n = straddling_groups(random_plan.splits, grouped_plan.groups)
    best = grouped.best
    r, g = random.heads[best].summary[metric]["mean"], grouped.heads[best].summary[metric]["mean"]
    what = ("near-duplicate groups" if grouped_plan.group_by == "near-duplicates"
            else "groups")
    if n:
        effect = (f"so the random score is inflated by {r - g:.3f}" if r > g else
                  "so the random score validates on near-copies of training rows, even "
                  "though it is not higher here")
        verdict = (f"Believe the grouped score ({best}: {metric} {g:.3f}, not {r:.3f}): random "
                   f"splits put {n} {what} on both sides of a split, {effect}.")
    else:
        verdict = (f"No group straddles the random splits, so both scores are honest "
                   f"({metric} {r:.3f} random, {g:.3f} grouped).")
    return SplitComparison(random, grouped, n, "grouped" if n else "random", verdict)


def _check_metric(metric):
    if metric not in SCORE_METRICS:
        raise FeatcacheError(f"metric must be one of {', '.join(SCORE_METRICS)}, got {metric!r}")


def _params(est):
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
            for k, v in est.get_params(deep=False).items()}


def _num(v):
    v = float(v)
    return v if np.isfinite(v) else None


def _jsonable(obj):
    """Replace numpy scalars and non-finite floats so ``json.dump`` accepts ``obj``."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return _num(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
