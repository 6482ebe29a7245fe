"""Export a trained head with its backbone: SavedModel, .keras, labels, metadata, parity.

MODEL_DIR is built in ``MODEL_DIR.tmp-<pid>`` and renamed into place only
after the parity check passed, so a failure writes nothing and an existing
model (replaced with ``force=True``) stays until the new one is complete.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from featcache.cache.layout import ROOT
from featcache.cache.read import pick_entry, reading
from featcache._version import __version__
from featcache.errors import FeatcacheError
from featcache.files import remove_stale_temps, replace_dir, temp_name, write_json
from featcache.model import parity
from featcache.model.graph import build_archive, head_dense, keras_model
from featcache.model.predict import SAVED_MODEL


def check_output(out_dir, force: bool) -> Path:
    """The output path, or FeatcacheError when it exists and ``force`` is False."""
    out = Path(out_dir).expanduser()
    if out.exists() and not force:
        raise FeatcacheError(f"output {out} already exists: pass --force (force=True) to "
                             "replace it; the old model is kept until the new one is complete")
    if out.exists() and not out.is_dir():
        raise FeatcacheError(f"output {out} is a file, not a model directory")
    try:  # the model is built beside its final place, so that folder must take files
        out.parent.mkdir(parents=True, exist_ok=True)
        writable = os.access(out.parent, os.W_OK | os.X_OK)
    except OSError as exc:
        raise FeatcacheError(f"output {out} cannot be written ({exc.strerror}); choose another "
                             "path; nothing was computed") from None
    if not writable:
        raise FeatcacheError(f"output {out} cannot be written (no write permission on "
                             f"{out.parent}); choose another path; nothing was computed")
    return out


def check_exportable(key: str, spec: dict) -> None:
    """FeatcacheError when an exported model cannot reproduce entry ``key``'s features.

    The exported model decodes like Keras and runs its backbone in TensorFlow
    f32, and export checks that it reproduces the cached features to
    :data:`featcache.model.parity.TOLERANCE`; fast-decode and bf16 entries never
    would (bf16: probabilities differ by ~1e-2, measured).
    """
    if spec.get("fast_decode"):
        raise FeatcacheError(f"cache entry {key} was embedded with fast decode, which the "
                             "exported model (Keras-exact decoding) cannot reproduce; train on "
                             "an entry embedded without it to export")
    if spec.get("precision", "f32") != "f32":
        raise FeatcacheError(f"cache entry {key} was embedded with precision={spec['precision']}, "
                             "but the exported model runs its backbone in f32 (TensorFlow), so it "
                             "cannot reproduce the cached features the head was trained on; "
                             "train on an entry embedded with precision=f32 to export")


def check_cache_exportable(cache, backbone: str | None = None) -> None:
    """:func:`check_exportable` for the entry ``backbone`` names in ``cache``, before training."""
    with reading(cache) as f:
        key = pick_entry(f, backbone, cache)
        spec = json.loads(f[ROOT][key].attrs["spec"])
    check_exportable(key, spec)


def rebuild_backbone(features, cache_fingerprint: str | None = None):
    """The cache entry's backbone, rebuilt from its spec; FeatcacheError if it is not the same.

    Random weights are rebuilt from the seed the spec records (caches from before
    featcache recorded it were embedded with the default seed, 0). Entries whose
    features the exported model cannot reproduce (fast decode, bf16) are refused.
    """
    from featcache.embedding.backbones import get_backbone
    from featcache.cache import entry_key
    spec = features.spec
    check_exportable(features.backbone, spec)
    if spec.get("source") == "keras":
        bb = get_backbone(spec["name"], weights=spec["weights"], seed=spec.get("seed") or 0)
    elif spec.get("source") == "hub":
        bb = get_backbone(spec["name"], image_size=int(spec["input_size"]))
    else:
        raise FeatcacheError(f"cache entry {features.backbone!r} has no backbone spec to export")
    same = (bb.fingerprint == cache_fingerprint if cache_fingerprint
            else entry_key(bb.spec.name, bb.fingerprint) == features.backbone)
    if not same:
        raise FeatcacheError(
            f"the backbone rebuilt from the cache's spec ({spec['name']}, weights={spec['weights']}) "
            f"has fingerprint {bb.fingerprint[:12]}, the cache entry {features.backbone} another: "
            "the weights file, seed= (for weights=none) or TensorFlow/Keras version changed; "
            "re-embed with the current backbone")
    return bb


def _entry(cache):
    from featcache.cache import cache_info
    return {e["key"]: e for e in cache_info(cache)["entries"]}


def _metadata(result, bb, par, sample_ref) -> dict:
    import keras
    import tensorflow as tf

    head = result.head
    params = {k: v for k, v in head.get_params().items() if isinstance(v, (int, float, str, bool))
              or v is None}
    return {"featcache_version": __version__, "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "backbone": {"entry": result.features.backbone, "fingerprint": bb.fingerprint,
                         "spec": bb.spec.to_dict()},
            "head": {"name": result.head_name, "class": type(head).__name__, "params": params},
            "class_weight": result.class_weight, "choice": result.choice.to_dict(),
            "labels": list(result.features.class_names), "n_train": len(result.features),
            "signatures": {"serve_bytes": "image_bytes: string (batch)",
                           "serve_uint8": "images: uint8 (batch, h, w, 3)",
                           "serve_image": "images: float32 (batch, S, S, 3) in [0, 255]"},
            "parity": {"saved_model": par.to_dict(), "reference": sample_ref},
            "tflite": {}}


def _write(tmp: Path, archive, kmodel, labels) -> None:
    import inspect
    # Keras before 3.4 has no `verbose` (and prints nothing); later ones print every endpoint.
    quiet = {"verbose": False} if "verbose" in inspect.signature(archive.write_out).parameters else {}
    archive.write_out(str(tmp / SAVED_MODEL), **quiet)
    if kmodel is not None:
        kmodel.save(tmp / "model.keras")
    write_json(tmp / "labels.json", list(labels))


def _tflite(tmp: Path, quantize, sample, ref, size) -> dict:
    from featcache.model import tflite
    from featcache.embedding.decode import image_dataset
    images = np.concatenate([im.numpy() for im, _ in
                             image_dataset(sample.files, sample.use_pil, size, 32)])
    out = {}
    for q in ["none", *[q for q in quantize if q != "none"]]:
        path = tflite.convert(tmp / SAVED_MODEL, tmp / tflite.VARIANTS[q], q)
        fig = parity.compare(ref, tflite.tflite_probabilities(path, images))
        out[q] = {"file": path.name, "bytes": path.stat().st_size,
                  "max_abs_diff": fig.max_abs_diff, "agreement": fig.agreement, "n": fig.n}
        why = tflite.refusal(q, fig)
        if why:  # never written as if usable: no file, the reason in featcache.json
            path.unlink()
            out[q].update(file=None, refused=why)
            warnings.warn(why, UserWarning, stacklevel=2)
    return out


def _build(tmp: Path, result, bb, smp, ref, tflite: bool, quantize) -> dict:
    """Write every file into ``tmp``, check parity on the written SavedModel; the metadata."""
    import tensorflow as tf
    features = result.features
    hw = head_dense(result.head)
    _write(tmp, build_archive(bb, hw, features.class_names), keras_model(bb, hw),
           features.class_names)
    module = tf.saved_model.load(str(tmp / SAVED_MODEL))
    par = parity.check(module, features, ref, smp, bb.spec.input_size)
    refs = [{"path": str(features.paths[i]), "sha256": str(features.sha256[i]),
             "probabilities": [float(v) for v in p]} for i, p in zip(smp.rows, ref)]
    meta = _metadata(result, bb, par, refs)
    if tflite:
        meta["tflite"] = _tflite(tmp, quantize, smp, ref, bb.spec.input_size)
    write_json(tmp / "featcache.json", meta)
    return meta


def export_model(result, out_dir, *, cache=None, data_dir=None, force: bool = False,
                 tflite: bool = False, quantize=(), sample: int = 64) -> dict:
    """Export a :class:`~featcache.model._train.TrainResult` to ``out_dir`` after a parity check.

    Parameters
    ----------
    result : TrainResult
        From :func:`featcache.train`.
    out_dir : str or Path
        MODEL_DIR to create; an existing one needs ``force=True``.
    cache : str or Path, optional
        The cache the head was trained on (gives the full fingerprint and data folder).
    data_dir : str or Path, optional
        Folder of the original images (default: the cache entry's data folder).
    force : bool
    tflite : bool
        Also write ``model.tflite`` plus one file per ``quantize`` variant.
    quantize : sequence of {"dynamic", "float16"}
    sample : int
        Images in the parity sample (stratified).

    Returns
    -------
    dict
        The metadata written to ``featcache.json``.
    """
    out = check_output(out_dir, force)
    features = result.features
    entry = _entry(cache).get(features.backbone, {}) if cache is not None else {}
    data_dir = data_dir or entry.get("data_dir")
    if data_dir is None:
        raise FeatcacheError("export needs the original images for its parity check: pass "
                             "data_dir= (or cache=)")
    bb = rebuild_backbone(features, entry.get("fingerprint"))
    head_dense(result.head)  # an unexportable head fails before any work
    smp = parity.gather(features, data_dir, sample)
    ref = result.head.predict_proba(features.X[smp.rows])
    remove_stale_temps(out)  # folders of exports killed mid-way
    tmp = temp_name(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        meta = _build(tmp, result, bb, smp, ref, tflite, quantize)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta
