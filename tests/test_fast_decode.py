"""The opt-in fast JPEG decode (DCT-domain downscaling), its own cache entry, and export refusals."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import featcache
from helpers import counting, write_images
from featcache.embedding.backbones import with_fast_decode


def _cli(*args):
    from featcache.cli import cli
    return CliRunner().invoke(cli, [str(a) for a in args])


def _decode(path, size, fast, pil=False):
    from featcache.embedding.decode import image_dataset
    [(images, _)] = list(image_dataset([str(path)], [pil], size, 1, fast_decode=fast))
    return images.numpy()[0]


def _cosine(a, b):
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("size, ratio", [(224, 2), (100, 4), (50, 8), (300, 1)])
def test_fast_decode_picks_the_largest_ratio_keeping_the_input_size(tmp_path, size, ratio):
    import tensorflow as tf
    write_images(tmp_path, {"a": 1}, size=(640, 480))
    path = tmp_path / "a" / "img_000.jpg"
    img = tf.io.decode_jpeg(path.read_bytes(), 3, ratio=ratio)
    assert min(img.shape[:2]) >= size
    want = tf.image.resize(img, (size, size), method="bilinear").numpy()
    np.testing.assert_array_equal(_decode(path, size, True), want)
    if ratio > 1:  # really downscaled: the exact decode gives other pixels
        assert np.abs(_decode(path, size, False) - want).max() > 0


def test_fast_decode_leaves_other_formats_and_small_jpegs_exact(tmp_path):
    write_images(tmp_path, {"a": 1}, size=(640, 480), fmt="PNG")
    write_images(tmp_path, {"b": 1}, size=(300, 200))  # 200 / 2 < 224: no scale fits
    for path in (tmp_path / "a" / "img_000.png", tmp_path / "b" / "img_000.jpg"):
        np.testing.assert_array_equal(_decode(path, 224, True), _decode(path, 224, False))


def test_fast_decode_drafts_jpegs_that_pil_decodes(tmp_path):
    from featcache.embedding.scan import inspect_file
    from featcache.embedding.decode import pil_rgb
    arr = np.random.default_rng(0).integers(0, 256, (480, 640, 3)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the scan sends it to PIL
    Image.fromarray(arr).save(tmp_path / "r.jpg", exif=exif)
    f, _ = inspect_file(tmp_path / "r.jpg", "a/r.jpg")
    assert f.use_pil
    assert pil_rgb(f.path).shape == (640, 480, 3)
    assert pil_rgb(f.path, draft=224).shape == (320, 240, 3)  # 1/2 scale, then rotated
    fast, exact = _decode(f.path, 224, True, pil=True), _decode(f.path, 224, False, pil=True)
    assert fast.shape == exact.shape == (224, 224, 3) and np.abs(fast - exact).max() > 0


def test_fast_decode_has_its_own_entry_with_close_features(tmp_path, mobilenet):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 3, "b": 3}, size=(640, 480))
    exact = featcache.embed(data, cache, backbone=mobilenet, progress=False)
    fast = featcache.embed(data, cache, backbone=mobilenet, progress=False, fast_decode=True)
    assert fast.key != exact.key and fast.embedded == 6 and fast.cached == 0  # no exact row reused
    entries = {e["key"]: e for e in featcache.cache_info(cache)["entries"]}
    # exact entries keep the fingerprint (and spec) they always had; fast ones get their own
    assert entries[exact.key]["fingerprint"] == mobilenet.fingerprint
    assert "fast_decode" not in entries[exact.key]["spec"]
    assert entries[fast.key]["spec"]["fast_decode"] is True
    assert entries[fast.key]["fingerprint"] == with_fast_decode(mobilenet).fingerprint
    a = featcache.load_features(cache, backbone=exact.key)
    b = featcache.load_features(cache, backbone=fast.key)
    assert list(a.paths) == list(b.paths) and list(a.sha256) == list(b.sha256)
    assert np.abs(a.X - b.X).max() > 1e-3 * np.abs(a.X).max()  # not the exact features
    assert _cosine(a.X, b.X).min() > 0.95
    again = featcache.embed(data, cache, backbone=mobilenet, progress=False, fast_decode=True)
    assert (again.key, again.embedded, again.cached) == (fast.key, 0, 6)
    exact_again = featcache.embed(data, cache, backbone=mobilenet, progress=False)
    assert (exact_again.key, exact_again.embedded, exact_again.cached) == (exact.key, 0, 6)


def test_exact_fingerprints_do_not_change(mobilenet):
    from featcache.embedding.backbones import BackboneSpec
    spec = BackboneSpec("m", "keras", 224, "p", 8, "none")
    assert "fast_decode" not in spec.to_dict() and "precision" not in spec.to_dict()
    assert mobilenet.spec.fast_decode is False
    fast = with_fast_decode(mobilenet)
    assert fast.fingerprint != mobilenet.fingerprint and fast.spec.to_dict()["fast_decode"] is True
    assert with_fast_decode(fast).fingerprint == fast.fingerprint  # idempotent


def test_png_features_are_bitwise_those_of_exact_decode(tmp_path, mobilenet):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 2, "b": 2}, size=(640, 480), fmt="PNG")
    exact = featcache.embed(data, cache, backbone=mobilenet, progress=False)
    fast = featcache.embed(data, cache, backbone=mobilenet, progress=False, fast_decode=True)
    assert fast.key != exact.key  # still its own entry: the rule is per entry, not per file
    a = featcache.load_features(cache, backbone=exact.key)
    b = featcache.load_features(cache, backbone=fast.key)
    np.testing.assert_array_equal(a.X, b.X)


def test_fast_decode_failures_and_resume_behave_as_exact(tmp_path, mobilenet):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 3, "b": 3}, size=(640, 480))
    good = (data / "a" / "img_001.jpg").read_bytes()
    (data / "a" / "img_001.jpg").write_bytes(good[: len(good) // 2])
    (data / "b" / "notes.txt").write_text("hello")
    s = featcache.embed(data, cache, backbone=mobilenet, batch_size=2, progress=False,
                        fast_decode=True)
    assert (s.embedded, s.failed) == (5, 2)
    bb, calls = counting(mobilenet)
    s = featcache.embed(data, cache, backbone=bb, progress=False, fast_decode=True)
    assert (s.embedded, s.cached, s.failed) == (0, 5, 2) and not calls
    write_images(data, {"c": 2}, size=(640, 480), seed=3)
    s = featcache.embed(data, cache, backbone=bb, progress=False, fast_decode=True)
    assert (s.embedded, s.cached) == (2, 5) and sum(calls) == 2


def test_fast_decode_with_views_shards_and_both_runtimes(tmp_path, mobilenet):
    data = tmp_path / "data"
    write_images(data, {"a": 2, "b": 2}, size=(640, 480))
    ref = featcache.embed(data, tmp_path / "ref.h5", backbone=mobilenet, progress=False,
                          fast_decode=True, runtime="tensorflow")
    X = featcache.load_features(ref.cache_path).X
    # views: the clean rows are the fast ones, the views group hangs off the fast entry
    v = featcache.embed(data, tmp_path / "v.h5", backbone=mobilenet, progress=False,
                        fast_decode=True, views=1, runtime="openvino")
    assert v.key == ref.key and v.views_embedded == 4
    np.testing.assert_allclose(featcache.load_features(v.cache_path).X, X, rtol=1e-4,
                               atol=1e-4 * np.abs(X).max())
    assert featcache.load_features(v.cache_path, views=True).views.shape[:2] == (4, 1)
    exact_v = featcache.embed(data, tmp_path / "v.h5", backbone=mobilenet, progress=False, views=1)
    assert exact_v.key != v.key and exact_v.view_key != v.view_key
    # shards: each shard is a fast entry; merged, they equal one fast embed
    for i in range(2):
        featcache.embed(data, tmp_path / "s.h5", backbone=mobilenet, progress=False,
                        fast_decode=True, shard=(i, 2))
    featcache.merge(tmp_path / "s.h5")
    merged = featcache.load_features(tmp_path / "s.h5")
    assert merged.backbone == ref.key and merged.spec["fast_decode"] is True
    want = dict(zip(featcache.load_features(ref.cache_path).paths, X))
    assert sorted(merged.paths) == sorted(want)
    np.testing.assert_allclose(merged.X, [want[p] for p in merged.paths], rtol=1e-4,
                               atol=1e-4 * np.abs(X).max())


def test_cli_fast_decode_says_it_breaks_parity_and_info_marks_it(tmp_path):
    write_images(tmp_path / "data", {"a": 1, "b": 1}, size=(64, 48))
    help_text = " ".join(_cli("embed", "--help").output.split())
    assert "--fast-decode" in help_text and "breaks exact parity with Keras" in help_text
    r = _cli("embed", tmp_path / "data", "-o", tmp_path / "c.h5", "--weights", "none",
             "--fast-decode")
    assert r.exit_code == 0, r.output
    assert "note: fast decode is on" in r.output and "parity with Keras" in r.output
    assert "fast decode (not Keras-exact)" in _cli("info", tmp_path / "c.h5").output
    r = _cli("embed", tmp_path / "data", "-o", tmp_path / "c.h5", "--weights", "none")
    assert "fast decode" not in r.output  # no note without the flag
    assert _cli("info", tmp_path / "c.h5").output.count("fast decode (not Keras-exact)") == 1


def test_a_fast_decode_entry_is_not_exported(tmp_path, mobilenet):
    write_images(tmp_path / "data", {"a": 3, "b": 3}, size=(64, 48))
    featcache.embed(tmp_path / "data", tmp_path / "c.h5", backbone=mobilenet, progress=False,
                    fast_decode=True)
    res = featcache.train(tmp_path / "c.h5", "logreg", folds=3)
    with pytest.raises(featcache.FeatcacheError, match="embedded with fast decode") as err:
        featcache.export_model(res, tmp_path / "model", cache=tmp_path / "c.h5")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "model").exists()
    r = _cli("train", tmp_path / "c.h5", "-o", tmp_path / "model", "--folds", 3)
    assert r.exit_code == 1 and "embedded with fast decode" in r.output
    assert "logreg:" not in r.output  # refused before the head is fitted
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "model").exists()


@pytest.mark.requires_bf16
def test_a_bf16_entry_is_not_exported_with_one_clear_line(tmp_path, mobilenet):
    write_images(tmp_path / "data", {"a": 3, "b": 3}, size=(64, 48))
    featcache.embed(tmp_path / "data", tmp_path / "c.h5", backbone=mobilenet, progress=False,
                    precision="bf16")
    res = featcache.train(tmp_path / "c.h5", "logreg", folds=3)
    with pytest.raises(featcache.FeatcacheError, match="precision=bf16.*runs its backbone in f32"):
        featcache.export_model(res, tmp_path / "model", cache=tmp_path / "c.h5")
    r = _cli("train", tmp_path / "c.h5", "-o", tmp_path / "model", "--folds", 3)
    assert r.exit_code == 1 and "--precision bf16" in r.output and "--precision f32" in r.output
    assert len(r.output.strip().splitlines()) == 1  # refused before the head is fitted
    assert not (tmp_path / "model").exists()
