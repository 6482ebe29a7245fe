"""The honest final number: metrics of a trained model on a held-out test folder.

:func:`evaluate_predictions` turns true labels and predicted probabilities
into a :class:`HeldoutReport`: accuracy, balanced accuracy and macro-F1 with
bootstrap 95% intervals, per-class recall, the confusion matrix, expected
calibration error with reliability-diagram data, and the misclassified images.

Conventions
-----------
- Intervals: percentile bootstrap over images, stratified by true class (each
  replicate redraws every class's images with replacement, keeping its count),
  so every replicate holds every class the test set holds and balanced
  accuracy is defined on each; ``n_boot`` replicates from ``seed``.
- Balanced accuracy is the mean recall over the classes present in
  ``y_true`` (scikit-learn's ``balanced_accuracy_score``); macro-F1 averages
  over the classes present in ``y_true`` or predicted (scikit-learn's
  ``f1_score(average="macro")``, 0 for a class never predicted correctly).
- ECE: the max probability (confidence) is binned into 15 equal-width bins
  ``(0, 1/15], ..., (14/15, 1]``; ECE = sum over bins of
  ``n_bin / n * |accuracy_bin - mean confidence_bin|`` (Guo et al., 2017).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from featcache.errors import FeatcacheError
from featcache.files import num

N_BINS = 15
"""Equal-width confidence bins of the expected calibration error."""

METRIC_NAMES = ("accuracy", "balanced_accuracy", "f1_macro")


class Misclassified(NamedTuple):
    """One wrong prediction: image path, true and predicted class names, predicted probability."""

    path: str
    true: str
    predicted: str
    prob: float


@dataclass
class HeldoutReport:
    """Metrics of a model on a held-out test set.

    Attributes
    ----------
    class_names : list of str, the model's label order.
    n : int, number of test images.
    accuracy, balanced_accuracy, f1_macro : (value, ci_low, ci_high)
        Point estimate and stratified percentile-bootstrap 95% interval.
    recall : list of float, per class; NaN for a class absent from the test set.
    support : list of int, test images per class.
    confusion : int ndarray (K, K), rows true class, columns prediction.
    ece : float, expected calibration error over ``N_BINS`` bins.
    reliability : dict of lists, per bin: ``bin_low``, ``bin_high``, ``count``,
        ``confidence`` (mean max probability) and ``accuracy`` (NaN when empty).
    misclassified : list of :class:`Misclassified`, most confident first.
    missing_classes : list of str, model classes with no test image.
    n_boot, seed : the bootstrap's settings.
    """

    class_names: list
    n: int
    accuracy: tuple
    balanced_accuracy: tuple
    f1_macro: tuple
    recall: list
    support: list
    confusion: np.ndarray
    ece: float
    reliability: dict
    misclassified: list
    missing_classes: list = field(default_factory=list)
    n_boot: int = 1000
    seed: int = 0

    def notes(self) -> list:
        """Plain sentences on how to read the numbers (missing classes, interval method)."""
        out = [f"95% intervals: percentile bootstrap over images, stratified by class, "
               f"{self.n_boot} replicates, seed {self.seed}."]
        if self.missing_classes:
            out.append(f"{len(self.missing_classes)} model class(es) have no test image "
                       f"({', '.join(self.missing_classes)}): their recall is undefined, and "
                       "balanced accuracy averages the recall of the classes present only.")
        return out

    def to_dict(self) -> dict:
        """JSON-safe dict (NaN becomes None)."""
        return {"n": int(self.n), "class_names": list(self.class_names),
                **{m: _interval_dict(getattr(self, m)) for m in METRIC_NAMES},
                "per_class": [{"class": c, "recall": num(r), "support": int(s)}
                              for c, r, s in zip(self.class_names, self.recall, self.support)],
                "confusion": np.asarray(self.confusion).tolist(),
                "ece": num(self.ece), "ece_bins": N_BINS,
                "reliability": {k: [num(v) for v in vals]
                                for k, vals in self.reliability.items()},
                "missing_classes": list(self.missing_classes),
                "bootstrap": {"n_boot": int(self.n_boot), "seed": int(self.seed),
                              "method": "percentile, stratified by true class"},
                "misclassified": [{"path": m.path, "true": m.true, "predicted": m.predicted,
                                   "prob": num(m.prob)} for m in self.misclassified],
                "notes": self.notes()}

    def summary(self) -> str:
        """Text the CLI prints: metrics with intervals, per-class recall, ECE, notes."""
        from featcache.report.tables import render
        rows = [[m, f"{v[0]:.3f}", f"[{v[1]:.3f}, {v[2]:.3f}]"]
                for m, v in ((m, getattr(self, m)) for m in METRIC_NAMES)]
        lines = [f"held-out test set: {self.n} images, {len(self.misclassified)} misclassified",
                 render(["metric", "value", "95% CI"], rows), ""]
        per = [[c, "-" if not np.isfinite(r) else f"{r:.3f}", str(s)]
               for c, r, s in zip(self.class_names, self.recall, self.support)]
        lines += [render(["class", "recall", "support"], per), "",
                  f"expected calibration error ({N_BINS} equal-width bins of the max "
                  f"probability): {self.ece:.4f}"]
        return "\n".join(lines + self.notes())


def evaluate_predictions(y_true, probs, class_names, paths, n_boot: int = 1000,
                         seed: int = 0) -> HeldoutReport:
    """Held-out metrics with bootstrap intervals, calibration and the list of errors.

    Parameters
    ----------
    y_true : int array (n,), true labels in the model's order ``0..K-1``.
    probs : float array (n, K), predicted class probabilities.
    class_names : list of str, the model's label order (length K).
    paths : list of str, one image path per row (kept for the report's thumbnails).
    n_boot : int, default 1000, bootstrap replicates.
    seed : int, default 0, seed of the bootstrap.

    Returns
    -------
    HeldoutReport
    """
    y, p = _check(y_true, probs, class_names, paths, n_boot)
    K = len(class_names)
    pred = p.argmax(axis=1)
    cm = _confusion(y, pred, K)
    point = metrics_from_confusion(cm)
    boot = _bootstrap(y, pred, K, n_boot, seed)
    ci = {m: (float(point[m]), *np.percentile(boot[m], [2.5, 97.5]).tolist())
          for m in METRIC_NAMES}
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.diag(cm) / support
    conf = p.max(axis=1)
    ece, rel = expected_calibration_error(conf, pred == y)
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")]
    mis = [Misclassified(str(paths[i]), class_names[y[i]], class_names[pred[i]], float(conf[i]))
           for i in wrong]
    missing = [c for c, s in zip(class_names, support) if s == 0]
    return HeldoutReport(list(class_names), len(y), ci["accuracy"], ci["balanced_accuracy"],
                         ci["f1_macro"], recall.tolist(), support.astype(int).tolist(), cm, ece,
                         rel, mis, missing, int(n_boot), int(seed))


def metrics_from_confusion(cm) -> dict:
    """Accuracy, balanced accuracy and macro-F1 from confusion matrices.

    Parameters
    ----------
    cm : int array (..., K, K), rows true class, columns prediction.

    Returns
    -------
    dict metric -> float array of shape ``cm.shape[:-2]``, equal to
    scikit-learn's ``accuracy_score``, ``balanced_accuracy_score`` and
    ``f1_score(average="macro")`` on the same labels.
    """
    cm = np.asarray(cm, dtype=float)
    return metrics_from_counts(np.diagonal(cm, axis1=-2, axis2=-1), cm.sum(axis=-1),
                               cm.sum(axis=-2))


def metrics_from_counts(tp, true_n, pred_n) -> dict:
    """Accuracy, balanced accuracy and macro-F1 from per-class counts.

    Parameters
    ----------
    tp, true_n, pred_n : arrays (..., K): correct predictions, true images
        and predictions per class.

    Returns
    -------
    dict metric -> float array of shape ``tp.shape[:-1]`` (see :func:`metrics_from_confusion`).
    """
    tp, true_n, pred_n = (np.asarray(a, dtype=float) for a in (tp, true_n, pred_n))
    present = true_n > 0  # sklearn's balanced accuracy: classes in y_true
    labelled = present | (pred_n > 0)  # sklearn's macro-F1: classes in y_true or y_pred
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, tp / true_n, 0.0)
        f1 = np.where(labelled, 2 * tp / (true_n + pred_n), 0.0)
    return {"accuracy": tp.sum(-1) / true_n.sum(-1),
            "balanced_accuracy": recall.sum(-1) / present.sum(-1),
            "f1_macro": f1.sum(-1) / labelled.sum(-1)}


def expected_calibration_error(confidence, correct, n_bins: int = N_BINS):
    """ECE over ``n_bins`` equal-width bins of ``confidence`` and the per-bin data.

    Bin ``b`` holds confidences in ``(b/n_bins, (b+1)/n_bins]`` (a confidence of
    exactly 0 goes to the first bin).

    Returns
    -------
    ece : float, ``sum_b n_b / n * |accuracy_b - confidence_b|``.
    bins : dict of lists ``bin_low``, ``bin_high``, ``count``, ``confidence``,
        ``accuracy`` (mean confidence and accuracy are NaN in empty bins).
    """
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, minlength=n_bins) / count
        acc = np.bincount(idx, ok, minlength=n_bins) / count
    gaps = np.where(count > 0, np.abs(acc - mean_conf), 0.0)
    ece = float((count * gaps).sum() / max(len(conf), 1))
    edges = np.linspace(0, 1, n_bins + 1)
    return ece, {"bin_low": edges[:-1].tolist(), "bin_high": edges[1:].tolist(),
                 "count": count.tolist(), "confidence": mean_conf.tolist(),
                 "accuracy": acc.tolist()}


def _confusion(y, pred, K):
    return np.bincount(y * K + pred, minlength=K * K).reshape(K, K)


def _bootstrap(y, pred, K, n_boot, seed, chunk=200):
    """Metric arrays (n_boot,) over class-stratified resamples of the images.

    Per-class counts (not K x K matrices) keep memory at ``chunk * (n + K)``.
    """
    rng = np.random.default_rng(seed)
    true_n = np.bincount(y, minlength=K)  # fixed by the stratification
    members = [np.flatnonzero(y == c) for c in range(K) if true_n[c]]
    out = {m: [] for m in METRIC_NAMES}
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = np.concatenate([m[rng.integers(0, len(m), (b, len(m)))] for m in members], axis=1)
        offset = (np.arange(b) * K)[:, None]
        counts = [np.bincount((v + offset).ravel(), w, minlength=b * K).reshape(b, K)
                  for v, w in ((pred[idx], None), (y[idx], (pred[idx] == y[idx]).ravel()))]
        for m, v in metrics_from_counts(counts[1], true_n, counts[0]).items():
            out[m].append(v)
    return {m: np.concatenate(v) for m, v in out.items()}


def _check(y_true, probs, class_names, paths, n_boot):
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=float)
    K = len(class_names)
    if y.ndim != 1 or len(y) == 0:
        raise FeatcacheError(f"y_true must be a non-empty 1-d label array, got shape {y.shape}")
    if p.shape != (len(y), K):
        raise FeatcacheError(f"probs must have shape (n, K) = ({len(y)}, {K}) to match y_true "
                             f"and class_names, got {p.shape}")
    if len(paths) != len(y):
        raise FeatcacheError(f"paths has {len(paths)} entries for {len(y)} labels")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= K:
        raise FeatcacheError(f"y_true must hold integer labels in 0..{K - 1} (the model's "
                             "classes); map test classes unknown to the model out first")
    if not np.isfinite(p).all():
        raise FeatcacheError("probs contain NaN or inf; the model's output is unusable")
    if int(n_boot) < 1:
        raise FeatcacheError(f"n_boot must be at least 1, got {n_boot}")
    return y.astype(np.int64), p


def _interval_dict(t):
    return {"value": num(t[0]), "ci_low": num(t[1]), "ci_high": num(t[2])}
