"""A tiny deterministic backbone whose features are O(1): for float16 and views tests.

Random-weight MobileNetV2 features are ~1e-11, below float16's range, and it is
slow; this one average-pools 8x8 blocks of a 16 px image into 12 numbers.
"""
from __future__ import annotations


def tiny_backbone(size: int = 16):
    import tensorflow as tf

    from featcache.backbones import Backbone, BackboneSpec
    dim = (size // 8) ** 2 * 3
    spec = BackboneSpec("tiny", "test", size, "scale_0_1", dim, "fixed")

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    def fn(x):
        return tf.reshape(tf.nn.avg_pool2d(x / 255.0, 8, 8, "VALID"), [-1, dim])
    return Backbone(spec, "7" * 64, fn)
