"""Cache integrity: checksums verified on read and healed by embed, symlinks, journal damage,
full disks, locks, and the one-line messages for each."""
from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import featcache
import featcache.cache.write as cache_write
import featcache.embedding.run as embedding
from helpers import counting, lock_held_in_thread, write_images
from featcache.cache import save_features, writer_lock
from featcache.cli import cli
from featcache.errors import FeatcacheError
from featcache.cache.features import Features


def _entry(f):
    return f["backbones"][next(iter(f["backbones"]))]


def _flip(cache, dataset, row, nbytes=4):
    """Invert ``nbytes`` bytes of ``row`` inside ``dataset``'s chunk, on disk, behind HDF5's back."""
    with h5py.File(cache, "r") as f:
        ds = _entry(f)[dataset]
        chunk = ds.chunks[0]
        info = ds.id.get_chunk_info_by_coord((row - row % chunk,) + (0,) * (ds.ndim - 1))
        row_bytes = ds.id.get_type().get_size() * int(np.prod(ds.shape[1:]))
        at = info.byte_offset + (row % chunk) * row_bytes
        path = _entry(f)["paths"].asstr()[row]
    with open(cache, "r+b") as fh:
        fh.seek(at)
        data = fh.read(nbytes)
        fh.seek(at)
        fh.write(bytes(b ^ 0xFF for b in data))
    return path


def _one_line_cli(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    lines = [line.split("\r")[-1] for line in r.output.strip().split("\n")]  # past progress bars
    lines = [line for line in lines if "%|" not in line]  # a bar closed by the error
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    return lines[0]


@pytest.fixture
def embedded(tmp_path, mobilenet):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 4, "b": 4})
    featcache.embed(data, cache, backbone=mobilenet, batch_size=4, progress=False)
    return data, cache, featcache.load_features(cache)


def test_flipped_features_and_labels_detected_then_healed(embedded, mobilenet):
    data, cache, before = embedded
    damaged = {_flip(cache, "features", 2, nbytes=16), _flip(cache, "labels", 6)}
    with pytest.raises(FeatcacheError, match="2 damaged row") as exc:
        featcache.load_features(cache)
    assert str(cache) in str(exc.value) and "\n" not in str(exc.value)
    assert all(p in str(exc.value) for p in damaged)
    with pytest.raises(FeatcacheError, match="damaged row"):
        featcache.cache_info(cache)
    assert "damaged row" in _one_line_cli("info", cache)

    bb, calls = counting(mobilenet)
    s = featcache.embed(data, cache, backbone=bb, progress=False)
    assert s.healed == 2 and "healed 2" in str(s) and sum(calls) == 2 and s.cached == 6
    after = featcache.load_features(cache)
    np.testing.assert_array_equal(after.paths, before.paths)
    np.testing.assert_array_equal(after.y, before.y)
    np.testing.assert_array_equal(after.X, before.X)  # bit-identical, not just close


def test_corrupted_paths_named_by_row_and_rebuilt_keeping_other_entries(embedded, mobilenet):
    from featcache.embedding.backbones import get_backbone
    data, cache, before = embedded
    other = featcache.embed(data, cache, backbone=get_backbone("mobilenet_v2", "none", seed=1),
                            progress=False).key
    with h5py.File(cache, "r") as f:
        key = sorted(k for k in f["backbones"] if k != other)[0]
    with h5py.File(cache, "r") as f:  # the heap address of row 3's path string
        ds = f["backbones"][key]["paths"]
        at = ds.id.get_chunk_info_by_coord((0,)).byte_offset + 3 * 16 + 4
    with open(cache, "r+b") as fh:
        fh.seek(at)
        fh.write(b"\xff" * 8)
    with pytest.raises(FeatcacheError, match=r"1 damaged row\(s\).*rows 3;"):
        featcache.load_features(cache, backbone=key)
    assert "damaged row" in _one_line_cli("info", cache)

    s = featcache.embed(data, cache, backbone=mobilenet, progress=False)
    assert s.healed == 1 and s.embedded == 1
    np.testing.assert_array_equal(featcache.load_features(cache, backbone=key).X, before.X)
    assert len(featcache.load_features(cache, backbone=other)) == 8  # never dropped


def test_schema1_cache_reads_with_note_and_embed_adds_checksums(embedded, mobilenet):
    data, cache, before = embedded
    with h5py.File(cache, "a") as f:  # what featcache 0.1.0 wrote
        f.attrs["schema_version"] = 1
        del _entry(f)["checksum"]
    np.testing.assert_array_equal(featcache.load_features(cache).X, before.X)
    out = CliRunner().invoke(cli, ["info", str(cache)]).output
    assert "no checksums (written by an older featcache): re-run embed to add them" in out

    s = featcache.embed(data, cache, backbone=mobilenet, progress=False)
    assert s.embedded == 0 and s.cached == 8
    with h5py.File(cache, "r") as f:
        assert f.attrs["schema_version"] == 2 and "checksum" in _entry(f)
    assert "no checksums" not in CliRunner().invoke(cli, ["info", str(cache)]).output


def test_newer_schema_says_upgrade(embedded):
    _, cache, _ = embedded
    with h5py.File(cache, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(FeatcacheError, match="uses cache schema 99.*upgrade featcache"):
        featcache.load_features(cache)
    assert "upgrade featcache" in _one_line_cli("info", cache)


def test_cache_open_for_writing_elsewhere_is_reported_locked(embedded):
    _, cache, _ = embedded
    code = ("import h5py, sys; f = h5py.File(sys.argv[1], 'a'); print('open', flush=True); "
            "sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(cache)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(FeatcacheError, match="is locked: another process has it open for writing"):
            featcache.load_features(cache)
    finally:
        holder.communicate("", timeout=60)


def test_symlinked_cache_shares_one_lock_and_writes_through(embedded, mobilenet):
    data, real, _ = embedded
    link = real.with_name("link.h5")
    link.symlink_to(real.name)
    for held, used in ((real, link), (link, real)):
        with writer_lock(held):
            with pytest.raises(FeatcacheError, match="another featcache process is writing"):
                featcache.embed(data, used, backbone=mobilenet, progress=False)
    write_images(data, {"c": 2}, seed=4)
    s = featcache.embed(data, link, backbone=mobilenet, progress=False)
    assert s.embedded == 2 and link.is_symlink() and link.resolve() == real.resolve()
    assert len(featcache.load_features(real)) == 10
    assert not list(real.parent.glob("link.h5.*"))  # no lock, temp or journal beside the link


def _interrupted_run(data, cache, mobilenet, monkeypatch, batch_size=2):
    """Embed with the commit failing: the journal keeps every batch, the cache is untouched."""
    def crash(*a, **k):
        raise RuntimeError("killed")
    with monkeypatch.context() as m:
        m.setattr(embedding, "_commit", crash)
        with pytest.raises(RuntimeError):
            featcache.embed(data, cache, backbone=mobilenet, batch_size=batch_size, progress=False)
    return sorted(Path(f"{cache}.partial").glob("*/seg-*.npz"))


def test_damaged_journal_segments_discarded_and_reembedded(tmp_path, mobilenet, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 4, "b": 4})
    ref = featcache.embed(data, tmp_path / "ref.h5", backbone=mobilenet, progress=False)
    segs = _interrupted_run(data, cache, mobilenet, monkeypatch)
    assert len(segs) == 4
    segs[0].write_bytes(segs[0].read_bytes()[:100])  # truncated
    segs[1].write_bytes(b"")                          # zero length: numpy's EOFError
    raw = bytearray(segs[2].read_bytes())
    raw[len(raw) // 3] ^= 0xFF                        # bad CRC inside the zip
    segs[2].write_bytes(bytes(raw))

    bb, calls = counting(mobilenet)
    r = CliRunner().invoke(cli, ["embed", str(data), "-o", str(cache), "--weights", "none"])
    assert r.exit_code == 0 and "Aborted" not in r.output, r.output
    assert "discarded 3 damaged journal segment(s)" in r.output
    assert "embedded 6" in r.output and "already cached 2" in r.output
    got, want = featcache.load_features(cache), featcache.load_features(tmp_path / "ref.h5")
    assert ref.embedded == 8
    np.testing.assert_array_equal(got.paths, want.paths)
    np.testing.assert_array_equal(got.X, want.X)


def test_info_reports_batches_of_an_interrupted_first_run(tmp_path, mobilenet, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 2, "b": 2})
    _interrupted_run(data, cache, mobilenet, monkeypatch)
    assert not cache.exists()
    r = CliRunner().invoke(cli, ["info", str(cache)])
    assert r.exit_code == 0 and "not written yet" in r.output
    assert "interrupted embed run left 2 batch(es)" in r.output


def _hdf5_disk_full(*a, **k):
    raise OSError("Can't synchronously write data (file write failed: errno = 28, "
                  "error message = 'No space left on device')")


def test_disk_full_in_journal_then_commit_is_one_line_and_loses_nothing(embedded, mobilenet,
                                                                         monkeypatch):
    data, cache, before = embedded
    committed = cache.read_bytes()
    write_images(data, {"c": 4}, seed=9)
    real_savez = np.savez
    writes = []

    def savez_until_full(fh, **arrays):
        writes.append(1)
        if len(writes) > 1:  # first batch lands, then the disk is full mid-segment
            fh.write(b"PK\x03\x04 half a segment")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_savez(fh, **arrays)
    monkeypatch.setattr(np, "savez", savez_until_full)
    msg = _one_line_cli("embed", data, "-o", cache, "--weights", "none", "--batch-size", "2")
    assert "no space left on" in msg and f"while writing {cache}; nothing lost; free space" in msg
    assert cache.read_bytes() == committed
    assert not list(Path(f"{cache}.partial").glob("*/*.tmp"))

    monkeypatch.setattr(np, "savez", real_savez)
    monkeypatch.setattr(cache_write.EntryWriter, "append", _hdf5_disk_full)  # now in the commit
    with pytest.raises(FeatcacheError, match="no space left on .* nothing lost"):
        featcache.embed(data, cache, backbone=mobilenet, batch_size=2, progress=False)
    assert cache.read_bytes() == committed and not list(cache.parent.glob("c.h5.tmp-*"))

    monkeypatch.undo()
    bb, calls = counting(mobilenet)
    s = featcache.embed(data, cache, backbone=bb, progress=False)
    assert sum(calls) == 0 and s.cached == 12  # both runs' batches were kept
    assert len(featcache.load_features(cache)) == 12


def test_lock_file_removed_on_release_and_save_features_takes_the_lock(tmp_path):
    cache = tmp_path / "c.h5"
    feats = Features(np.eye(4, dtype=np.float32), np.array([0, 0, 1, 1]),
                     np.array(["a/0", "a/1", "b/2", "b/3"]), ["a", "b"],
                     np.array([f"{i:064x}" for i in range(4)]), spec={"name": "ext"})
    with writer_lock(cache):
        with pytest.raises(FeatcacheError, match="another featcache process is writing"):
            save_features(cache, feats)
    assert not Path(f"{cache}.lock").exists()
    save_features(cache, feats, failures=[("a/caf\udce9.jpg", "0" * 64, "cannot decode")])
    assert not Path(f"{cache}.lock").exists()
    assert featcache.cache_info(cache)["entries"][0]["failures"][0]["path"] == "a/caf\\udce9.jpg"
    np.testing.assert_array_equal(featcache.load_features(cache).X, feats.X)


def test_acquirer_of_an_unlinked_lock_file_retries(tmp_path, monkeypatch):
    """The unlink race: B opened the lock file, A released (unlinked it), B then flocks
    the orphan inode. B must notice and lock the file at the path, or a third writer gets in."""
    cache = tmp_path / "c.h5"
    lock = Path(f"{cache}.lock")
    lock.write_text("")
    orphan = open(lock, "a")  # opened before the holder's release...
    lock.unlink()             # ...which unlinks it
    opened = []

    def open_first_orphan(path, mode="r", *a, **k):
        opened.append(path)
        return orphan if len(opened) == 1 else open(path, mode, *a, **k)
    monkeypatch.setattr(cache_write, "open", open_first_orphan, raising=False)
    with lock_held_in_thread(cache, timeout=30):
        assert len(opened) == 2
        monkeypatch.undo()
        with pytest.raises(FeatcacheError, match="another featcache process is writing"):
            with writer_lock(cache):
                pass


def test_journal_segment_synced_before_it_is_published(tmp_path, monkeypatch):
    import os

    from featcache.cache.journal import Journal
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    journal = Journal(tmp_path / "c.h5", "k")
    journal.write(np.ones((1, 3)), ["a/x.jpg"], ["0" * 64])
    tmp = f"seg-00000000.npz.tmp-{os.getpid()}"  # featcache.files' temporary name
    assert events == [("fsync", tmp), ("replace", "seg-00000000.npz"), ("fsync", "k")]


def test_damaged_entry_attribute_is_one_line(tmp_path):
    cache = tmp_path / "c.h5"
    save_features(cache, Features(np.eye(2, dtype=np.float32), np.array([0, 1]),
                                  np.array(["a/0", "b/1"]), ["a", "b"],
                                  np.array(["0" * 64, "1" * 64]), spec={"name": "x"}))
    with h5py.File(cache, "a") as f:
        _entry(f).attrs["class_names"] = '["a", #'
    with pytest.raises(FeatcacheError, match="c.h5 is damaged and cannot be read"):
        featcache.load_features(cache)
    assert "is damaged" in _one_line_cli("info", cache)


def test_a_folder_given_as_the_cache_is_named_as_such(tmp_path):
    from featcache.cache import load_features
    with pytest.raises(FeatcacheError, match="is a folder, not a cache file"):
        load_features(tmp_path)
