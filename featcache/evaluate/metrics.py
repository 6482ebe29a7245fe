"""Per-fold scores, computed exactly as scikit-learn's scorers compute them.

``accuracy``, ``balanced_accuracy`` and ``f1_macro`` equal sklearn's scorers
of the same names; ``log_loss`` equals ``-neg_log_loss``. Log-loss gets the
full label set, so a class missing from a fold does not crash it.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                             f1_score, log_loss)

METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "log_loss")
"""Validation metrics reported per fold; all but ``log_loss`` are higher-is-better."""

SCORE_METRICS = ("accuracy", "balanced_accuracy", "f1_macro")
"""Metrics that can rank heads and settings."""


BOUNDS = {"accuracy": (0.0, 1.0), "balanced_accuracy": (0.0, 1.0), "f1_macro": (0.0, 1.0),
          "train_accuracy": (0.0, 1.0), "train_score": (0.0, 1.0), "gap": (-1.0, 1.0),
          "log_loss": (0.0, float("inf"))}
"""Range of each fold metric, used to clip confidence intervals."""


def has_proba(est) -> bool:
    """Whether ``est`` gives class probabilities (e.g. an SVM without calibration does not)."""
    try:
        return hasattr(est, "predict_proba")
    except Exception:  # some estimators raise in the availability check itself
        return False


def score(metric: str, y_true, y_pred) -> float:
    """One label-based metric (``accuracy``, ``balanced_accuracy`` or ``f1_macro``)."""
    with warnings.catch_warnings():
        # A fold that misses a class triggers sklearn's "y_pred contains classes
        # not in y_true" warning; the number is still the scorer's number.
        warnings.simplefilter("ignore", UserWarning)
        if metric == "accuracy":
            return float(accuracy_score(y_true, y_pred))
        if metric == "balanced_accuracy":
            return float(balanced_accuracy_score(y_true, y_pred))
        if metric == "f1_macro":
            return float(f1_score(y_true, y_pred, average="macro"))
    raise ValueError(f"unknown metric {metric!r}; choose from {SCORE_METRICS}")


def proba_log_loss(est, X, y, n_classes: int) -> float:
    """Log-loss of ``est`` on ``(X, y)`` over all ``n_classes`` labels (NaN without probabilities)."""
    if not has_proba(est):
        return float("nan")
    proba = est.predict_proba(X)
    classes = np.asarray(est.classes_, dtype=int)
    if len(classes) < n_classes:  # classes unseen in training get probability 0
        full = np.zeros((len(X), n_classes), dtype=proba.dtype)
        full[:, classes] = proba
        proba = full
    return float(log_loss(y, proba, labels=np.arange(n_classes)))


def fold_scores(est, X_train, y_train, X_val, y_val, n_classes: int, with_loss: bool = True,
                metric: str = "accuracy"):
    """All featcache metrics of a fitted estimator on one split.

    ``metric`` is the metric the run ranks by: the train score and the gap are
    computed in it, so a gap never mixes accuracy with another metric.

    Returns
    -------
    scores : dict
        ``accuracy``, ``balanced_accuracy``, ``f1_macro``, ``log_loss`` (NaN
        when the head has no probabilities or ``with_loss`` is False),
        ``train_accuracy``, ``train_score`` (train score in ``metric``) and
        ``gap`` (train minus validation score, both in ``metric``).
    confusion : int ndarray (n_classes, n_classes)
        Rows are true classes, columns predictions, on the validation fold.
    """
    pred = est.predict(X_val)
    out = {m: score(m, y_val, pred) for m in SCORE_METRICS}
    out["log_loss"] = proba_log_loss(est, X_val, y_val, n_classes) if with_loss else np.nan
    train_pred = est.predict(X_train)
    out["train_accuracy"] = score("accuracy", y_train, train_pred)
    out["train_score"] = (out["train_accuracy"] if metric == "accuracy"
                          else score(metric, y_train, train_pred))
    out["gap"] = out["train_score"] - out[metric]
    cm = confusion_matrix(y_val, pred, labels=np.arange(n_classes))
    return out, cm
