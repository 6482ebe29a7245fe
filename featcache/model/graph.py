"""The exported computation: decode, resize, backbone, head, as TensorFlow endpoints.

Every head is a linear map to logits followed by a softmax:

- ``logreg``: the logits are ``x coef_ᵀ + intercept_`` (binary: ``[0, z]``, so the
  softmax is exactly ``[1 - σ(z), σ(z)]``);
- ``softmax``: the same Dense layer as :meth:`SoftmaxHead.to_keras`;
- ``svm``: margins ``x coef_ᵀ + intercept_`` fed to the calibrating logistic
  regression, whose linear map is composed with the SVM's.

``coef_``/``intercept_`` already hold the head's standardisation (folded in by
the heads), so the standardisation is part of the Dense layer.
"""
from __future__ import annotations

import numpy as np

from featcache.errors import FeatcacheError

ENDPOINTS = ("serve_bytes", "serve_uint8", "serve_image", "decode_resize", "features", "head")


def head_dense(head) -> tuple[np.ndarray, np.ndarray]:
    """``(W (d, k), b (k,))`` float32 with ``head.predict_proba(X) == softmax(X W + b)``."""
    coef = getattr(head, "coef_", None)
    if coef is None:
        raise FeatcacheError(f"{type(head).__name__} is not a fitted featcache head: "
                             "fit it (featcache.train) before exporting")
    W, b = np.asarray(coef, np.float64).T, np.asarray(head.intercept_, np.float64).ravel()
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
    return W.astype(np.float32), b.astype(np.float32)


def decode_one(data, size):
    """One encoded image -> float32 (size, size, 3), as embed's tf.io path decodes it."""
    import tensorflow as tf
    img = tf.io.decode_image(data, channels=3, expand_animations=False)
    img = tf.ensure_shape(img, [None, None, 3])
    return tf.image.resize(img, (size, size), method="bilinear")


def build_archive(backbone, W, b, class_names):
    """A ``keras.export.ExportArchive`` with every endpoint of :data:`ENDPOINTS`."""
    import keras
    import tensorflow as tf
    size, d = backbone.spec.input_size, backbone.spec.feature_dim
    module = tf.Module()
    # The backbone goes in frozen, as embed runs it (weights as graph constants): one copy of the weights, no per-variable save/restore functions, and the
    # same arithmetic as the cached features. If freezing failed, embed ran the plain
    # graph, and so does the export, with the variables tracked.
    fn = backbone.fn
    if fn is backbone.graph_fn:
        module.backbone = backbone.model
    module.kernel = tf.Variable(W, trainable=False, name="head_kernel")
    module.bias = tf.Variable(b, trainable=False, name="head_bias")
    labels = tf.constant(list(class_names))

    def head(x):
        return tf.nn.softmax(tf.matmul(x, module.kernel) + module.bias, axis=-1)

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


def keras_model(backbone, W, b):
    """A Keras model (resized float RGB in [0, 255] -> probabilities), or None for hub backbones.

    Only ``keras.applications`` backbones whose ``preprocess_input`` is the
    ``x / 127.5 - 1`` scaling (MobileNetV2, InceptionV3) can be rebuilt from
    plain layers; a ``.keras`` file cannot hold a TF Hub module.
    """
    import keras
    if backbone.spec.source != "keras":
        return None
    size, k = backbone.spec.input_size, W.shape[1]
    dense = keras.layers.Dense(k, activation="softmax", name="head")
    model = keras.Sequential([keras.Input((size, size, 3)),
                              keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess"),
                              backbone.model, dense])
    dense.set_weights([W, b])
    return model
