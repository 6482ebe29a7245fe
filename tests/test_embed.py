"""The embed pass and the cache: Keras parity, resume after kill -9, incremental runs, safety."""
from __future__ import annotations

import re
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

import featcache
from helpers import (counting, keras_reference, kill_after_segments, lock_held_in_thread,
                      write_images)
from featcache.errors import FeatcacheError
from featcache.cache.write import writer_lock


def test_features_match_plain_keras(tmp_path, mobilenet):
    import keras
    data = tmp_path / "data"
    write_images(data, {"b": 3, "a": 3}, size=(61, 47))
    write_images(data, {"c": 2}, fmt="PNG", seed=1)
    Image.new("L", (30, 20), 90).save(data / "c" / "gray.png")
    Image.new("RGB", (25, 33), (200, 10, 40)).save(data / "a" / "flat.bmp")
    summary = featcache.embed(data, tmp_path / "c.h5", backbone=mobilenet, progress=False)
    assert summary.embedded == 10 and summary.failed == 0

    keras.utils.set_random_seed(0)  # the seed featcache uses for weights="none"
    model = keras.applications.MobileNetV2(include_top=False, weights=None, pooling="avg",
                                           input_shape=(224, 224, 3))
    ref, ref_paths, ref_classes = keras_reference(
        data, 224, keras.applications.mobilenet_v2.preprocess_input, model)
    got = featcache.load_features(tmp_path / "c.h5")
    assert got.class_names == ref_classes
    rel = [str(p.relative_to(data).as_posix()) for p in map(__import__("pathlib").Path, ref_paths)]
    order = np.argsort(rel)
    np.testing.assert_array_equal(got.paths, np.array(rel)[order])
    diff = np.abs(got.X - ref[order]).max()
    # Random-init MobileNetV2 features are tiny, so also demand relative agreement.
    assert diff < 1e-4 and diff <= 1e-4 * np.abs(ref).max(), diff
    assert np.ptp(got.X, axis=0).max() > 1e-3 * np.abs(ref).max()  # rows really differ


def test_incremental_embeds_only_new_and_changed(tmp_path, mobilenet):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 5, "b": 5})
    bb, calls = counting(mobilenet)
    featcache.embed(data, cache, backbone=bb, batch_size=4, progress=False)
    assert sum(calls) == 10
    before = featcache.load_features(cache)

    calls.clear()
    s = featcache.embed(data, cache, backbone=bb, progress=False)
    assert sum(calls) == 0 and s.cached == 10 and s.embedded == 0

    write_images(data, {"a": 7}, seed=5)  # overwrites a/img_000..004 with new content, adds 2
    (data / "b" / "img_000.jpg").unlink()
    calls.clear()
    s = featcache.embed(data, cache, backbone=bb, progress=False)
    assert sum(calls) == 7 and s.embedded == 7 and s.removed == 6
    after = featcache.load_features(cache)
    assert len(after) == 11 and "b/img_000.jpg" not in after.paths
    kept = np.isin(after.paths, [f"b/img_00{i}.jpg" for i in range(1, 5)])
    np.testing.assert_array_equal(after.X[kept], before.X[np.isin(before.paths, after.paths[kept])])


def test_corrupt_image_recorded_not_crashing(tmp_path, mobilenet):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 3, "b": 3}, size=(120, 90))
    good = (data / "a" / "img_001.jpg").read_bytes()
    (data / "a" / "img_001.jpg").write_bytes(good[: len(good) // 2])  # header fine, body cut
    (data / "b" / "notes.txt").write_text("hello")
    s = featcache.embed(data, cache, backbone=mobilenet, batch_size=2, progress=False)
    assert s.embedded == 5 and s.failed == 2
    failures = {f["path"]: f["reason"] for f in featcache.cache_info(cache)["entries"][0]["failures"]}
    assert set(failures) == {"a/img_001.jpg", "b/notes.txt"}
    assert "decode" in failures["a/img_001.jpg"] or "rejected" in failures["a/img_001.jpg"]
    assert "a/img_001.jpg" not in featcache.load_features(cache).paths

    bb, calls = counting(mobilenet)  # a known failure is not retried until the file changes
    assert featcache.embed(data, cache, backbone=bb, progress=False).failed == 2 and not calls


def test_other_fingerprint_never_mixes_rows(tmp_path, mobilenet):
    from featcache.embedding.backbones import get_backbone
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 2, "b": 2})
    k1 = featcache.embed(data, cache, backbone=mobilenet, progress=False).key
    k2 = featcache.embed(data, cache, backbone=get_backbone("mobilenet_v2", "none", seed=1),
                         progress=False).key
    assert k1 != k2
    with h5py.File(cache, "r") as f:
        assert sorted(f["backbones"]) == sorted([k1, k2])
        assert all(len(f["backbones"][k]["features"]) == 4 for k in (k1, k2))
    with pytest.raises(FeatcacheError, match="2 entries for 'mobilenet_v2'"):
        featcache.load_features(cache, backbone="mobilenet_v2")
    x1, x2 = featcache.load_features(cache, k1).X, featcache.load_features(cache, k2).X
    assert np.abs(x1 - x2).max() > 0.1 * np.abs(x1).max()  # different weights, different rows


def test_second_writer_gets_clear_error_readers_still_work(tmp_path, mobilenet):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 2, "b": 2})
    featcache.embed(data, cache, backbone=mobilenet, progress=False)
    with writer_lock(cache):
        with pytest.raises(FeatcacheError, match="another featcache process is writing"):
            featcache.embed(data, cache, backbone=mobilenet, progress=False)
        assert len(featcache.load_features(cache)) == 4
    assert featcache.embed(data, cache, backbone=mobilenet, progress=False).cached == 4


def _cli(*args, **kw):
    code = "import sys; from featcache.cli import main; sys.argv[0] = 'featcache'; main()"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    data = tmp_path / "data"
    write_images(data, {"a": 40, "b": 40}, size=(64, 64))
    args = ["--weights", "none", "--batch-size", "8"]
    ref = _cli("embed", data, "-o", tmp_path / "ref.h5", *args)

    victim, partial = tmp_path / "v.h5", tmp_path / "v.h5.partial"
    proc = _cli("embed", data, "-o", victim, *args)
    assert 3 <= len(kill_after_segments(proc, partial, "*/seg-*.npz", 3, 120)) < 10
    assert not victim.exists() or h5py.File(victim, "r")  # a killed writer leaves no broken file

    done_before = 8 * len(list(partial.glob("*/seg-*.npz")))
    out, err = _cli("embed", data, "-o", victim, *args).communicate(timeout=300)
    embedded, cached = map(int, re.search(r"embedded (\d+).*already cached (\d+)", out).groups())
    assert cached == done_before and embedded == 80 - done_before, out  # resumed, not restarted
    assert ref.communicate(timeout=300)[0]
    a, b = featcache.load_features(tmp_path / "ref.h5"), featcache.load_features(victim)
    assert len(b) == 80 and len(set(b.paths)) == 80
    np.testing.assert_array_equal(a.paths, b.paths)
    np.testing.assert_array_equal(a.X, b.X)  # identical, not just close
    assert not partial.exists()


@pytest.mark.parametrize("args, message", [
    (["embed", "{tmp}/missing", "-o", "{tmp}/c.h5"], "does not exist"),
    (["embed", "{tmp}/single", "-o", "{tmp}/c.h5"], "single class"),
    (["embed", "{tmp}/empty", "-o", "{tmp}/c.h5"], "no class sub-folders"),
    (["embed", "{tmp}/data", "-o", "{tmp}/c.h5", "--backbone", "resnet9000"], "unknown backbone"),
    (["embed", "{tmp}/data", "-o", "/proc/no/c.h5"], "cannot write cache"),
    (["embed", "{tmp}/data", "-o", "{tmp}/c.h5", "--weights", "{tmp}/nope.h5"], "does not exist"),
    (["info", "{tmp}/missing.h5"], "no cache file"),
])
def test_cli_user_mistakes_one_line_no_traceback(tmp_path, args, message):
    from click.testing import CliRunner

    from featcache.cli import cli
    write_images(tmp_path / "data", {"a": 1, "b": 1})
    write_images(tmp_path / "single", {"a": 1})
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_embed_then_info(tmp_path):
    from click.testing import CliRunner

    from featcache.cli import cli
    write_images(tmp_path / "data", {"cat": 3, "dog": 2})
    (tmp_path / "data" / "dog" / "x.txt").write_text("?")
    r = CliRunner().invoke(cli, ["embed", str(tmp_path / "data"), "-o", str(tmp_path / "c.h5"),
                                 "--weights", "none"])
    assert r.exit_code == 0, r.output
    assert "embedded 5" in r.output and "failed 1" in r.output
    r = CliRunner().invoke(cli, ["info", str(tmp_path / "c.h5")])
    assert r.exit_code == 0 and "cat  3" in r.output and "dog  2" in r.output
    assert "dog/x.txt: not an image" in r.output and "1280-d" in r.output


def test_weights_file_and_imagenet_offline(tmp_path, monkeypatch):
    import keras

    from featcache.embedding.backbones import get_backbone
    keras.utils.set_random_seed(7)
    model = keras.applications.MobileNetV2(include_top=False, weights=None, pooling="avg")
    path = tmp_path / "mine.weights.h5"
    model.save_weights(path)
    bb = get_backbone("mobilenet_v2", weights=str(path))
    x = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    expected = model(keras.applications.mobilenet_v2.preprocess_input(x.copy()), training=False)
    np.testing.assert_allclose(bb.fn(x).numpy(), np.asarray(expected), rtol=1e-5, atol=1e-9)
    assert bb.fingerprint != get_backbone("mobilenet_v2", weights="none").fingerprint

    def offline(*a, **k):
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")
    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    with pytest.raises(FeatcacheError, match="weights=PATH"):
        get_backbone("mobilenet_v2", weights="imagenet")


def test_hub_savedmodel_directory(tmp_path):
    """A SavedModel loaded with hub.load, fed [0, 1] inputs like the TF Hub feature vectors."""
    import keras
    import tensorflow as tf

    class Tiny(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.random.default_rng(0).normal(size=(3, 6)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, x):
            return tf.reduce_mean(x, axis=[1, 2]) @ self.w

    module = Tiny()
    tf.saved_model.save(module, str(tmp_path / "tiny"))
    write_images(tmp_path / "data", {"a": 2, "b": 3})
    s = featcache.embed(tmp_path / "data", tmp_path / "c.h5", backbone=str(tmp_path / "tiny"),
                        progress=False)
    assert s.embedded == 5
    got = featcache.load_features(tmp_path / "c.h5")
    assert got.spec["source"] == "hub" and got.spec["feature_dim"] == 6

    ds = keras.utils.image_dataset_from_directory(tmp_path / "data", image_size=(224, 224),
                                                  shuffle=False)
    ref = np.concatenate([module(x / 255.0).numpy() for x, _ in ds])
    np.testing.assert_allclose(got.X, ref, atol=1e-5)
    with pytest.raises(FeatcacheError, match="keras backbones only"):
        featcache.embed(tmp_path / "data", tmp_path / "c.h5", backbone=str(tmp_path / "tiny"),
                        weights="none", progress=False)


def test_concurrent_embed_subprocess_blocked(tmp_path):
    """A real second process on the same cache fails fast while the first holds the lock."""
    write_images(tmp_path / "data", {"a": 1, "b": 1})
    cache = tmp_path / "c.h5"
    with lock_held_in_thread(cache):
        out, err = _cli("embed", tmp_path / "data", "-o", cache, "--weights", "none").communicate(
            timeout=120)
    assert "another featcache process is writing" in err and "Traceback" not in err


def test_inception_v3_parity_and_spec(tmp_path):
    import keras

    from featcache.embedding.backbones import get_backbone
    data = tmp_path / "data"
    write_images(data, {"a": 2, "b": 1}, size=(50, 70))
    bb = get_backbone("inception_v3", weights="none")
    assert (bb.spec.input_size, bb.spec.feature_dim) == (299, 2048)
    featcache.embed(data, tmp_path / "c.h5", backbone=bb, progress=False)
    keras.utils.set_random_seed(0)
    model = keras.applications.InceptionV3(include_top=False, weights=None, pooling="avg",
                                           input_shape=(299, 299, 3))
    ref, _, _ = keras_reference(data, 299, keras.applications.inception_v3.preprocess_input, model)
    got = featcache.load_features(tmp_path / "c.h5")
    assert got.X.shape == (3, 2048)
    diff = np.abs(got.X - ref).max()
    assert diff < 1e-4 and diff <= 1e-4 * np.abs(ref).max(), diff


def test_foreign_file_at_output_is_never_overwritten(tmp_path, mobilenet):
    write_images(tmp_path / "data", {"a": 1, "b": 1})
    target = tmp_path / "precious.h5"
    target.write_bytes(b"my thesis, not a cache")
    with pytest.raises(FeatcacheError, match="precious.h5 is not a readable HDF5 file"):
        featcache.embed(tmp_path / "data", target, backbone=mobilenet, progress=False)
    assert target.read_bytes() == b"my thesis, not a cache"


def test_failed_commit_loses_nothing_and_rerun_resumes(tmp_path, mobilenet, monkeypatch):
    import featcache.embedding.run as embedding
    from click.testing import CliRunner

    from featcache.cli import cli
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 3, "b": 3})
    featcache.embed(data, cache, backbone=mobilenet, progress=False)
    before = cache.read_bytes()
    write_images(data, {"b": 5}, seed=3)  # 3 changed, 2 new

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(embedding, "write_failures", disk_full)  # dies inside the rewrite
    with pytest.raises(FeatcacheError, match="no space left on .*; nothing lost; free space"):
        featcache.embed(data, cache, backbone=mobilenet, batch_size=2, progress=False)
    assert cache.read_bytes() == before and not list(tmp_path.glob("c.h5.tmp-*"))
    assert "interrupted embed run left 3 batch(es)" in CliRunner().invoke(cli, ["info", str(cache)]).output

    monkeypatch.undo()
    (tmp_path / "c.h5.tmp-99999").write_bytes(b"left by a writer killed mid-rewrite")
    bb, calls = counting(mobilenet)
    s = featcache.embed(data, cache, backbone=bb, progress=False)
    assert not calls and s.cached == 8 and len(featcache.load_features(cache)) == 8
    assert not list(tmp_path.glob("c.h5.tmp-*"))
    assert "interrupted" not in CliRunner().invoke(cli, ["info", str(cache)]).output
