"""Re-run an exported model's parity check, and evaluate it on a held-out folder."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from featcache.errors import FeatcacheError
from featcache.features import Features
from featcache.model import parity
from featcache.model.predict import load_model


def _cache_entry(cache, meta) -> Features:
    """The cache's entry with the model's backbone fingerprint, or a clear error."""
    from featcache.cache import cache_info, load_features
    want = meta["backbone"]["fingerprint"]
    entries = cache_info(cache)["entries"]
    for e in entries:
        if e["fingerprint"] == want:
            return load_features(cache, backbone=e["key"])
    have = ", ".join(f"{e['key']} ({e['fingerprint'][:12]})" for e in entries) or "none"
    raise FeatcacheError(f"the model's backbone fingerprint {want[:12]} matches no entry of "
                         f"{cache} ({have}): this model was not exported from this cache")


def _recorded(meta) -> Features:
    """The parity sample recorded at export, as Features whose ``X`` holds the recorded
    probabilities (the reference), not feature values."""
    refs = meta["parity"]["reference"]
    probs = np.asarray([r["probabilities"] for r in refs])
    return Features(probs.astype(np.float32), probs.argmax(1), np.asarray([r["path"] for r in refs]),
                    list(meta["labels"]), np.asarray([r["sha256"] for r in refs]))


def check_export(model_dir, data_dir, cache=None, sample: int = 64, seed: int = 0):
    """Re-run the parity check of an exported model on the original images.

    Parameters
    ----------
    model_dir : str or Path
    data_dir : str or Path
        The folder the cache was embedded from.
    cache : str or Path, optional
        With a cache: a fresh stratified sample, reference = the model's head on the
        cached features (FeatcacheError if the model's backbone fingerprint is not in
        it). Without: the sample and probabilities recorded in ``featcache.json``.
    sample : int
    seed : int

    Returns
    -------
    Parity
    """
    model = load_model(model_dir)
    if cache is None:
        feats = _recorded(model.meta)
        smp = parity.gather(feats, data_dir, len(feats), seed)
        res = parity.compare(feats.X[smp.rows], parity.model_probabilities(model.module, smp),
                             smp.skipped)
        if not res.ok:
            raise FeatcacheError(f"parity check failed ({res}) against the probabilities recorded "
                                 "at export; pass --cache CACHE to find the step that differs")
        return res
    feats = _cache_entry(cache, model.meta)
    smp = parity.gather(feats, data_dir, sample, seed)
    ref = model.module.head(feats.X[smp.rows]).numpy()
    return parity.check(model.module, feats, ref, smp, model.input_size)


def evaluate_model(model_dir, test_dir, out_dir=None, batch_size: int = 64, n_boot: int = 1000,
                   seed: int = 0, progress=None):
    """Held-out evaluation of an exported model on a folder with one sub-folder per class.

    Test classes unknown to the model raise FeatcacheError; model classes absent from
    ``test_dir`` give a warning (their recall is undefined). With ``out_dir`` the
    report files (confusion and reliability PNGs, JSON, HTML) are written there.

    Returns
    -------
    (HeldoutReport, list of Path)
    """
    from featcache.dataset import scan_folder
    from featcache.evaluate.heldout import evaluate_predictions
    model = load_model(model_dir)
    scan = scan_folder(test_dir, progress=bool(progress), min_classes=1)
    unknown = sorted(set(scan.class_names) - set(model.labels))
    if unknown:
        raise FeatcacheError(f"{test_dir} has class folder(s) the model does not know: "
                             f"{', '.join(unknown)} (model classes: {', '.join(model.labels)}); "
                             "remove or rename them")
    absent = [c for c in model.labels if c not in scan.class_names]
    if absent:
        warnings.warn(f"{test_dir} has no folder for model class(es) {', '.join(absent)}: "
                      "their recall is undefined", stacklevel=2)
    from featcache.model.batches import predict_files
    files = [f.path for f in scan.files]
    probs, errors = predict_files(model, files, batch_size, progress,
                                  use_pil=[f.use_pil for f in scan.files])
    keep = [i for i, e in enumerate(errors) if e is None]
    if len(keep) < len(files):
        bad = next(i for i, e in enumerate(errors) if e is not None)
        warnings.warn(f"{len(files) - len(keep)} test image(s) could not be decoded and are left "
                      f"out (first: {files[bad]}: {errors[bad]})", stacklevel=2)
    index = {c: i for i, c in enumerate(model.labels)}
    y = np.asarray([index[scan.files[i].rel.split("/")[0]] for i in keep])
    probs = np.asarray([probs[i] for i in keep])
    report = evaluate_predictions(y, probs, list(model.labels),
                                  [files[i] for i in keep], n_boot=n_boot, seed=seed)
    written = []
    if out_dir is not None:
        from featcache.report.heldout import write_heldout_report
        written = write_heldout_report(report, Path(out_dir))
    return report, written
