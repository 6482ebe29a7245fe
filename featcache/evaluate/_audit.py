"""Leakage audit: duplicates, near-duplicates and what common splits do with them.

What a Keras ``validation_split=v`` puts in validation is modelled from the
Keras 3 source (``keras/src/legacy/preprocessing/image.py`` and
``keras/src/utils/dataset_utils.py``). Both list each class folder
recursively, sub-folders sorted by path and files sorted by name, classes in
sorted order:

- ``ImageDataGenerator(validation_split=v).flow_from_directory(...,
  subset="validation")`` takes the FIRST ``int(v * n_c)`` files of each
  class ``c`` in that order. No shuffling: validation is the files that sort
  first, and consecutive frames of a clip sit on both sides of the cut.
- ``image_dataset_from_directory(..., validation_split=v, subset=
  "validation", seed=s)`` shuffles the whole list with
  ``np.random.RandomState(s).shuffle`` (``shuffle=True``, the default) and
  takes the LAST ``int(v * n)`` files overall. With ``shuffle=False`` it takes
  the last files of the last classes.

Files in formats a loader skips are left out of its model. Files that failed
to embed are not in the cache but Keras lists them, so they can shift the cut
by a few files.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featcache.errors import FeatcacheError
from featcache.evaluate.neardup import knn_cosine, near_duplicate_groups
from featcache.evaluate.verdicts import (cv_leak_finding, imbalance_finding,
                                        near_duplicate_findings, unusable_grouping)
from featcache.files import jsonable, write_json

KERAS_FLOW = "flow_from_directory"
KERAS_DATASET = "image_dataset_from_directory"
DEFAULT_KERAS_SEED = 123  # the seed of TensorFlow's image-loading tutorial
KERAS_FORMATS = {  # the extensions each loader lists, as in the Keras source
    KERAS_FLOW: ("png", "jpg", "jpeg", "bmp", "ppm", "tif", "tiff"),
    KERAS_DATASET: (".bmp", ".gif", ".jpeg", ".jpg", ".png"),
}


def keras_file_order(paths, y) -> np.ndarray:
    """Row order in which Keras lists files: class, then sub-folder path, then name."""
    paths = [str(p) for p in paths]
    keys = [(int(c), posixpath.dirname(p), posixpath.basename(p)) for p, c in zip(paths, y)]
    return np.array(sorted(range(len(paths)), key=keys.__getitem__), dtype=np.int64)


def keras_listed(paths, method: str = KERAS_FLOW) -> np.ndarray:
    """Rows whose file extension the Keras loader lists (same test as Keras: lower-cased suffix)."""
    if method not in KERAS_FORMATS:
        raise FeatcacheError(f"unknown Keras split method {method!r}: use {KERAS_FLOW} or {KERAS_DATASET}")
    return np.array([str(p).lower().endswith(KERAS_FORMATS[method]) for p in paths], dtype=bool)


def keras_validation_mask(paths, y, validation_split: float, method: str = KERAS_FLOW,
                          seed: int | None = DEFAULT_KERAS_SEED, shuffle: bool = True):
    """Boolean mask of the rows Keras would put in its validation subset.

    Rows in formats the loader does not list (see ``keras_listed``) are in
    neither subset.

    Parameters
    ----------
    paths, y : relative paths and labels of the rows.
    validation_split : float in (0, 1)
    method : ``"flow_from_directory"`` (first fraction of each class) or
        ``"image_dataset_from_directory"`` (last fraction after a seeded shuffle).
    seed, shuffle : as passed to ``image_dataset_from_directory``.
    """
    v = float(validation_split)
    if not 0 < v < 1:
        raise FeatcacheError(f"--validation-split must be between 0 and 1, got {validation_split}")
    paths, y = np.asarray(paths), np.asarray(y)
    listed = np.flatnonzero(keras_listed(paths, method))
    order = listed[keras_file_order(paths[listed], y[listed])]
    mask = np.zeros(len(y), dtype=bool)
    if method == KERAS_FLOW:
        for c in np.unique(y):
            rows = order[y[order] == c]
            mask[rows[:int(v * len(rows))]] = True
    else:
        if shuffle:
            order = order.copy()
            np.random.RandomState(seed).shuffle(order)
        n_val = int(v * len(order))
        mask[order[len(order) - n_val:]] = True
    return mask


def split_leakage(groups, train_idx, val_idx) -> dict:
    """How many near-duplicate groups a train/validation split cuts through.

    Returns ``groups_straddling`` (multi-row groups with rows on both sides)
    and ``val_rows_with_train_duplicate`` (validation rows whose group also
    has a training row), with its fraction of the validation set.
    """
    groups = np.asarray(groups)
    in_train = np.zeros(groups.max() + 1, dtype=bool)
    in_train[groups[train_idx]] = True
    in_val = np.zeros_like(in_train)
    in_val[groups[val_idx]] = True
    leaked = in_train[groups[val_idx]]
    return {"n_train": int(len(train_idx)), "n_val": int(len(val_idx)),
            "groups_straddling": int((in_train & in_val).sum()),
            "val_rows_with_train_duplicate": int(leaked.sum()),
            "val_fraction_with_train_duplicate": round(float(leaked.mean()), 4) if len(leaked) else 0.0}


def exact_duplicates(sha256, y, paths, class_names):
    """Groups of rows with the same content hash, and those that disagree on the label.

    Returns
    -------
    groups : list of int ndarrays (each of size >= 2)
    conflicts : list of dict with ``sha256``, ``paths`` and ``classes``
    """
    sha = np.asarray(sha256).astype(str)
    valid = np.flatnonzero(sha != "")
    _, inv, counts = np.unique(sha[valid], return_inverse=True, return_counts=True)
    groups, conflicts = [], []
    for rows in _members(inv, counts):
        rows = valid[rows]
        groups.append(rows)
        labels = sorted(set(np.asarray(y)[rows].tolist()))
        if len(labels) > 1:
            conflicts.append({"sha256": str(sha[rows[0]]),
                              "paths": [str(paths[i]) for i in rows],
                              "classes": [class_names[c] for c in labels]})
    return groups, conflicts


def _members(inv, counts):
    """Row indices of every id in ``inv`` that occurs more than once, in id order."""
    order = np.argsort(inv, kind="stable")
    parts = np.split(order, np.cumsum(counts)[:-1])
    return [rows for rows, c in zip(parts, counts) if c > 1]


@dataclass
class AuditReport:
    """Everything the audit found; ``to_dict`` is the ``--json`` output.

    ``groups`` (near-duplicate group id per row) and ``nn_similarity`` (each
    row's nearest-neighbour similarity) are kept for grouped CV and plots.
    """

    summary: dict
    class_balance: dict
    exact_duplicate_groups: list
    label_conflicts: list
    near_duplicate_groups: list
    near_duplicates: dict
    splits: dict
    findings: list
    source: dict = field(default_factory=dict)
    groups: np.ndarray | None = field(default=None, repr=False)
    nn_similarity: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        keys = ("source", "summary", "findings", "class_balance", "exact_duplicate_groups",
                "label_conflicts", "near_duplicate_groups", "near_duplicates", "splits")
        return jsonable({k: getattr(self, k) for k in keys})

    def write_json(self, path) -> Path:
        """Write ``to_dict()`` as indented, strict JSON to ``path``."""
        return write_json(path, self.to_dict())


def class_balance(y, class_names) -> dict:
    """Per-class counts, and the ratio of the largest class to the smallest."""
    counts = np.bincount(np.asarray(y), minlength=len(class_names))
    nonzero = counts[counts > 0]
    ratio = float(nonzero.max() / nonzero.min()) if len(nonzero) else 0.0
    return {"counts": {name: int(c) for name, c in zip(class_names, counts)},
            "imbalance_ratio": round(ratio, 3),
            "smallest_class": class_names[int(np.argmin(counts))] if len(counts) else None}


def _keras_splits(features, groups, validation_split, keras_seed) -> dict:
    out = {}
    for method, kw in ((KERAS_FLOW, {}), (KERAS_DATASET, {"seed": keras_seed})):
        mask = keras_validation_mask(features.paths, features.y, validation_split, method, **kw)
        listed = keras_listed(features.paths, method)
        res = split_leakage(groups, np.flatnonzero(listed & ~mask), np.flatnonzero(mask))
        res["not_listed_by_keras"] = int((~listed).sum())
        val_counts = np.bincount(features.y[mask], minlength=len(features.class_names))
        res["val_per_class"] = {n: int(c) for n, c in zip(features.class_names, val_counts)}
        res["validation_split"] = float(validation_split)
        if method == KERAS_DATASET:
            res["seed"] = keras_seed
        out[f"keras_{method}"] = res
    return out


def _featcache_cv(features, groups, folds, seed, plan=None) -> dict:
    from featcache.evaluate.splits import make_splits, straddling_groups  # as `featcache cv`
    if plan is None:
        try:
            plan = make_splits(features, folds=folds, seed=seed)
        except FeatcacheError as exc:
            return {"error": str(exc)}
    per_fold = [split_leakage(groups, tr, te) for tr, te in plan.splits]
    frac = [f["val_fraction_with_train_duplicate"] for f in per_fold]
    return {"description": plan.description, "per_fold": per_fold,
            "groups_straddling_any_fold": straddling_groups(plan.splits, groups),
            "mean_val_fraction_with_train_duplicate": round(float(np.mean(frac)), 4)}


def audit(features, *, threshold=None, validation_split: float = 0.2,
          keras_seed: int = DEFAULT_KERAS_SEED, folds: int = 5, seed: int = 0,
          k: int = 32, source: dict | None = None, plan=None) -> AuditReport:
    """Audit features for duplicates, near-duplicates and split leakage.

    Parameters
    ----------
    features : Features
    threshold : float, "auto", "default" or None
        Near-duplicate cosine threshold; None/"auto" chooses it from the data
        (see :func:`featcache.evaluate.neardup.near_duplicate_groups`).
    validation_split : float
        The ``validation_split`` of the Keras loaders to model.
    keras_seed : int
        Seed passed to ``image_dataset_from_directory``.
    folds, seed : int
        featcache's own CV (stratified shuffled k-fold) to check.
    k : int
        Neighbours examined per image.
    plan : SplitPlan, optional
        featcache's random CV splits, when already built (``folds``/``seed`` are then unused).

    Returns
    -------
    AuditReport
    """
    if len(features) < 2:
        raise FeatcacheError(f"the audit needs at least 2 images, the features hold {len(features)}")
    neighbors = knn_cosine(features.X, k)
    groups, info = near_duplicate_groups(features.X, threshold, neighbors=neighbors)
    exact, conflicts = exact_duplicates(features.sha256, features.y, features.paths,
                                        features.class_names)
    near = _group_lists(groups, features.paths)
    splits = _keras_splits(features, groups, validation_split, keras_seed)
    splits["featcache_cv"] = _featcache_cv(features, groups, folds, seed, plan)
    balance = class_balance(features.y, features.class_names)
    summary = _summary(features, exact, conflicts, info, splits)
    report = AuditReport(summary, balance, [[str(features.paths[i]) for i in g] for g in exact],
                         conflicts, near, info, splits, [], dict(source or {}), groups,
                         neighbors[1][:, 0] if neighbors[1].shape[1] else None)
    report.findings = findings(report)
    return report


def audit_cache(cache_path, backbone: str | None = None, *, memory_budget=None, streaming=None,
                **kwargs) -> AuditReport:
    """Load ``cache_path`` (one backbone entry) and :func:`audit` it.

    The features stream from the file, tile by tile, when they do not fit
    ``memory_budget`` (default: half the memory available; see
    :func:`featcache.evaluate.streaming.open_features`).
    """
    from featcache.evaluate.streaming import open_features
    features = open_features(cache_path, backbone, streaming=streaming,
                             memory_budget=memory_budget, copies=1)
    source = {"cache": str(cache_path), "backbone": features.backbone}
    return audit(features, source=source, **kwargs)


def _group_lists(groups, paths) -> list:
    """Multi-row groups as lists of paths, largest first."""
    _, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    members = sorted(_members(inv, counts), key=lambda r: (-len(r), r[0]))
    return [[str(paths[i]) for i in rows] for rows in members]


def _summary(features, exact, conflicts, info, splits) -> dict:
    out = {"n_images": len(features), "n_classes": len(features.class_names),
           "n_exact_duplicate_groups": len(exact),
           "n_exact_duplicate_files": int(sum(len(g) for g in exact)),
           "n_label_conflicts": len(conflicts),
           "n_near_duplicate_groups": info["n_groups"],
           "n_images_in_near_duplicate_groups": info["n_rows_in_groups"],
           "largest_near_duplicate_group": info["largest_group"],
           "near_duplicate_threshold": info["threshold"],
           "threshold_source": info["threshold_source"]}
    for name, res in splits.items():
        if "error" not in res:
            key = ("mean_val_fraction_with_train_duplicate" if name == "featcache_cv"
                   else "val_fraction_with_train_duplicate")
            out[f"{name}_val_fraction_with_train_duplicate"] = res[key]
    return out


def findings(report: AuditReport) -> list:
    """Plain-language sentences, most important first."""
    s, out = report.summary, []
    if s["n_label_conflicts"]:
        out.append(f"{s['n_label_conflicts']} image(s) appear in more than one class folder "
                   "(label conflicts): fix the labels before trusting any score.")
    if s["n_exact_duplicate_groups"]:
        out.append(f"{s['n_exact_duplicate_files']} files are byte-identical copies, in "
                   f"{s['n_exact_duplicate_groups']} groups.")
    out += near_duplicate_findings(s, report.near_duplicates)
    out += _split_findings(report.splits, report.groups)
    imbalance = imbalance_finding(report.class_balance)
    if imbalance:
        out.append(imbalance)
    return out


def _split_findings(splits, groups) -> list:
    out = []
    flow = splits[f"keras_{KERAS_FLOW}"]
    v = flow["validation_split"]
    out.append(f"Keras flow_from_directory(validation_split={v}) validates on the FIRST {v:.0%} "
               f"of each class's files in name order, not a random sample; "
               f"{flow['val_fraction_with_train_duplicate']:.0%} of its validation images have a "
               f"near-duplicate in training ({flow['groups_straddling']} groups straddle the cut).")
    ds = splits[f"keras_{KERAS_DATASET}"]
    out.append(f"Keras image_dataset_from_directory(validation_split={v}, seed={ds['seed']}) "
               f"shuffles, then validates on the LAST {v:.0%}: "
               f"{ds['val_fraction_with_train_duplicate']:.0%} of its validation images have a "
               f"near-duplicate in training ({ds['groups_straddling']} groups straddle).")
    cv = splits["featcache_cv"]
    if "error" in cv:
        out.append(f"featcache CV could not be checked: {cv['error']}")
    else:
        out.append(cv_leak_finding(cv, unusable_grouping(groups, len(cv["per_fold"]))))
    return out


def format_text(report: AuditReport, max_groups: int = 5) -> str:
    """The audit as a terminal report: findings, then the numbers."""
    lines = ["Findings:"] + [f"  - {f}" for f in report.findings]
    lines += ["", "Class balance:"]
    lines += [f"  {name:<24} {c}" for name, c in report.class_balance["counts"].items()]
    for title, groups in (("Exact duplicate groups", report.exact_duplicate_groups),
                          ("Near-duplicate groups", report.near_duplicate_groups)):
        lines += ["", f"{title}: {len(groups)}"]
        for g in groups[:max_groups]:
            more = f" (+{len(g) - 3} more)" if len(g) > 3 else ""
            lines.append(f"  [{len(g)}] {', '.join(g[:3])}{more}")
        if len(groups) > max_groups:
            lines.append(f"  ... {len(groups) - max_groups} more (see --json)")
    for c in report.label_conflicts:
        lines.append(f"  label conflict: {', '.join(c['paths'])} (classes {', '.join(c['classes'])})")
    nd = report.near_duplicates
    pct = nd.get("nearest_neighbor_similarity_percentiles", {})
    lines += ["", "Nearest-neighbour cosine similarity percentiles: "
              + ", ".join(f"{k} {v:.4f}" for k, v in pct.items())]
    return "\n".join(lines)
