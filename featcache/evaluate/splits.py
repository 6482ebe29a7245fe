"""Cross-validation splits: stratified, repeated, grouped, or any sklearn splitter.

Every evaluation in featcache goes through :func:`make_splits`, which checks
the input once (two classes, enough samples per class, finite features),
derives groups when asked and materialises the splits as index arrays. All
heads of one run then use the same list of splits, so their fold scores are
paired.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import (GroupKFold, RepeatedStratifiedKFold, StratifiedGroupKFold,
                                     StratifiedKFold)

from featcache.errors import FeatcacheError
from featcache.cache.features import Features

log = logging.getLogger(__name__)

NEAR_DUPLICATES = "near-duplicates"
FOLDER = "folder"
GIVEN = "given groups"


@dataclass
class SplitPlan:
    """The materialised splits of one evaluation run.

    Attributes
    ----------
    splits : list of (train_idx, test_idx) int ndarrays
    description : str, human-readable, e.g. ``"stratified 5-fold x 2, seed 0"``.
    groups : int ndarray of shape (n,) or None, group id per row when grouped.
    group_by : str or None, what the groups came from.
    group_info : dict, summary numbers about the groups (counts, sizes).
    """

    splits: list
    description: str
    groups: np.ndarray | None = None
    group_by: str | None = None
    group_info: dict = field(default_factory=dict)

    @property
    def n_splits(self) -> int:
        return len(self.splits)

    @property
    def n_train(self) -> float:
        """Mean training-fold size (used by the Nadeau-Bengio correction)."""
        return float(np.mean([len(tr) for tr, _ in self.splits]))

    @property
    def n_test(self) -> float:
        """Mean validation-fold size."""
        return float(np.mean([len(te) for _, te in self.splits]))

    def to_dict(self) -> dict:
        return {"description": self.description, "n_splits": self.n_splits,
                "group_by": self.group_by, "group_info": dict(self.group_info),
                "train_sizes": [int(len(tr)) for tr, _ in self.splits],
                "test_sizes": [int(len(te)) for _, te in self.splits]}


def as_features(data) -> Features:
    """Accept a :class:`Features` or an ``(X, y)`` pair and return Features.

    For a pair, labels are re-coded to ``0..K-1`` in sorted order and paths
    are synthetic (``"<label>/<row>"``), so path-based grouping is pointless.
    """
    if isinstance(data, Features):
        return data
    try:
        X, y = data
    except (TypeError, ValueError):
        raise FeatcacheError("data must be a featcache Features object or an (X, y) pair, "
                             f"got {type(data).__name__}") from None
    X = np.asarray(X)
    classes, y = np.unique(np.asarray(y), return_inverse=True)
    if X.ndim != 2 or len(X) != len(y):
        raise FeatcacheError(f"X must be 2-d with one row per label, got X{X.shape} "
                             f"and {len(y)} labels")
    paths = np.array([f"{classes[c]}/{i}" for i, c in enumerate(y)])
    return Features(X, y.astype(np.int64), paths, [str(c) for c in classes],
                    np.full(len(y), "", dtype=object))


def check_features(features: Features, folds: int | None = None) -> None:
    """Raise FeatcacheError when ``features`` cannot be cross-validated.

    Checks: finite features, at least two classes with samples, and (when
    ``folds`` is given) at least ``folds`` samples in the smallest class.
    """
    X, y = features.X, features.y
    bad = X.nonfinite() if hasattr(X, "nonfinite") else ~np.isfinite(X).all(axis=1)  # streamed
    if bad.any():
        first = features.paths[np.flatnonzero(bad)[0]]
        raise FeatcacheError(
            f"{int(bad.sum())} of {len(X)} feature rows contain NaN or inf (first: {first!r}); "
            "re-embed those files or drop the rows with Features.subset()")
    counts = np.bincount(y, minlength=len(features.class_names))
    present = np.flatnonzero(counts)
    if len(present) < 2:
        only = features.class_names[present[0]] if len(present) else "none"
        raise FeatcacheError(
            f"the features hold only one class ({only!r}, {len(y)} rows); "
            "classification needs at least two class folders")
    if folds is not None:
        if int(folds) < 2:
            raise FeatcacheError(f"--folds must be at least 2, got {folds}")
        _check_class_sizes(features.class_names, counts, present, int(folds))


def _check_class_sizes(class_names, counts, present, folds):
    """Advice that works: fewer folds only when every class can fill two folds."""
    single = [class_names[c] for c in present if counts[c] < 2]
    if single:
        names = ", ".join(repr(n) for n in single)
        raise FeatcacheError(
            f"class{'es' * (len(single) > 1)} {names} ha{'ve' if len(single) > 1 else 's'} only "
            "1 sample; cross-validation needs at least 2 per class (one to train on, one to "
            "validate), whatever --folds is: add images to it, merge it into another class "
            "folder, or drop its rows (Features.subset in Python)")
    smallest = present[np.argmin(counts[present])]
    if counts[smallest] < folds:
        raise FeatcacheError(
            f"class {class_names[smallest]!r} has only {counts[smallest]} samples, "
            f"too few for {folds}-fold cross-validation (each fold needs one per class); "
            f"use --folds {counts[smallest]} or fewer, or add images")


def groups_from_paths(paths, group_by: str):
    """Group ids from relative paths.

    Parameters
    ----------
    paths : sequence of str
        Relative, ``/``-separated paths (first component is the class folder).
    group_by : str
        ``"folder"``: the class folder plus the first sub-folder
        (``"A/clip3/frame_1.jpg"`` -> ``"A/clip3"``). Anything else is a regular
        expression searched in each path; the group key is its first capture
        group, or the whole match when it has none.

    Returns
    -------
    groups : int ndarray of shape (n,)
        Rows with the same key share an id; rows without a key (no sub-folder,
        or no regex match) each get their own id.
    info : dict
        ``n_groups``, ``n_matched`` (rows that got a key), ``largest_group``.
    """
    paths = [str(p) for p in paths]
    keys = _folder_keys(paths) if group_by == FOLDER else _regex_keys(paths, group_by)
    matched = sum(k is not None for k in keys)
    if matched == 0:
        example = paths[0] if paths else "(no rows)"
        if group_by == FOLDER:
            raise FeatcacheError(
                "--group-by folder: no file sits in a sub-folder of its class folder "
                f"(example path: {example!r}); use a regex such as '(.*)_frame\\d+' instead")
        raise FeatcacheError(f"--group-by regex '{group_by}' matches none of the {len(paths)} "
                             f"relative paths (example path: {example!r})")
    # Unmatched rows become singletons: a key no real path can produce.
    keys = [k if k is not None else f"\0{i}" for i, k in enumerate(keys)]
    _, groups = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)
    return groups.astype(np.int64), _group_info(groups, matched)


def _folder_keys(paths):
    return ["/".join(p.split("/")[:2]) if p.count("/") >= 2 else None for p in paths]


def _regex_keys(paths, pattern):
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise FeatcacheError(f"--group-by '{pattern}' is not a valid regular expression: {exc}") \
            from None
    keys = []
    for p in paths:
        m = rx.search(p)
        if m is None:
            keys.append(None)
        else:  # an optional first group that did not take part falls back to the whole match
            keys.append(m.group(1) if rx.groups and m.group(1) is not None else m.group(0))
    return keys


def _group_info(groups, matched=None):
    sizes = np.bincount(groups)
    info = {"n_groups": int(len(sizes)), "largest_group": int(sizes.max()),
            "rows_in_multi_row_groups": int(sizes[sizes > 1].sum())}
    if matched is not None:
        info["n_matched"] = int(matched)
    return info


def resolve_groups(features: Features, group_by):
    """``(groups, info, label)`` for ``group_by`` (None, a string, or an array).

    ``"near-duplicates"`` uses :func:`featcache.evaluate.neardup.near_duplicate_groups`
    on the features; an array-like is taken as group ids, one per row.
    """
    if group_by is None:
        return None, {}, None
    if isinstance(group_by, str):
        if group_by == NEAR_DUPLICATES:
            from featcache.evaluate.neardup import near_duplicate_groups
            groups, info = near_duplicate_groups(features.X)
            groups = np.asarray(groups, dtype=np.int64)
            return groups, {**_group_info(groups), **_plain(info)}, group_by
        groups, info = groups_from_paths(features.paths, group_by)
        return groups, info, group_by
    groups = np.asarray(group_by)
    if groups.shape != (len(features),):
        raise FeatcacheError(f"groups must have one entry per row ({len(features)}), "
                             f"got shape {groups.shape}")
    _, groups = np.unique(groups, return_inverse=True)
    return groups.astype(np.int64), _group_info(groups), GIVEN


def _plain(info):
    """The JSON-friendly scalars of a neardup info dict."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in dict(info).items()
            if isinstance(v, (int, float, str, bool, np.generic)) or v is None}


def make_splits(data, folds: int = 5, repeats: int = 1, group_by=None, seed: int = 0,
                cv=None) -> SplitPlan:
    """Check the input and build the splits every head of a run will share.

    Parameters
    ----------
    data : Features or (X, y)
    folds : int, default 5
        Number of folds for the built-in splitters.
    repeats : int, default 1
        Repeat k-fold with different shuffles (seeds ``seed, seed+1, ...`` for
        grouped splits; sklearn's RepeatedStratifiedKFold otherwise).
    group_by : None, ``"folder"``, ``"near-duplicates"``, a regex, or an array
        When given, StratifiedGroupKFold keeps every group inside one fold.
    seed : int, default 0
    cv : sklearn splitter, iterable of (train, test) index pairs, or None
        Overrides ``folds``/``repeats``; groups (if any) are passed to its
        ``split``.

    Returns
    -------
    SplitPlan
    """
    features = as_features(data)
    repeats = int(repeats)
    if repeats < 1:
        raise FeatcacheError(f"--repeats must be at least 1, got {repeats}")
    check_features(features, folds if cv is None else None)
    groups, info, label = resolve_groups(features, group_by)
    X, y = features.X, features.y
    if cv is not None:
        splits, desc = _custom_splits(cv, X, y, groups)
    elif groups is None:
        splitter = (StratifiedKFold(folds, shuffle=True, random_state=seed) if repeats == 1 else
                    RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed))
        splits = list(splitter.split(X, y))
        desc = f"stratified {folds}-fold" + (f" x {repeats}" if repeats > 1 else "")
    else:
        splits = _grouped_splits(X, y, groups, folds, repeats, seed, label)
        desc = f"stratified group {folds}-fold" + (f" x {repeats}" if repeats > 1 else "")
        desc += f" ({info['n_groups']} groups from {_source(label)})"
    desc += f", seed {seed}" if cv is None else ""
    _check_splits(splits, y, features.class_names)
    return SplitPlan(splits, desc, groups, label, info)


def _source(label):
    return label if label in (NEAR_DUPLICATES, FOLDER, GIVEN) else f"regex '{label}'"


def _grouped_splits(X, y, groups, folds, repeats, seed, label):
    n_groups = len(np.unique(groups))
    if n_groups < folds:
        fix = (f"use --folds {n_groups} or fewer" if n_groups >= 2 else
               "check the grouping" + (" (raise --threshold)" if label == NEAR_DUPLICATES else ""))
        raise FeatcacheError(f"--group-by {_source(label)} gives only {n_groups} "
                             f"group{'s' * (n_groups != 1)}, too few "
                             f"for {folds}-fold grouped cross-validation; {fix}")
    splits = []
    for r in range(repeats):  # sklearn has no repeated StratifiedGroupKFold
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed + r)
        rep = list(splitter.split(X, y, groups))
        if any(len(te) == 0 for _, te in rep):
            # Its greedy stratification can leave a fold empty when groups are few; a plain
            # grouped k-fold fills every fold whenever there are at least `folds` groups.
            log.info("stratified group %d-fold left a fold empty (seed %d); using a shuffled "
                     "group %d-fold without stratification", folds, seed + r, folds)
            rep = list(GroupKFold(folds, shuffle=True, random_state=seed + r).split(X, y, groups))
        splits += rep
    return splits


def _custom_splits(cv, X, y, groups):
    if isinstance(cv, (int, np.integer)):
        raise FeatcacheError("pass an integer number of folds as folds=, not cv=")
    if hasattr(cv, "split"):
        try:
            splits = list(cv.split(X, y, groups))
        except ValueError as exc:
            raise FeatcacheError(f"the splitter {cv!r} could not split the features: {exc}") \
                from None
        return splits, repr(cv)
    splits = [(np.asarray(tr, dtype=np.int64), np.asarray(te, dtype=np.int64)) for tr, te in cv]
    return splits, f"{len(splits)} user-given splits"


def _check_splits(splits, y, class_names):
    if not splits:
        raise FeatcacheError("the splitter produced no splits")
    for i, (tr, te) in enumerate(splits):
        if len(te) == 0:
            raise FeatcacheError(f"split {i} has an empty validation fold")
        if len(np.unique(y[tr])) < 2:
            name = class_names[int(y[tr][0])] if len(tr) else "none"
            raise FeatcacheError(f"split {i} trains on a single class ({name!r}); "
                                 "use fewer folds or a stratified splitter")


def straddling_groups(splits, groups) -> int:
    """Number of multi-row groups split between train and validation in some split.

    Zero for grouped splits; for random splits of near-duplicate data it tells
    how much leakage the random score carries.
    """
    groups = np.asarray(groups)
    straddle = np.zeros(groups.max() + 1, dtype=bool)
    for tr, te in splits:
        straddle[np.intersect1d(groups[tr], groups[te])] = True
    sizes = np.bincount(groups)
    return int((straddle & (sizes > 1)).sum())
