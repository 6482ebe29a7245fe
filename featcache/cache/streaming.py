"""Rows of one cache entry read from the file on demand, for caches larger than memory.

:func:`open_rows` reads an entry's small per-row metadata (labels, paths,
hashes, checksums) and verifies every row in one streaming pass, exactly as
:func:`featcache.load_features` does, but keeps the features on disk.
It returns :class:`Features` whose ``X`` is a :class:`CachedRows`: an
array-like with ``shape``, ``dtype`` and ``len``, whose ``X[index]`` is
another lazy selection, and which yields its rows block by block.

Every block read is checked against the rows' checksums again, so a row
damaged after opening still gives the one-line damage error (never a wrong
number), and a cache replaced by another writer while it is being read is
refused instead of mixing two files' rows.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import numpy as np

from featcache.cache.layout import BLOCK_ROWS, ROOT, row_checksums
from featcache.cache.read import EntryRows, damage_message, pick_entry, read_paths, reading
from featcache.errors import FeatcacheError
from featcache.cache.features import Features

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Entry:
    """What every view of one entry shares: where it lives and its per-row metadata."""

    path: str
    key: str
    stamp: tuple          # (inode, size, mtime_ns) of the file when opened
    dim: int
    chunk: int            # rows per HDF5 chunk of the features dataset (1 if contiguous)
    paths: list           # file order, like the next three
    sha: np.ndarray       # bytes (S64): a quarter of the memory of str
    labels: np.ndarray
    checksum: np.ndarray
    budget: int           # bytes a reader of this entry may hold at once
    finite: np.ndarray    # file order: row has only finite values (filled when opened)

    def read_rows(self, f, positions: np.ndarray) -> np.ndarray:
        """Rows at ascending file ``positions`` (one contiguous read), checksums verified."""
        lo, hi = int(positions[0]), int(positions[-1]) + 1
        X = np.asarray(f[ROOT][self.key]["features"][lo:hi], dtype=np.float32)[positions - lo]
        got = row_checksums(X, self.labels[positions], [self.paths[i] for i in positions],
                            self.sha[positions].astype(str))
        bad = positions[got != self.checksum[positions]]
        if len(bad):
            rows = EntryRows(self.paths, self.sha.astype(str), self.labels, bad.tolist(), True)
            raise FeatcacheError(damage_message(self.path, self.key, rows))
        return X

    def check_unchanged(self) -> None:
        """Refuse to read a cache another writer replaced since it was opened."""
        if _stamp(self.path) != self.stamp:
            raise FeatcacheError(f"{self.path} changed while it was being read (another "
                                 "featcache process rewrote it); re-run the command")


def _stamp(path) -> tuple:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def block_rows(budget: int, dim: int, chunk: int = 1) -> int:
    """Rows per read: an eighth of ``budget``, whole chunks, at most ``BLOCK_ROWS``."""
    rows = min(BLOCK_ROWS, max(1, int(budget) // (8 * 4 * max(dim, 1))))
    return max(chunk, rows // chunk * chunk)


class CachedRows:
    """Lazy float32 rows of one cache entry, in a given order (see module docstring).

    Not built directly: :func:`open_rows` makes one over all rows (sorted by
    path, like ``load_features``), and indexing selects further.

    Attributes
    ----------
    index : int ndarray, the file row of each row of this view.
    shape, dtype, ndim, nbytes : as for the float32 array it stands for.
    budget : int, bytes a reader of these rows may hold at once.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, entry: _Entry, index: np.ndarray):
        self._entry, self.index = entry, np.asarray(index, dtype=np.int64)

    @property
    def shape(self) -> tuple:
        return (len(self.index), self._entry.dim)

    @property
    def nbytes(self) -> int:
        return len(self.index) * self._entry.dim * 4

    @property
    def budget(self) -> int:
        return self._entry.budget

    @property
    def source(self) -> str:
        """``CACHE.h5 (entry KEY)``, for messages."""
        return f"{self._entry.path} (entry {self._entry.key})"

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"CachedRows({self.shape[0]} x {self.shape[1]} float32 from {self.source})"

    def __getitem__(self, key):
        """``X[rows]`` (int array, boolean mask or slice): a lazy selection; ``X[i]``: one row."""
        if isinstance(key, (int, np.integer)):
            return self[[int(key)]].read()[0]
        if isinstance(key, tuple):
            raise TypeError("CachedRows selects rows only (X[rows]); call .read() for an array")
        return CachedRows(self._entry, self.index[key])

    def __array__(self, dtype=None, copy=None):
        """The rows as an array, when they fit the memory budget (else a FeatcacheError)."""
        if self.nbytes > self.budget:
            raise FeatcacheError(
                f"{self.source} streams from the file: its {len(self)} rows need "
                f"{format_bytes(self.nbytes)}, over the memory budget "
                f"({format_bytes(self.budget)}); only the softmax head trains from a stream: "
                "use it, or raise memory_budget=SIZE")
        X = self.read()
        return X if dtype is None else X.astype(dtype, copy=False)

    def read(self) -> np.ndarray:
        """All rows of this view as one float32 array (reads them all into memory)."""
        out = np.empty(self.shape, dtype=np.float32)
        for pos, X in self.blocks():
            out[pos] = X
        return out

    def file_order(self):
        """``(order, view)``: this view's rows sorted by file position, ``view = self[order]``."""
        order = np.argsort(self.index, kind="stable")
        return order, CachedRows(self._entry, self.index[order])

    def blocks(self, rows: int | None = None, rng=None):
        """Yield ``(positions, X)``: this view's rows, read in file order, ``rows`` at a time.

        Parameters
        ----------
        rows : int, optional
            File rows spanned by one read (default: :func:`block_rows` of the
            budget); each read is one contiguous range of the file.
        rng : numpy Generator, optional
            Visit the reads in a random order (training) instead of file order.

        Yields
        ------
        positions : int ndarray, positions in this view (``X == view.read()[positions]``).
        X : float32 ndarray (len(positions), d), checksums verified.
        """
        e = self._entry
        rows = rows or block_rows(e.budget, e.dim, e.chunk)
        order = np.argsort(self.index, kind="stable")
        sorted_rows = self.index[order]
        cuts = np.flatnonzero(np.diff(sorted_rows // rows)) + 1
        groups = np.split(np.arange(len(order)), cuts) if len(order) else []
        if rng is not None:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        e.check_unchanged()
        with reading(e.path) as f:
            for g in groups:
                yield order[g], e.read_rows(f, sorted_rows[g])

    def nonfinite(self) -> np.ndarray:
        """Boolean mask of the rows holding NaN or inf (found when the entry was opened)."""
        return ~self._entry.finite[self.index]

    def chunk_rows(self) -> int:
        """Rows of one HDF5 chunk of the features (the unit of shuffled training reads)."""
        return max(self._entry.chunk, min(256, block_rows(self.budget, self._entry.dim)))


def open_rows(cache_path, backbone: str | None = None, *, budget: int) -> Features:
    """Open one entry of a cache for streaming, verifying every row's checksum.

    Parameters
    ----------
    cache_path : str or Path
    backbone : str, optional
        Entry key or backbone name (needed when the cache holds several).
    budget : int
        Bytes a reader may hold at once; sets the read block size.

    Returns
    -------
    Features
        Rows sorted by path as :func:`featcache.load_features` returns them,
        with ``X`` a :class:`CachedRows` (labels, paths and hashes in memory).

    Raises
    ------
    FeatcacheError
        As ``load_features``, naming damaged rows.
    """
    entry, attrs = _open_entry(cache_path, backbone, int(budget))
    paths = np.asarray(entry.paths, dtype=str)
    order = np.argsort(paths, kind="stable")
    rows = CachedRows(entry, order)
    for pos, X in rows.blocks():  # verify every row once, as load_features does
        entry.finite[order[pos]] = np.isfinite(X).all(axis=1)
    return Features(X=rows, y=entry.labels[order].astype(np.int64), paths=paths[order],
                    class_names=attrs["class_names"], sha256=entry.sha[order].astype(str),
                    backbone=entry.key, spec=attrs["spec"])


def _open_entry(cache_path, backbone, budget):
    """The entry's metadata (and its attributes), checked; the features stay on disk."""
    stamp = _stamp(cache_path)  # before reading: a later replacement is then detected
    with reading(cache_path) as f:
        key = pick_entry(f, backbone, cache_path)
        g = f[ROOT][key]
        ds = g["features"]
        meta = dict(paths=read_paths(g["paths"]), sha=g["sha256"][:],
                    labels=g["labels"][:], checksum=g["checksum"][:] if "checksum" in g else None)
        attrs = {k: json.loads(g.attrs[k]) for k in ("class_names", "spec")}
        chunk, shape = (ds.chunks[0] if ds.chunks else 1), ds.shape
    if meta["checksum"] is None:
        raise FeatcacheError(f"{cache_path}: entry {key} has no row checksums (written by an "
                             "older featcache), so it cannot be streamed safely: re-run "
                             "`featcache embed` to add them, or load it in memory")
    entry = _Entry(str(cache_path), key, stamp, int(shape[1]), int(chunk), budget=budget,
                   finite=np.ones(shape[0], dtype=bool), **meta)
    if not len(entry.paths) == len(entry.labels) == len(entry.checksum) == shape[0]:
        raise FeatcacheError(f"{cache_path} is damaged and cannot be read (entry {key} has "
                             "datasets of different lengths); re-create it with `featcache embed`")
    _check_paths(cache_path, key, entry)
    return entry, attrs


def _check_paths(cache_path, key, entry: _Entry) -> None:
    unreadable = [i for i, p in enumerate(entry.paths) if p is None]
    if unreadable:
        rows = EntryRows(entry.paths, entry.sha.astype(str), entry.labels, unreadable, True)
        raise FeatcacheError(damage_message(cache_path, key, rows))


def format_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``: sizes in messages."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def entry_shape(cache_path, backbone: str | None = None) -> tuple:
    """``(rows, feature_dim)`` of one entry, without reading any rows."""
    with reading(cache_path) as f:
        key = pick_entry(f, backbone, cache_path)
        return tuple(int(v) for v in f[ROOT][key]["features"].shape)
