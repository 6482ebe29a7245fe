"""Turning head names or estimators into seeded, unfitted estimators."""
from __future__ import annotations

import numpy as np
from sklearn.base import clone

from featcache.errors import FeatcacheError


def resolve_heads(heads, params: dict | None = None, seed: int | None = 0) -> dict:
    """``{name: unfitted estimator}`` from names, estimators, or a mapping.

    Parameters
    ----------
    heads : str, estimator, sequence of those, or dict name -> estimator
        Strings are head names from :data:`featcache.heads.HEADS`; a string may
        hold several comma-separated names (``"logreg,svm"``).
    params : dict, optional
        Constructor parameters applied to every head built from a name. The
        key ``"reg"`` is translated to each head's ``reg_param``.
    seed : int or None
        Sets ``random_state`` (or ``seed``) on heads built from a name, and on
        given estimators that leave it unset.
    """
    if isinstance(heads, dict):
        items = list(heads.items())
    else:
        if isinstance(heads, str):
            heads = [h.strip() for h in heads.split(",") if h.strip()]
        elif not isinstance(heads, (list, tuple)):
            heads = [heads]
        items = [(h, h) if isinstance(h, str) else (type(h).__name__, h) for h in heads]
    if not items:
        raise FeatcacheError("no head given: pass e.g. --head logreg")
    out = {}
    for name, head in items:
        if isinstance(head, str):
            out[_unique(name, out)] = _seeded(_build(head, params), seed, force=True)
        else:
            out[_unique(name, out)] = _seeded(clone(head), seed)
    return out


def _build(name, params):
    from featcache.heads import HEADS, get_head
    if name not in HEADS:
        raise FeatcacheError(f"unknown head {name!r}; available: {', '.join(sorted(HEADS))}")
    params = dict(params or {})
    if "reg" in params:
        reg = params.pop("reg")
        if reg is not None:
            params[HEADS[name].reg_param] = reg
    return get_head(name, **params)


def _unique(name, taken):
    i, out = 1, name
    while out in taken:
        i += 1
        out = f"{name}#{i}"
    return out


def _seeded(est, seed, force=False):
    if seed is None:
        return est
    p = est.get_params(deep=False)
    for key in ("random_state", "seed"):
        if key in p and (force or p[key] is None):
            return est.set_params(**{key: seed})
    return est


def reg_param(est, param: str | None = None) -> str:
    """Name of the regularisation parameter of ``est`` (``param`` wins)."""
    name = param or getattr(est, "reg_param", None)
    if name is None:
        raise FeatcacheError(f"{type(est).__name__} declares no reg_param: pass param= "
                             "(e.g. 'logisticregression__C' for a pipeline)")
    return name


def default_grid(est, param: str | None = None):
    """The head's ``default_grid`` (or its ``param_grids[param]``); FeatcacheError when none."""
    if param is not None and param != getattr(est, "reg_param", None):
        grid = getattr(est, "param_grids", {}).get(param)
        if grid is None:
            raise FeatcacheError(f"{type(est).__name__} has no default grid for param="
                                 f"{param!r}: pass grids=")
        return [float(v) for v in np.asarray(grid).ravel()]
    grid = getattr(est, "default_grid", None)
    if grid is None:
        raise FeatcacheError(f"{type(est).__name__} has no default_grid: pass grids=")
    return [float(v) for v in np.asarray(grid).ravel()]


def fit_path(est, X, y, values, param: str | None = None) -> list:
    """One fitted estimator per value of the regularisation parameter.

    Uses the head's warm-started ``fit_path`` when it has one (featcache
    heads), else refits a clone per value (any sklearn estimator).
    """
    if param is None and hasattr(est, "fit_path"):
        return est.fit_path(X, y, values)
    name = reg_param(est, param)
    return [clone(est).set_params(**{name: v}).fit(X, y) for v in values]
