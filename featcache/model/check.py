"""Re-run an exported model's parity check against its images (``featcache export-check``)."""
from __future__ import annotations


import numpy as np

from featcache.errors import FeatcacheError
from featcache.cache.features import Features
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
