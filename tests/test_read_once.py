"""Embed reads each image file once: the decoder hashes the files the cache has never seen."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import sys
from collections import Counter
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

import featcache
from helpers import write_images

_IN_OPEN, _IN_ISDIR = 0x20, 0x40000000


@contextmanager
def opens(root):
    """Count the opens of each file under ``root`` (Linux inotify), by relative path."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    assert fd >= 0
    dirs = {libc.inotify_add_watch(fd, os.fsencode(d), _IN_OPEN): d.relative_to(root).as_posix()
            for d in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]}
    counts = Counter()
    try:
        yield counts
        while True:
            try:
                buf = os.read(fd, 1 << 20)
            except BlockingIOError:
                break
            pos = 0
            while pos < len(buf):
                wd, mask, _, n = struct.unpack_from("iIII", buf, pos)
                name = buf[pos + 16: pos + 16 + n].rstrip(b"\0").decode()
                pos += 16 + n
                if name and not mask & _IN_ISDIR:
                    counts[f"{dirs[wd]}/{name}".lstrip("./")] += 1
    finally:
        os.close(fd)


linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only")


@linux
def test_embed_reads_each_file_once_and_stays_incremental(tmp_path, mobilenet):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    rels = write_images(data, {"a": 3, "b": 3}, size=(50, 40))
    with opens(data) as first:
        s = featcache.embed(data, cache, backbone=mobilenet, progress=False)
    assert s.embedded == 6 and dict(first) == {r: 1 for r in rels}  # was 2: scan, then decode

    write_images(data, {"c": 1}, seed=5)  # a new class with a new file
    Image.new("RGB", (50, 40), (9, 9, 9)).save(data / "a" / "img_000.jpg")  # a changed file
    with opens(data) as second:
        s = featcache.embed(data, cache, backbone=mobilenet, progress=False)
    assert (s.embedded, s.cached, s.failed) == (2, 5, 0)
    assert second.pop("c/img_000.jpg") == 1  # new: hashed in the decoder's read
    assert second.pop("a/img_000.jpg") == 2  # changed: hashed by the scan, then decoded
    assert set(second.values()) == {1}  # unchanged: hashed once, not decoded

    with opens(data) as third:
        s = featcache.embed(data, cache, backbone=mobilenet, progress=False)
    assert (s.embedded, s.cached) == (0, 7) and set(third.values()) == {1}
    got = featcache.load_features(cache)
    fresh = featcache.embed(data, tmp_path / "fresh.h5", backbone=mobilenet, progress=False)
    ref = featcache.load_features(fresh.cache_path)
    order = np.argsort(got.paths)
    assert list(got.sha256[order]) == list(ref.sha256[np.argsort(ref.paths)])
    np.testing.assert_allclose(got.X[order], ref.X[np.argsort(ref.paths)], atol=1e-5)


def test_files_hashed_by_the_decoder_fail_as_scanned_ones_do(tmp_path, mobilenet):
    """A first embed (files hashed by the decoder) and a scan agree on failures and hashes."""
    data = tmp_path / "data"
    write_images(data, {"a": 2, "b": 2}, size=(60, 50))
    good = (data / "a" / "img_001.jpg").read_bytes()
    (data / "a" / "img_001.jpg").write_bytes(good[: len(good) // 2])
    (data / "b" / "notes.txt").write_text("hello")
    Image.new("RGBA", (20, 20), (1, 2, 3, 4)).save(data / "b" / "alpha.png")  # a PIL file
    s = featcache.embed(data, tmp_path / "c.h5", backbone=mobilenet, batch_size=2, progress=False)
    assert (s.embedded, s.failed) == (4, 2)
    from featcache.cache.layout import ROOT
    from featcache.cache.read import read_failures, reading
    with reading(tmp_path / "c.h5") as f:
        failed = {p: (sha, r) for p, sha, r in read_failures(f[ROOT][s.key])}
    scan = featcache.scan_folder(data, progress=False)
    assert failed["b/notes.txt"] == scan.failures[0][1:]  # same hash, same reason
    assert failed["a/img_001.jpg"][0] == next(f.sha256 for f in scan.files if f.rel == "a/img_001.jpg")
    got = featcache.load_features(tmp_path / "c.h5")
    assert dict(zip(got.paths, got.sha256)) == {f.rel: f.sha256 for f in scan.files
                                                 if f.rel != "a/img_001.jpg"}


def test_a_folder_of_non_images_is_still_one_clear_error(tmp_path, mobilenet):
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        (tmp_path / "data" / c / "x.txt").write_text("no")
    with pytest.raises(featcache.FeatcacheError, match="no images found"):
        featcache.embed(tmp_path / "data", tmp_path / "c.h5", backbone=mobilenet, progress=False)
    with pytest.raises(featcache.FeatcacheError, match="no images found"):  # and on a re-run
        featcache.embed(tmp_path / "data", tmp_path / "c.h5", backbone=mobilenet, progress=False)




def test_views_runs_still_hash_before_decoding(tmp_path, mobilenet):
    """Views are seeded by the image hash, so a views run scans first (two reads), same rows."""
    data = tmp_path / "data"
    rels = write_images(data, {"a": 2, "b": 2}, size=(50, 40))
    with opens(data) as counts:
        s = featcache.embed(data, tmp_path / "v.h5", backbone=mobilenet, views=1, progress=False)
    assert s.embedded == 4 and dict(counts) == {r: 2 for r in rels}
    plain = featcache.embed(data, tmp_path / "p.h5", backbone=mobilenet, progress=False)
    a, b = featcache.load_features(s.cache_path), featcache.load_features(plain.cache_path)
    assert list(a.sha256) == list(b.sha256)
    np.testing.assert_array_equal(a.X, b.X)


def test_a_file_gone_before_the_decoder_reads_it_is_a_failure_not_a_crash(tmp_path, mobilenet,
                                                                          monkeypatch):
    import featcache.embedding.scan as dataset
    data = tmp_path / "data"
    write_images(data, {"a": 2, "b": 2}, size=(50, 40))
    real_scan = dataset.scan_folder

    def scan_then_delete(*args, **kwargs):
        scan = real_scan(*args, **kwargs)
        (data / "b" / "img_001.jpg").unlink()  # listed and deferred, gone before decoding
        return scan
    monkeypatch.setattr("featcache.embedding.run.scan_folder", scan_then_delete)
    s = featcache.embed(data, tmp_path / "c.h5", backbone=mobilenet, progress=False)
    assert (s.embedded, s.failed) == (3, 1)
    assert sorted(featcache.load_features(s.cache_path).paths) == ["a/img_000.jpg", "a/img_001.jpg",
                                                                    "b/img_000.jpg"]
