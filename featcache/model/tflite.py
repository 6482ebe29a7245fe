"""TFLite variants, converted from the SavedModel's ``serve_image`` signature.

TFLite has no general image-bytes decoder, so the ``.tflite`` models take the
resized float32 RGB batch in [0, 255] (``images``, shape (1, S, S, 3)) and
return ``probabilities``; decode and resize on the device as featcache does
(bilinear, no antialiasing).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from featcache.errors import FeatcacheError
from featcache.files import write_bytes

VARIANTS = {"none": "model.tflite", "dynamic": "model_dynamic.tflite",
            "float16": "model_float16.tflite"}
# A variant is written only if, on the parity sample, it agrees with the SavedModel on
# at least this share of top-1 predictions and no probability moves by more than this.
MIN_AGREEMENT = 0.95
MAX_ABS_DIFF = 0.2


def convert(saved_model_dir, out_path, quantize: str = "none") -> Path:
    """Convert the SavedModel's ``serve_image`` signature to a ``.tflite`` file."""
    import tensorflow as tf
    if quantize not in VARIANTS:
        raise FeatcacheError(f"quantize must be one of {', '.join(VARIANTS)}, got {quantize!r}")
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir),
                                                    signature_keys=["serve_image"])
    if quantize != "none":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        conv.target_spec.supported_types = [tf.float16]
    try:
        blob = conv.convert()
    except Exception as exc:  # noqa: BLE001  the converter raises many types
        raise FeatcacheError(f"TFLite conversion ({quantize}) failed: {exc}") from None
    write_bytes(out_path, blob)
    return Path(out_path)


def interpreter(path):
    """LiteRT's interpreter (``ai-edge-litert``) when installed, else ``tf.lite.Interpreter``."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        import tensorflow as tf
        with warnings.catch_warnings():  # deprecated in favour of LiteRT, still in TF 2.21
            warnings.simplefilter("ignore", UserWarning)
            return tf.lite.Interpreter(model_path=str(path))
    return Interpreter(model_path=str(path))


def tflite_probabilities(path, images: np.ndarray) -> np.ndarray:
    """Run a ``.tflite`` model on resized float32 images, one at a time."""
    interp = interpreter(path)
    run = interp.get_signature_runner("serve_image")
    return np.concatenate([run(images=images[i:i + 1].astype(np.float32))["probabilities"]
                           for i in range(len(images))])


def refusal(quantize: str, fig) -> str | None:
    """Why variant ``quantize`` with parity ``fig`` must not be written, or None if usable."""
    if fig.agreement >= MIN_AGREEMENT and fig.max_abs_diff <= MAX_ABS_DIFF:
        return None
    return (f"TFLite variant {quantize!r} ({VARIANTS[quantize]}) not written: on {fig.n} sample "
            f"images its top-1 agreement with the SavedModel is {fig.agreement:.1%} and max "
            f"|Δp| {fig.max_abs_diff:.2g} (usable needs >= {MIN_AGREEMENT:.0%} and <= "
            f"{MAX_ABS_DIFF}); the rest of the model is exported")
