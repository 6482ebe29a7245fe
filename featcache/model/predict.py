"""Load an exported model and classify image files.

Serving-side code: it imports TensorFlow, numpy, json, tqdm and featcache's
decoding helpers (``featcache.embedding.scan``, ``featcache.embedding.decode``: PIL, so files
decode exactly as ``featcache embed`` decoded them), never the training code
(scikit-learn, ``featcache.heads``, ``featcache.evaluate``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from featcache.errors import FeatcacheError

SAVED_MODEL = "saved_model"
REQUIRED = ("saved_model/saved_model.pb", "labels.json", "featcache.json")
LIST_SUFFIXES = (".txt", ".lst")


def check_model_dir(model_dir) -> Path:
    """``model_dir`` as a Path, or FeatcacheError when it is missing or incomplete."""
    root = Path(model_dir).expanduser()
    if not root.is_dir():
        raise FeatcacheError(f"model directory {root} does not exist: create it with "
                             "`featcache train CACHE -o DIR`")
    missing = [name for name in REQUIRED if not (root / name).is_file()]
    if missing:
        raise FeatcacheError(f"model directory {root} is incomplete (missing {', '.join(missing)}): "
                             "re-export it with `featcache train ... --force`")
    return root


def _walk(folder: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".")]
    return out


def collect_paths(args) -> list[str]:
    """Image paths from files, folders (recursive) and ``.txt``/``.lst`` files listing paths."""
    paths = []
    for arg in [args] if isinstance(args, (str, os.PathLike)) else args:
        p = Path(arg).expanduser()
        if p.is_dir():
            found = _walk(p)
            if not found:
                raise FeatcacheError(f"no files found under folder {p}")
            paths += found
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            base = p.parent
            lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
            paths += [str(base / ln) for ln in lines if ln and not ln.startswith("#")]
        else:
            paths.append(str(p))  # a missing file is reported per row, not fatal
    return paths


def frozen_probabilities(signature):
    """``images -> probabilities`` with the head's variables inlined too (the export already
    holds the backbone frozen), so the whole graph is constants, as embed's backbone."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )
    try:
        frozen = convert_variables_to_constants_v2(signature)
        at = sorted(signature.structured_outputs).index("probabilities")  # dicts flatten sorted
    except Exception:  # noqa: BLE001  exotic graphs: the plain signature computes the same values
        return lambda x: signature(images=x)["probabilities"]
    return lambda x: frozen(x)[at]


class LoadedModel:
    """An exported featcache model, loaded with ``tf.saved_model.load``.

    Attributes
    ----------
    path : Path
    labels : list of str, class names in the model's output order.
    meta : dict, the contents of ``featcache.json``.
    module : the loaded SavedModel.
    """

    def __init__(self, model_dir):
        import tensorflow as tf
        self.path = check_model_dir(model_dir)
        try:
            self.labels = json.loads((self.path / "labels.json").read_text(encoding="utf-8"))
            self.meta = json.loads((self.path / "featcache.json").read_text(encoding="utf-8"))
            self.input_size = int(self.meta["backbone"]["spec"]["input_size"])
        except (ValueError, KeyError, TypeError) as exc:
            raise FeatcacheError(f"model directory {self.path} has a damaged labels.json or "
                                 f"featcache.json ({exc!r}): re-export it") from None
        try:
            self.module = tf.saved_model.load(str(self.path / SAVED_MODEL))
        except Exception as exc:  # noqa: BLE001  any load failure: say so, re-export
            raise FeatcacheError(f"could not load the SavedModel in {self.path} ({exc}): "
                                 "re-export it") from None
        self._serve = None

    def probabilities(self, images):
        """Probabilities of resized float32 RGB batches in [0, 255]."""
        if self._serve is None:
            self._serve = frozen_probabilities(self.module.signatures["serve_image"])
        return np.asarray(self._serve(images))

    def predict(self, paths, top_k: int = 3, batch_size: int = 64, progress=None) -> list[dict]:
        """Classify image files; bad files get a row with ``error`` set, never an exception.

        Parameters
        ----------
        paths : str, Path or list of them
            Files, folders (recursive) or ``.txt`` files listing one path per line.
        top_k : int
        batch_size : int
        progress : bool or None
            None shows a bar on runs of 200 images or more.

        Returns
        -------
        list of dict
            One per file, in input order: ``path``, ``predicted``, ``probability``,
            ``top_k`` (list of ``{"label", "probability"}``) and ``error`` (None or why).
        """
        from featcache.model.batches import predict_files
        if int(top_k) < 1 or int(batch_size) < 1:
            raise FeatcacheError("--top-k and --batch-size must be at least 1")
        files = collect_paths(paths)
        if not files:
            raise FeatcacheError("no input files given")
        probs, errors = predict_files(self, files, int(batch_size), progress)
        rows = [_row(p, pr, err, self.labels, int(top_k)) for p, pr, err in zip(files, probs, errors)]
        if all(r["error"] for r in rows):
            raise FeatcacheError(f"none of the {len(rows)} input file(s) is an image: "
                                 f"{rows[0]['path']}: {rows[0]['error']}")
        return rows


def _row(path, probs, error, labels, top_k) -> dict:
    if error is not None:
        return {"path": path, "predicted": None, "probability": None, "top_k": [], "error": error}
    order = np.argsort(-probs, kind="stable")[:top_k]
    top = [{"label": labels[i], "probability": float(probs[i])} for i in order]
    return {"path": path, "predicted": top[0]["label"], "probability": top[0]["probability"],
            "top_k": top, "error": None}


def load_model(model_dir) -> LoadedModel:
    """Load an exported model directory (see :class:`LoadedModel`)."""
    return LoadedModel(model_dir)
