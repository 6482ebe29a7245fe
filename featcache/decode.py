"""Decode and resize images for the backbone: a tf.data pipeline, PIL where TF falls short.

Most files take Keras's own path (``tf.io.decode_image`` with 3 channels,
``expand_animations=False``, then ``tf.image.resize`` bilinear without
antialiasing), so features match ``image_dataset_from_directory``. Files the
scan flagged (EXIF rotation in JPEG or PNG, alpha, CMYK, 16-bit, BMPs other
than uncompressed 24/32-bit, WebP and other formats) are decoded by PIL
instead, then resized the same way.

``fast_decode`` (opt-in) decodes JPEGs at 1/2, 1/4 or 1/8 scale in the DCT
domain (libjpeg's scaled IDCT; Pillow ``draft`` for JPEGs PIL decodes), the
smallest scale that keeps both sides at least the input size, then resizes as
usual. It is faster but NOT pixel-equal to Keras, so its features get their own
cache entry (see :func:`featcache.backbones.with_fast_decode`). Other formats
decode exactly as without it.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

_WHITE = (255, 255, 255, 255)


def to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL image as uint8 RGB: alpha composited on white, 16-bit scaled down."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba)
    elif im.mode.startswith("I"):  # 16-bit grayscale PNG/TIFF
        gray = np.asarray(im, dtype=np.float64) / 257.0
        return np.repeat(np.clip(np.rint(gray), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def pil_rgb(path: str, draft: int | None = None) -> np.ndarray:
    """Decode a file with PIL, applying its EXIF orientation (first frame only).

    ``draft``: a JPEG may be decoded at a reduced DCT scale whose sides stay at
    least ``draft`` pixels (``fast_decode``); other formats ignore it.
    """
    with Image.open(path) as im:
        if draft:
            im.draft(None, (draft, draft))  # a no-op for formats other than JPEG
        im.load()
        return to_rgb(ImageOps.exif_transpose(im))


def explain_failure(path: str) -> str:
    """Why a file could not be decoded, in words a user can act on."""
    try:
        pil_rgb(path)
    except Exception as exc:  # any decoder error is the answer we want
        return f"cannot decode: {exc}"
    return "TensorFlow's decoder rejected it (PIL can read it: re-save it as PNG or JPEG)"


def fast_jpeg(data, size: int):
    """Decode JPEG bytes at the smallest DCT scale (1, 1/2, 1/4, 1/8) keeping both sides >= size."""
    import tensorflow as tf
    short = tf.reduce_min(tf.io.extract_jpeg_shape(data)[:2])
    index = tf.add_n([tf.cast(short // r >= size, tf.int32) for r in (2, 4, 8)])
    return tf.switch_case(index, [lambda: tf.io.decode_image(data, 3, expand_animations=False)]
                          + [lambda r=r: tf.io.decode_jpeg(data, 3, ratio=r) for r in (2, 4, 8)])


def image_dataset(paths, use_pil, size: int, batch_size: int, expand=None,
                  threads: int | None = None, fast_decode: bool = False):
    """Batches of ``(images float32 (b, size, size, 3) in [0, 255], row indices)``.

    Undecodable files are dropped from the stream; callers find them as gaps in
    the row indices (see :func:`featcache.embedding.embed`). ``expand``, if
    given, maps ``(decoded uint8 image, row index)`` to a tuple whose first
    item stacks several images (m, size, size, 3); the stream is then unbatched,
    so batches hold images of several rows (augmented views, see
    :mod:`featcache.augment`). ``threads`` gives tf.data a private pool of that
    size (one op thread per decode), so decoding shares the cores with a forward
    pass run outside TensorFlow (OpenVINO). ``fast_decode``: JPEGs at a reduced
    DCT scale (see the module docstring; not pixel-equal to Keras).
    """
    import tensorflow as tf
    draft = size if fast_decode else None

    def tf_decode(path):
        data = tf.io.read_file(path)
        if fast_decode:
            img = tf.cond(tf.io.is_jpeg(data), lambda: fast_jpeg(data, size),
                          lambda: tf.io.decode_image(data, 3, expand_animations=False))
        else:
            img = tf.io.decode_image(data, channels=3, expand_animations=False)
        return tf.ensure_shape(img, [None, None, 3])

    def pil_decode(path):
        img = tf.numpy_function(lambda p: pil_rgb(os.fsdecode(p), draft), [path], tf.uint8,
                                stateful=False)
        return tf.ensure_shape(img, [None, None, 3])

    def load(path, pil, i):
        img = tf.cond(pil, lambda: pil_decode(path), lambda: tf_decode(path))
        if expand is not None:
            return expand(img, i)
        return tf.image.resize(img, (size, size), method="bilinear"), i

    # Beside OpenVINO, tf.data's autotuner misjudges the busy cores: half of the runs left
    # inference waiting 40% of the time (98 vs 160 images/s, 2 cores). Fixed sizes do not.
    parallel = int(threads) if threads else tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensor_slices((list(paths), list(use_pil), np.arange(len(paths))))
    ds = ds.map(load, num_parallel_calls=parallel, deterministic=True).ignore_errors()
    if expand is not None:
        ds = ds.unbatch()
    ds = ds.batch(batch_size).prefetch(2 if threads else tf.data.AUTOTUNE)
    if threads:
        options = tf.data.Options()
        options.autotune.enabled = False
        options.threading.private_threadpool_size = int(threads)
        options.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(options)
    return ds
