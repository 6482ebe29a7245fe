"""Feature-space regularisers applied to training batches: mixup and Gaussian noise."""
from __future__ import annotations


def batch_regulariser(head):
    """tf.data map ``(step, batch) -> batch`` applying mixup and feature noise.

    Stateless random ops seeded by ``(head.seed, step)``: the same seed and
    data give the same batches, whatever ran before in the process.
    """
    import tensorflow as tf
    alpha, noise, seed = float(head.mixup_alpha), float(head.feature_noise), int(head.seed)

    def apply(step, batch):
        x, y, *sw = batch
        seeds = [tf.stack([tf.constant(4 * seed + i, tf.int64), step]) for i in range(4)]
        if alpha > 0:
            g1 = tf.random.stateless_gamma([1], seeds[0], alpha=alpha)
            g2 = tf.random.stateless_gamma([1], seeds[1], alpha=alpha)
            lam = g1 / (g1 + g2)
            perm = tf.argsort(tf.random.stateless_uniform(tf.shape(x)[:1], seeds[2]))
            x, y, *sw = (mix(a, tf.gather(a, perm), lam) for a in (x, y, *sw))
        if noise > 0:
            x = x + noise * tf.random.stateless_normal(tf.shape(x), seeds[3])
        return (x, y, *sw)

    return apply


def mix(a, b, lam):
    import tensorflow as tf
    lam = tf.cast(lam, a.dtype)
    return lam * a + (1 - lam) * b
