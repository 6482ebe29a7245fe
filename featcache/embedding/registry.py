"""The table of ``keras.applications`` backbones featcache knows by name.

Adding a backbone is one :class:`KerasEntry` line in :data:`KERAS_BACKBONES`;
the loader (:mod:`featcache.embedding.backbones`), ``featcache backbones`` and the tests
read everything from it. Each model is built with ``include_top=False`` and
global average pooling, so ``feature_dim`` is the width of its last
convolutional stage.

Preprocessing follows the Keras documentation of each family: MobileNetV2,
InceptionV3, ResNetV2, DenseNet and Xception need their module's
``preprocess_input``; MobileNetV3, EfficientNet, EfficientNetV2 and ConvNeXt
carry their preprocessing as layers inside the model, take RGB in [0, 255] and
their ``preprocess_input`` is a pass-through, so featcache calls nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BUILT_IN = "built-in"  # BackboneSpec.preprocessing of models that rescale [0, 255] themselves


@dataclass(frozen=True)
class KerasEntry:
    """One ``keras.applications`` backbone.

    Attributes
    ----------
    name : str, featcache's name (``--backbone``), e.g. ``"efficientnet_b0"``.
    constructor : str, the ``keras.applications`` function, e.g. ``"EfficientNetB0"``.
    module : str, its ``keras.applications`` sub-module (the family), e.g. ``"efficientnet"``.
    input_size : int, the square side ImageNet weights were trained at.
    feature_dim : int, width of the pooled features.
    builtin_preprocessing : bool, True when the model takes [0, 255] and
        preprocesses itself; False when ``<module>.preprocess_input`` is applied.
    weights_file : str, file name of the no-top ImageNet weights in Keras's
        download cache (``$KERAS_HOME/models``, default ``~/.keras/models``).
    min_size : int, the smallest input side the architecture accepts.
    """

    name: str
    constructor: str
    module: str
    input_size: int
    feature_dim: int
    builtin_preprocessing: bool
    weights_file: str
    min_size: int = 32

    @property
    def preprocessing(self) -> str:
        """What :class:`featcache.embedding.backbones.BackboneSpec` records as its preprocessing."""
        return BUILT_IN if self.builtin_preprocessing else f"keras:{self.module}.preprocess_input"


def _kernels(stem: str) -> str:
    return f"{stem}_weights_tf_dim_ordering_tf_kernels_notop.h5"


_E = KerasEntry
KERAS_BACKBONES = {e.name: e for e in (
    _E("mobilenet_v2", "MobileNetV2", "mobilenet_v2", 224, 1280, False,
       "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
    _E("inception_v3", "InceptionV3", "inception_v3", 299, 2048, False, _kernels("inception_v3"), 75),
    _E("mobilenet_v3_small", "MobileNetV3Small", "mobilenet_v3", 224, 576, True,
       "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    _E("mobilenet_v3_large", "MobileNetV3Large", "mobilenet_v3", 224, 960, True,
       "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
    _E("efficientnet_b0", "EfficientNetB0", "efficientnet", 224, 1280, True, "efficientnetb0_notop.h5"),
    _E("efficientnet_b1", "EfficientNetB1", "efficientnet", 240, 1280, True, "efficientnetb1_notop.h5"),
    _E("efficientnet_b2", "EfficientNetB2", "efficientnet", 260, 1408, True, "efficientnetb2_notop.h5"),
    _E("efficientnet_b3", "EfficientNetB3", "efficientnet", 300, 1536, True, "efficientnetb3_notop.h5"),
    _E("efficientnet_v2_b0", "EfficientNetV2B0", "efficientnet_v2", 224, 1280, True,
       "efficientnetv2-b0_notop.h5"),
    _E("efficientnet_v2_b1", "EfficientNetV2B1", "efficientnet_v2", 240, 1280, True,
       "efficientnetv2-b1_notop.h5"),
    _E("efficientnet_v2_b2", "EfficientNetV2B2", "efficientnet_v2", 260, 1408, True,
       "efficientnetv2-b2_notop.h5"),
    _E("efficientnet_v2_b3", "EfficientNetV2B3", "efficientnet_v2", 300, 1536, True,
       "efficientnetv2-b3_notop.h5"),
    _E("efficientnet_v2_s", "EfficientNetV2S", "efficientnet_v2", 384, 1280, True,
       "efficientnetv2-s_notop.h5"),
    _E("resnet50_v2", "ResNet50V2", "resnet_v2", 224, 2048, False, _kernels("resnet50v2")),
    _E("convnext_tiny", "ConvNeXtTiny", "convnext", 224, 768, True, "convnext_tiny_notop.h5"),
    _E("convnext_small", "ConvNeXtSmall", "convnext", 224, 768, True, "convnext_small_notop.h5"),
    _E("densenet121", "DenseNet121", "densenet", 224, 1024, False, _kernels("densenet121")),
    _E("xception", "Xception", "xception", 299, 2048, False, _kernels("xception"), 71),
)}


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights: ``$KERAS_HOME/models``, else ``~/.keras/models``
    (``/tmp/.keras/models`` when the home folder is read-only, as Keras does)."""
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"]).expanduser() / "models"
    home = os.path.expanduser("~")
    return Path(home if os.access(home, os.W_OK) else "/tmp") / ".keras" / "models"


def weights_cached(entry: KerasEntry) -> bool:
    """Whether the entry's ImageNet weights are already in Keras's local download cache."""
    path = keras_models_dir() / entry.weights_file
    return path.is_file() and path.stat().st_size > 0


def list_backbones() -> list[dict]:
    """Every named backbone with its input size, feature dim, preprocessing and weights state.

    Returns
    -------
    list of dict
        One per :data:`KERAS_BACKBONES` entry, in table order: ``name``,
        ``keras`` (the constructor), ``family``, ``input_size``,
        ``feature_dim``, ``preprocessing``, ``weights_cached`` (bool) and
        ``weights_path`` (where Keras keeps or would keep the file).
    """
    return [{"name": e.name, "keras": e.constructor, "family": e.module,
             "input_size": e.input_size, "feature_dim": e.feature_dim,
             "preprocessing": e.preprocessing, "weights_cached": weights_cached(e),
             "weights_path": str(keras_models_dir() / e.weights_file)} for e in KERAS_BACKBONES.values()]
