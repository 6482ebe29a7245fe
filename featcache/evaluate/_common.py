"""What cv, sweep and curve share: checking the metric and preparing a run."""
from __future__ import annotations

from featcache.errors import FeatcacheError
from featcache.evaluate._estimators import resolve_heads
from featcache.evaluate.metrics import SCORE_METRICS
from featcache.evaluate.splits import SplitPlan, as_features, make_splits


def check_metric(metric) -> None:
    """Raise FeatcacheError unless ``metric`` can rank heads and settings."""
    if metric not in SCORE_METRICS:
        raise FeatcacheError(f"metric must be one of {', '.join(SCORE_METRICS)}, got {metric!r}")


def prepare_run(data, heads, *, folds=5, repeats=1, group_by=None, seed=0, cv=None,
                head_params=None, metric="accuracy", plan: SplitPlan | None = None):
    """``(features, plan, estimators)`` for one evaluation run, every argument checked.

    The heads and the metric are checked before the splits are built (which
    may search for near-duplicates). A given ``plan`` is reused as is, so
    several runs can share one set of splits.
    """
    check_metric(metric)
    features = as_features(data)
    ests = resolve_heads(heads, head_params, seed)
    if plan is None:
        plan = make_splits(features, folds, repeats, group_by, seed, cv)
    elif not isinstance(plan, SplitPlan):
        raise FeatcacheError(f"plan must be a SplitPlan from make_splits, got "
                             f"{type(plan).__name__}")
    return features, plan, ests
