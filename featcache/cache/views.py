"""Augmented views stored with their clean entry: names, fingerprints and verified reading.

Layout, inside an entry ``/backbones/<key>/``::

    views/<vkey>/          one group per (augment spec, seed, K); vkey = k<K>-<fingerprint[:12]>
        attrs: augment (canonical spec), seed, views (K), fingerprint, augment_version
        features  float32 or float16 (n, K, d)   views[i, k] = view k of the image of row i
        paths, sha256, labels, checksum          as in the entry; the checksum covers the
                                                 K*d view values (as float32), then
                                                 "label NUL path NUL sha256"

The views fingerprint hashes the entry's fingerprint, the canonical augment
spec, the seed, K and the augmentation code version, so two specs (or seeds)
never mix: each gets its own group. Rows are matched to the entry's rows by
(path, sha256); rows of removed or changed images drop out with them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import h5py
import numpy as np

from featcache.cache.dtypes import as_read_dtype
from featcache.cache.read import damage_message, feature_bytes, read_entry
from featcache.errors import FeatcacheError

VIEWS = "views"


@dataclass(frozen=True)
class Views:
    """Cached augmented views of one entry, aligned to ``load_features``' row order.

    Attributes
    ----------
    features : ndarray (n, K, d), float32 unless another dtype was asked for
    paths, sha256 : ndarray (n,), str, the rows' images (as in ``Features``)
    augment : str, the canonical augmentation spec
    seed : int
    key : str, the views group (``k<K>-<fingerprint>``); backbone: the entry key
    """

    features: np.ndarray
    paths: np.ndarray
    sha256: np.ndarray
    augment: str
    seed: int
    key: str
    backbone: str

    @property
    def n_views(self) -> int:
        return int(self.features.shape[1])


def view_fingerprint(entry_fingerprint: str, augment: str, seed: int, views: int,
                     version: int) -> str:
    """What makes two view groups the same: entry, canonical spec, seed, K, op code version."""
    blob = {"entry": entry_fingerprint, "augment": augment, "seed": int(seed), "views": int(views),
            "augment_version": int(version)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def view_key(views: int, fingerprint: str) -> str:
    return f"k{int(views)}-{fingerprint[:12]}"


def view_groups(entry: h5py.Group) -> dict:
    """vkey -> group of every views group of an entry."""
    return dict(entry[VIEWS].items()) if VIEWS in entry else {}


def pick_views(entry: h5py.Group, views, where: str) -> str:
    """The views group ``views`` names: True (the only one), a vkey, or an augment spec."""
    groups = view_groups(entry)
    hint = "run `featcache embed DATA_DIR -o CACHE --views K --augment SPEC`"
    if not groups:
        raise FeatcacheError(f"{where} has no augmented views: {hint}")
    if views is True:
        if len(groups) == 1:
            return next(iter(groups))
        raise FeatcacheError(f"{where} has several views groups ({', '.join(describe_keys(groups))}):"
                             " pass views=<key>")
    if str(views) in groups:
        return str(views)
    named = [k for k, g in groups.items() if str(g.attrs["augment"]) == str(views)]
    if len(named) == 1:
        return named[0]
    if named:
        raise FeatcacheError(f"{where} has {len(named)} views groups with augment {views!r} "
                             f"({', '.join(describe_keys({k: groups[k] for k in named}))}): "
                             "pass views=<key>")
    raise FeatcacheError(f"{where} has no views {views!r}; it holds: "
                         f"{', '.join(describe_keys(groups))}")


def describe_keys(groups: dict) -> list:
    return [f"{k} (augment {g.attrs['augment']}, seed {int(g.attrs['seed'])})"
            for k, g in sorted(groups.items())]


def _verified_views(where, group: h5py.Group, V):
    rows = read_entry(group, V.reshape(len(V), -1))
    if rows.damaged:
        raise FeatcacheError(damage_message(where, group.name.split("/", 2)[-1], rows))
    return rows


def aligned_views(where, entry: h5py.Group, views, paths, sha, dtype=None):
    """``(vkey, (n, K, d) array)`` of the views of rows ``(paths, sha)``, verified."""
    vkey = pick_views(entry, views, where)
    g = entry[VIEWS][vkey]
    V = g["features"][:]
    rows = _verified_views(where, g, V)
    at = {row: i for i, row in enumerate(zip(rows.paths, rows.sha.tolist()))}
    index = [at.get(row, -1) for row in zip(paths, np.asarray(sha).tolist())]
    missing = index.count(-1)
    if missing:
        raise FeatcacheError(
            f"{where}: {missing} of {len(index)} images have no views {vkey} (they were embedded "
            f"without them): re-run `featcache embed DATA_DIR -o CACHE --views {V.shape[1]} "
            f"--augment {g.attrs['augment']} --seed {int(g.attrs['seed'])}` to add them")
    return vkey, as_read_dtype(V[np.asarray(index, dtype=np.int64)], dtype)


def views_info(where, entry: h5py.Group) -> list:
    """Per views group: key, augment, seed, K, rows, dtype, bytes (rows verified)."""
    out = []
    for vkey, g in sorted(view_groups(entry).items()):
        rows = _verified_views(where, g, g["features"][:].reshape(len(g["features"]), -1))
        out.append({"key": vkey, "augment": str(g.attrs["augment"]), "seed": int(g.attrs["seed"]),
                    "views": int(g.attrs["views"]), "rows": len(rows.paths),
                    "dtype": str(g["features"].dtype),
                    "feature_bytes": feature_bytes(g["features"])})
    return out
