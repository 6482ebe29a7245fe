"""Near-duplicate groups from cosine similarity of cached features.

How it works, and why it scales:

1. Rows are scaled by their inverse L2 norms tile by tile (float32, no
   normalised copy of X), so a dot product is a cosine similarity.
2. ``knn_cosine`` finds each row's ``k`` most similar rows with tiled matrix
   products over the upper triangle (each tile is used for both its rows and
   its columns). Memory is one tile (``tile x tile``) plus ``n x k``
   neighbour lists: never an ``n x n`` matrix.
3. The threshold is the user's, or chosen from the pooled neighbour
   similarities (see ``adaptive_threshold``), or the documented default.
4. Which pairs become edges depends on how trustworthy that threshold is:

   - **global rule** (a threshold given by the user, or an adaptive threshold
     inside an *empty* stretch of the similarity distribution, at least
     ``GLOBAL_EMPTY_GAP`` wide): every neighbour pair at or above the
     threshold is an edge. No pair lies near such a threshold, so no chain
     of merely similar images can cross it.
   - **local rule** (otherwise: the default fallback, or an adaptive
     threshold without an empty gap). When every image of a class looks
     alike, copies and merely similar images overlap *globally* (clip-mates'
     5th percentile 0.950, nearest non-mates' 95th percentile 0.959), and a
     global threshold links chains of distinct images into groups of 150+.
     Yet each image's own neighbour list still shows where its copies end.
     So each image gets its own threshold at the largest jump of its list in
     log cosine distance that starts above the global threshold
     (``local_thresholds``), and a pair is an edge only if its similarity
     passes the global threshold *and both* images' own thresholds (mutual
     acceptance). A singleton's list has no copies, so
     its nearest neighbour's own threshold turns it down: chains break.

   The global threshold stays a floor in both rules. Groups are the connected
   components of the edges (``scipy.sparse.csgraph``).

Why a jump and not a fixed ratio: clips differ in how tight they are, and the
jump adapts to each. Two guards keep clean data intact: jumps that start at a
near-exact copy (similarity >= ``COPY_SIMILARITY``) are ignored (two
identical frames must not cut themselves off their clip), and an image whose
whole list sits far above the threshold (``SATURATED_MARGIN``) cannot see
where its group ends (the group may be larger than ``k + 1``): it accepts
every neighbour above the threshold. Measured on the overlapping test set
(tests/test_neardup_local.py, seeds 0-11): pair precision >= 0.99, recall
0.91-1.00, largest group 9 (true clips <= 8), where the global rule gave
precision 0.03-0.14 and groups of 140-240.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.ndimage import gaussian_filter1d
from scipy.sparse.csgraph import connected_components

from featcache.errors import FeatcacheError
from featcache.evaluate.knn import knn_cosine

DEFAULT_THRESHOLD = 0.95
"""Cosine similarity above which two images count as near-duplicates when the
similarity distribution shows no clear gap. Frames of one clip through a
pretrained CNN typically score above it; distinct photos of one class rarely."""

MIN_ADAPTIVE = 0.5
"""An adaptive threshold below this is refused: such a gap separates kinds of
images, not copies."""

NEAR_MEDIAN_MIN = 0.9
"""The pairs above an adaptive threshold must have a median similarity at least
this high; otherwise the gap separates clusters (a small class), not copies."""

SATURATED_MARGIN = 0.5
"""Local rule: an image whose k-th neighbour is this many decades of cosine
distance closer than the threshold (a factor 3.2) cannot see where its group
ends, so it accepts all its neighbours above the threshold. Lower margins let
tight classes chain again on the overlapping test set (0.3: groups of 100+)."""

GLOBAL_EMPTY_GAP = 0.1
"""An adaptive threshold inside an empty stretch of the log-distance histogram
at least this many decades wide (a factor 1.26 in cosine distance with no
neighbour pair in between) is trusted as is: the global rule links pairs."""

COPY_SIMILARITY = 0.999
"""Local rule: jumps that start at a neighbour this similar are not cuts, so
near-exact copies never split off the rest of their clip."""

_EPS = 1e-6  # cosine distances below this count as identical (float32 noise)


def _otsu(hist: np.ndarray):
    """Otsu's split of a histogram: (first bin of the upper class, separability eta)."""
    p = hist / hist.sum()
    centers = np.arange(len(p))
    w0 = np.cumsum(p)[:-1]
    m0 = np.cumsum(p * centers)[:-1]
    mt = (p * centers).sum()
    valid = (w0 > 0) & (w0 < 1)
    between = np.zeros_like(w0)
    between[valid] = (mt * w0[valid] - m0[valid]) ** 2 / (w0[valid] * (1 - w0[valid]))
    total = (p * (centers - mt) ** 2).sum()
    split = int(np.argmax(between)) + 1
    return split, float(between[split - 1] / total) if total > 0 else 0.0


def _valley(hist, split):
    """(valley bin, valley/peak ratio) of the smoothed histogram between the two class peaks."""
    smooth = gaussian_filter1d(hist.astype(np.float64), 1.5, mode="constant")
    lo_peak = int(np.argmax(smooth[:split]))
    hi_peak = split + int(np.argmax(smooth[split:]))
    region = smooth[lo_peak:hi_peak + 1]
    floor = region.min()
    valley = lo_peak + int(np.median(np.flatnonzero(region <= floor + 1e-9 * smooth.max())))
    return valley, float(floor / max(min(smooth[lo_peak], smooth[hi_peak]), 1e-12))


def _empty_run(hist, at) -> int:
    """Number of consecutive empty bins around bin ``at`` (0 if it is not empty)."""
    if hist[at]:
        return 0
    lo, hi = at, at
    while lo > 0 and not hist[lo - 1]:
        lo -= 1
    while hi < len(hist) - 1 and not hist[hi + 1]:
        hi += 1
    return hi - lo + 1


def adaptive_threshold(similarity, *, bins: int = 128, min_eta: float = 0.75,
                       max_valley: float = 0.3, min_gap: float = 0.5) -> dict:
    """Choose a threshold at the gap in the neighbour-similarity distribution.

    Similarities are mapped to log10 cosine distance (``log10(1 - s)``), where
    copies (distance ~1e-3) and merely similar images (~1e-1) sit orders of
    magnitude apart. Otsu's method splits the histogram into a near side and a
    far side; the threshold is the lowest point of the smoothed histogram
    between the two peaks. It is accepted only if that valley is at most
    ``max_valley`` times the lower peak, and either Otsu's separability
    ``eta >= min_eta`` (a single bell curve gives about 0.64) or the valley is
    an empty stretch at least ``min_gap`` decades of distance wide (which
    lets a small set of copies among many unrelated images count). The pairs
    above it must also look like copies: median similarity at least
    ``NEAR_MEDIAN_MIN`` and threshold at least ``MIN_ADAPTIVE``.

    Parameters
    ----------
    similarity : array-like
        Pooled neighbour similarities (e.g. the ``k`` nearest of every row).

    Returns
    -------
    dict
        ``threshold`` (float, or None when no clean gap exists), ``eta``,
        ``valley_ratio``, ``gap_decades``, ``reason`` (plain text).
    """
    s = np.asarray(similarity, np.float64).ravel()
    s = s[np.isfinite(s)]
    out = {"threshold": None, "eta": None, "valley_ratio": None, "gap_decades": None}
    if len(s) < 10:
        return {**out, "reason": "too few neighbour pairs to estimate a distribution"}
    hist, edges = np.histogram(_log_distance(s), bins=bins)
    split, eta = _otsu(hist.astype(np.float64))
    valley, ratio = _valley(hist, split)
    gap = _empty_run(hist, valley) * float(edges[1] - edges[0])
    threshold = float(1.0 - 10 ** ((edges[valley] + edges[valley + 1]) / 2))
    out.update(eta=round(eta, 3), valley_ratio=round(ratio, 3), gap_decades=round(gap, 2))
    evidence = (f"separability {eta:.2f} (clean >= {min_eta}), valley/peak {ratio:.2f} "
                f"(clean <= {max_valley}), empty gap {gap:.2f} decades (clean >= {min_gap})")
    if ratio > max_valley or (eta < min_eta and gap < min_gap):
        return {**out, "reason": f"no clear gap between near-duplicates and other neighbours: {evidence}"}
    above = s[s >= threshold]
    near_median = float(np.median(above)) if len(above) else -1.0
    if threshold < MIN_ADAPTIVE or near_median < NEAR_MEDIAN_MIN:
        return {**out, "reason": (f"the gap at similarity {threshold:.3f} separates pairs with a "
                                  f"median similarity of {near_median:.3f} (copies need >= "
                                  f"{NEAR_MEDIAN_MIN}) from the rest: clusters of similar images "
                                  "(e.g. a class), not copies")}
    near = float(np.mean(s >= threshold))
    return {**out, "threshold": threshold,
            "reason": (f"gap in the neighbour-similarity distribution at {threshold:.4f}: "
                       f"{evidence}; {near:.1%} of neighbour pairs lie above it")}


def groups_from_neighbors(index, similarity, threshold) -> np.ndarray:
    """Connected components of the graph of neighbour pairs with similarity >= threshold.

    ``threshold`` is a float (the global rule) or an (n, k) array of
    per-pair thresholds (the local rule). Returns an int64 array of shape
    (n,): rows of one group share an id, every singleton gets its own id.
    """
    n = len(index)
    rows, cols = np.nonzero(similarity >= threshold)
    graph = sparse.coo_matrix((np.ones(len(rows), np.int8), (rows, index[rows, cols])),
                              shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def _log_distance(similarity):
    """log10 cosine distance, clipped so copies and -inf fillers stay finite."""
    return np.log10(np.clip(1.0 - np.asarray(similarity, np.float64), _EPS, 2.0))


def local_thresholds(similarity, threshold: float):
    """Each row's own threshold at the largest jump of its neighbour list.

    The list (most similar first) is read in log10 cosine distance. The
    row's threshold is the middle of its largest jump from one neighbour to
    the next that starts at or above the global ``threshold`` and below
    ``COPY_SIMILARITY``. A row whose whole list lies ``SATURATED_MARGIN``
    decades above the threshold, or that has fewer than 2 neighbours, gets
    -inf (it accepts every neighbour above the threshold).

    Parameters
    ----------
    similarity : ndarray of shape (n, k)
        Neighbour similarities, most similar first (``knn_cosine``).
    threshold : float
        The global threshold.

    Returns
    -------
    local : ndarray of shape (n,), float64
        The rows' own thresholds (-inf: none).
    saturated : ndarray of shape (n,), bool
        Rows whose whole list lies far above the threshold.
    """
    n, k = similarity.shape
    if k == 0:
        return np.full(n, -np.inf), np.zeros(n, bool)
    steps = _log_distance(similarity)
    # jumps[:, j]: from neighbour j to neighbour j + 1, a cut only when it starts above the
    # threshold and beyond a near-exact copy
    jumps = np.diff(steps, axis=1)
    start_ok = (similarity[:, :-1] >= threshold) & (similarity[:, :-1] < COPY_SIMILARITY)
    jumps[~start_ok] = -np.inf
    saturated = (similarity[:, -1] >= threshold) & \
        (_log_distance(threshold) - steps[:, -1] >= SATURATED_MARGIN)
    if k < 2:  # a single neighbour: nothing to compare it with
        return np.full(n, -np.inf), saturated
    at = np.argmax(jumps, axis=1)
    rows = np.arange(n)
    middle = 1.0 - 10 ** ((steps[rows, at] + steps[rows, at + 1]) / 2)
    cut = np.isfinite(jumps[rows, at]) & ~saturated
    return np.where(cut, middle, -np.inf), saturated


def local_groups(index, similarity, threshold: float):
    """Groups by the local rule: pairs above the threshold and both rows' own thresholds.

    Parameters
    ----------
    index, similarity : ndarray of shape (n, k)
        Output of ``knn_cosine``.
    threshold : float
        The global threshold (a floor).

    Returns
    -------
    groups : ndarray of shape (n,), int64
    evidence : dict
        ``pairs_above_threshold``, ``pairs_linked``, ``rows_with_own_threshold``
        and ``rows_saturated`` (see ``local_thresholds``).
    """
    own, saturated = local_thresholds(similarity, threshold)
    need = np.maximum(np.maximum(own[:, None], own[index]), threshold)
    linked = similarity >= need
    groups = groups_from_neighbors(index, similarity, need)
    return groups, {"pairs_above_threshold": int((similarity >= threshold).sum()),
                    "pairs_linked": int(linked.sum()),
                    "rows_with_own_threshold": int(np.isfinite(own).sum()),
                    "rows_saturated": int(saturated.sum())}


def _choose_threshold(similarity, threshold, k):
    """(threshold, source, adaptive-info, reason) following the documented policy."""
    if isinstance(threshold, str) and threshold in ("auto", "default"):
        if threshold == "default":
            return DEFAULT_THRESHOLD, "default", None, f"default {DEFAULT_THRESHOLD} requested"
        threshold = None
    if threshold is not None:
        try:
            t = float(threshold)
        except (TypeError, ValueError):
            raise FeatcacheError(f"threshold must be 'auto', 'default' or a number in [-1, 1], "
                                 f"got {threshold!r}") from None
        if not -1.0 <= t <= 1.0:
            raise FeatcacheError(f"threshold={threshold} is not a cosine similarity: use a value in [-1, 1]")
        return t, "user", None, f"threshold {t} given by the user"
    adaptive = adaptive_threshold(similarity)
    if adaptive["threshold"] is not None:
        return adaptive["threshold"], "adaptive", adaptive, adaptive["reason"]
    reason = f"default {DEFAULT_THRESHOLD}: {adaptive['reason']}"
    finite = similarity[:, -1][np.isfinite(similarity[:, -1])] if similarity.size else []
    if len(finite) and np.median(finite) >= DEFAULT_THRESHOLD:
        reason += (f"; most images have >= {k} neighbours above the default, so groups may be "
                   f"larger than k={k}: rerun with a larger k")
    return DEFAULT_THRESHOLD, "default", adaptive, reason


def _summary(groups, similarity) -> dict:
    sizes = np.bincount(groups)
    multi = sizes[sizes > 1]
    nn = similarity[:, 0] if similarity.shape[1] else np.array([])
    nn = nn[np.isfinite(nn)]
    q = [1, 5, 25, 50, 75, 95, 99]
    return {
        "n_rows": int(len(groups)),
        "n_groups": int(len(multi)),
        "n_rows_in_groups": int(multi.sum()),
        "largest_group": int(multi.max()) if len(multi) else 1,
        "median_group_size": float(np.median(multi)) if len(multi) else 0.0,
        "nearest_neighbor_similarity_percentiles":
            {f"p{p}": round(float(v), 5) for p, v in zip(q, np.percentile(nn, q))} if len(nn) else {},
    }


def near_duplicate_groups(X, threshold=None, *, k: int = 32, tile: int = 2048,
                          neighbors=None):
    """Group rows whose features are near-duplicates (cosine similarity).

    Parameters
    ----------
    X : array-like of shape (n, d) or Features
    threshold : float, "auto", "default" or None
        Cosine similarity at or above which two rows are linked. None or
        "auto" picks it from the data (``adaptive_threshold``) and falls back
        to ``DEFAULT_THRESHOLD`` when the distribution shows no clean gap;
        "default" uses ``DEFAULT_THRESHOLD``. A number is applied as is
        (global rule); a chosen threshold is a floor, and the local rule
        decides unless it sits in an empty gap (see the module docstring).
    k : int
        Neighbours examined per row. Groups larger than ``k + 1`` are still
        found through chains of neighbours (under the local rule only when
        their members' similarities lie far above the threshold).
    tile : int
        Tile size of the blocked similarity computation.
    neighbors : tuple (index, similarity), optional
        Output of ``knn_cosine`` to reuse instead of recomputing.

    Returns
    -------
    groups : ndarray of shape (n,), int64
        Group id per row; rows of one near-duplicate group share an id and
        singletons get unique ids.
    info : dict
        ``threshold``, ``threshold_source`` ("user", "adaptive" or
        "default"), ``default_threshold``, ``reason`` (why this threshold
        and which rule linked the pairs), ``rule`` ("global" or "local"),
        ``rule_reason``, ``local`` (the local rule's evidence, see
        ``local_groups``; None under the global rule), ``adaptive`` (the
        adaptive rule's evidence), ``k`` and summary numbers
        (``n_groups``, ``n_rows_in_groups``, ``largest_group``, ...).
    """
    index, similarity = neighbors if neighbors is not None else knn_cosine(X, k, tile=tile)
    t, source, adaptive, reason = _choose_threshold(similarity, threshold, similarity.shape[1])
    groups, rule, local = _apply_rule(index, similarity, t, source, adaptive)
    info = {"threshold": round(t, 6), "threshold_source": source,
            "default_threshold": DEFAULT_THRESHOLD, "reason": f"{reason}; {rule}",
            "rule": "local" if local else "global", "rule_reason": rule, "local": local,
            "adaptive": adaptive, "k": int(similarity.shape[1]),
            **_summary(groups, similarity)}
    return groups, info


def _apply_rule(index, similarity, t, source, adaptive):
    """(groups, plain-text reason, local-rule evidence or None): see the module docstring."""
    if source == "user" or (source == "adaptive" and adaptive["gap_decades"] >= GLOBAL_EMPTY_GAP):
        why = ("a threshold given by the user" if source == "user" else
               f"the threshold lies in an empty stretch of the distribution >= "
               f"{GLOBAL_EMPTY_GAP} decades wide")
        return (groups_from_neighbors(index, similarity, t),
                f"global rule: every neighbour pair above the threshold is linked ({why})", None)
    groups, local = local_groups(index, similarity, t)
    rule = ("local rule, since no empty gap separates copies from other neighbours: a pair is "
            "linked only below the largest jump in both images' own neighbour lists; "
            f"{local['pairs_linked']} of {local['pairs_above_threshold']} neighbour pairs above "
            "the threshold linked")
    if local["rows_saturated"]:
        rule += (f"; {local['rows_saturated']} images have all {similarity.shape[1]} neighbours "
                 "far above the threshold: their groups may be larger than k+1 (rerun with a "
                 "larger k= to see where they end)")
    return groups, rule, local
