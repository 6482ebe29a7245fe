"""Run a loaded model over files with embed's input pipeline; bad files become reasons."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from featcache.embedding.scan import inspect_file
from featcache.embedding.decode import explain_failure, image_dataset


def sniff(files):
    """``(ok indices, use_pil flags, {index: reason})`` for a list of file paths."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(_inspect, files))
    ok, use_pil, errors = [], [], {}
    for i, (image, reason) in enumerate(results):
        if image is None:
            errors[i] = reason
        else:
            ok.append(i)
            use_pil.append(image.use_pil)
    return ok, use_pil, errors


def _inspect(path):
    p = Path(path)
    if not p.is_file():
        return None, ("no such file" if not p.exists() else "not a file")
    image, failure = inspect_file(p, p.name)
    return image, None if failure is None else failure[2]


def predict_files(model, files, batch_size: int, progress=None, use_pil=None):
    """Probabilities (or None) and error (or None) per file, in input order.

    Files are decoded and resized exactly as ``featcache embed`` does (same
    tf.data pipeline), then fed to the model's ``serve_image`` signature.
    ``use_pil`` (one flag per file) skips sniffing files a scan already inspected.
    """
    if use_pil is None:
        ok, use_pil, errors = sniff(files)
    else:
        ok, use_pil, errors = list(range(len(files))), list(use_pil), {}
    probs = [None] * len(files)
    show = (len(files) >= 200) if progress is None else bool(progress)
    bar = tqdm(total=len(files), unit="img", desc="predict", disable=not show, dynamic_ncols=True)
    bar.update(len(errors))
    seen = 0
    if ok:
        ds = image_dataset([files[i] for i in ok], use_pil, model.input_size, batch_size)
        for images, idx in ds:
            p, idx = model.probabilities(images), idx.numpy()
            for row, j in zip(p, idx):
                probs[ok[j]] = row
            bar.update(int(idx[-1]) + 1 - seen)  # decoded rows plus the dropped ones before them
            seen = int(idx[-1]) + 1
    for j in range(len(ok)):  # dropped by the decoder: say why
        if probs[ok[j]] is None:
            errors[ok[j]] = explain_failure(files[ok[j]])
    bar.close()
    return [None if p is None else np.asarray(p) for p in probs], \
        [errors.get(i) for i in range(len(files))]
