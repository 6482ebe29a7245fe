"""PNG plots of evaluation results: regularisation path, confusion matrix, learning curve.

Figures are built with :class:`matplotlib.figure.Figure` directly (Agg canvas),
so nothing here touches pyplot's global state or needs a display. Bands show
± one standard deviation across folds.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from featcache.files import atomic_path

_TRAIN, _VAL = "tab:orange", "tab:blue"
_TRAIN_VIEWS, _VAL_VIEWS = "tab:red", "tab:green"


def _band(ax, x, rows, color, label, style="o-"):
    """Mean line of ``rows`` (n_points, n_splits) with a ± std band."""
    rows = np.asarray(rows, dtype=float)
    mean = np.nanmean(rows, axis=1)
    std = np.nanstd(rows, axis=1, ddof=1) if rows.shape[1] > 1 else np.zeros_like(mean)
    ax.plot(x, mean, style, color=color, label=label, ms=3)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)


def save_figure(fig, path) -> Path:
    """Write ``fig`` as a PNG at ``path``, atomically (folders are created)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return Path(path)


def plot_regularisation_path(result, path) -> Path:
    """Train and validation score against regularisation strength, one panel per head.

    With ``sweep(..., augmented="both")`` each panel also shows the paths
    trained with augmented views (dashed; train score on clean rows).

    Parameters
    ----------
    result : featcache.evaluate.SweepResult
    path : str or Path of the PNG to write.

    Returns
    -------
    Path of the written PNG.
    """
    heads = list(result.heads.values())
    views = getattr(result, "views", {})
    fig = Figure(figsize=(4.2 * len(heads), 3.6), layout="constrained")
    axes = fig.subplots(1, len(heads), squeeze=False)[0]
    for ax, h in zip(axes, heads):
        x = np.asarray(h.grid, dtype=float)
        order = np.argsort(x)
        _band(ax, x[order], h.scores["train_score"][order], _TRAIN, f"train {result.metric}")
        _band(ax, x[order], h.scores[result.metric][order], _VAL, f"validation {result.metric}")
        if h.name in views:
            w = views[h.name]
            _band(ax, x[order], w.scores["train_score"][order], _TRAIN_VIEWS,
                  "train, with views", "s--")
            _band(ax, x[order], w.scores[result.metric][order], _VAL_VIEWS,
                  "validation, with views", "s--")
            ax.axvline(w.best_value, color=_VAL_VIEWS, ls=":", lw=1,
                       label=f"best with views {w.param}={w.best_value:.3g}")
        ax.axvline(h.best_value, color="grey", ls=":", lw=1,
                   label=f"best {h.param}={h.best_value:.3g}")
        ax.set_xscale("log")
        stronger = "right" if h.stronger_when_larger else "left"
        ax.set_xlabel(f"{h.param} (stronger regularisation to the {stronger})"
                      if h.stronger_when_larger is not None else h.param)
        ax.set_title(h.name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("score (mean ± std over folds)")
    fig.suptitle(f"Regularisation path, {result.plan.description}", fontsize=9)
    return save_figure(fig, path)


def plot_confusion_matrix(confusion, class_names, path, title: str = "") -> Path:
    """Confusion matrix (rows: true class, columns: predicted), counts summed over folds.

    Cells are coloured by the row-normalised rate, so small classes stay
    readable; counts are printed when there are at most 20 classes.
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    cm = np.asarray(confusion)
    k = len(class_names)
    size = max(4.0, 0.45 * k + 2)
    fig = Figure(figsize=(size, size * 0.9), layout="constrained")
    ax = fig.subplots()
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    disp = ConfusionMatrixDisplay(rates, display_labels=list(class_names))
    disp.plot(ax=ax, cmap="Blues", colorbar=True, include_values=False,
              xticks_rotation="vertical" if k > 6 else "horizontal")
    disp.im_.set_clim(0, 1)
    if k <= 20:
        for (i, j), n in np.ndenumerate(cm):
            ax.text(j, i, str(n), ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    disp.im_.colorbar.set_label("fraction of the true class")
    title = title or "Confusion matrix\nout-of-fold counts, summed over folds"
    width = max(30, int(9 * size))  # characters that fit above the matrix
    lines = (textwrap.fill(line, width, break_on_hyphens=False) for line in title.split("\n"))
    ax.set_title("\n".join(lines), fontsize=9)
    return save_figure(fig, path)


def plot_learning_curve(result, path) -> Path:
    """Train and validation score against the number of training rows.

    Parameters
    ----------
    result : featcache.evaluate.CurveResult
    path : str or Path of the PNG to write.
    """
    fig = Figure(figsize=(5.2, 3.8), layout="constrained")
    ax = fig.subplots()
    n = np.asarray(result.n_train)
    _band(ax, n, result.train, _TRAIN, f"train {result.metric}")
    _band(ax, n, result.val, _VAL, f"validation {result.metric}")
    ax.set_xlabel("training rows per fold")
    ax.set_ylabel(f"{result.metric} (mean ± std over folds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"Learning curve: {result.head}; tail: {result.gain_per_doubling:+.3f} "
                 "per doubling of data", fontsize=9)
    return save_figure(fig, path)


def plot_leakage(rep, leak, path, metric="accuracy") -> Path:
    """Nearest-neighbour similarity histogram with the threshold, and random vs grouped score."""
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax, bx = fig.subplots(1, 2, width_ratios=[1.6, 1])
    if rep.nn_similarity is not None:
        dist = np.clip(1.0 - rep.nn_similarity.astype(float), 1e-6, 2.0)
        lo, hi = max(float(dist.min()) / 2, 1e-6), min(float(dist.max()) * 2, 2.0)
        ax.hist(dist, bins=np.logspace(np.log10(lo), np.log10(hi), 60), color="tab:blue")
        ax.axvline(max(1.0 - leak["threshold"], 1e-6), color="tab:red", ls="--",
                   label=f"threshold: cosine {leak['threshold']:.4g} ({leak['threshold_source']})")
        ax.set_xscale("log")
        ax.legend(fontsize=8)
    ax.set_xlabel("cosine distance to nearest neighbour (1 - similarity); left of the line: "
                  "near-duplicates", fontsize=8)
    ax.set_ylabel("images")
    ax.set_title(f"{leak['n_images_in_near_duplicate_groups']} images in "
                 f"{leak['n_near_duplicate_groups']} near-duplicate groups", fontsize=9)
    if "random_mean" in leak:
        means = [leak["random_mean"], leak["grouped_mean"]]
        bx.bar(["random splits", "grouped splits"], means, yerr=[leak["random_std"],
               leak["grouped_std"]], color=["tab:orange", "tab:blue"], capsize=6)
        for i, m in enumerate(means):
            bx.text(i, 0.04, f"{m:.3f}", ha="center", color="white", fontsize=10)
        bx.set_ylim(0, 1.05)
        bx.set_ylabel(f"validation {metric} (mean ± std)")
        bx.set_title(f"random splits overstate by {leak['inflation']:+.3f}", fontsize=9)
    else:
        why = leak.get("grouping_unusable")
        text = ("grouped splits not usable:\n" + "\n".join(textwrap.wrap(why, 40)) if why
                else "no near-duplicate groups:\nrandom splits are honest")
        bx.text(0.5, 0.5, text, ha="center", va="center", transform=bx.transAxes, fontsize=8)
        bx.set_axis_off()
    return save_figure(fig, path)
