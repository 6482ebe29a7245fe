"""Pieces of SoftmaxHead's training that its in-memory and streamed paths share."""
from __future__ import annotations

import numpy as np


def inner_split(head, y_enc):
    """Indices (train, val) of the early-stopping split; val may be empty."""
    n = len(y_enc)
    idx = np.arange(n)
    if not head.early_stopping or head.validation_fraction == 0:
        return idx, idx[:0]
    from sklearn.model_selection import train_test_split
    n_val = max(1, int(round(head.validation_fraction * n)))
    k = len(np.unique(y_enc))
    can_stratify = np.bincount(y_enc).min() >= 2 and k <= n_val <= n - k
    if n - n_val < 1:
        return idx, idx[:0]
    return train_test_split(idx, test_size=n_val, random_state=head.seed,
                            stratify=y_enc if can_stratify else None)


def loss_sums(z, Y, sw=None):
    """(weighted cross-entropy sum, weight sum, correct count, rows) of logits ``z``.

    Sums, so that validation rows streamed in blocks add up to the same mean.
    """
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -np.sum(Y * logp, axis=1, dtype=np.float64)
    w = np.ones(len(z)) if sw is None else np.asarray(sw, dtype=np.float64)
    return (float(loss @ w), float(w.sum()), int(np.sum(z.argmax(1) == Y.argmax(1))),
            len(z))
