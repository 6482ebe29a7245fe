"""The whole write protocol of a cache, in one place.

* Every path is first resolved to the real file (:func:`real_cache_path`), so a
  symlink and its target share one lock and the link itself is never replaced.
* :func:`writer_lock` holds ``CACHE.h5.lock`` (``flock``; the kernel drops it when
  a process dies), clears temp copies left by killed writers, turns a full disk
  into one clear line, and removes the lock file on a clean release.
* :func:`rewrite` builds ``CACHE.h5.tmp-PID`` holding every other entry, lets the
  caller write one entry, fsyncs it and ``os.replace``-s the cache with it. The
  committed file is never modified in place, so a killed writer always leaves
  the previous, complete file behind.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from featcache.cache.dtypes import to_stored
from featcache.cache.layout import (BLOCK_ROWS, ROOT, SCHEMA_VERSION, STR, entry_key,
                                    real_cache_path, row_checksums, sibling)
from featcache.cache.read import open_read
from featcache._version import __version__
from featcache.errors import FeatcacheError, NoSpaceError
from featcache.files import TMP, atomic_path, is_no_space, no_space_message
from featcache.cache.features import Features


def _acquire(path: Path, lock_path: Path):
    """Open and flock the lock file; retry if it was unlinked by a releasing writer meanwhile."""
    while True:
        try:
            fh = open(lock_path, "a")
        except OSError as exc:
            raise FeatcacheError(f"cannot write cache {path}: {exc.strerror} ({exc.filename})") from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise FeatcacheError(f"another featcache process is writing {path} (lock {lock_path}); "
                                 "wait for it to finish") from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fh
        fh.close()  # we locked a file its holder had already unlinked: lock the new one


@contextmanager
def writer_lock(cache_path):
    """Be the only writer of a cache for the duration of the block; yields the real path.

    A second writer (through any symlink to the same file) gets a clear error.
    An ``OSError`` for a full disk inside the block becomes one
    ``FeatcacheError`` line; the journal and the committed cache are kept.
    """
    path = real_cache_path(cache_path)
    lock_path = sibling(path, ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FeatcacheError(f"cannot write cache {path}: {exc.strerror} ({exc.filename})") from None
    fh = _acquire(path, lock_path)
    try:
        for stale in path.parent.glob(path.name + TMP + "*"):
            stale.unlink()  # a rewrite killed before its rename; we hold the lock, so nobody owns it
        yield path
    except OSError as exc:  # NoSpaceError too: it names the cache, not a temporary file
        if is_no_space(exc):
            raise NoSpaceError(no_space_message(path)) from None
        raise
    finally:
        lock_path.unlink(missing_ok=True)  # while still locked: see _acquire
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


class EntryWriter:
    """Streams one entry's rows, with their checksums, into a new HDF5 group.

    ``dtype`` is the stored feature type (float32 or float16); checksums cover
    the stored values read back as float32. ``views=K`` makes each row (K, d),
    for a views group (see :mod:`featcache.cache.views`).
    """

    def __init__(self, group: h5py.Group, feature_dim: int, class_names: list[str],
                 dtype=np.float32, views: int | None = None):
        self.g, self.n = group, 0
        self.label_of = {c: i for i, c in enumerate(class_names)}
        row = (feature_dim,) if views is None else (int(views), feature_dim)
        group.create_dataset("features", (0, *row), np.dtype(dtype), maxshape=(None, *row),
                             chunks=(max(1, 256 // (views or 1)), *row))
        for name, dt in (("paths", STR), ("sha256", "S64"), ("labels", np.int32),
                         ("checksum", np.uint32)):
            group.create_dataset(name, (0,), dt, maxshape=(None,), chunks=(BLOCK_ROWS,))

    def append(self, X: np.ndarray, paths, sha, labels=None) -> None:
        """Append rows; labels default to each path's class folder."""
        m = len(paths)
        if m == 0:
            return
        if labels is None:
            labels = [self.label_of[p.split("/", 1)[0]] for p in paths]
        paths, sha = [str(p) for p in paths], [str(s) for s in sha]
        labels = np.asarray(labels, dtype=np.int32)
        X = to_stored(X, self.g["features"].dtype)  # the checksum covers what is stored
        end = self.n + m
        for name, values in (("features", X), ("paths", paths),
                             ("sha256", np.asarray(sha, dtype="S64")), ("labels", labels),
                             ("checksum", row_checksums(X, labels, paths, sha))):
            self.g[name].resize(end, axis=0)
            self.g[name][self.n:end] = values
        self.n = end


def write_failures(group: h5py.Group, failures) -> None:
    """Store (path, sha256, reason) triples under ``failures/``."""
    fg = group.create_group("failures")
    paths, shas, reasons = (list(col) for col in zip(*failures)) if failures else ([], [], [])
    # A file name that is not valid UTF-8 arrives with surrogates, which HDF5 cannot store.
    paths = [p.encode("utf-8", "backslashreplace").decode("utf-8") for p in paths]
    fg.create_dataset("path", data=np.array(paths, dtype=object), dtype=STR)
    fg.create_dataset("sha256", data=np.array(shas, dtype="S64"))
    fg.create_dataset("reason", data=np.array(reasons, dtype=object), dtype=STR)


def entry_attrs(group: h5py.Group, *, spec: dict, fingerprint: str, class_names, data_dir,
                feature_dim: int) -> None:
    """Write the attributes that identify an entry."""
    group.attrs.update({"spec": json.dumps(spec, sort_keys=True), "fingerprint": fingerprint,
                        "class_names": json.dumps(list(class_names)), "data_dir": str(data_dir),
                        "feature_dim": int(feature_dim)})


@contextmanager
def rewrite(cache_path, key: str):
    """Yield a new file holding every entry but ``key``; it replaces the cache on success.

    The caller writes the new ``/backbones/<key>`` group (call under
    :func:`writer_lock`). If anything fails, or the process dies, the old
    cache is untouched. Other entries are copied as they are, never dropped.
    """
    path = real_cache_path(cache_path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as new:
        new.attrs.update({"schema_version": SCHEMA_VERSION, "featcache_version": __version__})
        root = new.create_group(ROOT)
        if path.exists():
            with open_read(path, check_virtual=False) as old:  # copied, not read
                for other in old[ROOT]:
                    if other != key:
                        old.copy(old[ROOT][other], root, name=other)
        yield new, root.create_group(key)


def save_features(cache_path, features: Features, *, fingerprint: str | None = None,
                  data_dir: str = "", failures=()) -> str:
    """Write a Features object as one cache entry (replacing an entry with the same key).

    Useful for embeddings computed elsewhere, and for tests. Takes the writer
    lock, so it never races an ``embed`` on the same cache.

    Returns
    -------
    str
        The entry key.
    """
    X = np.asarray(features.X, dtype=np.float32)
    if X.ndim != 2 or len(X) != len(features.y):
        raise FeatcacheError(f"features.X must be (n, d) with n = len(y); got {X.shape}")
    spec = dict(features.spec) or {"name": features.backbone or "external"}
    if fingerprint is None:
        fingerprint = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    key = entry_key(spec.get("name", "external"), fingerprint)
    with writer_lock(cache_path) as path, rewrite(path, key) as (_, g):
        entry_attrs(g, spec=spec, fingerprint=fingerprint, class_names=features.class_names,
                    data_dir=data_dir, feature_dim=X.shape[1])
        w = EntryWriter(g, X.shape[1], features.class_names)
        w.append(X, [str(p) for p in features.paths], features.sha256, np.asarray(features.y))
        write_failures(g, list(failures))
    return key
