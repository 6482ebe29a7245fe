"""Plain-text tables of evaluation results (what the CLI prints).

Every cell that comes from several folds shows ``mean ± std``; intervals are
95% Nadeau-Bengio corrected t-intervals (see :mod:`featcache.evaluate.stats`).
"""
from __future__ import annotations

import math

_CV_COLUMNS = (("accuracy", "accuracy"), ("balanced_accuracy", "bal. acc"),
               ("f1_macro", "macro-F1"), ("log_loss", "log-loss"))
"""Validation columns; then train and gap, in the ranking metric (see ``format_cv``)."""


def pm(summary: dict, digits: int = 3) -> str:
    """``"mean ± std"`` of a summary dict; ``"-"`` when the mean is missing."""
    mean, std = summary.get("mean"), summary.get("std")
    if mean is None or not math.isfinite(mean):
        return "-"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def interval(summary: dict, digits: int = 3) -> str:
    """``"[low, high]"`` of a summary dict, or ``"-"``."""
    lo, hi = summary.get("ci_low"), summary.get("ci_high")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def render(header, rows) -> str:
    """Left-aligned first column, right-aligned others, two spaces between."""
    cells = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, r in enumerate(cells):
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_cv(result) -> str:
    """Table head x metric (mean ± std), the interval of the ranking metric and the tests."""
    m = result.metric
    header = (["head"] + [label for _, label in _CV_COLUMNS]
              + [f"train {m}", f"gap ({m})", f"95% CI {m}"])
    rows = [[name] + [pm(h.summary[k]) for k, _ in _CV_COLUMNS + (("train_score", ""), ("gap", ""))]
            + [interval(h.summary[m])] for name, h in result.heads.items()]
    lines = [f"splits: {result.plan.description}", render(header, rows)]
    lines += format_tests(result.comparison, m)
    return "\n".join(lines)


def format_tests(comparison: dict, metric: str, what: str = "head") -> list:
    """Lines for the paired Nadeau-Bengio tests of the best ``what`` against the others."""
    tests = comparison.get("tests", [])
    if not tests:
        return []
    best = comparison["best"]
    out = [f"best {what} by {metric}: {best}; corrected resampled t-test (Nadeau-Bengio):"]
    for t in tests:
        p = t["p_value"]
        out.append(f"  {best} vs {t['other']}: {metric} difference {t['mean_diff']:+.3f}, "
                   f"t = {t['t']:.2f}, p = {p:.3g}"
                   + (" (not significant at 0.05)" if p >= 0.05 else ""))
    return out


def format_comparison(cmp) -> str:
    """Random vs grouped splits side by side, then the verdict."""
    m = cmp.grouped.metric
    header = ["head", f"{m} random", f"{m} grouped", "difference"]
    rows = []
    for name in cmp.grouped.heads:
        r, g = cmp.random.heads[name].summary[m], cmp.grouped.heads[name].summary[m]
        rows.append([name, pm(r), pm(g), f"{r['mean'] - g['mean']:+.3f}"])
    lines = [f"random:  {cmp.random.plan.description}",
             f"grouped: {cmp.grouped.plan.description}", render(header, rows),
             "", cmp.verdict]
    return "\n".join(lines)


def format_sweep(result) -> str:
    """One block per head: setting -> validation and train score; ``*`` marks the best."""
    m = result.metric
    n_tr, n_te = result.plan.n_train, result.plan.n_test
    lines = [f"splits: {result.plan.description}"]
    views = getattr(result, "views", {})
    for name, h in result.heads.items():
        val, train = h.summary(m, n_tr, n_te), h.summary("train_score")
        gap, loss = h.summary("gap"), h.summary("log_loss")
        rows = [[("* " if s == h.best_index else "  ") + f"{v:.4g}", pm(val[s]), pm(train[s]),
                 pm(gap[s]), pm(loss[s])] for s, v in enumerate(h.grid)]
        header = [h.param, m, f"train {m}", "gap", "log-loss"]
        if name in views:
            w = views[name]
            header += [f"{m} with views", "gap with views"]
            for s, row in enumerate(rows):
                row += [("* " if s == w.best_index else "") + pm(w.summary(m)[s]),
                        pm(w.summary("gap")[s])]
        lines += ["", f"{name} ({h.param})", render(header, rows)]
    lines.append("")
    lines.append("best setting per head: " + ", ".join(
        f"{k} {h.param}={h.best_value:.4g} ({pm(h.summary(m)[h.best_index])})"
        for k, h in result.heads.items()))
    lines += format_tests(result.comparison, m)
    lines += format_views_tests(getattr(result, "views_tests", {}),
                                getattr(result, "views_verdicts", {}))
    return "\n".join(lines)


def format_views_tests(tests: dict, verdicts: dict) -> list:
    """Per head: best with views vs best without (corrected t-test) and the verdict."""
    if not tests:
        return []
    out = ["with vs without augmented views (each at its best setting, same splits; train "
           "score on clean rows):"]
    for name, t in tests.items():
        out.append(f"  {name} ({t['param']}={t['without']['value']:.3g} without, "
                   f"{t['with']['value']:.3g} with): {verdicts[name]}")
    return out


def format_curve(result) -> str:
    """Fraction -> training rows, train and validation score; then the tail slope."""
    val, train = result.summary("val"), result.summary("train")
    rows = [[f"{f:.2f}", f"{n:.0f}", pm(train[i]), pm(val[i])]
            for i, (f, n) in enumerate(zip(result.fractions, result.n_train))]
    m = result.metric
    lines = [f"head: {result.head}   splits: {result.plan.description}",
             render(["fraction", "n train", f"train {m}", f"val {m}"], rows),
             f"tail (fractions >= {result.tail:g}): {m} {result.gain_per_doubling:+.3f} "
             f"per doubling of the training data ({result.slope:+.3f} per unit fraction)",
             result.advice()]
    return "\n".join(lines)
