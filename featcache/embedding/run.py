"""Embed once: image folder -> frozen backbone -> HDF5 cache, resumable and incremental."""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from featcache.embedding.backbones import Backbone, resolve_backbone, with_fast_decode
from featcache.cache.dtypes import entry_dtype, storage_dtype
from featcache.cache.layout import BLOCK_ROWS, ROOT, entry_key, real_cache_path
from featcache.cache.shards import in_shard, parse_shard, shard_path
from featcache.cache.read import (EntryRows, damage_message, entry_runtimes, open_read, read_entry,
                                  read_failures, read_paths, reading)
from featcache.cache.write import EntryWriter, entry_attrs, rewrite, write_failures
from featcache.embedding.scan import Scan, inspect_file, list_classes, scan_folder
from featcache.errors import FeatcacheError
from featcache.cache.journal import Journal
from featcache.cache.write import writer_lock
from featcache.embedding.decode import explain_failure, file_dataset
from featcache.embedding.views import ViewRun, commit_views, run_views, view_request
from featcache.embedding.runtime import check_runtime, thread_split, use_runtime


@dataclass(frozen=True)
class EmbedSummary:
    """What one ``embed`` call did."""

    cache_path: str
    key: str
    embedded: int      # images run through the backbone in this call
    cached: int        # images skipped because the cache (or an interrupted run) had them
    failed: int        # images that could not be decoded, plus non-image files
    removed: int       # rows dropped because their file was deleted or changed
    seconds: float     # whole call: scan, model load, embedding, commit
    embed_seconds: float = 0.0  # the backbone pass alone
    healed: int = 0    # cached rows that failed their checksum, dropped and embedded again
    discarded: tuple = ()  # damaged journal segments of an interrupted run, embedded again
    view_key: str = ""     # the views group this call extended ("" without views=)
    views_embedded: int = 0  # images whose K views were embedded in this call

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds else 0.0

    def __str__(self) -> str:
        rate = f" ({self.images_per_second:.1f} images/s)" if self.embedded else ""
        healed = f", healed {self.healed}" if self.healed else ""
        journal = (f" (discarded {len(self.discarded)} damaged journal segment(s); their images "
                   "were embedded again)" if self.discarded else "")
        views = (f", views {self.view_key} embedded for {self.views_embedded} image(s)"
                 if self.view_key else "")
        return (f"{self.key}: embedded {self.embedded}{rate}, already cached {self.cached}, "
                f"failed {self.failed}, removed {self.removed}{healed}{views} -> "
                f"{self.cache_path}{journal}")


log = logging.getLogger(__name__)


@dataclass
class _Old:
    """The committed state of one entry (empty when the cache or entry is new)."""

    rows: set
    failures: list
    class_names: list
    data_dir: str = ""
    damaged: list = field(default_factory=list)  # row indices that failed verification
    checked: bool = True  # False: a schema-1 entry, rewritten to gain checksums
    dtype: str | None = None  # stored feature precision; None for a new entry


def _read_old(cache_path: Path, key: str) -> _Old:
    if not cache_path.exists():
        return _Old(set(), [], [])
    with reading(cache_path) as f:
        if ROOT not in f or key not in f[ROOT]:
            return _Old(set(), [], [])
        g = f[ROOT][key]
        rows = _read_rows(cache_path, key, g)
        return _Old(rows.ok_rows(), read_failures(g), json.loads(g.attrs["class_names"]),
                    str(g.attrs["data_dir"]), rows.damaged, rows.checked, str(g["features"].dtype))


def _read_rows(cache_path: Path, key: str, group) -> EntryRows:
    """Verified rows of the entry; damage the embed cannot heal is one clear error."""
    try:
        rows = read_entry(group)
    except OSError as exc:
        raise FeatcacheError(f"{cache_path}: entry {key} cannot be read ({exc}); move the cache "
                             "aside and re-run `featcache embed`") from None
    if rows.damaged:
        log.warning("%s; embedding them again", damage_message(cache_path, key, rows))
    return rows


def _run(backbone: Backbone, todo, journal: Journal, batch_size: int, progress: bool,
         vrun: ViewRun | None = None, need=None, on_batch=None) -> int:
    """Embed ``todo`` batch by batch into the journal(s).

    Returns ``(failed, found, not_images)``: how many failed, and what the
    decoder's read found the deferred files to be (see :meth:`Scan.resolve`).
    """
    if on_batch is not None:
        on_batch(0, len(todo))
    if not todo:
        return 0, [], []
    threads = thread_split()[1]
    with tqdm(total=len(todo), unit="img", desc=f"embed {backbone.spec.name}",
              disable=not progress, dynamic_ncols=True) as bar:  # closed on error too
        step = bar.update if on_batch is None else _reporting(bar.update, on_batch, len(todo))
        if vrun is not None:
            return run_views(backbone, todo, need, vrun, journal, batch_size, step, threads), [], []
        ds = file_dataset(todo, backbone.spec.input_size, batch_size, threads=threads,
                          fast_decode=backbone.spec.fast_decode)
        return _run_batches(backbone, ds, todo, journal, step)


def _reporting(update, on_batch, total: int):
    """``bar.update`` that also tells ``on_batch(done, total)`` (the Ray runner's progress)."""
    done = 0

    def step(n):
        nonlocal done
        done += n
        on_batch(done, total)
        return update(n)
    return step


def _run_batches(backbone: Backbone, ds, todo, journal: Journal, step):
    seen, n_failed, found, not_images = 0, 0, [], []
    empty = np.zeros((0, backbone.spec.feature_dim), np.float32)

    def failures(rows):
        """Why each dropped file failed; a deferred one is read again (failures only)."""
        out = []
        for f in rows:
            if f.use_pil is None:
                f, bad = inspect_file(Path(f.path), f.rel)
                if f is None:  # unreadable or not an image: a scan failure, as if scanned
                    not_images.append(bad)
                    continue
                found.append(f)
            out.append((f.rel, f.sha256, explain_failure(f.path)))
        return out

    for images, idx, sha, pil in ds:
        feats, idx = np.asarray(backbone.fn(images)), idx.numpy()
        sha, pil = [s.decode() for s in sha.numpy()], pil.numpy()
        found += [dataclasses.replace(todo[i], sha256=s, use_pil=bool(p))
                  for i, s, p in zip(idx, sha, pil) if todo[i].use_pil is None]
        # The stream drops undecodable files: a gap in the indices is a failure.
        gaps = sorted(set(range(seen, int(idx[-1]) + 1)) - set(idx.tolist()))
        journal.write(feats, [todo[i].rel for i in idx], sha, failures([todo[i] for i in gaps]))
        seen, n_failed = int(idx[-1]) + 1, n_failed + len(gaps)
        step(len(idx) + len(gaps))
    tail = failures(todo[seen:])
    if tail:
        journal.write(empty, [], [], tail)
    step(len(todo) - seen)
    return n_failed + len(todo) - seen, found, not_images


def _commit(cache_path: Path, key: str, backbone: Backbone, scan: Scan, journal: Journal,
            current: frozenset, damaged=(), dtype: str = "float32",
            vrun: ViewRun | None = None, seconds_per_image=None) -> None:
    """Merge kept old rows and the journal into a fresh file that replaces the cache.

    Rows not in ``current`` and old rows listed in ``damaged`` (failed verification)
    are left out, and so are their views. ``seconds_per_image`` (decode + backbone
    pass of this call; None when it embedded no clean rows alone, then the old value
    is kept) becomes an entry attribute.
    """
    written, failures, runtimes = set(), {}, {backbone.runtime}

    def add(writer, X, paths, sha):
        keep = [i for i, row in enumerate(zip(paths, sha)) if row in current and row not in written]
        writer.append(X[keep], [paths[i] for i in keep], [sha[i] for i in keep])
        written.update((paths[i], sha[i]) for i in keep)

    with rewrite(cache_path, key) as (_, g):
        entry_attrs(g, spec=backbone.spec.to_dict(), fingerprint=backbone.fingerprint,
                    class_names=scan.class_names, data_dir=scan.root,
                    feature_dim=backbone.spec.feature_dim)
        w = EntryWriter(g, backbone.spec.feature_dim, scan.class_names, dtype=dtype)
        if cache_path.exists():
            with open_read(cache_path) as f:
                if key in f.get(ROOT, {}):
                    old = f[ROOT][key]
                    runtimes.update(entry_runtimes(old))
                    if seconds_per_image is None:
                        seconds_per_image = old.attrs.get("seconds_per_image")
                    paths, sha = read_paths(old["paths"]), old["sha256"][:].astype(str).tolist()
                    for i in damaged:
                        paths[i] = None  # never matches a scanned file, so it is not copied
                    for start in range(0, len(paths), BLOCK_ROWS):
                        stop = start + BLOCK_ROWS
                        add(w, old["features"][start:stop], paths[start:stop], sha[start:stop])
                    failures.update({(p, s): r for p, s, r in read_failures(old)})
        for X, paths, sha, fails in journal.read():
            add(w, X, paths, sha)
            failures.update({(p, s): r for p, s, r in fails})
        write_failures(g, _target_failures(failures, scan, written))
        commit_views(cache_path, key, g, written, scan.class_names, dtype, vrun)
        if seconds_per_image is not None:
            g.attrs["seconds_per_image"] = float(seconds_per_image)
        g.attrs["runtimes"] = json.dumps(sorted(runtimes))  # information only: see runtime.py


def _target_failures(failures: dict, scan: Scan, written=frozenset()) -> list:
    """Failures worth keeping: this scan's non-images, and decode failures of current files."""
    kept = {row: r for row, r in failures.items() if row in scan.rows and row not in written}
    kept.update({(p, s): r for p, s, r in scan.failures})
    return [(p, s, r) for (p, s), r in sorted(kept.items())]


def _changed(old: _Old, scan: Scan, vrun: ViewRun | None) -> bool:
    """Whether the committed entry differs from what this run would write (no rows aside)."""
    old_fail = {(p, s): r for p, s, r in old.failures}
    return not (old.class_names == scan.class_names and old.data_dir == str(scan.root)
                and old.checked and not old.damaged
                and _target_failures(old_fail, scan) == sorted(old.failures)
                and not (vrun and vrun.changed))


def _plan(scan: Scan, skip: set, failed: set, vrun: ViewRun | None):
    """Images to run and, with views, whether each needs its (clean row, views)."""
    if vrun is None:  # deferred files were never embedded: all of them run
        return [f for f in scan.files if (f.rel, f.sha256) not in skip] + scan.pending, None
    todo, need = [], []
    for f in scan.files:
        row = (f.rel, f.sha256)
        clean, views = row not in skip, row not in failed and vrun.needs(row)
        if clean or views:
            todo.append(f)
            need.append((clean, views))
    return todo, need


def embed(data_dir, cache_path, backbone="mobilenet_v2", weights: str | None = None,
          batch_size: int = 64, image_size: int | None = None, seed: int = 0,
          progress: bool = True, views: int | None = None, augment: str | None = None,
          dtype: str | None = None, shard=None, on_batch=None, runtime: str = "auto",
          precision: str = "f32", fast_decode: bool = False) -> EmbedSummary:
    """Embed every image under ``data_dir`` once and store the features in ``cache_path``.

    Re-running is cheap: images already cached (same relative path and sha256)
    are skipped, an interrupted run resumes from its last finished batch,
    changed images are re-embedded and deleted ones drop out.

    Parameters
    ----------
    data_dir : str or Path
        A folder with one sub-folder per class (Keras layout).
    cache_path : str or Path
        The HDF5 cache to create or update.
    backbone : str or Backbone
        A name `featcache backbones` lists (``mobilenet_v2``, ``efficientnet_b0``, ...), a
        TF Hub handle, a SavedModel directory,
        or an already loaded :class:`~featcache.embedding.backbones.Backbone`.
    weights : str, optional
        ``imagenet`` (default), ``none`` or a weights file (Keras backbones only).
    batch_size : int
        Images per forward pass.
    image_size : int, optional
        Input side for hub modules (default 224).
    seed : int
        Seed for random weights, and for the augmented views.
    progress : bool
        Show progress bars on stderr.
    views : int, optional
        Also embed this many seeded augmented views of every image (K >= 1),
        stored with the entry (see :func:`featcache.load_views`). Clean rows
        already cached are reused.
    augment : str, optional
        The augmentation spec of the views, e.g. ``"flip,crop=0.8,rotate=10,color=0.2,blur"``
        (see :mod:`featcache.embedding.augment`); default ``"flip,crop=0.8,color=0.2"``.
    dtype : str, optional
        Stored precision, ``"float32"`` or ``"float16"`` (half the size). Default:
        the entry's own, float32 for a new entry; a different one is refused.
    shard : str or tuple, optional
        ``"i/N"`` or ``(i, N)``: embed only the images of shard ``i`` of ``N``
        (see :mod:`featcache.cache.shards`) into ``CACHE.h5.shards/shard-i-of-N.h5``;
        :func:`featcache.merge` assembles the shards into ``cache_path``.
    on_batch : callable, optional
        Called as ``on_batch(done, total)`` with the images of this call so far.
    runtime : {"auto", "tensorflow", "openvino"}
        Engine of the forward pass (see :func:`featcache.embedding.runtime.use_runtime`);
        f32 features from either share one cache entry.
    precision : {"f32", "bf16"}
        ``bf16`` (OpenVINO, CPUs with bf16 only) is faster and gets its own entry.
    fast_decode : bool
        Decode JPEGs at a reduced DCT scale (1/2, 1/4 or 1/8, never below the
        input size) before the usual resize: faster, but NOT pixel-equal to
        Keras, so features differ slightly; its rows get their own cache entry,
        which cannot be exported.

    Returns
    -------
    EmbedSummary
    """
    if int(batch_size) < 1:
        raise FeatcacheError(f"--batch-size must be at least 1, got {batch_size}")
    check_runtime(runtime, precision)
    cache_path = Path(cache_path).expanduser()
    select = None
    if shard is not None:
        i, n = parse_shard(shard)
        cache_path, select = shard_path(cache_path, i, n), in_shard(i, n)
    real = real_cache_path(cache_path)  # a symlink is written through, never replaced
    if real.is_dir():
        raise FeatcacheError(f"output {cache_path} is a directory; give a file name like cache.h5")
    start = time.perf_counter()
    # Cheap argument checks first, so a typo never costs a scan of the whole folder.
    req, asked_dtype = view_request(views, augment, seed), storage_dtype(dtype)
    load = (lambda: backbone) if isinstance(backbone, Backbone) else resolve_backbone(
        backbone, weights, image_size, seed)
    list_classes(Path(data_dir).expanduser().resolve())  # a wrong folder fails before the model loads
    with writer_lock(real):  # before the model loads, so an unwritable output fails fast
        bb = use_runtime(load(), runtime, precision)
        bb = with_fast_decode(bb) if fast_decode else bb
        key = entry_key(bb.spec.name, bb.fingerprint)
        old = _read_old(real, key)
        store = entry_dtype(old.dtype, asked_dtype, f"{cache_path}: entry {key}")
        journal = Journal(real, key)
        done, journal_failures = journal.done()
        failed = {(p, s) for p, s, _ in old.failures + journal_failures}
        vrun = ViewRun(real, key, bb.fingerprint, req) if req else None
        # Files this entry has never seen are hashed by the decoder, from the bytes it
        # decodes: one read each. Views are seeded by the hash, so they need it first.
        known = {rel for rel, _ in old.rows | done | failed}
        scan = scan_folder(data_dir, progress=progress, select=select,
                           defer=None if vrun else (lambda rel: rel not in known))
        todo, need = _plan(scan, old.rows | done | failed, failed, vrun)
        resumed = bool(done or journal_failures)
        t0 = time.perf_counter()
        n_failed, found, not_images = _run(bb, todo, journal, batch_size, progress, vrun, need,
                                           on_batch)
        run_seconds = time.perf_counter() - t0
        scan = scan.resolve(found, not_images)
        current = scan.rows | scan.unseen(old.rows)  # an unlistable folder's rows are kept
        removed = len(old.rows - current)
        if todo or resumed or removed or _changed(old, scan, vrun):
            n_new = len(todo) - n_failed
            # clean embeds only give the backbone's time per image; views would inflate it
            per_image = run_seconds / n_new if n_new and vrun is None else None
            _commit(real, key, bb, scan, journal, current, old.damaged, store, vrun, per_image)
        journal.clear()
        if vrun:
            vrun.journal.clear()
    n_clean = len(todo) if need is None else sum(clean for clean, _ in need)
    cached = sum(row in old.rows or row in done for row in scan.rows)
    return EmbedSummary(str(cache_path), key, n_clean - n_failed, cached,
                        len(scan.files) - cached - (n_clean - n_failed) + len(scan.failures),
                        removed, time.perf_counter() - start, run_seconds, len(old.damaged),
                        tuple(journal.discarded), vrun.key if vrun else "",
                        vrun.embedded if vrun else 0)
