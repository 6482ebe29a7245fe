"""Names, constants and row checksums shared by the cache's reader and writer."""
from __future__ import annotations

import re
import zlib
from pathlib import Path

import h5py
import numpy as np

from featcache.files import real_path

SCHEMA_VERSION = 2
ROOT = "backbones"
STR = h5py.string_dtype("utf-8")
BLOCK_ROWS = 4096  # rows read or written at a time; also the chunk length of 1-d datasets


def entry_key(name: str, fingerprint: str) -> str:
    """Group name for a backbone: readable name plus a fingerprint prefix."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.split("://")[-1]).strip("_")
    return f"{safe[-48:]}-{fingerprint[:12]}"


def real_cache_path(cache_path) -> Path:
    """The file a cache path names, symlinks resolved: locks and rewrites act on it."""
    return real_path(cache_path)


def sibling(cache_path, suffix: str) -> Path:
    """``CACHE.h5<suffix>`` beside the real cache file (lock, temp copy, journal)."""
    path = real_cache_path(cache_path)
    return path.with_name(path.name + suffix)


def row_checksums(X, labels, paths, sha) -> np.ndarray:
    """CRC-32 of each row: its float32 features, then ``label NUL path NUL sha256`` in UTF-8.

    A row whose path could not be read (``None``) gets no valid checksum.
    """
    X = np.ascontiguousarray(X, dtype="<f4")
    out = np.zeros(len(X), dtype=np.uint32)
    for i, (row, label, path, digest) in enumerate(zip(X, labels, paths, sha)):
        if path is None:
            continue
        tail = f"{int(label)}\0{path}\0{digest}".encode("utf-8", "surrogateescape")
        out[i] = zlib.crc32(tail, zlib.crc32(row))
    return out
