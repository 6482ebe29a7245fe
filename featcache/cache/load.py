"""Loading one entry's rows (and views) into memory, every checksum verified."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from featcache.cache.dtypes import as_read_dtype
from featcache.cache.features import Features
from featcache.cache.layout import ROOT
from featcache.cache.read import pick_entry, reading, verified
from featcache.cache.views import VIEWS, Views, aligned_views, pick_views


def load_features(cache_path, backbone: str | None = None, views=False, dtype=None) -> Features:
    """Load one backbone's features from a cache, verifying every row's checksum.

    Parameters
    ----------
    cache_path : str or Path
        The HDF5 file written by :func:`featcache.embed`.
    backbone : str, optional
        An entry key (``mobilenet_v2-1a2b3c4d5e6f``) or a backbone name.
        Needed only when the cache holds several entries.
    views : bool or str
        False (default): no views. True: also load the entry's augmented views
        (its only views group); a str picks a group by key (``k5-...``) or by
        canonical augment spec. See :func:`featcache.load_views`.
    dtype : optional
        Type of ``X`` (and ``views``): float32 (default, whatever is stored),
        float16 or float64.

    Returns
    -------
    Features
        Rows sorted by relative path; ``X`` is float32 of shape (n, d); ``views``
        is None or (n, K, d), ``views[i]`` the views of row ``i``.

    Raises
    ------
    FeatcacheError
        If the cache is missing, locked, of a newer schema, or has damaged rows
        (the message names them; ``featcache embed`` re-embeds them).
    """
    with reading(cache_path) as f:
        key = pick_entry(f, backbone, cache_path)
        g = f[ROOT][key]
        X = g["features"][:]
        rows = verified(cache_path, key, g, X)
        paths = np.asarray(rows.paths, dtype=str)
        order = np.argsort(paths, kind="stable")
        V = None
        if views is not False and views is not None:
            V = aligned_views(cache_path, g, views, paths[order], rows.sha[order], dtype)[1]
        return Features(X=as_read_dtype(X[order], dtype), y=rows.labels[order].astype(np.int64),
                        paths=paths[order], class_names=json.loads(g.attrs["class_names"]),
                        sha256=rows.sha[order], backbone=key, spec=json.loads(g.attrs["spec"]),
                        views=V)


def load_views(cache_path, backbone: str | None = None, augment=True, dtype=None) -> Views:
    """Load one entry's augmented views, aligned to :func:`load_features`' row order.

    Parameters
    ----------
    cache_path : str or Path
    backbone : str, optional
        An entry key or backbone name (needed when the cache holds several).
    augment : True or str
        Which views group: True for the only one, else its key (``k5-...``) or
        its canonical augment spec (``crop=0.8,flip``).
    dtype : optional
        float32 (default) or float16.

    Returns
    -------
    Views

    Raises
    ------
    FeatcacheError
        If the entry has no (or no such) views, a view row fails its checksum,
        or some images have no views.
    """
    feats = load_features(cache_path, backbone, views=augment, dtype=dtype)
    with reading(cache_path) as f:
        entry = f[ROOT][pick_entry(f, backbone, cache_path)]
        g = entry[VIEWS][pick_views(entry, augment, str(Path(cache_path)))]
        return Views(feats.views, feats.paths, feats.sha256, str(g.attrs["augment"]),
                     int(g.attrs["seed"]), g.name.rsplit("/", 1)[-1], feats.backbone)
