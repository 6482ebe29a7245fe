"""Regularisation sweeps: every head over its grid, on one shared set of splits.

Each head fits its whole grid per fold with ``fit_path`` (warm-started in
featcache heads), which is what makes a 5-fold x 10-value sweep take seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import sklearn

from featcache.errors import FeatcacheError
from featcache.evaluate._common import prepare_run
from featcache.evaluate._estimators import default_grid, fit_path, reg_param
from featcache.evaluate.views import BOTH, check_augmented, training_rows, with_views
from featcache.evaluate.cv import PairedRun, progress_bar
from featcache.evaluate.metrics import BOUNDS, METRICS, fold_scores
from featcache.evaluate.parallel import check_n_jobs, fold_jobs, map_folds
from featcache.evaluate.splits import SplitPlan, as_features
from featcache.evaluate.stats import compare_to_best, summarize
from featcache.files import jsonable

SWEEP_KEYS = METRICS + ("train_accuracy", "train_score", "gap")


@dataclass
class HeadSweep:
    """One head's sweep over its regularisation grid.

    Attributes
    ----------
    name : str
    param : str, the swept parameter (e.g. ``"C"``).
    grid : list of float, the values in the order given.
    scores : dict metric -> ndarray (n_settings, n_splits); metrics are
        ``accuracy``, ``balanced_accuracy``, ``f1_macro``, ``log_loss``,
        ``train_accuracy``, ``train_score`` and ``gap`` (train minus validation,
        both in the ranking metric).
    confusion : int ndarray (n_settings, K, K), summed over splits.
    best_index : int, the setting with the best mean ranking metric.
    stronger_when_larger : bool or None, direction of the parameter.
    """

    name: str
    param: str
    grid: list
    scores: dict
    confusion: np.ndarray
    best_index: int
    stronger_when_larger: bool | None = None

    @property
    def best_value(self) -> float:
        return self.grid[self.best_index]

    def summary(self, metric: str, n_train=None, n_test=None) -> list:
        """Per-setting :func:`summarize` dicts of ``metric``."""
        return [summarize(row, n_train, n_test, bounds=BOUNDS.get(metric))
                for row in self.scores[metric]]

    def to_dict(self, n_train=None, n_test=None) -> dict:
        return {"name": self.name, "param": self.param, "grid": list(self.grid),
                "best_index": self.best_index, "best_value": self.best_value,
                "stronger_when_larger": self.stronger_when_larger,
                "folds": jsonable(self.scores),
                "summary": {k: jsonable(self.summary(k, n_train, n_test)) for k in self.scores},
                "best_confusion": self.confusion[self.best_index].tolist()}


@dataclass
class SweepResult(PairedRun):
    """All heads' sweeps on shared splits; ``heads`` maps name -> HeadSweep.

    ``comparison`` tests the best head (at its best setting) against each
    other head at its best setting. With ``augmented="both"``, ``views``
    maps name -> HeadSweep trained with views (same splits) and
    ``views_tests`` name -> :func:`featcache.evaluate.views.views_test`, and
    ``views_verdicts`` name -> its verdict sentence.
    """

    views: dict = field(default_factory=dict)
    views_tests: dict = field(default_factory=dict)
    views_verdicts: dict = field(default_factory=dict)  # name -> sentence (not in the JSON)

    def best_confusion(self) -> np.ndarray:
        """Confusion matrix (summed over splits) of the best head at its best setting."""
        h = self.heads[self.best]
        return h.confusion[h.best_index]

    def to_dict(self) -> dict:
        n_tr, n_te = self.plan.n_train, self.plan.n_test
        return {"metric": self.metric, "splits": self.plan.to_dict(),
                "class_names": list(self.class_names),
                "best_head": self.best,
                "best_settings": {k: {"param": h.param, "value": h.best_value}
                                  for k, h in self.heads.items()},
                "heads": {k: h.to_dict(n_tr, n_te) for k, h in self.heads.items()},
                "comparison": jsonable(self.comparison),
                **({"with_views": {"heads": {k: h.to_dict(n_tr, n_te)
                                             for k, h in self.views.items()},
                                   "tests": jsonable(self.views_tests)}} if self.views else {})}


def sweep(data, heads=("logreg", "svm", "softmax"), *, grids=None, folds: int = 5,
          repeats: int = 1, group_by=None, seed: int = 0, cv=None, param: str | None = None,
          head_params: dict | None = None, metric: str = "accuracy", progress=False,
          plan: SplitPlan | None = None, n_jobs=-1, augmented=False):
    """Sweep each head's regularisation strength on one shared set of splits.

    Parameters
    ----------
    data : Features or (X, y)
    heads : str, estimator, list of those, or dict name -> estimator
    grids : None, sequence of float, or dict name -> sequence
        None uses each head's ``default_grid`` (a log grid); a sequence is used
        for every head; a dict gives per-head grids (missing heads: default).
    folds, repeats, group_by, seed, cv
        How to split; see :func:`featcache.evaluate.make_splits`.
    param : str, optional
        Parameter to sweep for plain sklearn estimators (featcache heads
        declare ``reg_param`` themselves).
    head_params : dict, optional
        Extra constructor parameters for heads given by name.
    metric : str, default "accuracy"
        Picks the best setting per head and the best head.
    progress : bool or None
    plan : SplitPlan, optional
        Splits from :func:`make_splits` to reuse (then the split arguments are ignored).
    n_jobs : int, default -1
        Threads running folds, one BLAS thread each; -1 uses every core. Results
        equal ``n_jobs=1`` exactly (the Keras softmax head always runs its folds
        one after another).
    augmented : False, True or "both"
        True trains each fold on its clean rows plus their cached views and
        validates on clean rows (:mod:`featcache.evaluate.views`);
        ``"both"`` sweeps without and with views on the same splits and fills
        ``views`` and ``views_tests``.

    Returns
    -------
    SweepResult
    """
    check_n_jobs(n_jobs)
    augmented = check_augmented(as_features(data), augmented, both=True)
    features, plan, ests = prepare_run(data, heads, folds=folds, repeats=repeats,
                                       group_by=group_by, seed=seed, cv=cv,
                                       head_params=head_params, metric=metric, plan=plan)
    check_grid_names(grids, ests)
    if augmented == BOTH:
        kw = dict(grids=grids, param=param, metric=metric, progress=progress, plan=plan,
                  n_jobs=n_jobs)
        return with_views(sweep(features, ests, augmented=False, **kw),
                          sweep(features, ests, augmented=True, **kw))
    check_param(param, ests)
    grid_of = {name: _grid(name, est, grids, param) for name, est in ests.items()}
    out = {}
    with progress_bar(len(ests) * plan.n_splits, "sweep", progress) as bar:
        for name, est in ests.items():
            out[name] = _sweep_head(features, name, est, grid_of[name], plan, param, metric, bar,
                                    n_jobs, augmented)
    best_scores = {k: h.scores[metric][h.best_index] for k, h in out.items()}
    comparison = compare_to_best(best_scores, plan.n_train, plan.n_test)
    return SweepResult(out, plan, list(features.class_names), metric, comparison)


def check_grid_names(grids, heads) -> None:
    """Raise FeatcacheError when a per-head ``grids`` dict names a head not swept."""
    if isinstance(grids, dict):
        unknown = sorted(set(grids) - set(heads))
        if unknown:
            raise FeatcacheError(f"grids= names {', '.join(map(repr, unknown))}, not among the "
                                 f"heads swept ({', '.join(heads)})")


def check_param(param, heads) -> None:
    """Raise FeatcacheError when a head swept has no parameter ``param``."""
    if param is None:
        return
    for name, est in heads.items():
        if param not in est.get_params():
            raise FeatcacheError(f"param={param!r}: head {name!r} has no such parameter; "
                                 f"sweep it alone (e.g. heads='softmax') or pick one of "
                                 f"{', '.join(sorted(est.get_params(deep=False)))}")


def _grid(name, est, grids, param=None):
    if grids is None:
        return default_grid(est, param)
    if isinstance(grids, dict):
        return ([float(v) for v in grids[name]] if name in grids
                else default_grid(est, param))
    values = [float(v) for v in np.asarray(grids, dtype=float).ravel()]
    if not values or not all(np.isfinite(values)) or min(values) <= 0:
        raise FeatcacheError(f"--grid must be positive numbers, got {grids!r}")
    return values


def _sweep_head(features, name, est, grid, plan, param, metric, bar, n_jobs=-1, augmented=False):
    K = len(features.class_names)
    S, J = len(grid), plan.n_splits
    scores = {k: np.full((S, J), np.nan) for k in SWEEP_KEYS}
    cm = np.zeros((S, K, K), dtype=np.int64)
    per_fold = map_folds(partial(_sweep_fold, features, est, grid, param, metric, augmented),
                         plan.splits, fold_jobs(est, n_jobs), bar)
    for j, folds in enumerate(per_fold):
        for s, (fold, fold_cm) in enumerate(folds):
            for k in SWEEP_KEYS:
                scores[k][s, j] = fold[k]
            cm[s] += fold_cm
    best = int(np.argmax(np.nanmean(scores[metric], axis=1)))
    return HeadSweep(name, reg_param(est, param), list(grid), scores, cm, best,
                     getattr(est, "stronger_when_larger", None))


def _sweep_fold(features, est, grid, param, metric, augmented, split):
    """``[(scores, confusion)]`` of each grid value on one ``(train, test)`` split."""
    X, y, K = features.X, features.y, len(features.class_names)
    tr, te = split
    Xtr, ytr, Xte, yte = X[tr], y[tr], X[te], y[te]  # copy once per fold, not per model
    with sklearn.config_context(assume_finite=True):  # make_splits checked finiteness
        models = fit_path(est, *training_rows(features, tr, augmented), grid, param)
        return [fold_scores(m, Xtr, ytr, Xte, yte, K, metric=metric) for m in models]
