"""Audit against real images: Keras's own validation subsets, and jittered clips
embedded through MobileNetV2 with random weights."""
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featcache.evaluate._audit import KERAS_DATASET, KERAS_FLOW, audit, keras_validation_mask
from helpers import pairwise_precision_recall

# Names chosen to trip naive orderings: upper before lower case, numbers as
# text, files beside and inside sub-folders, "sub-x" sorting before "sub/".
# Formats differ: .gif only for image_dataset_from_directory, .tiff only for
# flow_from_directory, .webp for neither.
LAYOUT = {
    "cat": ["B.png", "a10.png", "a2.png", "sub/z1.png", "sub/a1.png", "sub-x/q.png", "c.png",
            "anim.gif", "d.JPG"],
    "dog": ["x1.png", "x2.png", "sub2/m.png", "sub2/deeper/n.png", "y.png", "A.png",
            "scan.tiff", "pic.webp"],
}


def _write_layout(root):
    rng = np.random.default_rng(0)
    for cls, names in LAYOUT.items():
        for name in names:
            path = root / cls / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)
    paths = np.array(sorted(f"{c}/{n}" for c, names in LAYOUT.items() for n in names))
    y = np.array([sorted(LAYOUT).index(p.split("/")[0]) for p in paths])
    return paths, y


def _rel(root, files):
    return sorted(Path(os.path.relpath(f, root)).as_posix() for f in files)


@pytest.mark.filterwarnings("ignore:Using .*tiff.*:UserWarning")
@pytest.mark.parametrize("split", [0.2, 0.4, 0.5])
def test_flow_from_directory_model_matches_keras(tmp_path, split):
    paths, y = _write_layout(tmp_path)
    mask = keras_validation_mask(paths, y, split, KERAS_FLOW)
    # Keras 3 keeps ImageDataGenerator only in a private module; tf_keras (installed with
    # tensorflow-hub) is its public home.
    gen = pytest.importorskip("tf_keras.preprocessing.image").ImageDataGenerator
    it = gen(validation_split=split).flow_from_directory(
        str(tmp_path), target_size=(8, 8), subset="validation", shuffle=False)
    assert sorted(paths[mask]) == sorted(Path(f).as_posix() for f in it.filenames)


@pytest.mark.parametrize("split,seed", [(0.2, 123), (0.4, 1), (0.5, 1337)])
def test_image_dataset_from_directory_model_matches_keras(tmp_path, split, seed):
    import keras
    paths, y = _write_layout(tmp_path)
    mask = keras_validation_mask(paths, y, split, KERAS_DATASET, seed=seed)
    ds = keras.utils.image_dataset_from_directory(
        str(tmp_path), validation_split=split, subset="validation", seed=seed,
        image_size=(8, 8), verbose=False)
    assert sorted(paths[mask]) == _rel(tmp_path, ds.file_paths)


def write_clips(root, n_classes=2, clips=6, frames=5, singles=6, shift=3, noise=6.0, seed=0):
    """Each clip: one smooth random scene, ``frames`` crops shifted by <= ``shift`` px plus
    Gaussian pixel noise. Written at the backbone's 224 px so no resize blurs the jitter."""
    rng = np.random.default_rng(seed)
    size, margin = 224, 8

    def scene():
        small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
        return np.asarray(small.resize((size + 2 * margin,) * 2, Image.BICUBIC), np.float64)

    def save(arr, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)

    for c in range(n_classes):
        for k in range(clips):
            base = scene()
            for f in range(frames):
                dx, dy = rng.integers(-shift, shift + 1, 2)
                crop = base[margin + dy:margin + dy + size, margin + dx:margin + dx + size]
                save(crop + rng.normal(0, noise, crop.shape), root / f"c{c}" / f"clip{k}_f{f}.png")
        for s in range(singles):
            save(scene()[margin:margin + size, margin:margin + size], root / f"c{c}" / f"single{s}.png")


def test_jittered_frames_embedded_by_a_real_backbone_are_grouped(tmp_path, mobilenet):
    from featcache import embed, load_features
    write_clips(tmp_path / "data")
    embed(tmp_path / "data", tmp_path / "cache.h5", backbone=mobilenet, progress=False)
    feats = load_features(tmp_path / "cache.h5")
    truth = np.array([re.sub(r"_f\d+\.png$", "", p) for p in feats.paths])
    _, truth = np.unique(truth, return_inverse=True)
    report = audit(feats)
    nd = report.near_duplicates
    precision, recall = pairwise_precision_recall(truth, report.groups)
    msg = (f"pairwise precision {precision:.3f}, recall {recall:.3f}; threshold "
           f"{nd['threshold']:.5f} ({nd['threshold_source']}: {nd['reason']})")
    assert precision >= 0.95 and recall >= 0.95, msg
    assert nd["threshold_source"] == "adaptive", msg
    assert report.summary["n_near_duplicate_groups"] == 12, msg
