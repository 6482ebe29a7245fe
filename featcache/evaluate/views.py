"""Training on cached augmented views, validating on clean images, without leakage.

A cache may hold ``K`` augmented views of every image (``Features.views``,
shape ``(n, K, d)``, row ``i`` the views of image ``i``). Splits are always
made on images: with ``augmented=True`` a training fold of images ``tr``
fits on the clean rows ``X[tr]`` plus every view of those images, and
validation uses the clean rows of the validation images only. Because views
are indexed by their image's row, every split on images (stratified, grouped
by folder, regex or near-duplicates) carries each image's views to the
image's side: no view of a validation image is ever trained on.

The train score (and the gap) is measured on the clean training rows, the
same rows as without views. A train score over the views as well would mix
in how well the head fits distorted copies, and the with/without gaps would
not be comparable.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from featcache.errors import FeatcacheError
from featcache.evaluate.stats import corrected_ttest
from featcache.evaluate.verdicts import augmentation_verdict

BOTH = "both"
"""``augmented="both"``: sweep with and without views on the same splits."""


def check_augmented(features, augmented, both: bool = False):
    """The checked ``augmented`` switch: False, True or (with ``both``) ``"both"``.

    Raises FeatcacheError for any other value, and when views are asked for
    but ``features`` holds none (or holds views not aligned with its rows).
    """
    if isinstance(augmented, (bool, np.bool_)):
        augmented = bool(augmented)
    elif not (both and augmented == BOTH):
        allowed = "False, True or 'both'" if both else "False or True"
        raise FeatcacheError(f"augmented= must be {allowed}, got {augmented!r}")
    if augmented is False:
        return False
    views = features.views
    if views is None:
        raise FeatcacheError("augmented= needs augmented views, but these features hold none: "
                             "embed them with `featcache embed DATA -o CACHE --views K --augment "
                             "SPEC` and load them with load_features(cache, views=True)")
    views = np.asarray(views)
    n, d = features.X.shape
    if views.ndim != 3 or views.shape[0] != n or views.shape[2] != d or views.shape[1] < 1:
        raise FeatcacheError(f"Features.views must have shape (n, K, d) = ({n}, K, {d}) aligned "
                             f"with Features.X, got {views.shape}")
    bad = ~np.isfinite(views).all(axis=(1, 2))
    if bad.any():
        first = str(features.paths[np.flatnonzero(bad)[0]])
        raise FeatcacheError(f"the augmented views of {int(bad.sum())} image(s) contain NaN or "
                             f"inf (first: {first!r}); re-embed those files")
    return augmented


def training_index(train_idx, n_views: int, augmented: bool):
    """Where each training row comes from: ``(source, view)`` int arrays.

    ``source[r]`` is the image row (index into ``Features.X``) of training
    row ``r`` and ``view[r]`` its view index, ``-1`` for the clean row. The
    clean rows come first, in ``train_idx`` order, then the views image by
    image: this is the row order of :func:`training_rows`.
    """
    tr = np.asarray(train_idx)
    if tr.dtype == bool:
        tr = np.flatnonzero(tr)
    clean = np.full(len(tr), -1, dtype=np.int64)
    if not augmented:
        return tr, clean
    return (np.concatenate([tr, np.repeat(tr, n_views)]),
            np.concatenate([clean, np.tile(np.arange(n_views), len(tr))]))


def training_rows(features, train_idx, augmented: bool = False):
    """``(X, y)`` a head is fitted on for the images ``train_idx``.

    Parameters
    ----------
    features : Features
    train_idx : int array or boolean mask of the training images.
    augmented : bool
        False: the clean rows ``X[train_idx]``. True: those plus every view of
        those images (checked with :func:`check_augmented` beforehand), in the
        order of :func:`training_index`.

    Returns
    -------
    X : ndarray (n_rows, d); y : ndarray (n_rows,)
    """
    if not augmented:
        return features.X[train_idx], features.y[train_idx]
    tr = np.arange(len(features.X))[train_idx]  # ints, from a mask, slice or ints
    (n, d), k = (len(tr), features.X.shape[1]), features.views.shape[1]
    # one output buffer, filled in place: no intermediate (n, K, d) copy
    out = np.empty((n * (k + 1), d), dtype=features.X.dtype)
    np.take(features.X, tr, axis=0, out=out[:n])
    np.take(np.asarray(features.views, dtype=out.dtype), tr, axis=0,
            out=out[n:].reshape(n, k, d))
    y = features.y[tr]
    return out, np.concatenate([y, np.repeat(y, k)])


def with_views(clean, views, metric=None):
    """One SweepResult carrying both sweeps (same splits) and their paired tests.

    ``clean`` and ``views`` are :class:`SweepResult` of the same heads on the
    same plan, without and with views. The result is ``clean`` with
    ``views`` (name -> HeadSweep with views) and ``views_tests`` (name ->
    :func:`views_test`) filled in.
    """
    metric = metric or clean.metric
    tests = {name: views_test(clean.heads[name], views.heads[name], metric,
                              clean.plan.n_train, clean.plan.n_test)
             for name in clean.heads}
    verdicts = {name: augmentation_verdict(t, metric).sentence for name, t in tests.items()}
    return replace(clean, views=dict(views.heads), views_tests=tests, views_verdicts=verdicts)


def views_test(clean, views, metric, n_train, n_test) -> dict:
    """Best setting with views against best without, paired over the same splits.

    Returns a dict: ``without`` and ``with`` (each ``value``, ``mean``,
    ``train``, ``gap`` at that run's best setting; all in ``metric``,
    train on clean rows) and the Nadeau-Bengio corrected t-test of
    with-views minus without (``mean_diff``, ``t``, ``df``, ``p_value``).
    """
    def best(h):
        i = h.best_index
        return {"value": float(h.grid[i]), "mean": float(np.nanmean(h.scores[metric][i])),
                "train": float(np.nanmean(h.scores["train_score"][i])),
                "gap": float(np.nanmean(h.scores["gap"][i]))}
    a, b = views.scores[metric][views.best_index], clean.scores[metric][clean.best_index]
    test = (corrected_ttest(a, b, n_train, n_test) if len(a) > 1 else
            {"mean_diff": float(np.nanmean(a) - np.nanmean(b)), "t": float("nan"), "df": 0,
             "p_value": float("nan")})
    return {"param": clean.param, "without": best(clean), "with": best(views), **test}
