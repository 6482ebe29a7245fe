"""Choosing between loading a cache's features and streaming them from the file.

cv, sweep and audit call :func:`open_features`: it loads the features when the
run fits the memory budget, and otherwise (or when asked) returns features
whose ``X`` streams from the file (:class:`featcache.cache.streaming.CachedRows`).
Only the softmax head trains from a stream; other heads get one clear error,
or the features in memory (with a note) when they fit after all.
"""
from __future__ import annotations

import logging

from featcache.errors import FeatcacheError
from featcache.cache.memory import memory_budget as resolve_budget

log = logging.getLogger(__name__)

#: In-memory copies of the feature matrix a CV run holds at its peak: the
#: loaded matrix, a fold's ``X[train]`` copy and its standardised float32 copy.
CV_COPIES = 3


def open_features(cache_path, backbone: str | None = None, *, heads=None, streaming=None,
                  memory_budget=None, copies: int = CV_COPIES, views=False):
    """One cache entry's features, in memory or streamed from the file.

    Parameters
    ----------
    cache_path : str or Path
    backbone : str, optional
        Entry key or backbone name (needed when the cache holds several).
    heads : str, estimator, list or dict, optional
        The heads that will train on the features (as for ``cross_validate_heads``).
        Streaming works for ``"softmax"`` only.
    streaming : bool or None, default None
        True streams, False loads; None streams when the run would not fit in
        ``memory_budget`` (``copies`` x the feature matrix), with a note saying so.
    memory_budget : int or str, optional
        Bytes the features may take (``"4GB"``, ``"512MiB"``); default: half
        of the memory available now.
    copies : int, default 3
        Copies of the matrix the caller holds at its peak (the audit holds one).
    views : bool, default False
        Also load the entry's augmented views (``Features.views``). Views are
        always held in memory, so they do not stream.

    Returns
    -------
    Features
        ``X`` is an ndarray, or a :class:`featcache.cache.streaming.CachedRows`.

    Raises
    ------
    FeatcacheError
        When streaming is needed but a head cannot train from a stream, or
        as :func:`featcache.load_features`.
    """
    from featcache.cache import load_features
    from featcache.cache.streaming import open_rows
    if views:
        if streaming:
            raise FeatcacheError("streaming=True does not take views: augmented training "
                                 "holds the views in memory; drop one of the two")
        return load_features(cache_path, backbone, views=True)
    budget = resolve_budget(memory_budget)
    if not _should_stream(cache_path, backbone, heads, streaming, budget, copies):
        return load_features(cache_path, backbone)
    return open_rows(cache_path, backbone, budget=budget)


def _should_stream(cache_path, backbone, heads, streaming, budget, copies) -> bool:
    """Stream or load (see :func:`open_features`); logs the note, raises for other heads."""
    from featcache.cache.streaming import entry_shape, format_bytes
    n, d = entry_shape(cache_path, backbone)
    need = copies * n * d * 4
    fits = need <= budget
    if not ((not fits) if streaming is None else bool(streaming)):
        return False
    size = (f"{n} x {d} features need about {format_bytes(need)} in memory, the memory "
            f"budget is {format_bytes(budget)}")
    blocked = _non_streaming(heads)
    if blocked and fits:
        log.warning("only the softmax head trains from a stream; loading the features in "
                    "memory for %s instead (%s)", ", ".join(blocked), size)
        return False
    if blocked:
        raise FeatcacheError(f"{cache_path}: {size}, so they must stream from the file, and "
                             f"only the softmax head trains from a stream, not "
                             f"{', '.join(blocked)}: use the softmax head, or raise "
                             "memory_budget=SIZE")
    why = "as asked (streaming=True)" if streaming else f"since {size}"
    log.warning("streaming the features from %s %s", cache_path, why)
    return True


def _non_streaming(heads) -> list:
    """Names of the heads in ``heads`` that cannot train from streamed rows."""
    if heads is None:
        return []
    from featcache.evaluate._estimators import resolve_heads
    from featcache.heads._streaming import can_stream
    return [name for name, est in resolve_heads(heads, None, None).items() if not can_stream(est)]
