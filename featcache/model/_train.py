"""Fit the chosen head on every cached row, choosing its setting by the same CV as ``sweep``."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from featcache.errors import FeatcacheError
from featcache.evaluate.views import check_augmented, training_rows
from featcache.cache.features import Features


@dataclass
class Choice:
    """How the head's regularisation value was chosen.

    Attributes
    ----------
    param : str, the head's regularisation parameter (``C`` or ``l2``).
    value : float, the value the final head was fitted with.
    auto : bool, True when chosen by cross-validation.
    metric : str, the metric that ranked the grid.
    cv_mean, cv_std : float or None, CV score of ``value`` (None when not cross-validated).
    grid : list of float, the values tried (empty when not cross-validated).
    splits : str, how the data was split.
    nested : dict or None, the nested-CV estimate of the whole procedure when asked for.
    """

    param: str
    value: float
    auto: bool
    metric: str = "accuracy"
    cv_mean: float | None = None
    cv_std: float | None = None
    grid: list = field(default_factory=list)
    splits: str = ""
    nested: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        if not self.auto:
            return f"{self.param}={self.value:g} (given, not cross-validated)"
        text = (f"{self.param}={self.value:g} chosen by {self.splits}: CV {self.metric} "
                f"{self.cv_mean:.4f} ± {self.cv_std:.4f} over a {len(self.grid)}-value grid")
        if self.nested:
            text += (f"; nested estimate of the whole procedure {self.nested['mean']:.4f} "
                     f"[{self.nested['ci_low']:.4f}, {self.nested['ci_high']:.4f}]")
        return text


@dataclass
class TrainResult:
    """What :func:`train` returns: the fitted head, its name and the choice."""

    head: object
    head_name: str
    choice: Choice
    features: Features
    class_weight: str | None = None


def _head_params(head_name: str, class_weight, final: bool) -> dict:
    params = {} if class_weight is None else {"class_weight": class_weight}
    if head_name == "svm" and final:
        params["probability"] = True  # the exported model returns calibrated probabilities
    return params


def _load(cache, backbone, augmented=False) -> Features:
    if isinstance(cache, Features):
        return cache
    from featcache.cache import load_features
    if augmented:
        return load_features(cache, backbone=backbone, views=True)
    return load_features(cache, backbone=backbone)


def _auto(features, head_name, grid, folds, group_by, seed, metric, params, nested, progress,
          augmented=False):
    from featcache.evaluate import sweep
    try:
        res = sweep(features, head_name, grids=grid, folds=folds, group_by=group_by, seed=seed,
                    metric=metric, head_params=params, progress=progress, augmented=augmented)
    except FeatcacheError as exc:
        raise FeatcacheError(f"C='auto' cannot cross-validate this cache: {exc}; or pass an "
                             "explicit C (--C VALUE) to train without CV") from None
    h = res.heads[head_name]
    row = h.scores[metric][h.best_index]
    choice = Choice(h.param, float(h.best_value), True, metric, float(np.nanmean(row)),
                    float(np.nanstd(row, ddof=1)) if len(row) > 1 else 0.0,
                    [float(v) for v in h.grid], res.plan.description)
    if nested:
        from featcache.evaluate.nested import nested_cv
        nres = nested_cv(features, head_name, grids=grid, folds=folds, group_by=group_by,
                         seed=seed, metric=metric, head_params=params, progress=progress)
        summ = nres.heads[head_name].summary[metric]
        choice.nested = {k: float(summ[k]) for k in ("mean", "std", "ci_low", "ci_high")}
    return choice


def train(cache, head: str = "logreg", C="auto", *, backbone: str | None = None, grid=None,
          folds: int = 5, group_by=None, seed: int = 0, metric: str = "accuracy",
          class_weight: str | None = None, nested: bool = False,
          progress: bool = False, augmented: bool = False) -> TrainResult:
    """Fit ``head`` on every row of a cache, with its setting chosen by cross-validation.

    Parameters
    ----------
    cache : str, Path or Features
        The HDF5 cache written by :func:`featcache.embed` (or loaded features).
    head : {"logreg", "svm", "softmax"}
    C : float or "auto"
        The head's regularisation value (``C`` for logreg/svm, ``l2`` for softmax), or
        ``"auto"`` to pick it from the head's default grid (or ``grid``) with the same
        splits as :func:`featcache.sweep`.
    backbone : str, optional
        Cache entry, when the cache holds several.
    grid : sequence of float, optional
        Values tried by ``C="auto"``.
    folds, group_by, seed, metric
        As for :func:`featcache.sweep` (``group_by="near-duplicates"`` included).
    class_weight : None or "balanced"
    nested : bool
        Also estimate the whole procedure (tuning included) by nested CV.
    progress : bool
    augmented : bool, default False
        Fit (and cross-validate ``C="auto"``) on every clean row plus its cached
        augmented views (see :mod:`featcache.evaluate.views`).

    Returns
    -------
    TrainResult
        ``.head`` is the fitted head, ``.choice`` the chosen value and its CV score.
    """
    from featcache.heads import HEADS, get_head
    if head not in HEADS:
        raise FeatcacheError(f"unknown head {head!r}; choose one of {', '.join(sorted(HEADS))}")
    if isinstance(C, str) and C != "auto":
        raise FeatcacheError(f"C must be a positive number or 'auto', got {C!r}")
    if nested and augmented:
        raise FeatcacheError("nested=True does not take augmented=True yet; estimate with "
                             "augmented=True alone, or nested=True on the clean rows")
    features = _load(cache, backbone, augmented)
    augmented = check_augmented(features, augmented)
    if C == "auto":
        choice = _auto(features, head, grid, folds, group_by, seed, metric,
                       _head_params(head, class_weight, False), nested, progress, augmented)
    else:
        if nested:
            raise FeatcacheError("nested=True estimates the tuning of C='auto'; "
                                 "it does not apply to a given C")
        choice = Choice(HEADS[head].reg_param, float(C), False, metric)
    params = _head_params(head, class_weight, True)
    params[choice.param] = choice.value
    params["seed" if head == "softmax" else "random_state"] = seed
    if head == "logreg":
        params.pop("random_state")
    est = get_head(head, **params).fit(*training_rows(features, slice(None), augmented))
    return TrainResult(est, head, choice, features, class_weight)
