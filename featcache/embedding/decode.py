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
cache entry (see :func:`featcache.embedding.backbones.with_fast_decode`). Other formats
decode exactly as without it.
"""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageOps

from featcache.threads import available_cores

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


def pil_rgb(path, draft: int | None = None) -> np.ndarray:
    """Decode a file (path or file object) with PIL, applying its EXIF orientation (first frame only).

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


def _decoder(size: int, fast_decode: bool):
    """``(bytes, use_pil) -> uint8 (h, w, 3)``: TensorFlow's decoder, or PIL's for flagged files."""
    import tensorflow as tf
    draft = size if fast_decode else None

    def tf_decode(data):
        if fast_decode:
            return tf.cond(tf.io.is_jpeg(data), lambda: fast_jpeg(data, size),
                           lambda: tf.io.decode_image(data, 3, expand_animations=False))
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    def pil_decode(data):
        return tf.numpy_function(lambda b: pil_rgb(io.BytesIO(b), draft), [data], tf.uint8,
                                 stateful=False)

    def decode(data, pil):
        img = tf.cond(pil, lambda: pil_decode(data), lambda: tf_decode(data))
        return tf.ensure_shape(img, [None, None, 3])
    return decode


def _resize(img, size: int):
    import tensorflow as tf
    return tf.image.resize(img, (size, size), method="bilinear")


def _pipeline(columns, load, batch_size: int, threads, unbatch: bool = False):
    """``columns`` -> ``load`` (undecodable rows dropped) -> batches, on ``threads`` (or all cores)."""
    import tensorflow as tf
    # A private pool of fixed size, autotuner off: beside a forward pass that keeps the cores
    # busy, the autotuner starved it. Measured, 1,000 640x480 JPEGs on 2 cores: OpenVINO 98 or
    # 160 images/s from run to run with it, 157-162 without; TensorFlow 1.4x faster without.
    threads = int(threads or available_cores())
    ds = tf.data.Dataset.from_tensor_slices(columns)
    ds = ds.map(load, num_parallel_calls=threads, deterministic=True).ignore_errors()
    if unbatch:
        ds = ds.unbatch()
    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return ds.batch(batch_size).prefetch(2).with_options(options)


def image_dataset(paths, use_pil, size: int, batch_size: int, expand=None,
                  threads: int | None = None, fast_decode: bool = False):
    """Batches of ``(images float32 (b, size, size, 3) in [0, 255], row indices)``.

    Undecodable files are dropped from the stream; callers find them as gaps in
    the row indices (see :func:`featcache.embedding.run.embed`). ``expand``, if
    given, maps ``(decoded uint8 image, row index)`` to a tuple whose first
    item stacks several images (m, size, size, 3); the stream is then unbatched,
    so batches hold images of several rows (augmented views, see
    :mod:`featcache.embedding.augment`). ``threads``: tf.data's private decode pool (default:
    one thread per core; see :func:`featcache.embedding.runtime.thread_split`).
    ``fast_decode``: JPEGs at a reduced DCT scale (see the module docstring;
    not pixel-equal to Keras).
    """
    import tensorflow as tf
    decode = _decoder(size, fast_decode)

    def load(path, pil, i):
        img = decode(tf.io.read_file(path), pil)
        return expand(img, i) if expand is not None else (_resize(img, size), i)

    columns = (list(paths), list(use_pil), np.arange(len(paths)))
    return _pipeline(columns, load, batch_size, threads, unbatch=expand is not None)


def _read_deferred(path, rel):
    """``(bytes, sha256, use_pil)`` of a file the scan deferred, from its one read."""
    from featcache.embedding.scan import inspect_bytes
    with open(os.fsdecode(path), "rb") as f:
        data = f.read()
    image, failure = inspect_bytes(data, os.fsdecode(path), os.fsdecode(rel))
    if image is None:
        raise ValueError(failure[2])  # dropped from the stream; embed records why
    return data, image.sha256, image.use_pil


def file_dataset(files, size: int, batch_size: int, threads: int | None = None,
                 fast_decode: bool = False):
    """Batches of ``(images, row indices, sha256, use_pil)`` of scanned or deferred files.

    Files the scan deferred (:class:`~featcache.embedding.scan.ImageFile` with
    ``use_pil`` None) are hashed and sniffed here from the bytes that are
    decoded, so every file is read once. Files that cannot be read, are not
    images or cannot be decoded are dropped, as in :func:`image_dataset`.
    """
    import tensorflow as tf
    decode = _decoder(size, fast_decode)

    def deferred(path, rel):
        out = tf.numpy_function(_read_deferred, [path, rel], [tf.string, tf.string, tf.bool],
                                stateful=False)
        return tuple(tf.ensure_shape(t, []) for t in out)

    def load(path, rel, later, sha, pil, i):
        data, sha, pil = tf.cond(later, lambda: deferred(path, rel),
                                 lambda: (tf.io.read_file(path), sha, pil))
        return _resize(decode(data, pil), size), i, sha, pil

    columns = ([f.path for f in files], [f.rel for f in files],
               [f.use_pil is None for f in files], [f.sha256 for f in files],
               [bool(f.use_pil) for f in files], np.arange(len(files)))
    return _pipeline(columns, load, batch_size, threads)
