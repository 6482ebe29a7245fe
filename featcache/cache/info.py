"""Summaries of a cache (``featcache info``): entries, counts, failures, views, pending runs."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from featcache.cache.journal import pending_batches
from featcache.cache.layout import ROOT
from featcache.cache.read import (NO_CHECKSUMS, entry_runtimes, feature_bytes, read_failures,
                                  reading, seconds_per_image, verified)
from featcache.cache.views import views_info

__all__ = ["NO_CHECKSUMS", "cache_info"]


def _entry_info(cache_path, key: str, g: h5py.Group) -> dict:
    rows = verified(cache_path, key, g)
    names = json.loads(g.attrs["class_names"])
    counts = np.bincount(rows.labels, minlength=len(names))
    return {"key": key, "spec": json.loads(g.attrs["spec"]),
            "fingerprint": str(g.attrs["fingerprint"]), "data_dir": str(g.attrs["data_dir"]),
            "rows": int(len(rows.labels)), "feature_dim": int(g.attrs["feature_dim"]),
            "class_counts": dict(zip(names, counts.tolist())), "checksums": rows.checked,
            "failures": [{"path": p, "reason": r} for p, _, r in read_failures(g)],
            "seconds_per_image": seconds_per_image(g),
            "feature_bytes": feature_bytes(g["features"]), "virtual": g["features"].is_virtual,
            "dtype": str(g["features"].dtype), "views": views_info(cache_path, g),
            "runtimes": entry_runtimes(g)}


def cache_info(cache_path) -> dict:
    """Summary of a cache: per entry its spec, counts per class, failures and checksum state.

    A cache that does not exist yet but has batches from an interrupted first
    run reports them (``exists`` False, no entries) instead of failing.
    """
    path = Path(cache_path)
    pending = pending_batches(path)
    if not path.exists() and pending:
        return {"path": str(path), "exists": False, "schema_version": None, "file_bytes": 0,
                "entries": [], "interrupted": pending}
    with reading(path) as f:
        entries = [_entry_info(path, key, f[ROOT][key]) for key in (sorted(f[ROOT]) if ROOT in f else [])]
        return {"path": str(path), "exists": True, "schema_version": int(f.attrs["schema_version"]),
                "file_bytes": path.stat().st_size, "entries": entries, "interrupted": pending}
