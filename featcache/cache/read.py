"""Reading a cache: opening it safely, picking an entry, verifying row checksums.

The public readers build on this: :mod:`featcache.cache.load` (features, views) and
:mod:`featcache.cache.info` (summaries).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from featcache.cache.layout import BLOCK_ROWS, ROOT, SCHEMA_VERSION, row_checksums
from featcache.cache.virtual import check_sources
from featcache.errors import FeatcacheError

NO_CHECKSUMS = "no checksums (written by an older featcache): re-run embed to add them"


def _is_locked(exc: OSError) -> bool:
    text = str(exc).lower()
    return "unable to lock file" in text or "errno = 11" in text


def open_read(cache_path, check_virtual: bool = True) -> h5py.File:
    """Open a cache read-only, with one clear error for each way that can fail.

    ``check_virtual=False`` skips the shard-file check of a merged cache, for
    callers that copy entries without reading their rows.
    """
    path = Path(cache_path)
    if path.is_dir():
        raise FeatcacheError(f"{path} is a folder, not a cache file: give the .h5 file that "
                             "`featcache embed -o` wrote")
    if not path.is_file():
        raise FeatcacheError(f"no cache file at {path}: run `featcache embed DATA_DIR -o {path}` first")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        if _is_locked(exc):
            raise FeatcacheError(f"{path} is locked: another process has it open for writing "
                                 "(HDF5 file lock); wait for it to finish or close it, then retry") from None
        raise FeatcacheError(f"{path} is not a readable HDF5 file ({exc})") from None
    version = f.attrs.get("schema_version")  # read before any close: the message needs it
    if version is None:
        f.close()
        raise FeatcacheError(f"{path} is an HDF5 file but not a featcache cache (no schema_version)")
    if int(version) > SCHEMA_VERSION:
        f.close()
        raise FeatcacheError(f"{path} uses cache schema {int(version)}; this featcache reads up to "
                             f"{SCHEMA_VERSION}: upgrade featcache")
    try:
        if check_virtual:
            check_sources(f, path)  # a merged cache must not read a missing shard as zeros
    except BaseException:
        f.close()
        raise
    return f


@contextmanager
def reading(cache_path):
    """``open_read`` plus: low-level read errors (HDF5, damaged JSON attributes) become one
    line naming the cache."""
    with open_read(cache_path) as f:
        try:
            yield f
        except (OSError, json.JSONDecodeError) as exc:  # damaged chunks, heaps or attributes
            if "memory allocation failed" in str(exc):  # HDF5 out of memory: the file is fine
                raise FeatcacheError(f"out of memory while reading {cache_path} ({exc}); free "
                                     "memory or lower memory_budget=SIZE") from None
            raise FeatcacheError(f"{cache_path} is damaged and cannot be read ({exc}); re-create it "
                                 "with `featcache embed` or restore a backup") from None


def pick_entry(f: h5py.File, backbone: str | None, path) -> str:
    """The entry key ``backbone`` names (a key or a backbone name); any key if only one."""
    keys = sorted(f[ROOT]) if ROOT in f else []
    if not keys:
        raise FeatcacheError(f"{path} holds no features yet: run (or re-run) `featcache embed`")
    if backbone is None:
        if len(keys) == 1:
            return keys[0]
        raise FeatcacheError(f"{path} holds several backbones ({', '.join(keys)}): pass backbone=<key>")
    if backbone in keys:
        return backbone
    named = [k for k in keys if json.loads(f[ROOT][k].attrs["spec"]).get("name") == backbone]
    if len(named) == 1:
        return named[0]
    if named:
        raise FeatcacheError(f"{path} holds {len(named)} entries for {backbone!r} "
                             f"({', '.join(named)}): pass the full key")
    raise FeatcacheError(f"{path} has no backbone {backbone!r}; it holds: {', '.join(keys)}")


def read_paths(ds: h5py.Dataset) -> list:
    """Paths as a list of str; an entry HDF5 cannot read (damaged string heap) becomes None."""
    out = []
    for start in range(0, len(ds), BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, len(ds))
        try:
            out += ds.asstr()[start:stop].tolist()
        except (OSError, UnicodeDecodeError):
            out += [_read_one(ds, i) for i in range(start, stop)]
    return out


def _read_one(ds: h5py.Dataset, i: int):
    try:
        return ds.asstr()[i]
    except (OSError, UnicodeDecodeError):
        return None


@dataclass
class EntryRows:
    """The per-row metadata of one entry, with the rows that failed verification."""

    paths: list          # str, or None where unreadable
    sha: np.ndarray
    labels: np.ndarray
    damaged: list        # row indices, ascending
    checked: bool        # False for schema-1 entries, which carry no checksums

    def ok_rows(self) -> set:
        """(path, sha256) of every undamaged row."""
        bad = set(self.damaged)
        return {(p, s) for i, (p, s) in enumerate(zip(self.paths, self.sha.tolist())) if i not in bad}


def read_entry(group: h5py.Group, X=None) -> EntryRows:
    """Read an entry's rows and verify their checksums (features read in blocks unless given)."""
    paths = read_paths(group["paths"])
    sha, labels = group["sha256"][:].astype(str), group["labels"][:]
    unreadable = [i for i, p in enumerate(paths) if p is None]
    if "checksum" not in group:
        return EntryRows(paths, sha, labels, unreadable, False)
    stored, damaged = group["checksum"][:], set(unreadable)
    n = len(paths)
    if not (len(sha) == len(labels) == len(stored) == n == len(group["features"])):
        raise OSError(f"entry {group.name} has datasets of different lengths")
    for start in range(0, n, BLOCK_ROWS):
        rows = slice(start, min(start + BLOCK_ROWS, n))
        block = group["features"][rows] if X is None else X[rows]
        got = row_checksums(block, labels[rows], paths[rows], sha[rows])
        damaged.update((start + np.flatnonzero(got != stored[rows])).tolist())
    return EntryRows(paths, sha, labels, sorted(damaged), True)


def damage_message(cache_path, key: str, rows: EntryRows) -> str:
    """One line naming the damaged rows (with their paths when readable) and what to do."""
    named = [f"{i} ({rows.paths[i]})" if rows.paths[i] is not None else str(i)
             for i in rows.damaged[:8]]
    more = f" and {len(rows.damaged) - 8} more" if len(rows.damaged) > 8 else ""
    return (f"{cache_path}: entry {key} has {len(rows.damaged)} damaged row(s) that fail their "
            f"checksum: rows {', '.join(named)}{more}; re-run `featcache embed` on the data folder "
            "to re-embed them")


def verified(cache_path, key: str, group: h5py.Group, X=None) -> EntryRows:
    rows = read_entry(group, X)
    if rows.damaged:
        raise FeatcacheError(damage_message(cache_path, key, rows))
    return rows


def read_failures(group: h5py.Group) -> list[tuple[str, str, str]]:
    """(path, sha256, reason) of every file an entry could not embed."""
    if "failures" not in group:
        return []
    fg = group["failures"]
    if not len(fg["path"]):
        return []
    return list(zip(fg["path"].asstr()[:], fg["sha256"][:].astype(str), fg["reason"].asstr()[:]))


def entry_runtimes(group: h5py.Group) -> list[str]:
    """Runtimes that wrote an entry's rows (information only; empty before they were recorded)."""
    return json.loads(group.attrs.get("runtimes", "[]"))


def feature_bytes(ds: h5py.Dataset) -> int:
    """Bytes of a features dataset: stored, or for a merged (virtual) one, held by its shards."""
    return int(ds.size * ds.dtype.itemsize if ds.is_virtual else ds.id.get_storage_size())


def seconds_per_image(group: h5py.Group):
    """Embed time per image recorded by ``embed`` (None for entries written without it)."""
    value = group.attrs.get("seconds_per_image")
    return None if value is None else float(value)


def list_entries(cache_path) -> list[dict]:
    """Each entry's ``key``, ``spec``, ``feature_dim``, ``rows`` and ``seconds_per_image``.

    Reads attributes only (no rows are verified), so it is cheap on a large cache;
    ``seconds_per_image`` is None for entries written before it was recorded.
    """
    with reading(cache_path) as f:
        groups = [(key, f[ROOT][key]) for key in (sorted(f[ROOT]) if ROOT in f else [])]
        return [{"key": key, "spec": json.loads(g.attrs["spec"]),
                 "feature_dim": int(g.attrs["feature_dim"]), "rows": int(len(g["paths"])),
                 "seconds_per_image": seconds_per_image(g)} for key, g in groups]
