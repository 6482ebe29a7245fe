"""Training and predicting on rows streamed from a cache file (caches larger than memory).

The rows are a :class:`featcache.cache.streaming.CachedRows` (recognised by its
``blocks`` method, so this module imports nothing from the cache). Memory
stays bounded by the rows' ``budget``:

* the standardisation statistics come from one streaming pass
  (``StandardScaler.partial_fit`` per block: Chan's update in float64);
* training reads whole HDF5 chunks in a random order each epoch
  (``Generator.permutation`` seeded by the head's seed), standardises them,
  and a ``tf.data`` shuffle buffer of about a quarter of the budget mixes the
  rows before batching;
* the early-stopping loss and every prediction are computed block by block.

Every block read is checked against its rows' checksums (see
:meth:`CachedRows.blocks`).
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from featcache.heads._base import HeadInputError, row_weights
from featcache.heads._softmax_parts import inner_split, loss_sums


def is_streamed(X) -> bool:
    """True for rows streamed from a cache (:class:`featcache.cache.streaming.CachedRows`)."""
    return hasattr(X, "blocks") and hasattr(X, "chunk_rows")


def streamed_scaler(X):
    """A fitted ``StandardScaler`` from one streaming pass over ``X``'s rows."""
    from sklearn.preprocessing import StandardScaler
    scaler = StandardScaler()
    for _, block in X.blocks():
        scaler.partial_fit(block)
    return scaler


def map_blocks(est, X, fn):
    """``fn`` applied to ``X`` block by block, rows put back in ``X``'s order."""
    check_width(est, X)
    out = None
    for pos, block in X.blocks():
        res = fn(block)
        if out is None:
            out = np.empty((len(X),) + res.shape[1:], dtype=res.dtype)
        out[pos] = res
    return out


def check_width(est, X) -> None:
    """The ValueError sklearn gives when ``X`` has another number of features than in fit."""
    if X.shape[1] != est.n_features_in_:
        raise HeadInputError(f"X has {X.shape[1]} features, but {type(est).__name__} is "
                             f"expecting {est.n_features_in_} features as input")


def streamed_inputs(head, X, y):
    """(scaler, training rows, validation rows or None) for a SoftmaxHead on streamed ``X``.

    Sets ``classes_`` and ``n_features_in_`` on ``head`` as ``prepare_fit`` does.
    """
    from sklearn.utils.multiclass import check_classification_targets

    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        raise HeadInputError(f"y must be 1-d with one label per row of X ({len(X)}), "
                             f"got shape {y.shape}")
    check_classification_targets(y)
    head.classes_, y_enc = np.unique(y, return_inverse=True)
    if len(head.classes_) < 2:
        raise HeadInputError(f"{type(head).__name__} needs at least 2 classes to train, "
                             f"got 1 class: {head.classes_[0]!r}")
    head.n_features_in_ = X.shape[1]
    if hasattr(head, "feature_names_in_"):
        del head.feature_names_in_
    scaler = streamed_scaler(X) if head.standardize else None
    tr, va = inner_split(head, y_enc)
    sw = row_weights(head, y_enc)
    k = len(head.classes_)
    train = StreamedRows(X[tr], y_enc[tr], None if sw is None else sw[tr], scaler, k)
    val = (StreamedValidation(X[va], y_enc[va], None if sw is None else sw[va], scaler, k)
           if len(va) else None)
    return scaler, train, val


class StreamedRows:
    """Training rows read from the cache each epoch (see the module docstring)."""

    def __init__(self, X, y_enc, sw, scaler, k):
        self.X, self.y, self.sw, self.scaler, self.k = X, y_enc, sw, scaler, k
        self.n, self.error = len(X), None

    def chunks(self, rows, rng):
        """Yield standardised (X, one-hot Y[, weights]) per chunk, chunks in ``rng``'s order."""
        eye = np.eye(self.k, dtype=np.float32)
        for pos, block in self.X.blocks(rows=rows, rng=rng):
            Xs = block if self.scaler is None else self.scaler.transform(block)
            out = (np.asarray(Xs, dtype=np.float32), eye[self.y[pos]])
            yield out if self.sw is None else out + (self.sw[pos],)

    def kept_errors(self, rows, rng):
        """:meth:`chunks`, keeping an error for :func:`stream_errors` (tf.data wraps it)."""
        try:
            yield from self.chunks(rows, rng)
        except Exception as exc:
            self.error = exc
            raise

    def buffer_rows(self, batch) -> int:
        """Rows the shuffle buffer holds: a quarter of the budget, at least a batch."""
        row_bytes = 4 * (self.X.shape[1] + self.k + 1)
        return int(min(self.n, max(batch, self.X.budget // (4 * row_bytes))))

    def dataset(self, batch, seed):
        """Seeded ``tf.data`` pipeline: chunks -> rows -> shuffle buffer -> batches, repeated."""
        import tensorflow as tf
        d, rng = self.X.shape[1], np.random.default_rng(seed)
        rows = self.X.chunk_rows()
        spec = (tf.TensorSpec((None, d), tf.float32), tf.TensorSpec((None, self.k), tf.float32))
        if self.sw is not None:
            spec += (tf.TensorSpec((None,), tf.float32),)
        data = tf.data.Dataset.from_generator(lambda: self.kept_errors(rows, rng),
                                              output_signature=spec)
        return (data.unbatch().shuffle(self.buffer_rows(batch), seed=seed).batch(batch)
                .repeat().prefetch(2))


class StreamedValidation:
    """Early-stopping rows read from the cache at each epoch's end."""

    def __init__(self, X, y_enc, sw, scaler, k):
        self.rows = StreamedRows(X, y_enc, sw, scaler, k)

    def sums(self, W, b):
        """(loss sum, weight sum, correct, rows) over all validation rows, block by block."""
        total = np.zeros(4)
        for parts in self.rows.chunks(None, None):
            total += loss_sums(parts[0] @ W + b, *parts[1:])
        return float(total[0]), float(total[1]), int(total[2]), int(total[3])


@contextmanager
def stream_errors(rows):
    """Re-raise the error the rows' reader hit (a damaged row: one line), not TF's wrapper."""
    try:
        yield
    except Exception:
        if getattr(rows, "error", None) is not None:
            raise rows.error from None
        raise


def can_stream(est) -> bool:
    """Whether ``est`` trains from streamed rows (featcache's SoftmaxHead does)."""
    return bool(getattr(est, "_can_stream", False))
