"""Evaluate an exported model on a held-out folder: the honest final number."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from featcache.errors import FeatcacheError
from featcache.model.predict import load_model


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
    from featcache.embedding.scan import scan_folder
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
