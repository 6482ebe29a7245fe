"""Helpers shared by the tests: generated images and features, small backbones, CLI runs.

Tests import helpers from here, never from one another; fixtures live in conftest.py.
"""
from __future__ import annotations

import dataclasses
import threading
from contextlib import contextmanager
from itertools import combinations

import numpy as np
from PIL import Image

from featcache.cache.features import Features

def write_images(root, classes: dict, size=(40, 32), fmt="JPEG", seed=0, ext=None):
    """Write ``classes[name]`` random images into ``root/name/``; returns relative paths."""
    rng = np.random.default_rng(seed)
    ext = ext or {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "GIF": "gif", "WEBP": "webp"}[fmt]
    rels = []
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            # Smooth gradients plus noise: realistic enough for JPEG, distinct per image.
            base = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
            img = Image.fromarray(base).resize(size, Image.BILINEAR)
            arr = np.clip(np.asarray(img, np.int16) + rng.integers(-20, 20, img.size[::-1] + (3,)),
                          0, 255).astype(np.uint8)
            rel = f"{name}/img_{i:03d}.{ext}"
            Image.fromarray(arr).save(root / rel, format=fmt)
            rels.append(rel)
    return rels


def clip_features(n_classes=3, clips_per_class=8, frames=5, d=16, signal=1.0, jitter=0.05, seed=0,
                  prefix="c"):
    """Features of video clips: frames of one clip are near-duplicates of its centre.

    Paths are ``<prefix>C/clipK/frame_F.jpg``, so ``--group-by folder`` finds the clips.
    """
    from featcache.cache.features import Features
    rng = np.random.default_rng(seed)
    means = rng.normal(0, signal, (n_classes, d))
    X, y, paths = [], [], []
    for c in range(n_classes):
        for k in range(clips_per_class):
            centre = means[c] + rng.normal(0, 1, d)
            for f in range(frames):
                X.append(centre + rng.normal(0, jitter, d))
                y.append(c)
                paths.append(f"{prefix}{c}/clip{k}/frame_{f:04d}.jpg")
    return Features(np.asarray(X, np.float32), np.asarray(y), np.asarray(paths),
                    [f"{prefix}{c}" for c in range(n_classes)],
                    np.array([f"{i:064x}" for i in range(len(y))]), backbone="synthetic",
                    spec={"name": "synthetic"})


def keras_reference(data_dir, size, preprocess, model):
    """What a user writes with plain Keras: the parity target."""
    import keras
    ds = keras.utils.image_dataset_from_directory(
        data_dir, image_size=(size, size), interpolation="bilinear", shuffle=False, batch_size=16)
    feats = [np.asarray(model(preprocess(x), training=False)) for x, _ in ds]
    return np.concatenate(feats), np.array(ds.file_paths), ds.class_names


def counting(backbone):
    """The same backbone on embed's default runtime, recording how many images each call sees."""
    from featcache.embedding.runtime import use_runtime
    backbone = use_runtime(backbone)  # converted first, so embed keeps the counting fn
    calls = []

    def fn(x):
        calls.append(int(x.shape[0]))
        return backbone.fn(x)
    return dataclasses.replace(backbone, fn=fn), calls


@contextmanager
def lock_held_in_thread(cache, timeout=60):
    """Hold ``cache``'s writer lock in another thread for the duration of the block."""
    from featcache.cache.write import writer_lock
    holding, release = threading.Event(), threading.Event()

    def hold():
        with writer_lock(cache):
            holding.set()
            release.wait(timeout)
    t = threading.Thread(target=hold)
    t.start()
    try:
        assert holding.wait(10), "the lock was not taken"
        yield
    finally:
        release.set()
        t.join()


def save_tiny_model(path, size=32, dim=8, seed=2):
    """A tiny SavedModel backbone (one seeded conv + mean) that loads in well under a second."""
    import tensorflow as tf

    class Tiny(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.random.stateless_normal([3, 3, 3, dim], seed=[1, seed]))

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        def __call__(self, x):
            return tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(x, self.w, 1, "SAME")), axis=[1, 2])
    tf.saved_model.save(Tiny(), str(path))
    return str(path)


def kill_after_segments(proc, partial, pattern: str, n: int, timeout: float) -> list:
    """SIGKILL ``proc`` once ``n`` journal segments match ``partial/pattern``; return them."""
    import time
    deadline = time.time() + timeout
    while len(list(partial.glob(pattern))) < n and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no cleanup code runs
    proc.wait()
    return list(partial.glob(pattern))


def tiny_backbone(size: int = 16):
    """A tiny deterministic backbone whose features are O(1), for float16 and views tests.

    Random-weight MobileNetV2 features are ~1e-11, below float16's range, and it is
    slow; this one average-pools 8x8 blocks of a 16 px image into 12 numbers.
    """
    import tensorflow as tf

    from featcache.embedding.backbones import Backbone, BackboneSpec
    dim = (size // 8) ** 2 * 3
    spec = BackboneSpec("tiny", "test", size, "scale_0_1", dim, "fixed")

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    def fn(x):
        return tf.reshape(tf.nn.avg_pool2d(x / 255.0, 8, 8, "VALID"), [-1, dim])
    return Backbone(spec, "7" * 64, fn)


def planted(n_clips=60, frames=6, n_single=60, d=64, n_classes=3, class_sep=0.15,
            frame_noise=0.15, seed=0):
    """Features of clips (k noisy frames around a centre) plus singleton images.

    The class signal (``class_sep``) is weak next to each clip's own identity,
    so a head can score well by recognising clips it has already seen.
    """
    rng = np.random.default_rng(seed)
    means = class_sep * rng.standard_normal((n_classes, d))
    X, y, clip, paths = [], [], [], []
    for c in range(n_clips):
        label, centre = c % n_classes, rng.standard_normal(d)
        noise = frame_noise * rng.uniform(0.5, 1.5)
        for f in range(frames):
            X.append(means[label] + centre + noise * rng.standard_normal(d))
            y.append(label), clip.append(c), paths.append(f"class{label}/clip{c:03d}_frame{f:02d}.png")
    for s in range(n_single):
        label = s % n_classes
        X.append(means[label] + rng.standard_normal(d))
        y.append(label), clip.append(n_clips + s), paths.append(f"class{label}/single{s:03d}.png")
    sha = np.array([f"{i:064x}" for i in range(len(y))])
    feats = Features(np.asarray(X, np.float32), np.asarray(y), np.asarray(paths),
                     [f"class{c}" for c in range(n_classes)], sha)
    return feats, np.asarray(clip)


def same_group_pairs(groups):
    pairs = set()
    for g in np.unique(groups):
        pairs.update(combinations(np.flatnonzero(groups == g).tolist(), 2))
    return pairs


def pairwise_precision_recall(true_groups, found_groups):
    """Precision and recall over pairs of rows that share a group."""
    truth, found = same_group_pairs(true_groups), same_group_pairs(found_groups)
    hits = len(truth & found)
    return hits / max(len(found), 1), hits / max(len(truth), 1)


def clean(n=300, d=32, n_classes=3, seed=0):
    """Independent images (no near-duplicates) with a clear class signal."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    X = 2.0 * rng.standard_normal((n_classes, d))[y] + rng.standard_normal((n, d))
    paths = np.array([f"c{c}/img{i:04d}.png" for i, c in enumerate(y)])
    sha = np.array([f"{i:064x}" for i in range(n)])
    return Features(X.astype(np.float32), y, paths, [f"c{c}" for c in range(n_classes)], sha)


def small_clips(**kw):
    """:func:`clip_features` small enough for CLI tests (classes k0, k1, k2)."""
    return clip_features(**{"clips_per_class": 6, "frames": 4, "d": 12, "signal": 0.8,
                            "prefix": "k", **kw})


def run(*args):
    """``featcache ARGS`` through click's CliRunner."""
    from click.testing import CliRunner

    from featcache.cli import cli
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def error_line(r):
    assert r.exit_code != 0
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output
    err = r.stderr.strip()
    assert err.startswith("Error:") and "\n" not in err
    return err
