"""Crash-safe progress of one embed run, and the single-writer lock.

While a run embeds, each batch lands as its own small ``.npz`` segment in
``CACHE.partial/<key>/`` (written to a temporary name, then renamed, so a
segment is either whole or absent). A re-run after a kill reads the segments
back and skips what they hold. The run ends by merging old rows and segments
into a fresh copy of the cache that atomically replaces it (see
:func:`featcache.cache.rewrite`); only then are the segments deleted.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from featcache.errors import FeatcacheError


@contextmanager
def writer_lock(cache_path):
    """Hold an exclusive lock on ``CACHE.lock``; a second writer gets a clear error.

    ``flock`` is released by the kernel when the process dies, so a kill -9
    never leaves a stale lock behind.
    """
    path = Path(cache_path)
    lock_path = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock_path, "a")
    except OSError as exc:
        raise FeatcacheError(f"cannot write cache {path}: {exc.strerror} ({exc.filename})") from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise FeatcacheError(f"another featcache process is writing {path} (lock {lock_path}); "
                             "wait for it to finish") from None
    for stale in path.parent.glob(path.name + ".tmp-*"):
        stale.unlink()  # a rewrite killed before its rename; we hold the lock, so nobody owns it
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def pending_batches(cache_path) -> dict:
    """Entry key -> number of batches an interrupted run left behind."""
    path = Path(cache_path)
    root = path.with_name(path.name + ".partial")
    if not root.is_dir():
        return {}
    return {d.name: len(list(d.glob("seg-*.npz"))) for d in sorted(root.iterdir()) if d.is_dir()}


class Journal:
    """The segments of one cache entry's unfinished run."""

    def __init__(self, cache_path, key: str):
        path = Path(cache_path)
        self.root = path.with_name(path.name + ".partial")
        self.dir = self.root / key
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob("*.tmp"):
            stale.unlink()  # a segment that was being written when the process died
        self._next = len(self.segments())

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("seg-*.npz"))

    def write(self, X, paths, sha, failures=()) -> None:
        """Persist one batch of rows plus any failures seen with it."""
        fail = list(zip(*failures)) if failures else ([], [], [])
        tmp = self.dir / f"seg-{self._next:08d}.tmp"
        with open(tmp, "wb") as fh:
            np.savez(fh, X=np.asarray(X, np.float32), paths=np.asarray(paths, dtype=str),
                     sha=np.asarray(sha, dtype=str), fail_paths=np.asarray(fail[0], dtype=str),
                     fail_sha=np.asarray(fail[1], dtype=str), fail_reason=np.asarray(fail[2], dtype=str))
        os.replace(tmp, self.dir / f"seg-{self._next:08d}.npz")
        self._next += 1

    def read(self):
        """Yield ``(X, paths, sha, failures)`` per segment, in write order."""
        for seg in self.segments():
            with np.load(seg, allow_pickle=False) as z:
                failures = list(zip(z["fail_paths"].tolist(), z["fail_sha"].tolist(),
                                    z["fail_reason"].tolist()))
                yield z["X"], z["paths"].tolist(), z["sha"].tolist(), failures

    def done(self) -> tuple[set, list]:
        """(path, sha256) pairs already embedded, and failures, without loading features."""
        rows, failures = set(), []
        for seg in self.segments():
            with np.load(seg, allow_pickle=False) as z:
                rows.update(zip(z["paths"].tolist(), z["sha"].tolist()))
                failures += zip(z["fail_paths"].tolist(), z["fail_sha"].tolist(),
                                z["fail_reason"].tolist())
        return rows, failures

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            self.root.rmdir()
        except OSError:
            pass  # other entries still have unfinished runs
