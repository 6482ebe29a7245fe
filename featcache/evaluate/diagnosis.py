"""``featcache diagnose``: why is my model overfitting? The evidence, and a verdict.

:func:`diagnose` is pure: it computes and returns a :class:`Diagnosis`;
:func:`featcache.report.diagnosis.write_diagnosis` writes the HTML report,
PNGs and JSON. The evidence, each from the public evaluate API:

- leakage: the audit (duplicates, near-duplicate groups, leaky splits) and the
  head's score under random vs grouped-by-near-duplicates CV;
- the train-validation gap across regularisation strengths (a sweep);
- the slope of the learning curve (would more data help?);
- per-class errors (out-of-fold confusion matrix, per-class recall);
- with ``augmented=True``: the same sweep trained on cached augmented views,
  and whether they close the gap (paired corrected t-test, same splits).

The splits are built once: featcache's random CV plan (which the audit
checks) and, when the audit finds usable near-duplicate groups, one grouped
plan that the sweep and the curve share. The random-vs-grouped comparison
reads both sweeps at the same setting, so every number in the report comes
from one fit. The conclusion comes from :mod:`featcache.evaluate.verdicts`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from featcache.errors import FeatcacheError
from featcache.evaluate._audit import DEFAULT_KERAS_SEED, KERAS_FLOW, audit


@dataclass
class Diagnosis:
    """The answer: ``conclusion`` sentences and the ``numbers`` behind them.

    Attributes
    ----------
    head : str
    metric : str, the metric of every score and gap.
    conclusion : list of str, most important first.
    numbers : dict, the evidence (JSON-able).
    audit : AuditReport
    sweep : SweepResult, on ``plan`` (grouped when near-duplicates allow it).
    curve : CurveResult, on ``plan``, at the sweep's best setting.
    plan : SplitPlan, the splits of the sweep and the curve.
    random_sweep : SweepResult or None, the same grid on random splits (with groups only).
    source : dict, where the features came from.
    views_verdict : str, the verdict on training with views ("" without ``augmented``).
    """

    head: str
    metric: str
    conclusion: list
    numbers: dict
    audit: object = field(repr=False)
    sweep: object = field(repr=False)
    curve: object = field(repr=False)
    plan: object = field(repr=False)
    random_sweep: object = field(default=None, repr=False)
    source: dict = field(default_factory=dict)
    views_verdict: str = ""

    def to_dict(self) -> dict:
        from featcache.files import jsonable
        return jsonable({"head": self.head, "metric": self.metric,
                         "conclusion": list(self.conclusion), "numbers": self.numbers,
                         "source": self.source,
                         "audit_summary": self.audit.to_dict()["summary"]})


def check_diagnose_args(features, head, grid, metric, folds):
    """Check every argument before any work; returns the checked grid (or None)."""
    from featcache.evaluate import check_metric, resolve_heads
    from featcache.evaluate.splits import check_features
    check_metric(metric)
    heads = resolve_heads(head)
    if len(heads) != 1:
        raise FeatcacheError(f"diagnose takes one head, got {', '.join(map(repr, heads))}; "
                             "run it once per head, or compare heads with sweep")
    if grid is not None:
        try:
            grid = [float(v) for v in np.asarray(grid, dtype=float).ravel()]
        except (TypeError, ValueError):
            raise FeatcacheError(f"grid= must be positive numbers, got {grid!r}") from None
        if not grid or not np.all(np.isfinite(grid)) or min(grid) <= 0:
            raise FeatcacheError(f"grid= must be positive numbers, got {grid!r}")
    check_features(features, folds)
    return grid


def diagnose(features, head: str = "logreg", *, folds: int = 5, seed: int = 0,
             threshold=None, validation_split: float = 0.2, keras_seed: int = DEFAULT_KERAS_SEED,
             grid=None, metric: str = "accuracy", progress=False,
             source: dict | None = None, augmented: bool = False) -> Diagnosis:
    """Gather the evidence for "why is my model overfitting?"; writes nothing.

    Parameters
    ----------
    features : Features
    head : str
        One head name (``logreg``, ``svm``, ``softmax``).
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
        ``accuracy``, ``balanced_accuracy`` or ``f1_macro``: every score,
        train score and gap of the diagnosis is in it.
    source : dict, optional
        Where the features came from (cache, backbone), for the report.
    augmented : bool
        Also sweep with the cached augmented views (``features.views``) on the
        same splits and say whether they close the train-validation gap.

    Returns
    -------
    Diagnosis
        Write it with :func:`featcache.report.diagnosis.write_diagnosis`.
    """
    from featcache.evaluate import learning_curve, make_splits, sweep
    from featcache.evaluate.views import check_augmented
    from featcache.evaluate.verdicts import diagnosis_conclusion, unusable_grouping
    grid = check_diagnose_args(features, head, grid, metric, folds)
    augmented = check_augmented(features, augmented)
    random_plan = make_splits(features, folds, seed=seed)
    rep = audit(features, threshold=threshold, validation_split=validation_split,
                keras_seed=keras_seed, folds=folds, seed=seed, source=source, plan=random_plan)
    groups = rep.groups if rep.summary["n_near_duplicate_groups"] else None
    unusable = unusable_grouping(groups, folds)
    grouped = groups is not None and not unusable
    plan = make_splits(features, folds, group_by=groups, seed=seed) if grouped else random_plan
    kw = dict(metric=metric, progress=progress, seed=seed)
    sw = sweep(features, head, grids=grid, plan=plan, augmented="both" if augmented else False,
               **kw)
    name = sw.best
    h = sw.heads[name]
    rsw = (sweep(features, head, grids={name: h.grid}, plan=random_plan, **kw)
           if grouped else None)
    cur = learning_curve(features, head, plan=plan, head_params={"reg": h.best_value}, **kw)
    leak = _leak_numbers(rep, h, rsw, metric)
    if rsw is not None:
        # the audit counted them on the same random splits
        leak["straddling_groups"] = rep.splits["featcache_cv"]["groups_straddling_any_fold"]
    numbers = {"leakage": {**leak, "grouping_unusable": unusable},
               "regularisation": _gap_numbers(h, metric),
               "learning_curve": curve_numbers(cur),
               "per_class": _class_numbers(sw.best_confusion(), features.class_names),
               "class_balance": rep.class_balance, "metric": metric,
               "splits": plan.description}
    if augmented:
        numbers["augmentation"] = sw.views_tests[name]
    return Diagnosis(name, metric, diagnosis_conclusion(numbers), numbers, rep, sw, cur, plan,
                     rsw, dict(source or {}), sw.views_verdicts.get(name, ""))



def diagnose_cache(cache_path, backbone: str | None = None, *, memory_budget=None,
                   **kwargs) -> Diagnosis:
    """Load ``cache_path`` (with its views when ``augmented=True``) and :func:`diagnose` it.

    Features that do not fit ``memory_budget`` stream from the file (softmax
    head only; see :func:`featcache.evaluate.streaming.open_features`).
    """
    from featcache.evaluate.streaming import open_features
    features = open_features(cache_path, backbone, heads=kwargs.get("head", "logreg"),
                             memory_budget=memory_budget, views=bool(kwargs.get("augmented")))
    return diagnose(features, source={"cache": str(cache_path), "backbone": features.backbone},
                    **kwargs)


def _mean_std(values) -> tuple:
    v = np.asarray(values, dtype=float)
    return float(np.nanmean(v)), float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else 0.0


def _leak_numbers(rep, h, rsw, metric) -> dict:
    """Audit counts and, with a random-split sweep, both scores at the best setting."""
    s, flow = rep.summary, rep.splits[f"keras_{KERAS_FLOW}"]
    out = {"n_near_duplicate_groups": s["n_near_duplicate_groups"],
           "n_images_in_near_duplicate_groups": s["n_images_in_near_duplicate_groups"],
           "threshold": rep.near_duplicates["threshold"],
           "threshold_source": rep.near_duplicates["threshold_source"],
           "threshold_reason": rep.near_duplicates["reason"],
           "n_exact_duplicate_groups": s["n_exact_duplicate_groups"],
           "n_label_conflicts": s["n_label_conflicts"],
           "keras_flow_val_fraction_with_train_duplicate":
               flow["val_fraction_with_train_duplicate"],
           "featcache_cv_val_fraction_with_train_duplicate":
               s.get("featcache_cv_val_fraction_with_train_duplicate")}
    if rsw is not None:
        g = _mean_std(h.scores[metric][h.best_index])
        r = _mean_std(rsw.heads[h.name].scores[metric][h.best_index])
        out.update(random_mean=r[0], random_std=r[1], grouped_mean=g[0], grouped_std=g[1],
                   inflation=r[0] - g[0])
    return out


def _gap_numbers(h, metric) -> dict:
    """Train, validation and gap (all in ``metric``) per setting, weakest regularisation first."""
    order = np.argsort(h.grid)
    if not h.stronger_when_larger:
        order = order[::-1]
    rows = [{"value": float(h.grid[i]),
             "train": float(np.nanmean(h.scores["train_score"][i])),
             "val": float(np.nanmean(h.scores[metric][i])),
             "gap": float(np.nanmean(h.scores["gap"][i]))} for i in order]
    pos = int(np.flatnonzero(order == h.best_index)[0])
    edge = "strongest" if pos == len(rows) - 1 else "weakest" if pos == 0 else None
    return {"param": h.param, "settings": rows, "best": rows[pos], "best_at_edge": edge}


def curve_numbers(cur) -> dict:
    """The learning-curve numbers diagnose reports (and its verdict reads) for ``cur``."""
    val = np.nanmean(cur.val, axis=1)
    train = np.nanmean(cur.train, axis=1)
    return {"fractions": list(cur.fractions), "n_train": list(cur.n_train),
            "train": [float(v) for v in train], "val": [float(v) for v in val],
            "gain_per_doubling": float(cur.gain_per_doubling), "slope": float(cur.slope),
            "final_gap": cur.final_gap, "grouped": cur.plan.groups is not None,
            "verdict": cur.verdict().kind}


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
