"""Shared fixtures: tiny generated image folders and one small backbone per session."""
from __future__ import annotations

import os

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


@pytest.fixture(scope="session")
def mobilenet():
    """MobileNetV2 with seeded random weights, loaded once for the whole run."""
    from featcache.backbones import get_backbone
    return get_backbone("mobilenet_v2", weights="none")
