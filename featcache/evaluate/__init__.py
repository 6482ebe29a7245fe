"""Evaluation: CV splitters, cross-validation, sweeps, learning curves, statistics, audit.

Public API (imported lazily, so ``import featcache.evaluate.neardup`` stays cheap):

- :func:`make_splits` -> :class:`SplitPlan`: checked, shared CV splits.
- :func:`cross_validate_heads` -> :class:`CVResult`: paired k-fold CV of heads.
- :func:`compare_random_grouped` -> :class:`SplitComparison`: random vs grouped CV.
- :func:`sweep` -> :class:`SweepResult`: regularisation sweep of every head.
- :func:`learning_curve` -> :class:`CurveResult`: score vs training fraction.
- :func:`summarize`, :func:`corrected_ttest`, :func:`compare_to_best`: fold statistics.
- :func:`nested_cv` -> :class:`NestedResult`: C tuned inside each outer fold.
- :func:`evaluate_predictions` -> :class:`HeldoutReport`: held-out metrics with intervals.
- :func:`groups_from_paths`, :func:`straddling_groups`: group helpers.
- :mod:`featcache.evaluate.verdicts`: every threshold and rule behind the
  plain-language verdicts of curve, audit, cv and diagnose.
"""
from importlib import import_module

_EXPORTS = {
    "SplitPlan": "splits", "make_splits": "splits", "groups_from_paths": "splits",
    "straddling_groups": "splits", "check_features": "splits",
    "summarize": "stats", "corrected_ttest": "stats", "compare_to_best": "stats",
    "CVResult": "cv", "HeadCV": "cv", "SplitComparison": "cv",
    "cross_validate_heads": "cv", "compare_random_grouped": "cv",
    "SweepResult": "sweeps", "HeadSweep": "sweeps", "sweep": "sweeps",
    "CurveResult": "curve", "learning_curve": "curve",
    "METRICS": "metrics",
    "NestedResult": "nested", "HeadNested": "nested", "nested_cv": "nested",
    "HeldoutReport": "heldout", "evaluate_predictions": "heldout",
    "Verdict": "verdicts", "learning_curve_verdict": "verdicts",
    "check_metric": "_common", "resolve_heads": "_estimators",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"featcache.evaluate.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'featcache.evaluate' has no attribute {name!r}")
