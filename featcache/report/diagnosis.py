"""Writing a :class:`featcache.evaluate.diagnosis.Diagnosis`: report.html, PNG plots, diagnosis.json.

Every number comes from ``diag.numbers`` (or the results it was computed
from), so the HTML, the JSON and the terminal show the same values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from featcache.files import write_json

TITLE = "Why is my model overfitting?"


@dataclass
class DiagnosisFiles:
    """What :func:`write_diagnosis` wrote: ``html``, ``json`` and ``plots`` (name -> PNG path)."""

    html: Path
    json: Path
    plots: dict = field(default_factory=dict)


def write_diagnosis(diag, out_dir) -> DiagnosisFiles:
    """Write the PNGs, ``diagnosis.json`` and a self-contained ``report.html`` to ``out_dir``.

    Parameters
    ----------
    diag : Diagnosis
    out_dir : str or Path, created when missing.

    Returns
    -------
    DiagnosisFiles
    """
    from featcache.report.html import write_html
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(diag, out)
    json_path = write_json(out / "diagnosis.json",
                           {**diag.to_dict(), "plots": {k: str(v) for k, v in plots.items()}})
    meta = (f"{diag.source.get('cache', 'in-memory features')} · head {diag.head} · "
            f"{diag.numbers['splits']}")
    html = write_html(out / "report.html", TITLE, diag.conclusion, _sections(diag, plots), meta)
    return DiagnosisFiles(html, json_path, plots)


def _plots(diag, out: Path) -> dict:
    from featcache.report.plots import (plot_confusion_matrix, plot_leakage, plot_learning_curve,
                                        plot_regularisation_path)
    h = diag.sweep.heads[diag.head]
    return {
        "leakage": plot_leakage(diag.audit, diag.numbers["leakage"], out / "leakage.png",
                                diag.metric),
        "regularisation": plot_regularisation_path(diag.sweep, out / "regularisation_path.png"),
        "learning_curve": plot_learning_curve(diag.curve, out / "learning_curve.png"),
        "confusion": plot_confusion_matrix(
            h.confusion[h.best_index], diag.sweep.class_names, out / "confusion_matrix.png",
            f"{diag.head} at {h.param}={h.best_value:.3g}, {diag.plan.description}"),
    }


def _sections(diag, p: dict) -> list:
    from featcache.report.html import Section
    n, m = diag.numbers, diag.metric
    leak, reg, cur, pc = n["leakage"], n["regularisation"], n["learning_curve"], n["per_class"]
    leak_rows = [[label, fmt(leak[key])] for key, label in LEAK_LABELS if key in leak]
    return [
        Section("Leakage: duplicates, near-duplicates and splits", diag.audit.findings,
                [(["quantity", "value"], leak_rows)], [p["leakage"]]),
        Section(f"Train-validation gap across regularisation ({reg['param']})",
                [f"Weakest regularisation first; best {reg['param']}={reg['best']['value']:.3g}; "
                 f"train, validation and gap all in {m}."],
                [([reg["param"], f"train {m}", f"validation {m}", "gap"],
                  [[f"{r['value']:.3g}", fmt(r["train"]), fmt(r["val"]), fmt(r["gap"])]
                   for r in reg["settings"]])],
                [p["regularisation"]]),
        *_views_section(n.get("augmentation"), diag.views_verdict, m),
        Section("Learning curve: would more data help?",
                [f"Validation change per doubling of the training set (tail of the curve): "
                 f"{cur['gain_per_doubling']:+.4f}; train minus validation at the largest "
                 f"size: {cur['final_gap']:+.3f}."],
                [(["fraction", "training rows", f"train {m}", f"validation {m}"],
                  [[f"{f:g}", round(k), fmt(t), fmt(v)] for f, k, t, v in
                   zip(cur["fractions"], cur["n_train"], cur["train"], cur["val"])])],
                [p["learning_curve"]]),
        Section("Per-class errors",
                [f"Out-of-fold recall per class; mean {pc['mean_recall']:.3f}."],
                [(["class", "images", "recall", "most often predicted as"],
                  [[r["class"], r["support"], fmt(r["recall"]), r["confused_with"] or "-"]
                   for r in pc["classes"]])], [p["confusion"]]),
    ]


def _views_section(aug, verdict: str, m) -> list:
    """The "augmented views" section (none without ``--augmented``)."""
    from featcache.report.html import Section
    if aug is None:
        return []
    rows = [[label, f"{r['value']:.3g}", fmt(r["mean"]), fmt(r["train"]), fmt(r["gap"])]
            for label, r in (("without views", aug["without"]), ("with views", aug["with"]))]
    return [Section("Does training on augmented views close the gap?",
                    [verdict,
                     f"Each at its best {aug['param']} on the same splits; train {m} on clean "
                     f"training images; corrected t-test p = {aug['p_value']:.3g}. The "
                     "regularisation plot above shows both paths (dashed: with views)."],
                    [(["training rows", aug["param"], f"validation {m}", f"train {m}", "gap"],
                      rows)], [])]


LEAK_LABELS = [
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
"""Rows of the leakage table: key in ``numbers["leakage"]`` and its label."""


def fmt(value):
    """Scores and fractions with 3 decimals; everything else unchanged."""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.4g}"
    return value
