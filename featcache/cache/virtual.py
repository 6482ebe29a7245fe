"""Guarding caches whose datasets are HDF5 Virtual Datasets over shard files.

HDF5 reads a VDS whose source file is missing as fill values (zeros, empty
strings) without any error. A merged cache must never give such silent
numbers, so every open checks that each source file exists and still has the
rows the merge mapped; a shard re-embedded after the merge is caught the same way.
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py

from featcache.errors import FeatcacheError


def virtual_maps(f: h5py.File) -> list[tuple[str, str, str, int]]:
    """``(dataset, source file, source dataset, rows mapped)`` for every VDS mapping in ``f``."""
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.is_virtual:
            for m in obj.virtual_sources():
                if m.file_name != ".":  # "." maps a dataset of the same file
                    # the merge maps whole source datasets onto consecutive rows
                    lo, hi = m.vspace.get_select_bounds()
                    rows = hi[0] - lo[0] + 1 if obj.ndim else 1
                    found.append((obj.name, m.file_name, m.dset_name, int(rows)))
    f.visititems(visit)
    return found


def check_sources(f: h5py.File, path) -> None:
    """Raise one clear error if a virtual dataset of ``f`` would read fill values.

    Relative source names are resolved against the folder of the real cache
    file, as HDF5 itself does.
    """
    maps = virtual_maps(f)
    if not maps:
        return
    folder = Path(os.path.realpath(path)).parent
    rows: dict = {}
    for _, file_name, src_name, stop in maps:
        src = folder / file_name
        if not src.is_file():
            raise FeatcacheError(
                f"{path} is a merged cache but its shard file {src} is missing: keep "
                f"{Path(file_name).parent}/ beside the cache, or re-embed the missing shard and "
                f"run `featcache merge {path}` again (`--copy` makes a self-contained file)")
        if (src, src_name) not in rows:
            rows[src, src_name] = _rows(src, src_name)
        if rows[src, src_name] != stop:
            raise FeatcacheError(
                f"{path}: shard file {src} changed since it was merged ({src_name} has "
                f"{rows[src, src_name]} rows, the merge mapped {stop}); run `featcache merge "
                f"{path}` again")


def _rows(src: Path, name: str) -> int:
    try:
        with h5py.File(src, "r") as s:
            ds = s.get(name)
            return -1 if ds is None else (len(ds) if ds.ndim else 1)
    except OSError:
        return -1
