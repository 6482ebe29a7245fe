"""Stored feature precision: float32 (default) or float16, and what readers get back.

float16 halves the file. Checksums are defined over the stored values read
back as float32 (float16 -> float32 is exact), so the row CRC definition is the
same for both. An entry's precision is fixed when it is created: its clean rows
and all its views share it, and an embed asking for the other precision is
refused rather than mixing rows of two precisions in one entry.
"""
from __future__ import annotations

import numpy as np

from featcache.errors import FeatcacheError

STORED = ("float32", "float16")
READ = ("float32", "float16", "float64")


def storage_dtype(dtype) -> str | None:
    """Validate ``dtype=`` of an embed: None (keep the entry's, float32 if new) or a STORED name."""
    if dtype is None:
        return None
    name = _name(dtype)
    if name not in STORED:
        raise FeatcacheError(f"dtype={dtype!r} cannot be stored: choose {' or '.join(STORED)}")
    return name


def entry_dtype(existing: str | None, asked: str | None, where: str) -> str:
    """The precision an embed writes: the entry's own; refuse an explicit other one."""
    if existing is None:
        return asked or "float32"
    if asked is not None and asked != existing:
        raise FeatcacheError(
            f"{where} stores {existing} features; dtype={asked!r} would mix precisions in one "
            f"entry: pass dtype={existing!r} (or leave dtype out), or write {asked} features to a "
            "new cache file")
    return existing


def to_stored(X, dtype) -> np.ndarray:
    """Features cast to the stored precision; float16 that would lose them is refused.

    Values beyond float16's range would become inf, and values below its
    smallest normal number (6.1e-5, e.g. from random-weight backbones) lose
    most of their digits or become 0: both are wrong numbers, never written.
    """
    X = np.asarray(X)
    if np.dtype(dtype) != np.float16 or X.dtype == np.float16:
        return X.astype(dtype, copy=False)
    info = np.finfo(np.float16)
    big = np.abs(X[np.isfinite(X)]).max(initial=0.0)
    tiny = np.count_nonzero((X != 0) & (np.abs(X) < info.smallest_normal))
    if big > info.max or tiny > 0.01 * max(1, np.count_nonzero(X)):
        raise FeatcacheError(
            f"these features do not fit float16 (largest {big:.3g}, {tiny} of {X.size} values "
            f"below {info.smallest_normal:.2g}); nothing was written: re-run with dtype='float32' "
            "(the embedded batches are kept and not embedded again)")
    return X.astype(np.float16)


def as_read_dtype(X: np.ndarray, dtype=None) -> np.ndarray:
    """Features as readers want them: float32 unless ``dtype`` asks for another float type."""
    name = "float32" if dtype is None else _name(dtype)
    if name not in READ:
        raise FeatcacheError(f"dtype={dtype!r} cannot be read into: choose {', '.join(READ)}")
    return X.astype(name, copy=False)


def _name(dtype) -> str:
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise FeatcacheError(f"dtype={dtype!r} is not a numpy dtype: choose float32 or "
                             "float16") from None
