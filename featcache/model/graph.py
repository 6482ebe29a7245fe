"""The exported computation: decode, resize, backbone, head, as TensorFlow endpoints.

Every head is the standardisation ``(x - mean) / scale`` followed by a linear map
to logits and a softmax:

- ``logreg``: logits ``x_s W + b`` (binary: ``[0, z]``, so the softmax is exactly
  ``[1 - σ(z), σ(z)]``);
- ``softmax``: the Dense layer of :meth:`SoftmaxHead.to_keras`, in standardised units;
- ``svm``: margins ``x_s W + b`` fed to the calibrating logistic regression,
  whose linear map is composed with the SVM's.

The heads store ``coef_`` with the standardisation folded in; the export unfolds it
again: folded weights ``W / scale`` grow huge on near-constant feature dimensions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featcache.errors import FeatcacheError

ENDPOINTS = ("serve_bytes", "serve_uint8", "serve_image", "decode_resize", "features", "head")


@dataclass(frozen=True)
class HeadWeights:
    """float32 ``mean (d,)``, ``scale (d,)``, ``W (d, k)``, ``b (k,)`` of an exported head."""

    mean: np.ndarray
    scale: np.ndarray
    W: np.ndarray
    b: np.ndarray

    def probabilities(self, X) -> np.ndarray:
        """``softmax(((X - mean) / scale) W + b)`` in numpy, as the exported graph computes it."""
        z = ((np.asarray(X, np.float32) - self.mean) / self.scale) @ self.W + self.b
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def head_dense(head) -> HeadWeights:
    """The standardisation and linear map with ``head.predict_proba(X) == softmax(...)``."""
    coef = getattr(head, "coef_", None)
    if coef is None:
        raise FeatcacheError(f"{type(head).__name__} is not a fitted featcache head: "
                             "fit it (featcache.train) before exporting")
    Wr, br = np.asarray(coef, np.float64).T, np.asarray(head.intercept_, np.float64).ravel()
    d = Wr.shape[0]
    scaler = getattr(head, "scaler_", None)
    mean = np.zeros(d) if scaler is None else np.asarray(scaler.mean_, np.float64)
    scale = np.ones(d) if scaler is None else np.asarray(scaler.scale_, np.float64)
    W, b = Wr * scale[:, None], br + mean @ Wr  # unfold: x Wr + br == x_s W + b
    if hasattr(head, "calibrator_"):
        cal = head.calibrator_
        if cal is None:
            raise FeatcacheError("an svm head needs probability=True to export probabilities "
                                 "(featcache.train sets it)")
        A = np.asarray(cal.coef_, np.float64).T
        W, b = W @ A, b @ A + np.asarray(cal.intercept_, np.float64).ravel()
    if W.shape[1] == 1:  # binary: logits [0, z]
        W = np.hstack([np.zeros_like(W), W])
        b = np.concatenate([[0.0], b])
    return HeadWeights(*(a.astype(np.float32) for a in (mean, scale, W, b)))


# float16 TFLite stores every float constant as float16: normal numbers from 2**-14 to
# 65504, subnormals down to 2**-24. Power-of-two factors are exact in float32.
F16_STEP = 14


def pow2_exponent(values) -> int:
    """``k`` with ``values * 2**k`` of order 1 (median of the non-zero magnitudes)."""
    mags = np.abs(np.asarray(values, np.float64))
    mags = mags[mags > 0]
    return 0 if mags.size == 0 else int(-np.round(np.log2(np.median(mags))))


def pow2_steps(k: int) -> list:
    """float32 factors, each representable in float16, whose product is ``2**k``."""
    sign, k = (1 if k >= 0 else -1), abs(k)
    steps = [F16_STEP] * (k // F16_STEP) + ([k % F16_STEP] if k % F16_STEP else [])
    return [np.float32(2.0 ** (sign * s)) for s in steps]


@dataclass(frozen=True)
class Rescaled:
    """Head constants rescaled by powers of two so float16 can hold them.

    The graph computes ``((x 2^k - mean 2^k) / (scale 2^k)) (W 2^m) + b 2^m``, then
    multiplies the logits by ``2^-m``: the same numbers as :class:`HeadWeights` in float32
    (power-of-two products are exact), but with constants of order 1. Random-weight
    backbones give features around 1e-11, below float16's smallest subnormal (6e-8).
    """

    hw: HeadWeights
    feature_exp: int
    logit_exp: int

    @classmethod
    def of(cls, hw: HeadWeights) -> "Rescaled":
        k = pow2_exponent(hw.scale[hw.scale != 1.0]) if (hw.scale != 1.0).any() else 0
        m = pow2_exponent(hw.W)
        f64 = [a.astype(np.float64) for a in (hw.mean, hw.scale, hw.W, hw.b)]
        scaled = HeadWeights(*(a.astype(np.float32) for a in (
            f64[0] * 2.0 ** k, f64[1] * 2.0 ** k, f64[2] * 2.0 ** m, f64[3] * 2.0 ** m)))
        return cls(scaled, k, m)


def multiply_steps(x, k: int):
    """``x * 2**k`` as successive multiplications by float16-representable constants."""
    for f in pow2_steps(k):
        x = x * f
    return x


def decode_one(data, size):
    """One encoded image -> float32 (size, size, 3), as embed's tf.io path decodes it."""
    import tensorflow as tf
    img = tf.io.decode_image(data, channels=3, expand_animations=False)
    img = tf.ensure_shape(img, [None, None, 3])
    return tf.image.resize(img, (size, size), method="bilinear")


def build_archive(backbone, hw: HeadWeights, class_names):
    """A ``keras.export.ExportArchive`` with every endpoint of :data:`ENDPOINTS`."""
    import keras
    import tensorflow as tf
    size, d = backbone.spec.input_size, backbone.spec.feature_dim
    module = tf.Module()
    # The backbone goes in frozen, as embed runs it (weights as graph constants): one copy
    # of the weights, no per-variable save/restore functions, and the same arithmetic as
    # the cached features. If freezing failed, embed ran the plain
    # graph, and so does the export, with the variables tracked.
    fn = backbone.fn
    if fn is backbone.graph_fn:
        module.backbone = backbone.model
    rs = Rescaled.of(hw)
    hw = rs.hw
    module.mean = tf.Variable(hw.mean, trainable=False, name="feature_mean")
    module.scale = tf.Variable(hw.scale, trainable=False, name="feature_scale")
    module.kernel = tf.Variable(hw.W, trainable=False, name="head_kernel")
    module.bias = tf.Variable(hw.b, trainable=False, name="head_bias")
    labels = tf.constant(list(class_names))

    def head(x):
        standardised = (multiply_steps(x, rs.feature_exp) - module.mean) / module.scale
        # multiply-and-sum, not matmul: TFLite's dynamic-range variant turns matmuls into
        # int8 kernels, and standardised features are too uneven for one int8 range
        logits = tf.reduce_sum(standardised[:, :, None] * module.kernel[None], axis=1)
        return tf.nn.softmax(multiply_steps(logits + module.bias, -rs.logit_exp), axis=-1)

    def outputs(images):
        probs = head(fn(images))
        idx = tf.argmax(probs, axis=-1)
        return {"probabilities": probs, "class_index": idx, "label": tf.gather(labels, idx)}

    def decode_resize(data):
        return tf.map_fn(lambda x: decode_one(x, size), data,
                         fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))

    img_spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="images")
    fns = {
        "serve_bytes": (lambda data: outputs(decode_resize(data)),
                        tf.TensorSpec([None], tf.string, name="image_bytes")),
        "serve_uint8": (lambda x: outputs(tf.image.resize(x, (size, size), method="bilinear")),
                        tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")),
        "serve_image": (outputs, img_spec),
        "decode_resize": (decode_resize, tf.TensorSpec([None], tf.string, name="image_bytes")),
        "features": (fn, img_spec),
        "head": (head, tf.TensorSpec([None, d], tf.float32, name="features")),
    }
    archive = keras.export.ExportArchive()
    archive.track(module)
    for name in ENDPOINTS:
        f, spec = fns[name]
        archive.add_endpoint(name, tf.function(f), input_signature=[spec])
    return archive


# preprocess_input modules in "tf" mode: x / 127.5 - 1
_MINUS_ONE_TO_ONE = tuple(f"keras:{m}.preprocess_input"
                          for m in ("mobilenet_v2", "inception_v3", "resnet_v2", "xception"))


def keras_model(backbone, hw: HeadWeights):
    """A Keras model (resized float RGB in [0, 255] -> probabilities), or None.

    Only ``keras.applications`` backbones whose ``preprocess_input`` is the
    ``x / 127.5 - 1`` scaling (MobileNetV2, InceptionV3, ResNetV2, Xception) or
    that preprocess inside the model (MobileNetV3, EfficientNet(V2), ConvNeXt)
    are rebuilt from plain layers (None for others, e.g. DenseNet); a ``.keras``
    file cannot hold a TF Hub module.
    """
    import keras

    from featcache.embedding.registry import BUILT_IN
    pre = backbone.spec.preprocessing
    if backbone.spec.source != "keras" or pre not in (BUILT_IN, *_MINUS_ONE_TO_ONE):
        return None
    size, k = backbone.spec.input_size, hw.W.shape[1]
    dense = keras.layers.Dense(k, activation="softmax", name="head")
    # Functional, not Sequential: Keras 3.1 reloads a Sequential around a nested model with
    # its output wrapped in a list.
    inputs = keras.Input((size, size, 3))
    x = inputs if pre == BUILT_IN else keras.layers.Rescaling(1 / 127.5, offset=-1.0,
                                                               name="preprocess")(inputs)
    model = keras.Model(inputs, dense(backbone.model(x)))
    # standardisation folded into the Dense layer: keras' Normalization clamps scales below
    # 1e-7, which random-init features have; this float32 model is never quantized
    W = hw.W.astype(np.float64) / hw.scale.astype(np.float64)[:, None]
    dense.set_weights([W.astype(np.float32), (hw.b - hw.mean.astype(np.float64) @ W).astype(np.float32)])
    return model
