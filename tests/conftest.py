"""Shared fixtures: tiny generated image folders and one small backbone per session."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from helpers import save_tiny_model, write_images  # noqa: E402  (after the log level)


def _hardware() -> dict:
    """Reason to skip, per hardware marker, on this machine ("" when the hardware is here)."""
    from featcache.embedding.runtime import cpu_has_bf16, openvino_core
    core = openvino_core()
    return {"requires_openvino": "" if core is not None else "OpenVINO is not installed here",
            "requires_bf16": "" if core is not None and cpu_has_bf16(core) else
            "needs OpenVINO and a CPU with bf16 (avx512_bf16 or AMX)"}


def pytest_collection_modifyitems(config, items):
    marked = [i for i in items if any(i.get_closest_marker(m) for m in
                                      ("requires_openvino", "requires_bf16"))]
    if not marked:
        return
    reasons = _hardware()
    for item in marked:
        for name, why in reasons.items():
            if item.get_closest_marker(name) and why:
                item.add_marker(pytest.mark.skip(reason=why))


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
    from featcache.embedding.backbones import get_backbone
    return get_backbone("mobilenet_v2", weights="none")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Path of a tiny SavedModel backbone taking 32 px images (pass image_size=32)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


