"""Nested cross-validation: an unbiased estimate of "sweep C, then train".

The best score of a sweep is optimistic: the same validation folds choose the
setting and then score it. Nested CV repeats the whole tuning inside each
outer fold (an inner CV on that fold's training rows only) and scores the
chosen setting on the outer validation fold, which took no part in the choice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import sklearn
from sklearn.base import clone

from featcache.errors import FeatcacheError
from featcache.files import jsonable, num
from featcache.evaluate._common import prepare_run
from featcache.evaluate.cv import progress_bar
from featcache.evaluate.metrics import BOUNDS, fold_scores
from featcache.evaluate.parallel import check_n_jobs, fold_jobs, map_folds
from featcache.evaluate.splits import SplitPlan
from featcache.evaluate.stats import compare_to_best, summarize
from featcache.evaluate.sweeps import SWEEP_KEYS, SweepResult, sweep

EXPLANATION = ("Best of sweep is optimistic on average: the same validation folds both chose the setting "
               "and scored it, so it keeps the luckiest of the grid's settings; the nested score "
               "comes from outer folds that took no part in the choice.")


@dataclass
class HeadNested:
    """Nested-CV result of one head.

    Attributes
    ----------
    name, param : str, the head and its tuned parameter (e.g. ``"C"``).
    grid : list of float, the values the inner CV chose from.
    chosen : list of float, the value chosen in each outer fold.
    folds : dict metric -> list of float, outer-fold scores (``SWEEP_KEYS``).
    summary : dict metric -> dict(mean, std, ci_low, ci_high, n), Nadeau-Bengio
        corrected intervals as everywhere in featcache.
    best_of_sweep : dict, summary of the ranking metric at the best setting of
        a plain sweep on the same outer splits (the optimistic number).
    best_value : float, that best setting.
    """

    name: str
    param: str
    grid: list
    chosen: list
    folds: dict
    summary: dict
    best_of_sweep: dict
    best_value: float

    def to_dict(self) -> dict:
        return {"name": self.name, "param": self.param, "grid": list(self.grid),
                "chosen": [float(c) for c in self.chosen],
                "folds": {k: [num(v) for v in vals] for k, vals in self.folds.items()},
                "summary": {k: jsonable(s) for k, s in self.summary.items()},
                "best_of_sweep": {"value": float(self.best_value), **jsonable(self.best_of_sweep)}}


@dataclass
class NestedResult:
    """Nested CV of several heads on one shared set of outer splits.

    Attributes
    ----------
    heads : dict name -> HeadNested
    plan : SplitPlan, the outer splits (the inner ones follow the same rules).
    inner_folds : int
    class_names : list of str
    metric : str, the metric that chooses the setting and ranks heads.
    sweep : SweepResult, the plain sweep on the outer splits (best-of-sweep numbers);
        None with ``best_of_sweep=False``.
    comparison : dict, :func:`compare_to_best` on the nested outer scores.
    explanation : str, why best-of-sweep is optimistic.
    """

    heads: dict
    plan: SplitPlan
    inner_folds: int
    class_names: list
    metric: str
    sweep: SweepResult
    comparison: dict = field(default_factory=dict)
    explanation: str = EXPLANATION

    def to_dict(self) -> dict:
        return {"metric": self.metric, "outer_splits": self.plan.to_dict(),
                "inner_folds": self.inner_folds, "class_names": list(self.class_names),
                "heads": {k: h.to_dict() for k, h in self.heads.items()},
                "comparison": jsonable(self.comparison), "explanation": self.explanation}

    def summary(self) -> str:
        """Text table: nested score and interval next to best of sweep, and the chosen values."""
        from featcache.report.tables import format_tests, interval, pm, render
        m = self.metric
        rows = []
        for name, h in self.heads.items():
            nested, best = h.summary[m], h.best_of_sweep
            rows.append([name, pm(nested), interval(nested),
                         f"{pm(best)} ({h.param}={h.best_value:.3g})",
                         f"{best['mean'] - nested['mean']:+.3f}",
                         ", ".join(f"{c:.3g}" for c in h.chosen)])
        header = ["head", f"nested {m}", "95% CI", "best of sweep", "optimism",
                  "chosen per outer fold"]
        lines = [f"nested CV: outer {self.plan.description}; setting chosen in each outer fold "
                 f"by an inner {self.inner_folds}-fold CV on its training rows only",
                 render(header, rows)]
        lines += format_tests(self.comparison, f"nested {m}")
        return "\n".join(lines + [self.explanation])


def nested_cv(data, heads="logreg", grids=None, *, folds: int = 5, inner_folds: int = 3,
              repeats: int = 1, group_by=None, metric: str = "accuracy", seed: int = 0,
              head_params: dict | None = None, param: str | None = None,
              progress=False, plan: SplitPlan | None = None,
              best_of_sweep: bool = True, n_jobs=-1) -> NestedResult:
    """Nested CV: tune each head's regularisation inside every outer fold.

    Parameters
    ----------
    data : Features or (X, y)
    heads : str, estimator, list of those, or dict name -> estimator
    grids : None, sequence of float, or dict name -> sequence
        The values to choose from, as in :func:`featcache.evaluate.sweep`.
    folds, repeats, group_by, seed
        Outer splits, as in :func:`featcache.evaluate.make_splits`.
    inner_folds : int, default 3
        Folds of the inner CV, run on each outer fold's training rows only,
        stratified and seeded like the outer one, and grouped by the same
        groups when ``group_by`` is given.
    metric : str, default "accuracy"
        Chooses the setting (inner CV) and ranks heads.
    head_params : dict, optional
        Extra constructor parameters for heads given by name (e.g.
        ``{"class_weight": "balanced"}``).
    param : str, optional
        Parameter to tune for plain sklearn estimators.
    progress : bool or None
    plan : SplitPlan, optional
        Outer splits from :func:`make_splits` to reuse (then ``folds``,
        ``repeats`` and ``group_by`` are ignored; the inner CV follows the
        plan's groups), e.g. to score several feature sets on the same splits.
    best_of_sweep : bool, default True
        Also run the plain sweep on the outer splits for the optimistic
        best-of-sweep number. False skips it (a third of the work): then
        ``sweep`` is None, ``best_of_sweep`` empty and ``summary()`` unavailable.
    n_jobs : int, default -1
        Threads running the outer folds (each inner CV runs in its fold's
        thread), one BLAS thread each; -1 uses every core. Results equal
        ``n_jobs=1`` exactly.

    Returns
    -------
    NestedResult
    """
    check_n_jobs(n_jobs)
    features, plan, ests = prepare_run(data, heads, folds=folds, repeats=repeats,
                                       group_by=group_by, seed=seed, head_params=head_params,
                                       metric=metric, plan=plan)
    outer = (sweep(features, ests, grids=grids, plan=plan, metric=metric, param=param,
                   n_jobs=n_jobs) if best_of_sweep else None)
    with progress_bar(plan.n_splits, "nested", progress) as bar:
        per_fold = map_folds(partial(_outer_fold, features, ests, plan, grids=grids,
                                     inner_folds=inner_folds, seed=seed, metric=metric,
                                     param=param),
                             range(plan.n_splits),
                             min(fold_jobs(est, n_jobs) for est in ests.values()), bar)
    out = {name: _head_result(name, outer and outer.heads[name], [f[name] for f in per_fold],
                              plan, metric) for name in ests}
    comparison = compare_to_best({k: h.folds[metric] for k, h in out.items()},
                                 plan.n_train, plan.n_test)
    return NestedResult(out, plan, int(inner_folds), list(features.class_names), metric, outer,
                        comparison)


def _outer_fold(features, ests, plan, j, *, grids, inner_folds, seed, metric, param):
    """Tune on the outer training rows, refit each head there, score on the outer fold."""
    tr, te = plan.splits[j]
    groups = None if plan.groups is None else plan.groups[tr]
    try:
        inner = sweep(features.subset(tr), ests, grids=grids, folds=inner_folds,
                      group_by=groups, seed=seed, metric=metric, param=param, n_jobs=1)
    except FeatcacheError as exc:
        raise FeatcacheError(f"nested CV, outer fold {j + 1}: the inner {inner_folds}-fold CV "
                             f"on its {len(tr)} training rows is impossible ({exc}); use fewer "
                             "inner folds (inner_folds=, --inner-folds) or fewer outer folds"
                             ) from None
    X, y, K = features.X, features.y, len(features.class_names)
    out = {}
    with sklearn.config_context(assume_finite=True):
        for name, est in ests.items():
            h = inner.heads[name]
            model = clone(est).set_params(**{h.param: h.best_value}).fit(X[tr], y[tr])
            scores, _ = fold_scores(model, X[tr], y[tr], X[te], y[te], K, metric=metric)
            out[name] = (h.best_value, scores, h.param, list(h.grid))
    return out


def _head_result(name, swept, fold_results, plan, metric):
    folds = {k: [r[1][k] for r in fold_results] for k in SWEEP_KEYS}
    summary = {k: summarize(folds[k], plan.n_train, plan.n_test, bounds=BOUNDS.get(k))
               for k in SWEEP_KEYS}
    chosen = [r[0] for r in fold_results]
    if swept is None:  # best_of_sweep=False: param and grid as the inner sweeps saw them
        return HeadNested(name, fold_results[0][2], fold_results[0][3], chosen, folds, summary,
                          {}, float("nan"))
    best = swept.summary(metric, plan.n_train, plan.n_test)[swept.best_index]
    return HeadNested(name, swept.param, list(swept.grid), chosen, folds, summary, best,
                      swept.best_value)
