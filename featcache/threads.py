"""The one BLAS/OpenMP thread limiter used by heads and evaluation loops.

Two OpenBLAS threads on a busy 2-core machine were measured 10-30x slower
than one, so heads fit with one thread by default. A CV loop limits threads
once around all its fits; each head's fit then finds the limit already in
place and does not pay threadpoolctl's per-call cost again.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager

def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


_STATE = threading.local()  # limits entered by this thread, innermost last
_CONTROLLER = None
_CONTROLLER_LOCK = threading.Lock()


def _controller():
    global _CONTROLLER
    with _CONTROLLER_LOCK:  # building a controller scans the loaded libraries: once
        if _CONTROLLER is None:
            from threadpoolctl import ThreadpoolController
            _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


@contextmanager
def blas_thread_limit(n_threads):
    """Limit BLAS and OpenMP thread pools to ``n_threads`` inside the block.

    Parameters
    ----------
    n_threads : int or None
        Threads to allow; ``None`` leaves the libraries' settings alone.
        Inside a block that already set the same limit, nothing is done.

    Examples
    --------
    >>> with blas_thread_limit(1):
    ...     pass  # every fit in here uses one BLAS thread
    """
    stack = getattr(_STATE, "stack", None)
    if stack is None:
        stack = _STATE.stack = []
    if n_threads is None or (stack and stack[-1] == int(n_threads)):
        yield
        return
    with _controller().limit(limits=int(n_threads)):
        stack.append(int(n_threads))
        try:
            yield
        finally:
            stack.pop()


@contextmanager
def inherited_blas_limit(n_threads):
    """Record, in a worker thread, a limit its parent thread holds for the process.

    Thread pools are process-wide, so a worker started inside the parent's
    :func:`blas_thread_limit` already runs under it; this only tells the
    worker's own fits so, without calling into the libraries again from
    several threads at once.
    """
    stack = getattr(_STATE, "stack", None)
    if stack is None:
        stack = _STATE.stack = []
    stack.append(int(n_threads))
    try:
        yield
    finally:
        stack.pop()


def active_blas_limit():
    """The limit set by the innermost :func:`blas_thread_limit` of this thread, or None."""
    stack = getattr(_STATE, "stack", None)
    return stack[-1] if stack else None
