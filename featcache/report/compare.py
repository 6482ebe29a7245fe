"""Reports of a backbone comparison: the text table, the bar plot and the JSON file."""
from __future__ import annotations

from pathlib import Path

from featcache.report.plots import save_figure
from featcache.report.tables import format_tests, interval, pm, render


def _seconds(value) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def format_backbone_comparison(result) -> str:
    """Table backbone -> feature dim, embed time, score ± std, 95% CI, chosen C; then the tests.

    Parameters
    ----------
    result : featcache.evaluate.compare.BackboneComparison
    """
    m = result.metric
    rows = []
    for label, b in result.backbones.items():
        rows.append([("* " if label == result.best else "  ") + label, b.feature_dim,
                     _seconds(b.seconds_per_image), pm(b.summary), interval(b.summary),
                     ", ".join(f"{c:.3g}" for c in b.chosen)])
    header = ["backbone", "dim", "embed/image", m, f"95% CI {m}", f"{_param(result)} per outer fold"]
    n_rows = ", ".join(f"{b.label} {b.rows}" for b in result.backbones.values())
    lines = [f"{result.n_images} images present in every compared entry are used "
             f"(rows per entry: {n_rows})",
             f"head {result.head}, outer {result.plan.description}; {_param(result)} chosen in "
             f"each outer fold by an inner {result.inner_folds}-fold CV on its training rows only",
             render(header, rows)]
    lines += format_tests(result.comparison, m, what="backbone")
    if any(b.seconds_per_image is None for b in result.backbones.values()):
        lines.append("embed/image '-': the entry was written before featcache recorded embed times")
    return "\n".join(lines)


def _param(result) -> str:
    return next(iter(result.backbones.values())).param


def plot_backbone_comparison(result, path) -> Path:
    """Bar per backbone: mean score, 95% interval as error bar; the best one highlighted.

    Parameters
    ----------
    result : featcache.evaluate.compare.BackboneComparison
    path : str or Path of the PNG to write.

    Returns
    -------
    Path of the written PNG.
    """
    from matplotlib.figure import Figure
    items = list(result.backbones.values())
    means = [b.summary["mean"] for b in items]
    low = [b.summary["mean"] - b.summary["ci_low"] for b in items]
    high = [b.summary["ci_high"] - b.summary["mean"] for b in items]
    fig = Figure(figsize=(max(4.5, 1.1 * len(items) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    colors = ["tab:blue" if b.label == result.best else "tab:gray" for b in items]
    ax.bar(range(len(items)), means, yerr=[low, high], color=colors, capsize=6)
    for i, (b, mean) in enumerate(zip(items, means)):
        ax.text(i, 0.02, f"{mean:.3f}\n{b.feature_dim}-d", ha="center", va="bottom",
                color="white", fontsize=8)
    ax.set_xticks(range(len(items)), [b.label for b in items], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{result.metric} (nested CV, 95% interval)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{result.head} on {result.n_images} shared images, "
                 f"{result.plan.description}", fontsize=9)
    return save_figure(fig, path)
