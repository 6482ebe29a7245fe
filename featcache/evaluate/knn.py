"""Each row's k most similar rows by cosine similarity, in tiles.

Rows are scaled by their inverse L2 norms tile by tile (float32, no normalised
copy of X), and tiles of the upper triangle serve both their rows and their
columns. Memory is one ``tile x tile`` block plus the ``n x k`` neighbour
lists: never an ``n x n`` matrix. Rows streamed from a cache
(:class:`featcache.cache.streaming.CachedRows`) are read tile by tile, in file
order, so the features are never all in memory either.
"""
from __future__ import annotations

import numpy as np

from featcache.errors import FeatcacheError


def _rows_and_scales(X, block: int = 4096):
    """float32 rows (no copy when already float32) and their inverse L2 norms.

    Rows are scaled tile by tile later, so no normalised copy of X is made.
    All-zero rows get scale 0: similarity 0 with everything, never grouped.
    """
    X = getattr(X, "X", X)
    if not _streamed(X):
        X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) == 0:
        raise FeatcacheError(f"features must be a non-empty 2-D array, got shape {X.shape}")
    norms = np.concatenate([np.linalg.norm(_rows(X, a, a + block).astype(np.float64), axis=1)
                            for a in range(0, len(X), block)])
    if not np.isfinite(norms).all():
        bad = int((~np.isfinite(norms)).sum())
        raise FeatcacheError(f"{bad} feature rows contain NaN or infinite values: "
                             "re-embed the affected files")
    inv = np.zeros(len(X), np.float32)
    inv[norms > 0] = 1.0 / norms[norms > 0]
    return X, inv


def _streamed(X) -> bool:
    return hasattr(X, "file_order")


def _rows(X, a, b):
    """Rows ``a:b`` as an array (read from the file for streamed rows)."""
    return X[a:b].read() if _streamed(X) else X[a:b]


def _merge_topk(best_s, best_i, row0, S, col0, k, transposed=False):
    """Merge a similarity tile into the top-k lists of rows ``row0..``.

    ``S`` holds rows row0.. by columns col0..; with ``transposed`` it holds
    them the other way round (the same tile serves both sides of the diagonal).
    """
    axis = 0 if transposed else 1
    r, c = S.shape[1 - axis], S.shape[axis]
    rows = slice(row0, row0 + r)
    kth = best_s[rows].min(axis=1)
    # Only entries above a row's current k-th best can enter its list; once
    # the lists fill up that is a few per row, so the merge touches those alone.
    hit = S > (kth[None, :] if transposed else kth[:, None])
    count = hit.sum(axis=axis)
    m = int(count.max())
    if m == 0:
        return
    if m > max(k, c // 4):  # lists still filling up: partition the whole tile
        T = np.ascontiguousarray(S.T) if transposed else S
        part = np.argpartition(T, c - k, axis=1)[:, c - k:] if c > k else \
            np.broadcast_to(np.arange(c), (r, c))
        vals = np.take_along_axis(T, part, axis=1)
    else:
        si, sj = np.nonzero(hit)
        own, other = (sj, si) if transposed else (si, sj)
        order = np.argsort(own, kind="stable")
        own, other = own[order], other[order]
        pos = np.arange(len(own)) - np.repeat(np.cumsum(count) - count, count)
        vals = np.full((r, m), -np.inf, np.float32)
        part = np.zeros((r, m), np.int64)
        vals[own, pos] = S[si[order], sj[order]]
        part[own, pos] = other
    cand_s = np.concatenate([best_s[rows], vals], axis=1)
    cand_i = np.concatenate([best_i[rows], (part + col0).astype(np.int32)], axis=1)
    keep = np.argpartition(cand_s, cand_s.shape[1] - k, axis=1)[:, -k:]
    best_s[rows] = np.take_along_axis(cand_s, keep, axis=1)
    best_i[rows] = np.take_along_axis(cand_i, keep, axis=1)


def _tiled_topk(X, inv, k, tile):
    """Top-k (unsorted) cosine neighbours over upper-triangle tiles of ``X``."""
    n = len(X)
    best_s = np.full((n, k), -np.inf, np.float32)
    best_i = np.full((n, k), -1, np.int32)
    for a in range(0, n, tile):
        Xa = _rows(X, a, a + tile)
        A = Xa * inv[a:a + tile, None]
        for b in range(a, n, tile):
            S = A @ (Xa if b == a else _rows(X, b, b + tile)).T
            S *= inv[None, b:b + tile]
            if a == b:
                np.fill_diagonal(S, -np.inf)
            _merge_topk(best_s, best_i, a, S, b, k)
            if b != a:  # the same tile, read by columns, serves rows b..
                _merge_topk(best_s, best_i, b, S, a, k, transposed=True)
    return best_i, best_s


def knn_cosine(X, k: int = 32, *, tile: int = 2048):
    """Each row's ``k`` nearest rows by cosine similarity, without an n x n matrix.

    Parameters
    ----------
    X : array-like of shape (n, d) or Features
    k : int
        Neighbours kept per row (capped at ``n - 1``).
    tile : int
        Rows per tile; peak extra memory is about ``12 * tile**2`` bytes.

    Returns
    -------
    index : ndarray of shape (n, k), int32
        Neighbour row numbers, most similar first (self excluded).
    similarity : ndarray of shape (n, k), float32
        The matching cosine similarities.
    """
    X = getattr(X, "X", X)
    if not _streamed(X):
        return _knn(X, k, tile)
    order, X = X.file_order()  # tiles of the file are contiguous reads
    index, similarity = _knn(X, k, tile)
    out_i, out_s = np.empty_like(index), np.empty_like(similarity)
    out_i[order], out_s[order] = order[index].astype(np.int32), similarity
    return out_i, out_s


def _knn(X, k, tile):
    X, inv = _rows_and_scales(X)
    n = len(X)
    k = max(0, min(int(k), n - 1))
    if k == 0:  # a single row has no neighbours
        return np.full((n, 0), -1, np.int32), np.full((n, 0), -np.inf, np.float32)
    best_i, best_s = _tiled_topk(X, inv, k, tile)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, axis=1), np.take_along_axis(best_s, order, axis=1)
