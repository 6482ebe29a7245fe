"""Augmented views in the cache: spec parsing, determinism, storage with the entry, resume,
incremental runs, removed images, checksums, and the one-line errors."""
from __future__ import annotations

import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

import featcache
from helpers import counting, kill_after_segments, write_images
from featcache.embedding.augment import augment_image, parse_augment, view_seeds
from featcache.errors import FeatcacheError
from helpers import tiny_backbone

SPEC = "flip,crop=0.8,rotate=10,color=0.2,blur"


@pytest.fixture(scope="module")
def tiny():
    return tiny_backbone()


def _expected_views(data, features, bb, aug, k, seed):
    """Each view recomputed by hand from its file, seeds and the backbone, one image at a time."""
    import tensorflow as tf

    @tf.function
    def one(path, s):
        img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return augment_image(img, parse_augment(aug), s, bb.spec.input_size)
    out = []
    for rel, sha in zip(features.paths, features.sha256):
        seeds = view_seeds(sha, k, seed)
        out.append(np.stack([bb.fn(one(str(data / rel), seeds[j])[None]).numpy()[0]
                             for j in range(k)]))
    return np.stack(out)


def test_views_stored_with_entry_and_match_their_seeded_definition(tmp_path, tiny):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 4, "b": 3}, size=(40, 32))
    s = featcache.embed(data, cache, backbone=tiny, views=3, augment=SPEC, seed=5, batch_size=4,
                        progress=False)
    assert s.embedded == 7 and s.views_embedded == 7 and s.view_key.startswith("k3-")
    f = featcache.load_features(cache, views=True)
    assert f.views.shape == (7, 3, tiny.spec.feature_dim) and f.views.dtype == np.float32
    np.testing.assert_allclose(f.views, _expected_views(data, f, tiny, SPEC, 3, 5), rtol=1e-5,
                               atol=1e-6)
    assert np.abs(f.views - f.X[:, None]).max() > 0.01  # views really differ from the clean row
    assert featcache.load_features(cache).views is None  # clean rows as before
    np.testing.assert_array_equal(featcache.load_features(cache).X, f.X)
    v = featcache.load_views(cache)
    assert (v.augment, v.seed, v.n_views) == ("crop=0.8,flip,rotate=10,color=0.2,blur=1", 5, 3)
    np.testing.assert_array_equal(v.features, f.views)
    np.testing.assert_array_equal(f.subset([2, 0]).views, f.views[[2, 0]])
    with h5py.File(cache, "r") as h:
        g = h["backbones"][s.key]["views"][s.view_key]
        assert g["features"].shape == (7, 3, tiny.spec.feature_dim) and len(g["checksum"]) == 7


def test_crop_1_is_the_clean_image_and_flip_a_mirror_or_identity():
    import tensorflow as tf
    img = tf.constant(np.random.default_rng(0).integers(0, 256, (30, 50, 3)).astype(np.uint8))
    clean = tf.image.resize(img, (24, 24), method="bilinear").numpy()
    seeds = view_seeds("ab" * 32, 6, 0)
    crop = [augment_image(img, parse_augment("crop=1"), s, 24).numpy() for s in seeds]
    assert all(np.array_equal(c, clean) for c in crop)
    flips = [augment_image(img, parse_augment("flip"), s, 24).numpy() for s in seeds]
    assert all(np.array_equal(x, clean) or np.array_equal(x, clean[:, ::-1]) for x in flips)
    assert len({x.tobytes() for x in flips}) == 2  # both outcomes occur over 6 seeds
    again = augment_image(img, parse_augment(SPEC), seeds[1], 24).numpy()
    assert np.array_equal(again, augment_image(img, parse_augment(SPEC), seeds[1], 24).numpy())
    assert not np.array_equal(again, augment_image(img, parse_augment(SPEC), seeds[2], 24).numpy())
    assert parse_augment("crop=0.8,flip").canonical == parse_augment(" flip , crop=.80").canonical


def test_adding_views_reuses_cached_clean_rows(tmp_path, tiny):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 3, "b": 3})
    bb, calls = counting(tiny)
    key = featcache.embed(data, cache, backbone=bb, progress=False).key
    before = featcache.load_features(cache)
    calls.clear()
    s = featcache.embed(data, cache, backbone=bb, views=2, progress=False)  # default augment
    assert sum(calls) == 6 * 2 and s.key == key and s.embedded == 0 and s.views_embedded == 6
    after = featcache.load_features(cache, views=True)
    np.testing.assert_array_equal(after.X, before.X)
    assert featcache.load_views(cache).augment == "crop=0.8,flip,color=0.2"


def test_second_spec_gets_its_own_group_never_mixed(tmp_path, tiny):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 2, "b": 2})
    k1 = featcache.embed(data, cache, backbone=tiny, views=2, augment="flip", progress=False).view_key
    k2 = featcache.embed(data, cache, backbone=tiny, views=2, augment="color=0.5",
                         progress=False).view_key
    k3 = featcache.embed(data, cache, backbone=tiny, views=2, augment="flip", seed=1,
                         progress=False).view_key
    assert len({k1, k2, k3}) == 3
    with pytest.raises(FeatcacheError, match="several views groups"):
        featcache.load_features(cache, views=True)
    with pytest.raises(FeatcacheError, match="2 views groups with augment 'flip'"):
        featcache.load_features(cache, views="flip")  # two seeds: the spec is ambiguous
    a = featcache.load_features(cache, views=k1).views
    b = featcache.load_features(cache, views="color=0.5").views
    assert a is not None and np.abs(a - b).max() > 0.01
    info = featcache.cache_info(cache)["entries"][0]["views"]
    assert sorted(v["key"] for v in info) == sorted([k1, k2, k3])


def test_incremental_run_gives_new_images_views_and_removed_ones_drop(tmp_path, tiny):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 3, "b": 3})
    bb, calls = counting(tiny)
    featcache.embed(data, cache, backbone=bb, views=2, augment=SPEC, progress=False)
    first = featcache.load_features(cache, views=True)
    write_images(data, {"c": 2}, seed=4)
    (data / "a" / "img_000.jpg").unlink()
    calls.clear()
    featcache.embed(data, cache, backbone=bb, progress=False)  # clean only: new rows lack views
    with pytest.raises(FeatcacheError, match=r"2 of 7 images have no views .*--views 2"):
        featcache.load_features(cache, views=True)
    assert sum(calls) == 2
    calls.clear()
    s = featcache.embed(data, cache, backbone=bb, views=2, augment=SPEC, progress=False)
    assert sum(calls) == 2 * 2 and s.views_embedded == 2 and s.embedded == 0
    now = featcache.load_features(cache, views=True)
    assert len(now) == 7 and "a/img_000.jpg" not in now.paths
    kept = np.isin(first.paths, now.paths)
    np.testing.assert_array_equal(now.views[np.isin(now.paths, first.paths)], first.views[kept])
    with h5py.File(cache, "r") as h:
        entry = h["backbones"][s.key]
        assert len(entry["views"][s.view_key]["paths"]) == 7


def test_damaged_view_row_named_then_only_its_views_reembedded(tmp_path, tiny):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 3, "b": 3})
    s = featcache.embed(data, cache, backbone=tiny, views=2, progress=False)
    good = featcache.load_features(cache, views=True)
    with h5py.File(cache, "r+") as h:
        h["backbones"][s.key]["views"][s.view_key]["features"][1, 0, 0] += 1.0
    with pytest.raises(FeatcacheError, match="1 damaged row"):
        featcache.load_features(cache, views=True)
    assert len(featcache.load_features(cache)) == 6  # the clean rows are fine
    bb, calls = counting(tiny)
    featcache.embed(data, cache, backbone=bb, views=2, progress=False)
    assert sum(calls) == 2  # one image's two views
    np.testing.assert_array_equal(featcache.load_features(cache, views=True).views, good.views)


def test_undecodable_image_fails_once_and_others_get_views(tmp_path, tiny):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 3, "b": 3}, size=(90, 70))
    raw = (data / "a" / "img_001.jpg").read_bytes()
    (data / "a" / "img_001.jpg").write_bytes(raw[: len(raw) // 2])
    s = featcache.embed(data, cache, backbone=tiny, views=2, batch_size=3, progress=False)
    assert s.failed == 1 and s.embedded == 5 and s.views_embedded == 5
    assert featcache.load_features(cache, views=True).views.shape[:2] == (5, 2)
    bb, calls = counting(tiny)
    assert featcache.embed(data, cache, backbone=bb, views=2, progress=False).failed == 1
    assert not calls  # a known failure is not retried for its views either


def test_failed_commit_loses_nothing_and_rerun_embeds_no_view_again(tmp_path, tiny, monkeypatch):
    import featcache.embedding.run as embedding
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 3, "b": 3})
    featcache.embed(data, cache, backbone=tiny, progress=False)
    before = cache.read_bytes()

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(embedding, "commit_views", disk_full)
    with pytest.raises(FeatcacheError, match="no space left on .*nothing lost"):
        featcache.embed(data, cache, backbone=tiny, views=2, batch_size=2, progress=False)
    assert cache.read_bytes() == before
    monkeypatch.undo()
    bb, calls = counting(tiny)
    s = featcache.embed(data, cache, backbone=bb, views=2, progress=False)
    assert not calls and s.views_embedded == 0  # every view came from the kept journal
    assert featcache.load_features(cache, views=True).views.shape[:2] == (6, 2)


@pytest.mark.parametrize("spec, message", [
    ("foo", "unknown augmentation op 'foo'"),
    ("flip,warp=2", "unknown augmentation op 'warp'"),
    ("crop=1.5", "crop=1.5 is out of range"),
    ("rotate=0", "rotate=0 is out of range"),
    ("color=abc", "'color': 'abc' is not a number"),
    ("blur=9", "blur=9 is out of range"),
    ("flip=1", "'flip' takes no value"),
    ("rotate", "'rotate' needs a value"),
    ("flip,flip", "'flip' is given twice"),
    (",", "names no operation"),
])
def test_bad_augment_spec_names_the_op(spec, message):
    with pytest.raises(FeatcacheError, match=re.escape(message)):
        parse_augment(spec)


@pytest.mark.parametrize("args, message", [
    (["--views", "0"], "--views 0: pass a whole number K >= 1"),
    (["--views", "-2"], "--views -2: pass a whole number K >= 1"),
    (["--views", "2", "--augment", "zoom=2"], "unknown augmentation op 'zoom'"),
    (["--views", "2", "--augment", "crop=0"], "crop=0 is out of range"),
    (["--augment", "flip"], "--augment 'flip' needs --views K"),
])
def test_cli_bad_views_one_line_before_any_work(tmp_path, args, message):
    from click.testing import CliRunner

    from featcache.cli import cli
    write_images(tmp_path / "data", {"a": 1, "b": 1})
    result = CliRunner().invoke(cli, ["embed", str(tmp_path / "data"), "-o", str(tmp_path / "c.h5"),
                                      "--weights", "none", *args])
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "c.h5").exists()


def test_cli_info_shows_views(tmp_path, tiny):
    from click.testing import CliRunner

    from featcache.cli import cli
    write_images(tmp_path / "data", {"a": 2, "b": 2})
    featcache.embed(tmp_path / "data", tmp_path / "c.h5", backbone=tiny, views=4, augment="flip",
                    seed=3, progress=False)
    out = CliRunner().invoke(cli, ["info", str(tmp_path / "c.h5")]).output
    assert re.search(r"views k4-\w+: 4 per image, augment flip, seed 3, 4 rows", out), out


def _cli(*args):
    code = "import sys; from featcache.cli import main; sys.argv[0] = 'featcache'; main()"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_resume_after_kill_gives_bit_identical_views(tmp_path):
    data = tmp_path / "data"
    write_images(data, {"a": 12, "b": 12}, size=(48, 48))
    args = ["--weights", "none", "--batch-size", "6", "--views", "2", "--augment", SPEC,
            "--seed", "4"]
    victim, partial = tmp_path / "v.h5", tmp_path / "v.h5.partial"
    proc = _cli("embed", data, "-o", victim, *args)
    segs = kill_after_segments(proc, partial, "*@*/seg-*.npz", 2, 240)
    assert 2 <= len(segs) and not victim.exists()
    out, err = _cli("embed", data, "-o", victim, *args).communicate(timeout=600)
    embedded, cached = map(int, re.search(r"embedded (\d+).*already cached (\d+)", out).groups())
    assert cached >= 1 and embedded == 24 - cached, out + err  # resumed, not restarted
    out, err = _cli("embed", data, "-o", tmp_path / "ref.h5", *args).communicate(timeout=600)
    a = featcache.load_features(tmp_path / "ref.h5", views=True)
    b = featcache.load_features(victim, views=True)
    np.testing.assert_array_equal(a.paths, b.paths)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.views, b.views)  # identical, not just close
    assert not partial.exists()
