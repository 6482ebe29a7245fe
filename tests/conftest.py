"""Shared fixtures: tiny generated image folders and one small backbone per session."""
from __future__ import annotations

import dataclasses
import os
import threading
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
    from featcache.features import Features
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
    from featcache.runtime import use_runtime
    backbone = use_runtime(backbone)  # converted first, so embed keeps the counting fn
    calls = []

    def fn(x):
        calls.append(int(x.shape[0]))
        return backbone.fn(x)
    return dataclasses.replace(backbone, fn=fn), calls


@contextmanager
def lock_held_in_thread(cache, timeout=60):
    """Hold ``cache``'s writer lock in another thread for the duration of the block."""
    from featcache.journal import writer_lock
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


@pytest.fixture(scope="session")
def trained_logreg(tmp_path_factory, mobilenet):
    """A random-weight MobileNetV2 cache of 18 JPEG/PNG/BMP/GIF images (one PNG with alpha,
    which embed decodes with PIL) and a logreg head trained on it, for the export tests."""
    from types import SimpleNamespace

    import featcache
    root = tmp_path_factory.mktemp("trained")
    data = root / "data"
    write_images(data, {"a": 6}, fmt="JPEG")
    write_images(data, {"b": 5}, fmt="PNG", seed=1)
    write_images(data, {"c": 3}, fmt="BMP", seed=2)
    write_images(data, {"c": 3}, fmt="GIF", seed=3)
    rgba = np.random.default_rng(4).integers(0, 256, (30, 20, 4)).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(data / "b" / "alpha.png")
    featcache.embed(data, root / "c.h5", backbone=mobilenet, progress=False)
    return SimpleNamespace(root=root, data=data, res=featcache.train(root / "c.h5", "logreg", folds=3))


@pytest.fixture(scope="session")
def mobilenet():
    """MobileNetV2 with seeded random weights, loaded once for the whole run."""
    from featcache.backbones import get_backbone
    return get_backbone("mobilenet_v2", weights="none")


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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Path of a tiny SavedModel backbone taking 32 px images (pass image_size=32)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def kill_after_segments(proc, partial, pattern: str, n: int, timeout: float) -> list:
    """SIGKILL ``proc`` once ``n`` journal segments match ``partial/pattern``; return them."""
    import time
    deadline = time.time() + timeout
    while len(list(partial.glob(pattern))) < n and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no cleanup code runs
    proc.wait()
    return list(partial.glob(pattern))
