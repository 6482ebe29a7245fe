"""The HDF5 feature cache: layout, reading, and the atomic rewrite.

Layout (schema version 1), readable with h5py alone::

    /                      attrs: schema_version, featcache_version
    /backbones/<key>/      one entry per backbone fingerprint
        attrs: spec (JSON), fingerprint, class_names (JSON), data_dir, feature_dim
        features  float32 (n, d)
        paths     utf-8 str (n,)   relative to the data folder, '/'-separated
        labels    int32 (n,)       index into class_names (Keras order)
        sha256    ascii (n,)       hex digest of the file's bytes
        failures/ path, sha256, reason   files that could not be embedded

Rows are in insertion order; ``load_features`` sorts them by path.

The committed file is never modified in place: every change is written to a
temporary copy that replaces it with ``os.replace``, so a killed writer
always leaves the previous, complete file behind.
"""
from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from featcache.errors import FeatcacheError
from featcache.features import Features

SCHEMA_VERSION = 1
ROOT = "backbones"
_STR = h5py.string_dtype("utf-8")
_CHUNK_ROWS = 4096


def entry_key(name: str, fingerprint: str) -> str:
    """Group name for a backbone: readable name plus a fingerprint prefix."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.split("://")[-1]).strip("_")
    return f"{safe[-48:]}-{fingerprint[:12]}"


def _open_read(cache_path) -> h5py.File:
    path = Path(cache_path)
    if not path.is_file():
        raise FeatcacheError(f"no cache file at {path}: run `featcache embed DATA_DIR -o {path}` first")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FeatcacheError(f"{path} is not a readable HDF5 file ({exc})") from None
    if "schema_version" not in f.attrs:
        f.close()
        raise FeatcacheError(f"{path} is an HDF5 file but not a featcache cache (no schema_version)")
    if int(f.attrs["schema_version"]) > SCHEMA_VERSION:
        f.close()
        raise FeatcacheError(f"{path} uses cache schema {int(f.attrs['schema_version'])}; "
                             f"this featcache reads up to {SCHEMA_VERSION}: upgrade featcache")
    return f


def _pick_entry(f: h5py.File, backbone: str | None, path) -> str:
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


def read_rows(group: h5py.Group):
    """Paths, sha256 and labels of an entry as numpy string/int arrays."""
    paths = group["paths"].asstr()[:] if len(group["paths"]) else np.array([], dtype=str)
    sha = group["sha256"][:].astype(str)
    return np.asarray(paths, dtype=str), sha, group["labels"][:]


def load_features(cache_path, backbone: str | None = None) -> Features:
    """Load one backbone's features from a cache.

    Parameters
    ----------
    cache_path : str or Path
        The HDF5 file written by :func:`featcache.embed`.
    backbone : str, optional
        An entry key (``mobilenet_v2-1a2b3c4d5e6f``) or a backbone name.
        Needed only when the cache holds several entries.

    Returns
    -------
    Features
        Rows sorted by relative path; ``X`` is float32 of shape (n, d).
    """
    with _open_read(cache_path) as f:
        key = _pick_entry(f, backbone, cache_path)
        g = f[ROOT][key]
        paths, sha, labels = read_rows(g)
        X = g["features"][:]
        order = np.argsort(paths, kind="stable")
        return Features(X=X[order], y=labels[order].astype(np.int64), paths=paths[order],
                        class_names=json.loads(g.attrs["class_names"]), sha256=sha[order],
                        backbone=key, spec=json.loads(g.attrs["spec"]))


def read_failures(group: h5py.Group) -> list[tuple[str, str, str]]:
    """(path, sha256, reason) of every file an entry could not embed."""
    if "failures" not in group:
        return []
    fg = group["failures"]
    if not len(fg["path"]):
        return []
    return list(zip(fg["path"].asstr()[:], fg["sha256"][:].astype(str), fg["reason"].asstr()[:]))


def cache_info(cache_path) -> dict:
    """Summary of a cache: per entry its spec, counts per class and failures."""
    path = Path(cache_path)
    with _open_read(path) as f:
        entries = []
        for key in sorted(f[ROOT]) if ROOT in f else []:
            g = f[ROOT][key]
            names = json.loads(g.attrs["class_names"])
            counts = np.bincount(g["labels"][:], minlength=len(names))
            entries.append({
                "key": key, "spec": json.loads(g.attrs["spec"]),
                "fingerprint": str(g.attrs["fingerprint"]), "data_dir": str(g.attrs["data_dir"]),
                "rows": int(len(g["labels"])), "feature_dim": int(g.attrs["feature_dim"]),
                "class_counts": dict(zip(names, counts.tolist())),
                "failures": [{"path": p, "reason": r} for p, _, r in read_failures(g)],
                "feature_bytes": int(g["features"].id.get_storage_size()),
            })
        from featcache.journal import pending_batches
        return {"path": str(path), "schema_version": int(f.attrs["schema_version"]),
                "file_bytes": path.stat().st_size, "entries": entries,
                "interrupted": pending_batches(path)}


class EntryWriter:
    """Streams one entry's rows into a new HDF5 group."""

    def __init__(self, group: h5py.Group, feature_dim: int, class_names: list[str]):
        self.g, self.n = group, 0
        self.label_of = {c: i for i, c in enumerate(class_names)}
        chunks = (min(_CHUNK_ROWS, 256), feature_dim)
        group.create_dataset("features", (0, feature_dim), np.float32, maxshape=(None, feature_dim),
                             chunks=chunks)
        for name, dt in (("paths", _STR), ("sha256", "S64"), ("labels", np.int32)):
            group.create_dataset(name, (0,), dt, maxshape=(None,), chunks=(_CHUNK_ROWS,))

    def append(self, X: np.ndarray, paths, sha, labels=None) -> None:
        """Append rows; labels default to each path's class folder."""
        m = len(paths)
        if m == 0:
            return
        if labels is None:
            labels = [self.label_of[p.split("/", 1)[0]] for p in paths]
        end = self.n + m
        for name, values in (("features", X), ("paths", list(paths)),
                             ("sha256", np.asarray(sha, dtype="S64")), ("labels", labels)):
            self.g[name].resize(end, axis=0)
            self.g[name][self.n:end] = values
        self.n = end


def write_failures(group: h5py.Group, failures) -> None:
    """Store (path, sha256, reason) triples under ``failures/``."""
    fg = group.create_group("failures")
    paths, shas, reasons = (list(col) for col in zip(*failures)) if failures else ([], [], [])
    fg.create_dataset("path", data=np.array(paths, dtype=object), dtype=_STR)
    fg.create_dataset("sha256", data=np.array(shas, dtype="S64"))
    fg.create_dataset("reason", data=np.array(reasons, dtype=object), dtype=_STR)


@contextmanager
def rewrite(cache_path, key: str):
    """Yield a new file holding every entry but ``key``; it replaces the cache on success.

    The caller writes the new ``/backbones/<key>`` group. If anything fails,
    or the process dies, the old cache is untouched.
    """
    path = Path(cache_path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as new:
            new.attrs["schema_version"] = SCHEMA_VERSION
            from featcache import __version__
            new.attrs["featcache_version"] = __version__
            root = new.create_group(ROOT)
            if path.exists():
                with _open_read(path) as old:
                    for other in old[ROOT]:
                        if other != key:
                            old.copy(old[ROOT][other], root, name=other)
            yield new, (root.create_group(key))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def entry_attrs(group: h5py.Group, *, spec: dict, fingerprint: str, class_names, data_dir,
                feature_dim: int) -> None:
    """Write the attributes that identify an entry."""
    group.attrs.update({"spec": json.dumps(spec, sort_keys=True), "fingerprint": fingerprint,
                        "class_names": json.dumps(list(class_names)), "data_dir": str(data_dir),
                        "feature_dim": int(feature_dim)})


def save_features(cache_path, features: Features, *, fingerprint: str | None = None,
                  data_dir: str = "", failures=()) -> str:
    """Write a Features object as one cache entry (replacing an entry with the same key).

    Useful for embeddings computed elsewhere, and for tests.

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
        import hashlib
        fingerprint = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    key = entry_key(spec.get("name", "external"), fingerprint)
    Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
    with rewrite(cache_path, key) as (_, g):
        entry_attrs(g, spec=spec, fingerprint=fingerprint, class_names=features.class_names,
                    data_dir=data_dir, feature_dim=X.shape[1])
        w = EntryWriter(g, X.shape[1], features.class_names)
        w.append(X, [str(p) for p in features.paths], features.sha256, np.asarray(features.y))
        write_failures(g, list(failures))
    return key
