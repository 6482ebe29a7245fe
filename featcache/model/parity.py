"""Parity: the exported model, run on original image files, must reproduce the cache.

Reference: the cached features through the head (``softmax(X W + b)``, the
head's own ``predict_proba``). Candidate: the SavedModel from the file's bytes
(``serve_bytes``), or, for files that embed decoded with PIL (EXIF rotation,
alpha, CMYK, 16-bit, WebP...), from the PIL-decoded pixels (``serve_uint8``).
When they differ, intermediate outputs name the step: decode/resize,
backbone, or head.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from featcache.errors import FeatcacheError

TOLERANCE = 1e-4


@dataclass
class Parity:
    """Figures of one parity run."""

    n: int                 # images compared
    max_abs_diff: float    # max |Δp| over images and classes
    agreement: float       # share of identical top-1 predictions
    skipped: int = 0       # sampled rows whose file is missing or changed

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= TOLERANCE and self.agreement == 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "tolerance": TOLERANCE}

    def __str__(self) -> str:
        return (f"{self.n} images: max |Δp| {self.max_abs_diff:.2e}, top-1 agreement "
                f"{self.agreement:.2%}" + (f" ({self.skipped} skipped: file missing or changed)"
                                           if self.skipped else ""))


def stratified_sample(y, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` row indices, classes represented in proportion (each at least once)."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    out, depth = [], 0
    while len(out) < min(n, len(y)):  # round-robin over classes, then proportional fill
        for members in per_class:
            if depth < len(members) and len(out) < n:
                out.append(members[depth])
        depth += 1
    return np.sort(np.asarray(out, dtype=np.int64))


@dataclass
class Sample:
    """Sampled rows whose files still exist unchanged under ``data_dir``."""

    rows: np.ndarray       # indices into the features
    files: list            # absolute paths
    use_pil: list          # embed decoded these with PIL
    skipped: int


def gather(features, data_dir, n: int, seed: int = 0) -> Sample:
    """Pick the parity sample and check each file is the one that was embedded."""
    from featcache.embedding.scan import inspect_file
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FeatcacheError(f"data folder {root} does not exist: pass the folder the cache "
                             "was embedded from")
    rows, files, use_pil, skipped = [], [], [], 0
    for i in stratified_sample(features.y, n, seed):
        path = root / features.paths[i]
        image, _ = inspect_file(path, str(features.paths[i]))  # reads and hashes it once
        if image is None or image.sha256 != features.sha256[i]:
            skipped += 1
            continue
        rows.append(i)
        files.append(str(path))
        use_pil.append(bool(image.use_pil))
    if not rows:
        raise FeatcacheError(f"none of the {skipped} sampled images is under {root} unchanged: "
                             "pass the folder the cache was embedded from")
    return Sample(np.asarray(rows), files, use_pil, skipped)


def model_probabilities(module, sample: Sample) -> np.ndarray:
    """End-to-end probabilities from the files, as a server would compute them."""
    import tensorflow as tf

    from featcache.embedding.decode import pil_rgb
    out = []
    for path, pil in zip(sample.files, sample.use_pil):
        if pil:
            res = module.serve_uint8(tf.constant(pil_rgb(path)[None]))
        else:
            res = module.serve_bytes(tf.constant([Path(path).read_bytes()]))
        out.append(res["probabilities"].numpy()[0])
    return np.asarray(out)


def compare(ref, got, skipped: int = 0) -> Parity:
    """Parity figures of ``got`` against ``ref`` probabilities."""
    ref, got = np.asarray(ref), np.asarray(got)
    return Parity(len(ref), float(np.max(np.abs(ref - got))),
                  float(np.mean(ref.argmax(1) == got.argmax(1))), skipped)


def diagnose(module, features, sample: Sample, size: int) -> str:
    """Which step differs: decode/resize, backbone or head (a sentence)."""
    import tensorflow as tf

    from featcache.embedding.decode import image_dataset
    X = features.X[sample.rows]
    host = np.concatenate([im.numpy() for im, _ in image_dataset(sample.files, sample.use_pil,
                                                                  size, 32)])
    feats = module.features(tf.constant(host)).numpy()
    scale = float(np.max(np.abs(X))) or 1.0
    feat_err = float(np.max(np.abs(feats - X))) / scale
    if feat_err > 1e-3:
        return (f"the backbone: features from embed's decoded pixels differ from the cached "
                f"ones by {feat_err:.1e} (relative); the weights are not those of the cache")
    plain = [not p for p in sample.use_pil]
    if any(plain):
        data = [Path(f).read_bytes() for f, p in zip(sample.files, plain) if p]
        px = np.concatenate([module.decode_resize(tf.constant([d])).numpy() for d in data])
        px_err = float(np.max(np.abs(px - host[plain])))
        if px_err > 0.5:
            return (f"decode/resize: the model's pixels differ from embed's by up to "
                    f"{px_err:.2f} (0-255 scale)")
    return "the head: the backbone and decoding agree, the head's output does not"


def check(module, features, ref, sample: Sample, size: int) -> Parity:
    """Run parity; FeatcacheError naming the step that differs when it fails."""
    result = compare(ref, model_probabilities(module, sample), sample.skipped)
    if not result.ok:
        raise FeatcacheError(f"parity check failed ({result}; tolerance {TOLERANCE:g}). The step "
                             f"that differs: {diagnose(module, features, sample, size)}")
    return result
