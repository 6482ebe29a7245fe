"""Registry of frozen feature extractors: a spec for each, and its loader.

Keras backbones come from ``keras.applications`` with ``include_top=False``
and global average pooling, and are always called with ``training=False``.
TF Hub handles and local SavedModel directories go through ``hub.load``
(``hub.KerasLayer`` cannot sit in a Keras 3 model, tensorflow/hub#903).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from featcache.errors import FeatcacheError
from featcache.embedding.registry import KERAS_BACKBONES

logger = logging.getLogger(__name__)

RESIZE = "bilinear"  # tf.image.resize default, as in image_dataset_from_directory
# v2: PNG EXIF orientation and BMPs TF cannot decode (16-bit, RLE...) go through PIL.
DECODER = "tf.io.decode_image, PIL for EXIF/alpha/CMYK/16-bit/other formats; v2"
# fast_decode=True: JPEGs at a DCT scale 1/2..1/8 keeping both sides >= the input size.
FAST_DECODER = "JPEG DCT-domain downscale (decode_jpeg ratio / PIL draft) to >= input size; v1"


@dataclass(frozen=True)
class BackboneSpec:
    """Everything that describes a backbone's features, except the weight values."""

    name: str
    source: str            # "keras" or "hub"
    input_size: int        # square side in pixels
    preprocessing: str     # "keras:<module>.preprocess_input" or "scale_0_1"
    feature_dim: int
    weights: str           # "imagenet", "none", a weights file, or the hub handle
    resize: str = RESIZE
    seed: int | None = None  # weights="none" only: the seed of the random init
    precision: str = "f32"   # "bf16": OpenVINO reduced precision, its own cache entry
    fast_decode: bool = False  # JPEG DCT-domain downscaling: not pixel-equal to Keras

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["seed"] is None:
            del d["seed"]  # keeps the fingerprints of seedless specs as they were
        if d["precision"] == "f32":
            del d["precision"]  # f32 from any runtime shares the entry it always had
        if not d["fast_decode"]:
            del d["fast_decode"]  # likewise exact decoding, the default
        return d


@dataclass(frozen=True)
class Backbone:
    """A loaded backbone: ``fn`` maps float32 RGB in [0, 255] (b, s, s, 3) to (b, d)."""

    spec: BackboneSpec
    fingerprint: str
    fn: Callable
    # for export: the Keras model or hub object behind ``fn``, and ``fn`` before freezing
    model: object = None
    graph_fn: Callable = None
    runtime: str = "tensorflow"  # engine behind ``fn``: see featcache.embedding.runtime.use_runtime


def _fingerprint(spec: BackboneSpec, weights_digest: str) -> str:
    import keras
    import tensorflow as tf
    blob = {"spec": spec.to_dict(), "weights_sha256": weights_digest, "decoder": DECODER,
            "tensorflow": tf.__version__, "keras": keras.__version__}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def variant_fingerprint(fingerprint: str, spec_dict: dict, **extra) -> str:
    """The fingerprint of a variant (bf16, fast decode): a different entry, never mixed rows."""
    blob = {"base": fingerprint, "spec": spec_dict, **extra}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def with_fast_decode(backbone: Backbone) -> Backbone:
    """``backbone`` with fast JPEG decoding: its own spec field and fingerprint (cache entry).

    Its features differ slightly from Keras's (see :mod:`featcache.embedding.decode`), so a
    note says so.
    """
    logger.warning("fast decode is on: JPEGs are decoded at a reduced DCT scale, which is "
                   "faster but breaks exact parity with Keras (features differ slightly); they "
                   "are cached in an entry of their own")
    if backbone.spec.fast_decode:
        return backbone
    spec = replace(backbone.spec, fast_decode=True)
    fingerprint = variant_fingerprint(backbone.fingerprint, spec.to_dict(), decoder=FAST_DECODER)
    return replace(backbone, spec=spec, fingerprint=fingerprint)


def _hash_arrays(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()


def _hash_dir(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _freeze(fn) -> Callable:
    """Inline the weights as constants so grappler folds batch norm into the convolutions.

    Measured here: MobileNetV2's forward pass ran about 1.3x faster frozen, with
    features equal to 3e-7 relative. Falls back to the plain function, and logs
    why, when the graph cannot be converted (ops with resources, e.g. hash tables).
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    try:
        frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    except (ValueError, TypeError, LookupError, NotImplementedError, tf.errors.OpError) as exc:
        logger.info("could not freeze the backbone graph (%s: %s); running it unfrozen: same "
                    "features, about 1.3x slower", type(exc).__name__, exc)
        return fn
    return lambda x: frozen(tf.convert_to_tensor(x, tf.float32))[0]


def _build_keras(name: str, weights: str, seed: int, size: int):
    import keras
    ctor = getattr(keras.applications, KERAS_BACKBONES[name].constructor)
    kwargs = dict(include_top=False, pooling="avg", input_shape=(size, size, 3))
    if weights == "imagenet":
        try:
            return ctor(weights="imagenet", **kwargs)
        except Exception as exc:  # Keras raises a bare Exception on a failed download
            if not is_network_error(exc):
                exc.add_note(f"featcache: while getting ImageNet weights for {name}")
                raise
            logger.debug("ImageNet weights for %s: download failed", name, exc_info=True)
            raise FeatcacheError(
                f"could not get ImageNet weights for {name} ({exc}). Offline? Pass a local "
                f"weights file with weights=PATH, or weights=none for random weights") from None
    keras.utils.set_random_seed(seed)  # random init must be reproducible for resume
    model = ctor(weights=None, **kwargs)
    if weights != "none":
        path = weights_file(weights)
        try:
            model.load_weights(str(path))
        except (ValueError, OSError, KeyError, TypeError) as exc:  # wrong file, shapes or layers
            logger.debug("loading %s into %s failed", path, name, exc_info=True)
            raise FeatcacheError(f"could not load weights from {path} into {name}: {exc}") from None
    return model


def load_keras_backbone(name: str, weights: str = "imagenet", seed: int = 0,
                        image_size: int | None = None) -> Backbone:
    """A frozen ``keras.applications`` backbone (an entry of ``KERAS_BACKBONES``).

    ``image_size`` overrides the entry's input side (at least its ``min_size``),
    for tiny random-weight models in tests; the size is part of the spec, so it
    makes its own cache entry. ImageNet weights were trained at the default size.
    """
    import importlib

    import tensorflow as tf
    if name not in KERAS_BACKBONES:
        raise FeatcacheError(f"unknown keras backbone {name!r}: choose one of {', '.join(KERAS_BACKBONES)}")
    entry = KERAS_BACKBONES[name]
    size = int(image_size or entry.input_size)
    if size < entry.min_size:
        raise FeatcacheError(f"{name} takes images of at least {entry.min_size} px, "
                             f"not image_size={image_size}")
    model = _build_keras(name, weights, seed, size)
    model.trainable = False
    if model.output_shape[-1] != entry.feature_dim:  # the table is wrong for this Keras version
        raise FeatcacheError(f"{name}: keras.applications.{entry.constructor} gives "
                             f"{model.output_shape[-1]}-d features, featcache's registry says "
                             f"{entry.feature_dim}; please report this with your Keras version")
    if entry.builtin_preprocessing:  # rescaling layers inside the model; preprocess_input is a no-op
        preprocess = tf.identity
    else:
        preprocess = importlib.import_module(f"keras.applications.{entry.module}").preprocess_input
    ident = weights if weights in ("imagenet", "none") else str(Path(weights).expanduser().resolve())
    spec = BackboneSpec(name, "keras", size, entry.preprocessing, entry.feature_dim, ident,
                        seed=int(seed) if weights == "none" else None)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    def fn(x):
        return model(preprocess(x), training=False)

    digest = _hash_arrays(w.numpy() for w in model.weights)
    return Backbone(spec, _fingerprint(spec, digest), _freeze(fn), model, fn)


def _hub_callable(obj, handle: str):
    import tensorflow as tf
    if callable(obj):
        return obj
    for sig in ("default", "serving_default"):
        if sig in getattr(obj, "signatures", {}):
            f = obj.signatures[sig]

            def call(x, f=f):
                out = f(tf.constant(x) if not tf.is_tensor(x) else x)
                return next(iter(out.values())) if len(out) == 1 else out["default"]
            return call
    raise FeatcacheError(f"{handle} is neither callable nor has a 'default'/'serving_default' signature")


def is_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a failed download or connection."""
    import socket
    from urllib.error import URLError
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (URLError, ConnectionError, TimeoutError, socket.gaierror)):
            return True
        if str(exc).startswith("URL fetch failure"):  # keras.utils.get_file's bare Exception
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _load_hub(handle: str):
    """``(local path, loaded object)`` for a handle, or a FeatcacheError saying what to do."""
    from urllib.error import HTTPError

    import tensorflow as tf
    import tensorflow_hub as hub
    try:
        local = Path(hub.resolve(handle))
        return local, hub.load(str(local))
    except HTTPError as exc:
        logger.debug("TF Hub module %s", handle, exc_info=True)
        raise FeatcacheError(f"no TF Hub module at {handle} (HTTP {exc.code} {exc.reason}): "
                             "check the handle given as backbone=...") from None
    except (ValueError, OSError, tf.errors.OpError) as exc:  # bad handle, network, missing files
        logger.debug("TF Hub module %s", handle, exc_info=True)
        if "://" not in handle:
            message = (f"{handle} is not a readable SavedModel directory ({exc}): pass "
                       "backbone=DIR, a folder written by tf.saved_model.save")
        elif is_network_error(exc):
            message = (f"could not download TF Hub module {handle} ({exc}). Offline? Download "
                       "it once and pass the local SavedModel directory as backbone=DIR")
        else:
            message = (f"could not load TF Hub module {handle} ({exc}): check the handle "
                       "given as backbone=...")
        raise FeatcacheError(message) from None


def load_hub_backbone(handle: str, image_size: int = 224) -> Backbone:
    """A TF Hub handle or local SavedModel that maps [0, 1] RGB images to feature vectors."""
    import tensorflow as tf
    local, obj = _load_hub(handle)
    call = _hub_callable(obj, handle)
    probe = call(tf.zeros([1, image_size, image_size, 3]))
    if len(probe.shape) != 2:
        raise FeatcacheError(f"{handle} returns shape {tuple(probe.shape)}; featcache needs a "
                             "feature-vector module returning (batch, dim)")
    spec = BackboneSpec(handle, "hub", image_size, "scale_0_1", int(probe.shape[-1]), handle)

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32)])
    def fn(x):
        return call(x / 255.0)

    return Backbone(spec, _fingerprint(spec, _hash_dir(local)), _freeze(fn), obj, fn)


def weights_file(weights) -> Path:
    """A local weights file's path, or FeatcacheError when there is none."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FeatcacheError(f"weights file {path} does not exist")
    return path


def resolve_backbone(backbone: str = "mobilenet_v2", weights: str | None = None,
                     image_size: int | None = None, seed: int = 0) -> Callable[[], Backbone]:
    """Check backbone arguments without loading anything; return the loader.

    Lets ``embed`` reject a typo before it hashes a whole folder.
    Parameters are those of :func:`get_backbone`.
    """
    if backbone in KERAS_BACKBONES:
        size = KERAS_BACKBONES[backbone].input_size
        if image_size not in (None, size):
            raise FeatcacheError(f"{backbone} takes {size} px images, not image_size={image_size}")
        weights = weights or "imagenet"
        if weights not in ("imagenet", "none"):
            weights_file(weights)
        return lambda: load_keras_backbone(backbone, weights, seed)
    if backbone.startswith(("http://", "https://", "gs://")) or Path(backbone).expanduser().is_dir():
        if weights not in (None, "imagenet"):
            raise FeatcacheError(f"weights={weights} applies to keras backbones only; a TF Hub "
                                 "module or SavedModel carries its own weights")
        handle = backbone if "://" in backbone else str(Path(backbone).expanduser().resolve())
        return lambda: load_hub_backbone(handle, image_size or 224)
    raise FeatcacheError(f"unknown backbone {backbone!r}: choose a name `featcache backbones` lists "
                         f"({', '.join(KERAS_BACKBONES)}), a TF Hub handle (https://tfhub.dev/...) "
                         "or a local SavedModel directory")


def get_backbone(backbone: str = "mobilenet_v2", weights: str | None = None,
                 image_size: int | None = None, seed: int = 0) -> Backbone:
    """Resolve a backbone by name, TF Hub handle, or SavedModel directory.

    Parameters
    ----------
    backbone : str
        A name from :data:`featcache.embedding.registry.KERAS_BACKBONES` (``mobilenet_v2``, 224 px,
        1280-d; ``efficientnet_b0``; ...; ``featcache backbones`` lists them), a TF Hub
        handle (``https://tfhub.dev/...``) or a local SavedModel directory.
    weights : str, optional
        Keras backbones only: ``imagenet`` (default; Keras downloads and caches it under
        ``~/.keras/models``), ``none`` (random init, seeded), or a path to a weights file.
    image_size : int, optional
        Hub modules only: input side in pixels (default 224).
    seed : int
        Seed for ``weights="none"``.

    Returns
    -------
    Backbone
    """
    return resolve_backbone(backbone, weights, image_size, seed)()
