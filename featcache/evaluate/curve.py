"""Learning curves: validation and train score against the amount of training data.

Within each training fold the rows are put in a seeded, class-stratified
order and a fraction ``f`` trains on the first ``f * n_train`` of them, so the
subsets are nested (smoother curves) and keep the class proportions. With
grouped splits whole groups are ordered and cut, so "more data" means more
independent groups (clips), not more frames of the clips already seen. The
validation fold is always the full one.

The slope over the last part of the curve answers "would more data help?":
``gain_per_doubling`` is the validation-score change per doubling of the
training set, fitted over the fractions >= ``tail`` (default 0.5).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import sklearn
from sklearn.base import clone

from featcache.errors import FeatcacheError
from featcache.evaluate._common import prepare_run
from featcache.evaluate.views import check_augmented, training_rows
from featcache.evaluate.cv import progress_bar
from featcache.evaluate.metrics import score
from featcache.evaluate.parallel import check_n_jobs, fold_jobs, map_folds
from featcache.evaluate.splits import SplitPlan, as_features
from featcache.evaluate.stats import summarize
from featcache.evaluate.verdicts import learning_curve_verdict
from featcache.files import jsonable, num

DEFAULT_FRACTIONS = (0.1, 0.2, 0.35, 0.5, 0.75, 1.0)


@dataclass
class CurveResult:
    """A learning curve of one head.

    Attributes
    ----------
    head : str
    metric : str
    fractions : list of float, increasing, in (0, 1].
    n_train : list of float, mean number of training rows per fraction.
    train, val : ndarray (n_fractions, n_splits), scores per fraction and split.
    slope : float, validation score per unit of training fraction, from a
        straight-line fit over the tail of the curve.
    gain_per_doubling : float, validation score change per doubling of the
        training set over the tail (positive: more data still helps).
    tail : float, the smallest fraction included in the slope fits.
    plan : SplitPlan
    """

    head: str
    metric: str
    fractions: list
    n_train: list
    train: np.ndarray
    val: np.ndarray
    slope: float
    gain_per_doubling: float
    tail: float
    plan: SplitPlan

    def summary(self, which: str = "val") -> list:
        """Per-fraction :func:`summarize` dicts of the ``"val"`` or ``"train"`` scores."""
        return [summarize(row) for row in getattr(self, which)]

    @property
    def final_gap(self) -> float:
        """Mean train minus validation score at the largest fraction."""
        return float(np.nanmean(self.train[-1]) - np.nanmean(self.val[-1]))

    def verdict(self):
        """The :func:`featcache.evaluate.verdicts.learning_curve_verdict` of this curve."""
        return learning_curve_verdict(self.gain_per_doubling, self.final_gap, self.metric,
                                      grouped=self.plan.groups is not None)

    def advice(self) -> str:
        """One plain sentence: more data, more regularisation, or neither.

        The rules and thresholds live in :mod:`featcache.evaluate.verdicts`.
        """
        return self.verdict().sentence

    def to_dict(self) -> dict:
        return {"head": self.head, "metric": self.metric, "fractions": list(self.fractions),
                "n_train": list(self.n_train), "splits": self.plan.to_dict(),
                "folds": jsonable({"train": self.train, "val": self.val}),
                "summary": jsonable({"train": self.summary("train"), "val": self.summary("val")}),
                "slope": num(self.slope), "gain_per_doubling": num(self.gain_per_doubling),
                "tail": self.tail, "final_gap": num(self.final_gap),
                "verdict": self.verdict().kind, "advice": self.advice()}


def learning_curve(data, head="logreg", *, fractions=DEFAULT_FRACTIONS, folds: int = 5,
                   repeats: int = 1, group_by=None, seed: int = 0, cv=None,
                   head_params: dict | None = None, metric: str = "accuracy",
                   tail: float = 0.5, progress=False, plan: SplitPlan | None = None,
                   n_jobs=-1, augmented: bool = False) -> CurveResult:
    """Validation and train score of one head as the training set grows.

    Parameters
    ----------
    data : Features or (X, y)
    head : str or estimator
    fractions : sequence of float in (0, 1]
        Fractions of each training fold to train on (sorted for you).
    folds, repeats, group_by, seed, cv
        How to split; see :func:`featcache.evaluate.make_splits`.
    head_params : dict, optional
        Parameters for a head given by name (``{"reg": v}`` sets its ``C``).
    metric : str, default "accuracy"
    tail : float, default 0.5
        Fractions >= ``tail`` (at least the last two) give the slope.
    progress : bool or None
    plan : SplitPlan, optional
        Splits from :func:`make_splits` to reuse (then the split arguments are ignored).
    n_jobs : int, default -1
        Threads running folds, one BLAS thread each; -1 uses every core. Results
        equal ``n_jobs=1`` exactly.
    augmented : bool, default False
        Train on the chosen images' clean rows plus their cached views (a
        fraction counts images); train score on clean rows, validation on
        clean rows only.

    Returns
    -------
    CurveResult
    """
    fr = _check_fractions(fractions)
    check_n_jobs(n_jobs)
    augmented = check_augmented(as_features(data), augmented)
    features, plan, ests = prepare_run(data, head, folds=folds, repeats=repeats,
                                       group_by=group_by, seed=seed, cv=cv,
                                       head_params=head_params, metric=metric, plan=plan)
    if len(ests) != 1:
        raise FeatcacheError(f"a learning curve takes one head, got {', '.join(ests)}")
    (name, est), = ests.items()
    train, val, sizes = _curve_scores(features, est, fr, plan, metric, seed, progress, n_jobs,
                                      augmented)
    n_train = sizes.mean(axis=1)
    slope, gain = tail_slopes(fr, n_train, np.nanmean(val, axis=1), tail)
    return CurveResult(name, metric, fr, [float(v) for v in n_train], train, val,
                       slope, gain, float(tail), plan)


def _curve_scores(features, est, fractions, plan, metric, seed, progress, n_jobs=-1,
                  augmented=False):
    """``(train, val, sizes)`` arrays of shape (n_fractions, n_splits)."""
    rng = np.random.default_rng(seed)
    # the orders draw from one generator fold after fold: drawn here, in order
    orders = [(split, training_order(split[0], features.y, plan.groups, rng))
              for split in plan.splits]
    with progress_bar(plan.n_splits, "curve", progress) as bar:
        cols = map_folds(partial(_curve_fold, features, est, fractions, metric, augmented),
                         orders,
                         fold_jobs(est, n_jobs), bar)
    return tuple(np.column_stack([c[i] for c in cols]) for i in range(3))


def _curve_fold(features, est, fractions, metric, augmented, item):
    """Train score, validation score and training size per fraction, on one split."""
    X, y = features.X, features.y
    (tr, te), (order, ends) = item
    train, val, sizes = (np.full(len(fractions), np.nan) for _ in range(3))
    for i, f in enumerate(fractions):
        cut = ends[min(np.searchsorted(ends, f * len(tr) - 1e-9), len(ends) - 1)]
        sub = order[:max(2, cut)]
        sizes[i] = len(sub)
        if len(np.unique(y[sub])) >= 2:
            with sklearn.config_context(assume_finite=True):  # checked by make_splits
                model = clone(est).fit(*training_rows(features, sub, augmented))
                train[i] = score(metric, y[sub], model.predict(X[sub]))
                val[i] = score(metric, y[te], model.predict(X[te]))
    return train, val, sizes


def training_order(tr, y, groups, rng):
    """Rows of ``tr`` in stratified random order, and the allowed prefix lengths.

    Without groups every prefix length is allowed. With groups, whole groups
    are ordered (stratified by each group's first label) and a prefix ends at
    a group boundary, so a fraction means a fraction of independent groups.
    """
    if groups is None:
        return tr[stratified_order(y[tr], rng)], np.arange(1, len(tr) + 1)
    uniq, first, inverse = np.unique(groups[tr], return_index=True, return_inverse=True)
    group_rank = np.empty(len(uniq), dtype=np.int64)
    group_rank[stratified_order(y[tr][first], rng)] = np.arange(len(uniq))
    order = tr[np.argsort(group_rank[inverse], kind="stable")]
    return order, np.cumsum(np.bincount(group_rank[inverse]))


def _check_fractions(fractions):
    try:
        fr = np.unique(np.asarray(fractions, dtype=float).ravel())
    except (TypeError, ValueError):
        raise FeatcacheError(f"--fractions must be numbers in (0, 1], got {fractions!r}") from None
    if fr.size < 2 or fr[0] <= 0 or fr[-1] > 1:
        raise FeatcacheError(f"--fractions needs at least two distinct numbers in (0, 1], "
                             f"got {fractions!r}")
    return [float(f) for f in fr]


def stratified_order(y, rng) -> np.ndarray:
    """A random permutation of ``range(len(y))`` whose every prefix keeps class proportions.

    Each row's key is its random rank within its class divided by the class
    size; sorting by the key interleaves the classes proportionally.
    """
    y = np.asarray(y)
    key = np.empty(len(y))
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        key[idx] = (rng.permutation(len(idx)) + rng.random(len(idx))) / len(idx)
    return np.argsort(key, kind="stable")


def tail_slopes(fractions, n_train, val_mean, tail=0.5):
    """``(slope, gain_per_doubling)`` of the validation curve over its tail.

    ``slope`` is d(score)/d(fraction) and ``gain_per_doubling`` is
    d(score)/d(log2 n_train), both from least-squares lines over the points
    with fraction >= ``tail`` (the last two points at least). NaN when fewer
    than two finite points remain.
    """
    fr, n, v = (np.asarray(a, dtype=float) for a in (fractions, n_train, val_mean))
    keep = fr >= tail
    if keep.sum() < 2:
        keep = np.zeros(len(fr), dtype=bool)
        keep[-2:] = True
    keep &= np.isfinite(v)
    if keep.sum() < 2:
        return float("nan"), float("nan")
    slope = np.polyfit(fr[keep], v[keep], 1)[0]
    gain = np.polyfit(np.log2(n[keep]), v[keep], 1)[0]
    return float(slope), float(gain)
