"""Crash-safe progress of one embed run.

While a run embeds, each batch lands as its own small ``.npz`` segment in
``CACHE.partial/<key>/``: written to a temporary name, fsynced, then renamed
(and the directory fsynced), so a segment is either whole or absent even
after a power cut. A re-run after a kill reads the segments back and skips
what they hold; a segment that is damaged anyway (truncated, zero-length, bad
CRC) is discarded with a warning and its images are embedded again. The run
ends by merging old rows and segments into a fresh copy of the cache that
atomically replaces it (see :func:`featcache.cache.write.rewrite`); only then
are the segments deleted. The writer lock lives in :mod:`featcache.cache.write`.
"""
from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np

from featcache.cache.layout import sibling
from featcache.files import TMP, atomic_write

__all__ = ["Journal", "pending_batches"]

log = logging.getLogger(__name__)
_FIELDS = ("X", "paths", "sha", "fail_paths", "fail_sha", "fail_reason")


def pending_batches(cache_path) -> dict:
    """Entry key -> number of batches an interrupted run left behind."""
    root = sibling(cache_path, ".partial")
    if not root.is_dir():
        return {}
    return {d.name: len(list(d.glob("seg-*.npz"))) for d in sorted(root.iterdir()) if d.is_dir()}


def _load(seg: Path):
    """``(X, paths, sha, failures)`` of a segment, every member read (so its CRC is checked)."""
    with np.load(seg, allow_pickle=False) as z:
        a = {name: z[name] for name in _FIELDS}
    failures = list(zip(a["fail_paths"].tolist(), a["fail_sha"].tolist(), a["fail_reason"].tolist()))
    if a["X"].ndim != 2 or not len(a["X"]) == len(a["paths"]) == len(a["sha"]):
        raise ValueError("rows of different lengths")
    return a["X"], a["paths"].tolist(), a["sha"].tolist(), failures


class Journal:
    """The segments of one cache entry's unfinished run."""

    def __init__(self, cache_path, key: str):
        self.root = sibling(cache_path, ".partial")
        self.dir = self.root / key
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(f"*{TMP}*"):
            stale.unlink()  # a segment that was being written when the process died
        self.discarded: list[str] = []  # names of damaged segments removed by done()
        segs = self.segments()
        self._next = int(segs[-1].name[4:12]) + 1 if segs else 0

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("seg-*.npz"))

    def write(self, X, paths, sha, failures=()) -> None:
        """Persist one batch of rows plus any failures seen with it."""
        fail = list(zip(*failures)) if failures else ([], [], [])
        with atomic_write(self.dir / f"seg-{self._next:08d}.npz", "wb") as fh:
            np.savez(fh, X=np.asarray(X, np.float32), paths=np.asarray(paths, dtype=str),
                     sha=np.asarray(sha, dtype=str), fail_paths=np.asarray(fail[0], dtype=str),
                     fail_sha=np.asarray(fail[1], dtype=str),
                     fail_reason=np.asarray(fail[2], dtype=str))
        self._next += 1

    def read(self):
        """Yield ``(X, paths, sha, failures)`` per segment, in write order."""
        for seg in self.segments():
            yield _load(seg)

    def done(self) -> tuple[set, list]:
        """(path, sha256) pairs already embedded, and failures; damaged segments are removed."""
        rows, failures = set(), []
        for seg in self.segments():
            try:
                _, paths, sha, fails = _load(seg)
            except (zipfile.BadZipFile, EOFError, ValueError, KeyError, OSError) as exc:
                log.warning("discarding damaged journal segment %s (%s); its images will be "
                            "embedded again", seg, exc)
                seg.unlink()
                self.discarded.append(seg.name)
                continue
            rows.update(zip(paths, sha))
            failures += fails
        return rows, failures

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            self.root.rmdir()
        except OSError:
            pass  # other entries still have unfinished runs
