"""Which backbone? Backbone entries of one cache compared on the same images and splits.

Each entry of a cache holds the same images embedded by another backbone. Rows
are matched by (path, sha256), so only images every compared entry holds take
part. One outer split plan is shared by all backbones, and each backbone's
regularisation is tuned by nested CV inside every outer fold
(:func:`featcache.evaluate.nested_cv`), so no backbone gains from choosing its
setting on the folds that score it. The best backbone is then tested against
each other one with the corrected resampled t-test on the paired outer folds.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from featcache.cache.load import load_features
from featcache.cache.read import list_entries
from featcache.errors import FeatcacheError
from featcache.evaluate.nested import nested_cv
from featcache.evaluate.splits import SplitPlan, make_splits
from featcache.evaluate.stats import compare_to_best
from featcache.cache.features import Features
from featcache.files import jsonable
from featcache.threads import blas_thread_limit

MIN_SHARED = 50  # fewer shared images give intervals too wide to rank backbones


@dataclass
class BackboneScore:
    """One backbone's nested-CV score on the shared images.

    Attributes
    ----------
    label : str, its name in tables (the backbone name, or the entry key when
        two entries share a name).
    key : str, the cache entry.
    feature_dim : int
    seconds_per_image : float or None, decode + forward pass per image recorded
        by ``embed`` (None for entries written before it was recorded).
    rows : int, rows of the entry (before matching).
    param : str, the tuned parameter (``"C"``).
    chosen : list of float, the value chosen in each outer fold.
    folds : list of float, outer-fold scores in the ranking metric.
    summary : dict, mean, std, 95% interval (Nadeau-Bengio corrected), n.
    """

    label: str
    key: str
    feature_dim: int
    seconds_per_image: float | None
    rows: int
    param: str
    chosen: list
    folds: list
    summary: dict

    def to_dict(self) -> dict:
        return jsonable({"label": self.label, "key": self.key, "feature_dim": self.feature_dim,
                         "seconds_per_image": self.seconds_per_image, "rows": self.rows,
                         "param": self.param, "chosen": self.chosen, "folds": self.folds,
                         "summary": self.summary})


@dataclass
class BackboneComparison:
    """Backbones of one cache on the same images and outer splits.

    Attributes
    ----------
    cache : str
    head : str
    metric : str
    n_images : int, images present in every compared entry (the rows used).
    backbones : dict label -> BackboneScore, in the order asked for.
    plan : SplitPlan, the shared outer splits.
    inner_folds : int
    class_names : list of str
    comparison : dict, :func:`compare_to_best` of the outer-fold scores.
    """

    cache: str
    head: str
    metric: str
    n_images: int
    backbones: dict
    plan: SplitPlan
    inner_folds: int
    class_names: list
    comparison: dict = field(default_factory=dict)

    @property
    def best(self) -> str:
        return self.comparison["best"]

    def to_dict(self) -> dict:
        return jsonable({"cache": self.cache, "head": self.head, "metric": self.metric,
                         "n_images": self.n_images, "inner_folds": self.inner_folds,
                         "outer_splits": self.plan.to_dict(), "class_names": self.class_names,
                         "backbones": [b.to_dict() for b in self.backbones.values()],
                         "comparison": self.comparison})


def compare_backbones(cache, head: str = "logreg", backbones="all", *, folds: int = 5,
                      inner_folds: int = 3, repeats: int = 1, group_by=None, seed: int = 0,
                      metric: str = "accuracy", grid=None, head_params: dict | None = None,
                      n_jobs: int | None = None) -> BackboneComparison:
    """Compare the backbone entries of one cache with one head, C tuned by nested CV.

    Parameters
    ----------
    cache : str or Path
        A cache holding the same images embedded with at least two backbones.
    head : str, default "logreg"
        One head (``logreg``, ``svm``, ``softmax``).
    backbones : "all", str or list of str
        ``"all"`` entries, or entry keys / backbone names (comma-separated in
        a string). A name must match exactly one entry.
    folds, repeats, group_by, seed
        The shared outer splits (:func:`featcache.evaluate.make_splits`).
        ``group_by="near-duplicates"`` finds groups in the first backbone's features.
    inner_folds : int, default 3
        Folds of the inner CV that chooses each backbone's setting.
    metric : str, default "accuracy"
    grid : sequence of float, optional
        Values to choose from (default: the head's own grid).
    head_params : dict, optional
        Extra constructor parameters of the head.
    n_jobs : int, optional
        Backbones evaluated at once, in threads with one BLAS thread each
        (default: one per CPU core, at most one per backbone). Results do not
        depend on it.

    Returns
    -------
    BackboneComparison

    Raises
    ------
    FeatcacheError
        For fewer than two entries, an unknown or ambiguous backbone name, or
        entries sharing fewer than 50 images.
    """
    if not isinstance(head, str) or "," in head:
        raise FeatcacheError(f"head= takes one head name (logreg, svm or softmax), got {head!r}")
    from featcache.evaluate import resolve_heads
    resolve_heads(head, head_params, seed)  # a bad head fails before any loading
    entries = select_entries(cache, backbones)
    labels = _labels(entries)
    loaded = [load_features(cache, e["key"]) for e in entries]
    aligned = align_rows(loaded, labels)
    plan = make_splits(aligned[0], folds, repeats, group_by, seed)

    def run(feats):
        return nested_cv(feats, head, grids=grid, inner_folds=inner_folds, seed=seed,
                         metric=metric, head_params=head_params, plan=plan, best_of_sweep=False,
                         n_jobs=1)  # the backbones already run in parallel
    n_jobs = n_jobs or min(len(aligned), os.cpu_count() or 1)
    with blas_thread_limit(1), ThreadPoolExecutor(n_jobs) as pool:  # limit set before threads
        runs = list(pool.map(run, aligned))
    scores = {}
    for label, entry, res in zip(labels, entries, runs):
        h = next(iter(res.heads.values()))
        scores[label] = BackboneScore(label, entry["key"], entry["feature_dim"],
                                      entry["seconds_per_image"], entry["rows"], h.param,
                                      list(h.chosen), list(h.folds[metric]), h.summary[metric])
    comparison = compare_to_best({k: s.folds for k, s in scores.items()}, plan.n_train, plan.n_test)
    return BackboneComparison(str(cache), head, metric, len(aligned[0]), scores, plan,
                              int(inner_folds), list(aligned[0].class_names), comparison)


def select_entries(cache, backbones="all") -> list[dict]:
    """The entries (:func:`featcache.cache.read.list_entries` dicts) that ``backbones`` names."""
    entries = list_entries(cache)
    if backbones is None or backbones == "all":
        chosen = entries
    else:
        names = backbones.split(",") if isinstance(backbones, str) else list(backbones)
        names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
        unknown = [n for n in names if not _matches(entries, n)]
        if unknown:
            held = ", ".join(f"{e['key']} ({e['spec'].get('name')})" for e in entries) or "none"
            raise FeatcacheError(f"{cache} has no backbone {', '.join(map(repr, unknown))}; "
                                 f"it holds: {held}")
        chosen = list({e["key"]: e for e in (_find(cache, entries, n) for n in names)}.values())
    if len(chosen) < 2:
        held = ", ".join(e["key"] for e in chosen) or "none"
        raise FeatcacheError(f"compare needs at least two backbone entries, {cache} gives "
                             f"{len(chosen)} ({held}): embed the same data folder with another "
                             f"backbone, e.g. `featcache embed DATA_DIR -o {cache} --backbone "
                             "efficientnet_b0`")
    return chosen


def _matches(entries, name) -> list:
    exact = [e for e in entries if e["key"] == name]
    return exact or [e for e in entries if e["spec"].get("name") == name]


def _find(cache, entries, name):
    found = _matches(entries, name)
    if len(found) > 1:
        raise FeatcacheError(f"{cache} holds {len(found)} entries for {name!r} "
                             f"({', '.join(e['key'] for e in found)}): pass the full keys to "
                             "backbones=")
    return found[0]


def _labels(entries) -> list[str]:
    """Backbone names, or entry keys where two entries share a name."""
    names = [e["spec"].get("name") or e["key"] for e in entries]
    return [n if names.count(n) == 1 else e["key"] for n, e in zip(names, entries)]


def align_rows(features: list, labels=None) -> list:
    """The rows every Features holds, matched by (path, sha256), in one order.

    Classes are re-coded to the sorted class names of the kept rows, so the
    labels agree even if entries were embedded from folders with other classes.
    Raises FeatcacheError when fewer than 50 rows are shared.
    """
    labels = labels or [f.backbone for f in features]
    keys = [list(zip(f.paths.tolist(), f.sha256.tolist())) for f in features]
    shared = set(keys[0]).intersection(*map(set, keys[1:]))
    if len(shared) < MIN_SHARED:
        sizes = ", ".join(f"{lab} {len(f)}" for lab, f in zip(labels, features))
        raise FeatcacheError(f"the backbone entries share only {len(shared)} images (same path "
                             f"and sha256; rows per entry: {sizes}); compare needs at least "
                             f"{MIN_SHARED}: embed the same data folder with each backbone")
    order = sorted(shared)
    out = []
    for f, k in zip(features, keys):
        where = {row: i for i, row in enumerate(k)}
        out.append(f.subset(np.array([where[row] for row in order])))
    return _recode(out)


def _recode(features: list) -> list:
    names = [np.asarray(f.class_names)[f.y] for f in features]
    classes = sorted(set(names[0].tolist()))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in names[0]], dtype=np.int64)
    return [Features(f.X, y, f.paths, list(classes), f.sha256, f.backbone, dict(f.spec))
            for f in features]
