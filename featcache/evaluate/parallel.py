"""Cross-validation folds in parallel threads, one BLAS thread each.

Folds are independent fits on the same arrays, so threads share ``X``
without copying it and numpy/BLAS release the GIL for the heavy work. Each
worker runs with a single BLAS thread (set once for the whole pool), so a
fold computes exactly what it computes alone: results equal ``n_jobs=1``
bit for bit, in the order the folds were given.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from featcache.errors import FeatcacheError
from featcache.threads import available_cores, blas_thread_limit, inherited_blas_limit


def check_n_jobs(n_jobs) -> int:
    """Number of worker threads for ``n_jobs``; FeatcacheError when invalid.

    Parameters
    ----------
    n_jobs : int or None
        A positive number of threads, or -1 / None for every available core.

    Returns
    -------
    int, at least 1.
    """
    if n_jobs is None or (isinstance(n_jobs, int) and not isinstance(n_jobs, bool)
                          and n_jobs == -1):
        return available_cores()
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise FeatcacheError(f"n_jobs={n_jobs!r} is not a number of threads: pass a positive "
                             f"number, or -1 for all {available_cores()} cores")
    return n_jobs


def fold_jobs(est, n_jobs) -> int:
    """Threads for the folds of ``est``: 1 when its fits must not share a process.

    A head whose class sets ``parallel_folds = False`` (the Keras softmax head:
    its fits share one compiled model and process-wide seeds, so they run one
    at a time anyway, and TensorFlow already spreads each fit over the cores)
    gets its folds run one after another.
    """
    n = check_n_jobs(n_jobs)
    return n if getattr(est, "parallel_folds", True) else 1


def map_folds(fn, items, n_jobs=-1, bar=None) -> list:
    """``[fn(item) for item in items]``, computed by up to ``n_jobs`` threads.

    Parameters
    ----------
    fn : callable
        The work of one fold; it must not modify shared state.
    items : iterable
        One entry per fold (e.g. ``(train, test)`` index pairs).
    n_jobs : int or None, default -1
        Worker threads; -1 or None uses every available core.
    bar : tqdm-like, optional
        ``bar.update()`` is called once per finished item, in order.

    Returns
    -------
    list, the results in the order of ``items``.
    """
    items = list(items)
    n = min(check_n_jobs(n_jobs), len(items))
    with blas_thread_limit(1):
        if n <= 1:
            return [_done(fn(item), bar) for item in items]
        pool = ThreadPoolExecutor(n, thread_name_prefix="featcache-fold")
        try:
            futures = [pool.submit(_in_worker, fn, item) for item in items]
            return [_done(f.result(), bar) for f in futures]
        finally:  # on an error, drop the folds not started yet
            pool.shutdown(wait=True, cancel_futures=True)


def _in_worker(fn, item):
    # the pool's caller holds the one-thread limit for the whole process
    with inherited_blas_limit(1):
        return fn(item)


def _done(result, bar):
    if bar is not None:
        bar.update()
    return result
