"""Seeded image augmentations for cached views: the spec parser and the tf.data ops.

An augmentation spec is a comma-separated list of operations, for example
``flip,crop=0.8,rotate=10,color=0.2,blur``:

``flip``
    mirror left-right with probability 1/2.
``crop=F``
    a random window whose sides are a fraction in ``[F, 1]`` of the decoded
    image's (0 < F <= 1), at a random place, resized to the backbone's input.
``rotate=DEG``
    rotate by a uniform angle in ``[-DEG, DEG]`` degrees (0 < DEG <= 180),
    bilinear, borders filled by reflection (as ``keras.layers.RandomRotation``).
``color=S``
    random brightness (delta up to ``S`` of the range), contrast and
    saturation (factors in ``[1 - S, 1 + S]``), 0 < S <= 1.
``blur`` or ``blur=SIGMA``
    Gaussian blur with a sigma drawn in ``[0.1, SIGMA]`` pixels (default 1.0,
    0.1 < SIGMA <= 5).

Operations always run in the order above, whatever order the spec lists them
in, so ``crop=0.8,flip`` and ``flip,crop=0.8`` are the same spec (one
canonical string, one fingerprint). Every random draw comes from
``tf.image.stateless_*`` / ``tf.random.stateless_*`` ops seeded by
:func:`view_seeds`, a function of (image sha256, view index, seed): the same
image always gets the same views, in any batch, run or resume.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from featcache.errors import FeatcacheError

DEFAULT_AUGMENT = "flip,crop=0.8,color=0.2"  # used when views are asked for without a spec
AUGMENT_VERSION = 1  # bump when an op's implementation changes: it is in the views fingerprint

# op -> (takes a value, default value, lowest (exclusive), highest (inclusive), what it means)
OPS = {
    "crop": (True, None, 0.0, 1.0, "a side fraction in (0, 1]"),
    "flip": (False, None, None, None, "no value"),
    "rotate": (True, None, 0.0, 180.0, "degrees in (0, 180]"),
    "color": (True, None, 0.0, 1.0, "a strength in (0, 1]"),
    "blur": (True, 1.0, 0.1, 5.0, "a sigma in pixels in (0.1, 5]"),
}
_USAGE = "flip, crop=F, rotate=DEG, color=S, blur[=SIGMA]"


@dataclass(frozen=True)
class Augment:
    """A parsed augmentation spec: ``ops`` maps op name -> value (None for ``flip``)."""

    ops: tuple  # ((name, value), ...) in application order

    @property
    def canonical(self) -> str:
        """The spec in application order with normalised numbers: what the fingerprint holds."""
        return ",".join(name if value is None else f"{name}={value:g}" for name, value in self.ops)

    def value(self, name: str):
        return dict(self.ops).get(name)

    def __contains__(self, name: str) -> bool:
        return name in dict(self.ops)


def _parse_op(part: str, spec: str):
    name, eq, raw = part.partition("=")
    name = name.strip().lower()
    if name not in OPS:
        raise FeatcacheError(f"unknown augmentation op {name!r} in augment={spec!r}: choose from "
                             f"{_USAGE}")
    takes, default, low, high, meaning = OPS[name]
    if not eq:
        if takes and default is None:
            raise FeatcacheError(f"augmentation op {name!r} needs a value ({name}=...): {meaning}")
        return name, default
    if not takes:
        raise FeatcacheError(f"augmentation op {name!r} takes no value, got {part!r}")
    try:
        value = float(raw)
    except ValueError:
        raise FeatcacheError(f"augmentation op {name!r}: {raw!r} is not a number ({meaning})") from None
    if not (math.isfinite(value) and low < value <= high):
        raise FeatcacheError(f"augmentation op {name}={raw} is out of range: {name} takes {meaning}")
    return name, value


def parse_augment(spec) -> Augment:
    """Parse and validate an augmentation spec such as ``"flip,crop=0.8,rotate=10"``.

    Parameters
    ----------
    spec : str or Augment
        Comma-separated ops (see the module docstring for the list).

    Returns
    -------
    Augment

    Raises
    ------
    FeatcacheError
        For an empty spec, an unknown op, a repeated op, a missing or
        malformed value, or a value out of range; the message names the op.
    """
    if isinstance(spec, Augment):
        return spec
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise FeatcacheError(f"augment={spec!r} names no operation: choose from {_USAGE}")
    ops = dict()
    for part in parts:
        name, value = _parse_op(part, spec)
        if name in ops:
            raise FeatcacheError(f"augmentation op {name!r} is given twice in augment={spec!r}")
        ops[name] = value
    return Augment(tuple((name, ops[name]) for name in OPS if name in ops))


def view_seeds(sha256: str, views: int, seed: int) -> np.ndarray:
    """The stateless seed pair of each view of one image: int64 array (views, 2).

    A hash of (image sha256, view index, seed), so a view never depends on
    batch composition, order, or which run embedded it.
    """
    out = np.empty((views, 2), np.int64)
    for k in range(views):
        digest = hashlib.sha256(f"{sha256}:{k}:{int(seed)}".encode()).digest()
        out[k] = np.frombuffer(digest[:16], dtype="<i8")
    return out


def _crop(img, fraction, seed, tf):
    shape = tf.shape(img)
    frac = tf.random.stateless_uniform([], seed, minval=fraction, maxval=1.0)
    h = tf.maximum(1, tf.cast(tf.round(frac * tf.cast(shape[0], tf.float32)), tf.int32))
    w = tf.maximum(1, tf.cast(tf.round(frac * tf.cast(shape[1], tf.float32)), tf.int32))
    seed2 = tf.random.experimental.stateless_fold_in(seed, 1)
    return tf.image.stateless_random_crop(img, tf.stack([h, w, 3]), seed2)


def _rotate(img, degrees, seed, tf):
    """Rotation about the centre with Keras RandomRotation's transform and fill."""
    angle = tf.random.stateless_uniform([], seed, -degrees, degrees) * (math.pi / 180.0)
    h, w = (tf.cast(tf.shape(img)[i], tf.float32) for i in (0, 1))
    cos, sin = tf.cos(angle), tf.sin(angle)
    x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
    y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
    transform = tf.stack([cos, -sin, x_off, sin, cos, y_off, 0.0, 0.0])[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=img[None], transforms=transform, output_shape=tf.shape(img)[:2], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")
    return out[0]


def _color(img, strength, seed, tf):
    fold = tf.random.experimental.stateless_fold_in
    x = img / 255.0  # the saturation op works in [0, 1]
    x = tf.image.stateless_random_brightness(x, strength, fold(seed, 1))
    x = tf.image.stateless_random_contrast(x, 1.0 - strength, 1.0 + strength, fold(seed, 2))
    x = tf.image.stateless_random_saturation(x, max(0.0, 1.0 - strength), 1.0 + strength,
                                             fold(seed, 3))
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def _blur(img, max_sigma, seed, tf):
    sigma = tf.random.stateless_uniform([], seed, minval=0.1, maxval=max_sigma)
    radius = int(math.ceil(3 * max_sigma))
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * tf.square(taps / sigma))
    k = k / tf.reduce_sum(k)
    x = tf.pad(img[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    kx = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, 3, 1])
    ky = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, 3, 1])
    x = tf.nn.depthwise_conv2d(x, kx, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(x, ky, [1, 1, 1, 1], "VALID")[0]


def augment_image(img, aug: Augment, seed, size: int):
    """One view of a decoded image: uint8 (h, w, 3) -> float32 (size, size, 3) in [0, 255].

    ``seed`` is a stateless seed pair (see :func:`view_seeds`); each op draws
    from its own fold of it. Runs inside tf.data (graph mode).
    """
    import tensorflow as tf
    seed = tf.cast(seed, tf.int64)

    def fold(i):
        return tf.random.experimental.stateless_fold_in(seed, i)
    if "crop" in aug:
        img = _crop(img, aug.value("crop"), fold(0), tf)
    x = tf.image.resize(img, (size, size), method="bilinear")  # as the clean view
    if "flip" in aug:
        x = tf.image.stateless_random_flip_left_right(x, fold(1))
    if "rotate" in aug:
        x = _rotate(x, aug.value("rotate"), fold(2), tf)
    if "color" in aug:
        x = _color(x, aug.value("color"), fold(3), tf)
    if "blur" in aug:
        x = _blur(x, aug.value("blur"), fold(4), tf)
    return tf.ensure_shape(tf.clip_by_value(x, 0.0, 255.0), [size, size, 3])
