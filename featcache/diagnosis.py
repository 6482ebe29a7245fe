"""``featcache diagnose``: why is my model overfitting? One report, with evidence.

The evidence, each from the public evaluate API:

- leakage: the audit (duplicates, near-duplicate groups, leaky splits) and the
  head's score under random vs grouped-by-near-duplicates CV;
- the train-validation gap across regularisation strengths (a sweep);
- the slope of the learning curve (would more data help?);
- per-class errors (out-of-fold confusion matrix, per-class recall).

When the audit finds near-duplicate groups, the sweep and the curve run on
grouped splits, because random splits would flatter them. The conclusion is a
handful of plain sentences built from fixed, documented rules (``_conclude``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featcache.evaluate.audit import DEFAULT_KERAS_SEED, KERAS_FLOW, audit

LEAK_MARGIN = 0.02      # random minus grouped score that counts as leakage
GAP_LARGE = 0.10        # train minus validation score that counts as overfitting
GAP_SMALL = 0.05
GAIN_HELPS = 0.01       # validation gain per doubling of data that says "more data helps"
GAIN_FLAT = 0.003


@dataclass
class Diagnosis:
    """The answer: ``conclusion`` sentences, the ``numbers`` behind them, plots and HTML."""

    head: str
    conclusion: list
    numbers: dict
    audit: object = field(repr=False)
    sweep: object = field(repr=False)
    curve: object = field(repr=False)
    comparison: object = field(default=None, repr=False)
    plots: dict = field(default_factory=dict)
    html: Path | None = None

    def to_dict(self) -> dict:
        return {"head": self.head, "conclusion": list(self.conclusion), "numbers": self.numbers,
                "plots": {k: str(v) for k, v in self.plots.items()},
                "html": str(self.html) if self.html else None}


def diagnose(features, head: str = "logreg", *, out_dir=None, folds: int = 5, seed: int = 0,
             threshold=None, validation_split: float = 0.2, keras_seed: int = DEFAULT_KERAS_SEED,
             grid=None, metric: str = "accuracy", progress=False,
             source: dict | None = None) -> Diagnosis:
    """Gather the evidence for "why is my model overfitting?" and write the report.

    Parameters
    ----------
    features : Features
    head : str
        Head name (``logreg``, ``svm``, ``softmax``).
    out_dir : str or Path, optional
        Where PNGs, ``diagnosis.json`` and ``report.html`` go; nothing is
        written when None.
    folds, seed : int
        Cross-validation folds and split seed.
    threshold : float, "auto", "default" or None
        Near-duplicate threshold for the audit (None/"auto": chosen from the data).
    validation_split, keras_seed
        Keras ``validation_split`` (and ``image_dataset_from_directory`` seed)
        the audit models.
    grid : sequence of float, optional
        Regularisation values to sweep (default: the head's log grid).
    metric : str
        ``accuracy``, ``balanced_accuracy`` or ``f1_macro``.

    Returns
    -------
    Diagnosis
    """
    from featcache.evaluate import compare_random_grouped, learning_curve, sweep
    rep = audit(features, threshold=threshold, validation_split=validation_split,
                keras_seed=keras_seed, folds=folds, seed=seed, source=source)
    groups = rep.groups if rep.summary["n_near_duplicate_groups"] else None
    unusable = _unusable_grouping(groups, features.y, folds)
    if unusable:
        groups = None
    sw = sweep(features, head, grids=grid, folds=folds, seed=seed, group_by=groups,
               metric=metric, progress=progress)
    name = sw.best
    best = {"reg": sw.heads[name].best_value}
    cmp = (compare_random_grouped(features, head, group_by=groups, folds=folds, seed=seed,
                                  head_params=best, metric=metric, progress=progress)
           if groups is not None else None)
    cur = learning_curve(features, head, folds=folds, seed=seed, group_by=groups,
                         head_params=best, metric=metric, progress=progress)
    numbers = {"leakage": {**_leak_numbers(rep, cmp, name, metric), "grouping_unusable": unusable},
               "regularisation": _gap_numbers(sw.heads[name], metric),
               "learning_curve": _curve_numbers(cur),
               "per_class": _class_numbers(sw.best_confusion(), features.class_names),
               "class_balance": rep.class_balance, "metric": metric,
               "splits": sw.plan.description}
    diag = Diagnosis(name, _conclude(numbers, rep), numbers, rep, sw, cur, cmp)
    if out_dir is not None:
        _write(diag, Path(out_dir), source or {})
    return diag


def diagnose_cache(cache_path, backbone: str | None = None, **kwargs) -> Diagnosis:
    """Load ``cache_path`` and :func:`diagnose` it."""
    from featcache.cache import load_features
    features = load_features(cache_path, backbone)
    return diagnose(features, source={"cache": str(cache_path), "backbone": features.backbone},
                    **kwargs)


def _unusable_grouping(groups, y, folds) -> str | None:
    """Why near-duplicate groups cannot drive grouped CV here, or None when they can."""
    if groups is None:
        return None
    ids, sizes = np.unique(groups, return_counts=True)
    if sizes.max() * 2 > len(groups):
        return (f"one near-duplicate group holds {sizes.max()} of {len(groups)} images, so the "
                "threshold is too low for these features (pass --threshold)")
    if len(ids) < folds:
        return f"only {len(ids)} near-duplicate groups, too few for {folds} grouped folds"
    return None


def _mean_std(values) -> tuple:
    v = np.asarray(values, dtype=float)
    return float(np.nanmean(v)), float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else 0.0


def _leak_numbers(rep, cmp, name, metric) -> dict:
    s, flow = rep.summary, rep.splits[f"keras_{KERAS_FLOW}"]
    out = {"n_near_duplicate_groups": s["n_near_duplicate_groups"],
           "n_images_in_near_duplicate_groups": s["n_images_in_near_duplicate_groups"],
           "threshold": rep.near_duplicates["threshold"],
           "threshold_source": rep.near_duplicates["threshold_source"],
           "threshold_reason": rep.near_duplicates["reason"],
           "n_exact_duplicate_groups": s["n_exact_duplicate_groups"],
           "n_label_conflicts": s["n_label_conflicts"],
           "keras_flow_val_fraction_with_train_duplicate": flow["val_fraction_with_train_duplicate"],
           "featcache_cv_val_fraction_with_train_duplicate":
               s.get("featcache_cv_val_fraction_with_train_duplicate")}
    if cmp is not None:
        r = _mean_std(cmp.random.heads[name].folds[metric])
        g = _mean_std(cmp.grouped.heads[name].folds[metric])
        out.update(random_mean=r[0], random_std=r[1], grouped_mean=g[0], grouped_std=g[1],
                   inflation=r[0] - g[0], straddling_groups=cmp.straddling)
    return out


def _gap_numbers(h, metric) -> dict:
    """Train, validation and gap per setting, ordered from weakest to strongest regularisation."""
    order = np.argsort(h.grid)
    if not h.stronger_when_larger:
        order = order[::-1]
    rows = [{"value": float(h.grid[i]),
             "train": float(np.nanmean(h.scores["train_accuracy"][i])),
             "val": float(np.nanmean(h.scores[metric][i])),
             "gap": float(np.nanmean(h.scores["gap"][i]))} for i in order]
    pos = int(np.flatnonzero(order == h.best_index)[0])
    edge = "strongest" if pos == len(rows) - 1 else "weakest" if pos == 0 else None
    return {"param": h.param, "settings": rows, "best": rows[pos], "best_at_edge": edge}


def _curve_numbers(cur) -> dict:
    val = np.nanmean(cur.val, axis=1)
    train = np.nanmean(cur.train, axis=1)
    return {"fractions": list(cur.fractions), "n_train": list(cur.n_train),
            "train": [float(v) for v in train], "val": [float(v) for v in val],
            "gain_per_doubling": float(cur.gain_per_doubling), "slope": float(cur.slope)}


def _class_numbers(cm, class_names) -> dict:
    cm = np.asarray(cm)
    support = cm.sum(axis=1)
    recall = np.diag(cm) / np.maximum(support, 1)
    off = cm - np.diag(np.diag(cm))
    rows = [{"class": n, "support": int(support[i]), "recall": float(recall[i]),
             "confused_with": class_names[int(np.argmax(off[i]))] if off[i].any() else None}
            for i, n in enumerate(class_names)]
    return {"classes": rows, "mean_recall": float(recall.mean()),
            "worst": rows[int(np.argmin(recall))]["class"]}


def _leak_sentences(leak, metric) -> list:
    out = []
    if leak["n_label_conflicts"]:
        out.append(f"{leak['n_label_conflicts']} image(s) sit in two class folders at once "
                   "(label conflicts): fix them first.")
    if leak.get("grouping_unusable"):
        out.append(f"Could not test for leakage with grouped splits: {leak['grouping_unusable']}. "
                   "The numbers below use random splits and may be optimistic.")
    elif "inflation" in leak and leak["inflation"] >= LEAK_MARGIN:
        out.append(f"Leakage inflates the score: {metric} is {leak['random_mean']:.3f} with random "
                   f"splits but {leak['grouped_mean']:.3f} when near-duplicate images stay on one "
                   f"side of the split ({leak['inflation']:+.3f}). Part of what looks like "
                   "learning is recognising frames already seen in training; believe the "
                   "grouped number.")
    elif leak["n_near_duplicate_groups"]:
        grouped = f" ({leak['random_mean']:.3f} vs {leak['grouped_mean']:.3f})" \
            if "random_mean" in leak else ""
        out.append(f"{leak['n_near_duplicate_groups']} near-duplicate groups exist, but random "
                   f"and grouped splits score alike{grouped}: leakage is not what hurts here.")
    else:
        out.append("No near-duplicate leakage found: no images are near-copies of each other "
                   f"(threshold {leak['threshold']:.4g}, {leak['threshold_source']}).")
    frac = leak["keras_flow_val_fraction_with_train_duplicate"]
    tail = (f"; {frac:.0%} of them have a near-duplicate in training, so its score is "
            "optimistic too" if frac > 0.05 and not leak.get("grouping_unusable") else "")
    out.append("A Keras ImageDataGenerator validation_split validates on the first files of "
               f"each class in name order, not on a random sample{tail}.")
    return out


def _gap_sentences(reg, metric) -> list:
    best, p = reg["best"], reg["param"]
    weak, strong = reg["settings"][0], reg["settings"][-1]
    at = f"at the best {p}={best['value']:.3g}"
    if best["gap"] > GAP_LARGE:
        out = [f"The head overfits: train accuracy {best['train']:.3f} vs validation "
               f"{best['val']:.3f} {at} (gap {best['gap']:.3f})."]
        if strong["gap"] < best["gap"] - 0.02 and strong["val"] < best["val"]:
            out.append(f"Stronger regularisation narrows the gap (to {strong['gap']:.3f} at "
                       f"{p}={strong['value']:.3g}) but lowers validation {metric} to "
                       f"{strong['val']:.3f}: regularisation alone cannot close it.")
        elif strong["gap"] > GAP_LARGE and strong is not best:
            out.append(f"Even the strongest regularisation tried ({p}={strong['value']:.3g}) "
                       f"leaves a gap of {strong['gap']:.3f}: regularisation is not the fix.")
    elif best["gap"] > GAP_SMALL:
        out = [f"Moderate train-validation gap: {best['gap']:.3f} {at}."]
    else:
        out = [f"Little overfitting: train and validation agree within {best['gap']:.3f} {at}."]
    if reg["best_at_edge"] == "strongest":
        out.append(f"Validation peaks at the strongest regularisation tried ({p}="
                   f"{best['value']:.3g}): extend the grid towards stronger values.")
    elif reg["best_at_edge"] == "weakest" and weak["gap"] > GAP_LARGE:
        out.append("Validation peaks at the weakest regularisation: the gap comes from the data "
                   "or features, not from too little regularisation.")
    return out


def _curve_sentence(curve, grouped: bool) -> str:
    g = curve["gain_per_doubling"]
    more = "more independent images (new clips, not more frames of the same clips)" if grouped \
        else "more images"
    if not np.isfinite(g):
        return "The learning curve could not be fitted (too few points)."
    if g >= GAIN_HELPS:
        return (f"More data should help: validation rises {g:+.3f} per doubling of the training "
                f"set at the end of the learning curve; collect {more}.")
    if g <= GAIN_FLAT:
        return (f"The learning curve no longer rises ({g:+.3f} per doubling of the training set): "
                "more of the same data will not help much; better features (another backbone) "
                "or more varied data will.")
    return f"The learning curve still rises slowly ({g:+.3f} per doubling of the training set)."


def _class_sentence(pc) -> str | None:
    worst = next(r for r in pc["classes"] if r["class"] == pc["worst"])
    if worst["recall"] < pc["mean_recall"] - 0.1:
        return (f"Errors concentrate in class {worst['class']!r}: recall {worst['recall']:.3f} vs "
                f"{pc['mean_recall']:.3f} on average, mostly predicted as "
                f"{worst['confused_with']!r}.")
    return None


def _conclude(numbers, rep) -> list:
    """Plain-language sentences, most important first (rules: module constants)."""
    metric = numbers["metric"]
    leak = numbers["leakage"]
    out = _leak_sentences(leak, metric) + _gap_sentences(numbers["regularisation"], metric)
    out.append(_curve_sentence(numbers["learning_curve"], "inflation" in leak))
    cls = _class_sentence(numbers["per_class"])
    if cls:
        out.append(cls)
    if rep.class_balance["imbalance_ratio"] >= 1.5:
        out.append(f"Classes are imbalanced ({rep.class_balance['imbalance_ratio']:.1f}x): "
                   "read balanced accuracy too.")
    return out


def _plots(diag, out: Path) -> dict:
    from featcache.report.plots import (plot_confusion_matrix, plot_leakage, plot_learning_curve,
                                        plot_regularisation_path)
    h = diag.sweep.heads[diag.head]
    return {
        "leakage": plot_leakage(diag.audit, diag.numbers["leakage"], out / "leakage.png",
                                diag.numbers["metric"]),
        "regularisation": plot_regularisation_path(diag.sweep, out / "regularisation_path.png"),
        "learning_curve": plot_learning_curve(diag.curve, out / "learning_curve.png"),
        "confusion": plot_confusion_matrix(
            h.confusion[h.best_index], diag.sweep.class_names,
            out / "confusion_matrix.png",
            f"{diag.head} at {h.param}={h.best_value:.3g}, {diag.sweep.plan.description}"),
    }


def _write(diag, out: Path, source: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    diag.plots = _plots(diag, out)
    (out / "diagnosis.json").write_text(json.dumps(
        {**diag.to_dict(), "source": source, "audit_summary": diag.audit.to_dict()["summary"]},
        indent=2, default=_json_default) + "\n")
    from featcache.report.html import write_html
    meta = (f"{source.get('cache', 'in-memory features')} · head {diag.head} · "
            f"{diag.numbers['splits']}")
    diag.html = write_html(out / "report.html", "Why is my model overfitting?",
                           diag.conclusion, _sections(diag), meta)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _sections(diag) -> list:
    from featcache.report.html import Section
    n, p = diag.numbers, diag.plots
    leak, reg, cur, pc = n["leakage"], n["regularisation"], n["learning_curve"], n["per_class"]
    leak_rows = [[label, _fmt(leak[key])] for key, label in _LEAK_LABELS if key in leak]
    return [
        Section("Leakage: duplicates, near-duplicates and splits", diag.audit.findings,
                [(["quantity", "value"], leak_rows)], [p["leakage"]]),
        Section(f"Train-validation gap across regularisation ({reg['param']})",
                [f"Weakest regularisation first; best {reg['param']}={reg['best']['value']:.3g}."],
                [([reg["param"], "train accuracy", f"validation {n['metric']}", "gap"],
                  [[f"{r['value']:.3g}", _fmt(r["train"]), _fmt(r["val"]), _fmt(r["gap"])]
                   for r in reg["settings"]])],
                [p["regularisation"]]),
        Section("Learning curve: would more data help?",
                [f"Validation change per doubling of the training set (tail of the curve): "
                 f"{cur['gain_per_doubling']:+.4f}."],
                [(["fraction", "training rows", "train", "validation"],
                  [[f"{f:g}", round(m), _fmt(t), _fmt(v)] for f, m, t, v in
                   zip(cur["fractions"], cur["n_train"], cur["train"], cur["val"])])],
                [p["learning_curve"]]),
        Section("Per-class errors",
                [f"Out-of-fold recall per class; mean {pc['mean_recall']:.3f}."],
                [(["class", "images", "recall", "most often predicted as"],
                  [[r["class"], r["support"], _fmt(r["recall"]), r["confused_with"] or "-"]
                   for r in pc["classes"]])], [p["confusion"]]),
    ]


_LEAK_LABELS = [
    ("grouped_mean", "validation score, grouped splits (believe this)"),
    ("random_mean", "validation score, random splits"),
    ("inflation", "random minus grouped"),
    ("straddling_groups", "groups random folds cut through"),
    ("n_near_duplicate_groups", "near-duplicate groups"),
    ("n_images_in_near_duplicate_groups", "images in near-duplicate groups"),
    ("threshold", "cosine threshold"),
    ("threshold_source", "threshold chosen by"),
    ("n_exact_duplicate_groups", "byte-identical groups"),
    ("n_label_conflicts", "label conflicts"),
    ("featcache_cv_val_fraction_with_train_duplicate",
     "random CV: validation images with a near-duplicate in training"),
    ("keras_flow_val_fraction_with_train_duplicate",
     "Keras validation_split: validation images with a near-duplicate in training"),
]


def _fmt(value):
    """Scores and fractions with 3 decimals; everything else unchanged."""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.4g}"
    return value
