"""Assemble the shards of a cache (``CACHE.h5.shards/shard-i-of-N.h5``) into ``CACHE.h5``.

By default the merged entry is made of HDF5 Virtual Datasets that map the
shard files' rows: the merge takes well under a second, costs no disk, and
every reader (h5py alone too) sees one ordinary entry. Source names are
stored relative to the cache, so the cache and its ``.shards/`` folder move
together; readers refuse, in one line, a cache whose shard files are gone or
changed (:mod:`featcache.cache.virtual`). ``copy=True`` writes a
self-contained file instead.

The merge is generic: every dataset of an entry, at any depth (``failures/``,
and any subgroup added later), is concatenated along its first axis in shard
order, so row-aligned datasets stay aligned without code here knowing them.
It runs under the cache's writer lock and every shard's, and replaces the
cache atomically (:func:`featcache.cache.write.rewrite`).
"""
from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from featcache.cache.layout import BLOCK_ROWS, ROOT, real_cache_path
from featcache.cache.read import open_read, read_paths
from featcache.cache.shards import find_shards, shard_of, shards_dir
from featcache.cache.write import rewrite, writer_lock
from featcache.errors import FeatcacheError

# data_dir may differ between machines that mount the data differently; the embed
# time per image differs anyway (the merged entry gets the row-weighted mean)
PER_SHARD_ATTRS = {"data_dir", "seconds_per_image"}


@dataclass(frozen=True)
class MergeSummary:
    """What one ``merge`` call did."""

    cache_path: str
    keys: tuple
    shards: int
    rows: int
    copied: bool
    seconds: float

    def __str__(self) -> str:
        how = "copied" if self.copied else "virtual datasets over the shard files"
        return (f"merged {self.shards} shard(s), {self.rows} rows of {', '.join(self.keys)} "
                f"({how}) in {self.seconds:.2f} s -> {self.cache_path}")


def _pick(cache_path: Path, shards: int | None) -> tuple[int, list[Path]]:
    """The N and the shard files to merge, or one clear error."""
    found = find_shards(cache_path)
    folder = shards_dir(cache_path)
    if shards is not None:
        found = {n: f for n, f in found.items() if n == shards}
    if not found:
        which = f" of {shards}" if shards is not None else ""
        raise FeatcacheError(f"no shard files{which} in {folder}: run `featcache embed DATA_DIR -o "
                             f"{cache_path} --shard i/N` for every i first")
    if len(found) > 1:
        raise FeatcacheError(f"{folder} holds shards of different N ({', '.join(map(str, sorted(found)))}):"
                             " move the stale ones away, or pass shards=N")
    (n, files), = found.items()
    stray = sorted(i for i in files if i >= n)
    if stray:
        raise FeatcacheError(f"{files[stray[0]]} is not a shard of {n} (index {stray[0]} >= {n}): "
                             "remove it")
    missing = [i for i in range(n) if i not in files]
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        raise FeatcacheError(f"cannot merge {cache_path}: shard(s) {shown} of {n} missing in "
                             f"{folder}; run `featcache embed DATA_DIR -o {cache_path} --shard "
                             f"{missing[0]}/{n}` (and the others) first")
    return n, [files[i] for i in range(n)]


def _unfinished(files: list[Path]) -> None:
    from featcache.cache.journal import pending_batches
    for i, p in enumerate(files):
        if pending_batches(p):
            raise FeatcacheError(f"shard {p} has an interrupted run: re-run `featcache embed ... "
                                 f"--shard {i}/{len(files)}` to finish it, then merge")


def _same(a, b) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except (TypeError, ValueError):
        return a == b


def _check_attrs(where: str, parts) -> None:
    """Every attribute agrees across shards (but those in PER_SHARD_ATTRS)."""
    rel0, g0 = parts[0]
    for rel, g in parts[1:]:
        for name in set(g0.attrs) | set(g.attrs):
            if name in PER_SHARD_ATTRS:
                continue
            if name not in g.attrs or name not in g0.attrs or not _same(g0.attrs[name], g.attrs[name]):
                what = ("class names (embedded from different folders?)" if name == "class_names"
                        else f"attribute {name!r}")
                raise FeatcacheError(f"cannot merge: {rel} and {rel0} have different {what} in "
                                     f"{where}; re-embed the odd shard with the same settings")


def _check_keys(parts) -> list[str]:
    """The entry keys, the same in every shard (a key carries the backbone's fingerprint)."""
    rel0, f0 = parts[0]
    keys = sorted(f0.get(ROOT, {}))
    for rel, f in parts[1:]:
        other = sorted(f.get(ROOT, {}))
        if other != keys:
            raise FeatcacheError(
                f"cannot merge: {rel} holds {', '.join(other) or 'nothing'} but {rel0} holds "
                f"{', '.join(keys) or 'nothing'}: shards embedded with different backbones or "
                "weights (or a shard never embedded) do not mix; re-embed the odd shard with the "
                "same --backbone, --weights and --seed")
    if not keys:
        raise FeatcacheError(f"cannot merge: the shards hold no features ({rel0} is empty)")
    return keys


def _check_rows(key: str, parts, n: int) -> int:
    """Every row sits in the shard its path hashes to, and in one shard only."""
    seen: dict = {}
    for i, (rel, f) in enumerate(parts):
        for p in read_paths(f[ROOT][key]["paths"]):
            if p is None:
                continue  # an unreadable path fails its checksum when the merged cache is read
            if p in seen:
                raise FeatcacheError(f"cannot merge: {p} is in both {seen[p]} and {rel} "
                                     "(a shard file copied or renamed?); remove the duplicate shard")
            if shard_of(p, n) != i:
                raise FeatcacheError(f"cannot merge: {rel} holds {p}, which belongs to shard "
                                     f"{shard_of(p, n)} of {n} (a renamed shard file?)")
            seen[p] = rel
    return len(seen)


def _merge_dataset(dst: h5py.Group, name: str, parts, copy: bool) -> None:
    """Concatenate one dataset of every shard along axis 0: virtual or copied."""
    ds0 = parts[0][1]
    for rel, ds in parts[1:]:
        if ds.dtype != ds0.dtype or ds.shape[1:] != ds0.shape[1:]:
            raise FeatcacheError(f"cannot merge: {ds.name} is {ds.dtype}{ds.shape[1:]} in {rel} but "
                                 f"{ds0.dtype}{ds0.shape[1:]} in {parts[0][0]}")
    if ds0.ndim == 0:
        dst.create_dataset(name, data=ds0[()])
        return
    tail, total = ds0.shape[1:], sum(len(ds) for _, ds in parts)
    if copy or total == 0:
        out = dst.create_dataset(name, (total,) + tail, ds0.dtype, maxshape=(None,) + tail,
                                 chunks=ds0.chunks or True)
        pos = 0
        for _, ds in parts:
            for start in range(0, len(ds), BLOCK_ROWS):
                block = ds[start:start + BLOCK_ROWS]
                out[pos + start:pos + start + len(block)] = block
            pos += len(ds)
        return
    layout, pos = h5py.VirtualLayout((total,) + tail, ds0.dtype), 0
    for rel, ds in parts:
        if len(ds):
            layout[pos:pos + len(ds)] = h5py.VirtualSource(rel, ds.name, shape=ds.shape, dtype=ds0.dtype)
            pos += len(ds)
    dst.create_virtual_dataset(name, layout)


def _merge_group(dst: h5py.Group, parts, copy: bool) -> None:
    """Merge every dataset and subgroup of ``parts`` ((shard name, group) pairs) into ``dst``."""
    where = parts[0][1].name
    _check_attrs(where, parts)
    names = sorted(set().union(*(set(g) for _, g in parts)))
    for name in names:
        lacking = [rel for rel, g in parts if name not in g]
        if lacking:
            raise FeatcacheError(f"cannot merge: {where}/{name} is missing from {lacking[0]}; "
                                 "re-embed that shard with the same settings as the others")
        children = [(rel, g[name]) for rel, g in parts]
        if isinstance(children[0][1], h5py.Group):
            _merge_group(dst.create_group(name), children, copy)
        else:
            _merge_dataset(dst, name, children, copy)
    dst.attrs.update(dict(parts[0][1].attrs))
    _mean_seconds(dst, [g for _, g in parts])


def _mean_seconds(dst: h5py.Group, groups) -> None:
    """Row-weighted mean ``seconds_per_image`` of the shards that recorded it."""
    timed = [(float(g.attrs["seconds_per_image"]), len(g["paths"])) for g in groups
             if "seconds_per_image" in g.attrs and "paths" in g]
    if timed and sum(n for _, n in timed):
        dst.attrs["seconds_per_image"] = sum(t * n for t, n in timed) / sum(n for _, n in timed)


def merge(cache_path, copy: bool = False, shards: int | None = None) -> MergeSummary:
    """Assemble ``CACHE.h5.shards/shard-i-of-N.h5`` (every i) into ``cache_path``.

    Parameters
    ----------
    cache_path : str or Path
        The cache the shards were embedded for (``embed(..., shard="i/N")``).
        Its entries for other backbones are kept; the merged ones are replaced.
    copy : bool
        Copy the rows into ``cache_path`` (a self-contained file) instead of
        making Virtual Datasets over the shard files (instant, no extra disk,
        but the ``.shards/`` folder must stay beside the cache).
    shards : int, optional
        Merge the shards of this N only (default: the only N present).

    Returns
    -------
    MergeSummary

    Raises
    ------
    FeatcacheError
        When a shard is missing, interrupted, duplicated, being written, or
        when shards disagree on backbone, weights or class names.
    """
    start = time.perf_counter()
    path = real_cache_path(cache_path)
    n, files = _pick(path, shards)
    with ExitStack() as stack:
        stack.enter_context(writer_lock(path))
        for p in files:  # no shard is re-embedded while it is being merged
            stack.enter_context(writer_lock(p))
        _unfinished(files)
        opened = [(os.path.relpath(p, path.parent), stack.enter_context(open_read(p))) for p in files]
        keys = _check_keys(opened)
        rows = 0
        for key in keys:
            entries = [(rel, f[ROOT][key]) for rel, f in opened]
            rows += _check_rows(key, opened, n)
            with rewrite(path, key) as (_, g):
                _merge_group(g, entries, copy)
                g.attrs["merged_from"] = json.dumps({"shards": n, "copied": bool(copy)})
    return MergeSummary(str(cache_path), tuple(keys), n, rows, bool(copy), time.perf_counter() - start)
