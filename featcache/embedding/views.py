"""Embedding augmented views alongside the clean rows: plan, run, and commit of a views group.

One embed run with ``views=K`` decodes each image once, then feeds the clean
image and its K augmented views (see :mod:`featcache.embedding.augment`) through the
backbone in the same batches. Clean rows go to the entry's journal, views to
a journal of their own (``CACHE.partial/<key>@<vkey>/``, K*d floats per row),
so a kill -9 resumes each from its last finished batch; an image whose clean
row is already cached only has its views embedded. The commit rewrites the
entry with every views group it holds (layout: :mod:`featcache.cache.views`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featcache.embedding.augment import (AUGMENT_VERSION, DEFAULT_AUGMENT, Augment, augment_image,
                               parse_augment, view_seeds)
from featcache.cache.layout import BLOCK_ROWS, ROOT
from featcache.cache.read import damage_message, open_read, read_entry, read_paths, reading
from featcache.cache.views import VIEWS, view_fingerprint, view_groups, view_key
from featcache.cache.write import EntryWriter
from featcache.embedding.decode import explain_failure, image_dataset
from featcache.errors import FeatcacheError
from featcache.cache.journal import Journal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewRequest:
    """Validated ``views=``, ``augment=`` and ``seed=`` of an embed call."""

    augment: Augment
    views: int
    seed: int


def view_request(views, augment, seed) -> ViewRequest | None:
    """Check the views arguments before any scan; None when no views are asked for.

    ``views`` without ``augment`` uses :data:`featcache.embedding.augment.DEFAULT_AUGMENT`.
    """
    if views is None:
        if augment is not None:
            raise FeatcacheError(f"augment={augment!r} needs views=K (how many augmented views "
                                 "of each image to embed)")
        return None
    if isinstance(views, bool) or not isinstance(views, (int, np.integer)) or views < 1:
        raise FeatcacheError(f"views={views!r}: pass a whole number K >= 1 of augmented views per "
                             "image, or leave views out for clean features only")
    aug = parse_augment(DEFAULT_AUGMENT if augment is None else augment)
    return ViewRequest(aug, int(views), int(seed))


class ViewRun:
    """The views group one embed extends: its key, journal and already-stored rows."""

    def __init__(self, cache_path: Path, key: str, entry_fingerprint: str, req: ViewRequest):
        self.req = req
        self.fingerprint = view_fingerprint(entry_fingerprint, req.augment.canonical, req.seed,
                                            req.views, AUGMENT_VERSION)
        self.key = view_key(req.views, self.fingerprint)
        self.rows, self.damaged = _old_view_rows(cache_path, key, self.key)
        self.journal = Journal(cache_path, f"{key}@{self.key}")
        self.done = self.journal.done()[0]
        self.embedded = 0

    def needs(self, row) -> bool:
        return row not in self.rows and row not in self.done

    @property
    def changed(self) -> bool:
        """Whether the commit has views to add or damaged view rows to drop."""
        return bool(self.embedded or self.done or self.damaged)


def _old_view_rows(cache_path: Path, key: str, vkey: str):
    """(path, sha256) rows the committed views group holds intact, and its damaged row count."""
    if not cache_path.exists():
        return set(), 0
    with reading(cache_path) as f:
        entry = f[ROOT][key] if key in f.get(ROOT, {}) else None
        if entry is None or vkey not in view_groups(entry):
            return set(), 0
        rows = read_entry(entry[VIEWS][vkey])
        if rows.damaged:
            log.warning("%s; embedding their views again",
                        damage_message(cache_path, f"{key}/{VIEWS}/{vkey}", rows))
        return rows.ok_rows(), len(rows.damaged)


def _expander(req: ViewRequest, sha: list, need, size: int):
    """tf.data map: decoded image, row -> (clean + K views, masked to what the row needs)."""
    import tensorflow as tf
    k = req.views
    seeds = tf.constant(np.stack([view_seeds(s, k, req.seed) for s in sha]))
    need = tf.constant(np.asarray(need, bool).reshape(-1, 2))  # (clean, views) per row

    def expand(img, i):
        clean = tf.image.resize(img, (size, size), method="bilinear")
        views = [augment_image(img, req.augment, seeds[i, j], size) for j in range(k)]
        images = tf.stack([clean, *views])
        keep = tf.concat([need[i, :1], tf.repeat(need[i, 1:], k)], 0)
        which = tf.range(-1, k, dtype=tf.int32)  # -1: the clean image, else the view index
        return (tf.boolean_mask(images, keep), tf.boolean_mask(tf.fill([k + 1], i), keep),
                tf.boolean_mask(which, keep))
    return expand


def run_views(backbone, todo, need, vrun: ViewRun, journal: Journal, batch_size: int,
              step, threads=None) -> int:
    """Embed the clean row and/or the K views of each ``todo`` image, as ``need`` says.

    ``need`` holds a (clean, views) pair of bools per image; ``step(n)`` is told
    of every n images finished (a progress bar's ``update``).

    Writes each batch's finished images to the two journals; returns how many
    images failed to decode (recorded in the entry's journal). ``threads``: see
    :func:`featcache.embedding.decode.image_dataset`.
    """
    sha = [f.sha256 for f in todo]
    ds = image_dataset([f.path for f in todo], [f.use_pil for f in todo], backbone.spec.input_size,
                       batch_size, expand=_expander(vrun.req, sha, need, backbone.spec.input_size),
                       threads=threads, fast_decode=backbone.spec.fast_decode)
    acc = _Accumulator(todo, need, vrun.req.views, backbone.spec.feature_dim)
    for images, owner, which in ds:
        acc.add(np.asarray(backbone.fn(images)), owner.numpy(), which.numpy())  # OpenVINO: numpy
        step(acc.flush(journal, vrun, last=False))
    step(acc.flush(journal, vrun, last=True))
    return acc.failed


class _Accumulator:
    """Collects an image's clean row and views across batches until it is whole."""

    def __init__(self, todo, need, k: int, d: int):
        self.todo, self.need, self.k, self.d = todo, need, k, d
        self.parts: dict = {}   # row -> {view index: features}
        self.next = 0           # rows below this are written or failed
        self.top = 0            # the newest row seen
        self.failed = 0

    def add(self, feats, owner, which) -> None:
        for f, i, j in zip(feats, owner.tolist(), which.tolist()):
            self.parts.setdefault(i, {})[j] = f
        self.top = int(owner[-1])  # the stream is ordered: rows below it are complete

    def flush(self, journal: Journal, vrun: ViewRun, last: bool) -> int:
        stop = len(self.todo) if last else self.top
        clean, views = self.need[stop] if stop < len(self.need) else (0, 0)
        if not last and len(self.parts.get(stop, ())) == clean + self.k * views:
            stop += 1  # the newest row happens to be whole already
        rows = range(self.next, stop)
        if not rows:
            return 0
        done = [i for i in rows if i in self.parts]
        failures = [(self.todo[i].rel, self.todo[i].sha256, explain_failure(self.todo[i].path))
                    for i in rows if i not in self.parts]
        clean = [i for i in done if self.need[i][0]]
        views = [i for i in done if self.need[i][1]]
        if views:  # views first: a kill between the two writes re-embeds only a clean row
            V = np.stack([[self.parts[i][j] for j in range(self.k)] for i in views])
            vrun.journal.write(V.reshape(len(views), -1), *self._ids(views))
            vrun.embedded += len(views)
        if clean or failures:
            X = np.stack([self.parts[i][-1] for i in clean]) if clean else np.zeros((0, self.d))
            journal.write(X, *self._ids(clean), failures)
        for i in rows:
            self.parts.pop(i, None)
        self.next, self.failed = stop, self.failed + len(failures)
        return len(rows)

    def _ids(self, rows):
        return [self.todo[i].rel for i in rows], [self.todo[i].sha256 for i in rows]


def commit_views(cache_path: Path, key: str, g, written: set, class_names, dtype: str,
                 vrun: ViewRun | None) -> None:
    """Write the entry's views groups into the new entry ``g``: kept old rows, then new ones.

    Only rows whose clean row was ``written`` are kept, so views of removed or
    changed images drop out with them; damaged view rows are left out.
    """
    old = {}
    if cache_path.exists():
        with open_read(cache_path) as f:
            entry = f[ROOT][key] if key in f.get(ROOT, {}) else None
            for vkey, vg in (view_groups(entry) if entry is not None else {}).items():
                w = _ViewWriter(g, vkey, dict(vg.attrs), vg["features"].shape[1:], class_names, dtype)
                _copy_rows(vg, w, written)
                old[vkey] = w
    if vrun is None:
        return
    req = vrun.req
    w = old.get(vrun.key) or _ViewWriter(
        g, vrun.key, {"augment": req.augment.canonical, "seed": req.seed, "views": req.views,
                      "fingerprint": vrun.fingerprint, "augment_version": AUGMENT_VERSION},
        (req.views, int(g["features"].shape[1])), class_names, dtype)
    for X, paths, sha, _ in vrun.journal.read():
        _append_kept(w, X.reshape(len(X), req.views, -1), paths, sha, written)


class _ViewWriter:
    """An EntryWriter for a views group that remembers which rows it holds."""

    def __init__(self, g, vkey: str, attrs: dict, row_shape, class_names, dtype):
        vg = g.require_group(VIEWS).create_group(vkey)
        vg.attrs.update(attrs)
        self.writer = EntryWriter(vg, int(row_shape[1]), class_names, dtype=dtype,
                                  views=int(row_shape[0]))
        self.rows: set = set()


def _copy_rows(vg, w: _ViewWriter, written: set) -> None:
    rows = read_entry(vg)
    paths, sha = read_paths(vg["paths"]), rows.sha.tolist()
    for i in rows.damaged:
        paths[i] = None  # never in ``written``: not copied
    for start in range(0, len(paths), max(1, BLOCK_ROWS // vg["features"].shape[1])):
        stop = start + max(1, BLOCK_ROWS // vg["features"].shape[1])
        _append_kept(w, vg["features"][start:stop], paths[start:stop], sha[start:stop], written)


def _append_kept(w: _ViewWriter, V, paths, sha, written: set) -> None:
    keep = [i for i, row in enumerate(zip(paths, sha)) if row in written and row not in w.rows]
    if keep:
        w.writer.append(V[keep], [paths[i] for i in keep], [sha[i] for i in keep])
        w.rows.update((paths[i], sha[i]) for i in keep)
