"""The OpenVINO runtime: Keras parity on both runtimes, the fingerprint rule, bf16, bad input."""
from __future__ import annotations

import dataclasses
import logging
import sys

import h5py
import numpy as np
import pytest

import featcache
from helpers import keras_reference, write_images
from featcache.errors import FeatcacheError
from featcache.embedding.runtime import use_runtime

OPENVINO = pytest.mark.requires_openvino
KERAS = {"mobilenet_v2": ("MobileNetV2", 224), "inception_v3": ("InceptionV3", 299)}


def _cli(*args):
    from click.testing import CliRunner

    from featcache.cli import cli
    return CliRunner().invoke(cli, [str(a) for a in args])


def _plain_keras(name, data):
    """Features of ``data`` from plain Keras with featcache's seeded random init."""
    import importlib

    import keras
    attr, size = KERAS[name]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, attr)(include_top=False, weights=None, pooling="avg",
                                              input_shape=(size, size, 3))
    pre = importlib.import_module(f"keras.applications.{name}").preprocess_input
    ref, paths, _ = keras_reference(data, size, pre, model)
    return ref, [p.split(str(data) + "/")[-1] for p in paths]


@pytest.mark.parametrize("name", ["mobilenet_v2", "inception_v3"])
@pytest.mark.parametrize("runtime", ["tensorflow", pytest.param("openvino", marks=OPENVINO)])
def test_f32_parity_with_plain_keras_on_both_runtimes(tmp_path, name, runtime):
    data = tmp_path / "data"
    write_images(data, {"a": 2, "b": 1}, size=(61, 47))
    write_images(data, {"b": 2}, fmt="PNG", seed=1, size=(33, 50))
    bb = use_runtime(featcache.get_backbone(name, weights="none"), runtime)
    assert bb.runtime == runtime  # openvino really ran: no silent fallback
    featcache.embed(data, tmp_path / "c.h5", backbone=bb, progress=False)
    got = featcache.load_features(tmp_path / "c.h5")
    ref, paths = _plain_keras(name, data)
    ref = ref[np.argsort(paths)]
    np.testing.assert_array_equal(got.paths, sorted(paths))
    diff = np.abs(got.X - ref).max()
    assert diff <= 1e-4 * np.abs(ref).max(), diff  # the bound of test_embed's parity tests
    assert np.ptp(got.X, axis=0).max() > 1e-3 * np.abs(ref).max()  # rows really differ


@OPENVINO
def test_default_runtime_is_openvino_and_f32_runtimes_share_one_entry(tmp_path, mobilenet):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 2, "b": 2})
    s_tf = featcache.embed(data, cache, backbone=mobilenet, runtime="tensorflow", progress=False)
    write_images(data, {"a": 3}, seed=4)  # a/img_000..001 changed, a/img_002 new
    s_ov = featcache.embed(data, cache, backbone=mobilenet, progress=False)  # the default: auto
    assert s_ov.key == s_tf.key and s_ov.cached == 2 and s_ov.embedded == 3
    info = featcache.cache_info(cache)["entries"]
    assert len(info) == 1 and info[0]["runtimes"] == ["openvino", "tensorflow"]
    assert "precision" not in info[0]["spec"] and info[0]["fingerprint"] == mobilenet.fingerprint
    assert "precision f32, runtime openvino+tensorflow" in _cli("info", cache).output


@pytest.mark.requires_bf16
def test_bf16_gets_its_own_entry_and_never_mixes(tmp_path, mobilenet):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 3, "b": 3})
    k32 = featcache.embed(data, cache, backbone=mobilenet, progress=False).key
    s16 = featcache.embed(data, cache, backbone=mobilenet, precision="bf16", progress=False)
    assert s16.key != k32 and s16.embedded == 6 and s16.cached == 0  # no f32 row reused
    with h5py.File(cache, "r") as f:
        assert sorted(f["backbones"]) == sorted([k32, s16.key])
    with pytest.raises(FeatcacheError, match="2 entries for 'mobilenet_v2'"):
        featcache.load_features(cache, backbone="mobilenet_v2")
    x32, x16 = featcache.load_features(cache, k32), featcache.load_features(cache, s16.key)
    assert x16.spec["precision"] == "bf16" and "precision" not in x32.spec
    assert not np.array_equal(x32.X, x16.X)  # really reduced precision
    cos = np.sum(x32.X * x16.X, 1) / np.linalg.norm(x32.X, axis=1) / np.linalg.norm(x16.X, axis=1)
    assert cos.min() > 0.98, cos
    again = featcache.embed(data, cache, backbone=mobilenet, precision="bf16", progress=False)
    assert again.key == s16.key and again.cached == 6 and again.embedded == 0
    assert "precision bf16, runtime openvino" in _cli("info", cache).output


def _saved_model(path, op=None):
    """A tiny SavedModel feature extractor; ``op`` (e.g. tf.math.lgamma) is applied last."""
    import tensorflow as tf

    class Tiny(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.random.default_rng(0).normal(size=(3, 6)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, x):
            y = tf.reduce_mean(x, axis=[1, 2]) @ self.w
            return op(y) if op else y

    tf.saved_model.save(Tiny(), str(path))
    return str(path)


@OPENVINO
def test_savedmodel_backbone_converts(tmp_path):
    handle = _saved_model(tmp_path / "tiny")
    tf_bb = featcache.get_backbone(handle, image_size=32)
    ov_bb = use_runtime(tf_bb, "openvino")
    assert ov_bb.runtime == "openvino" and ov_bb.fingerprint == tf_bb.fingerprint
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(ov_bb.fn(x), tf_bb.fn(x).numpy(), rtol=1e-5, atol=1e-6)


@OPENVINO
def test_unconvertible_model_falls_back_with_note_or_fails_when_forced(tmp_path, caplog):
    import tensorflow as tf
    handle = _saved_model(tmp_path / "lgamma", tf.math.lgamma)  # no OpenVINO conversion rule
    write_images(tmp_path / "data", {"a": 2, "b": 2})
    cache = tmp_path / "c.h5"
    root_level = logging.getLogger().level
    with caplog.at_level(logging.WARNING, logger="featcache.embedding.runtime"):
        s = featcache.embed(tmp_path / "data", cache, backbone=handle, progress=False)
    assert s.embedded == 4 and "Lgamma" in caplog.text and "using TensorFlow" in caplog.text
    assert logging.getLogger().level == root_level  # OpenVINO's failure must not mute notes
    assert featcache.cache_info(cache)["entries"][0]["runtimes"] == ["tensorflow"]
    before = cache.read_bytes()
    write_images(tmp_path / "data", {"b": 3}, seed=2)
    r = _cli("embed", tmp_path / "data", "-o", cache, "--backbone", handle, "--runtime", "openvino")
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert "cannot run backbone" in r.output and "Lgamma" in r.output
    assert "--runtime tensorflow" in r.output and cache.read_bytes() == before


@OPENVINO
def test_output_differing_from_tensorflow_is_caught_at_load(mobilenet, caplog):
    import tensorflow as tf
    graph = mobilenet.graph_fn
    wrong = tf.function(lambda x: graph(x) * 1.01, input_signature=graph.input_signature)
    bad = dataclasses.replace(mobilenet, graph_fn=wrong)
    with caplog.at_level(logging.WARNING, logger="featcache.embedding.runtime"):
        assert use_runtime(bad).runtime == "tensorflow"
    assert "differ from TensorFlow's" in caplog.text
    with pytest.raises(FeatcacheError, match="differ from TensorFlow's"):
        use_runtime(bad, "openvino")


@pytest.fixture
def cached(tmp_path, mobilenet):
    """A folder and a cache already holding its features (to prove nothing is lost)."""
    write_images(tmp_path / "data", {"a": 2, "b": 2})
    featcache.embed(tmp_path / "data", tmp_path / "c.h5", backbone=mobilenet, progress=False)
    write_images(tmp_path / "data", {"a": 3}, seed=9)
    return tmp_path / "data", tmp_path / "c.h5", (tmp_path / "c.h5").read_bytes()


def _no_openvino(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError


def _no_bf16(monkeypatch):
    import featcache.embedding.runtime as runtime
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda core: False)


@pytest.mark.parametrize("setup, args, message", [
    (_no_openvino, ["--runtime", "openvino"], "--runtime openvino needs OpenVINO"),
    (_no_openvino, ["--precision", "bf16"], "--precision bf16 needs OpenVINO"),
    pytest.param(_no_bf16, ["--precision", "bf16"], "has no bf16 support", marks=OPENVINO),
    (None, ["--runtime", "onnx"], "unknown --runtime 'onnx': choose auto, tensorflow, openvino"),
    (None, ["--precision", "fp16"], "unknown --precision 'fp16': choose f32, bf16"),
    (None, ["--runtime", "tensorflow", "--precision", "bf16"], "runs on OpenVINO only"),
])
def test_bad_runtime_input_one_line_nothing_lost(cached, monkeypatch, setup, args, message):
    data, cache, before = cached
    if setup:
        setup(monkeypatch)
    r = _cli("embed", data, "-o", cache, "--weights", "none", *args)
    assert r.exit_code == 1 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert cache.read_bytes() == before


@OPENVINO
def test_auto_without_openvino_uses_tensorflow(cached, monkeypatch, mobilenet):
    data, cache, _ = cached
    _no_openvino(monkeypatch)
    s = featcache.embed(data, cache, backbone=mobilenet, progress=False)
    assert s.embedded == 3 and s.cached == 2
    assert featcache.cache_info(cache)["entries"][0]["runtimes"] == ["openvino", "tensorflow"]


def test_decode_pool_is_fixed_with_the_autotuner_off(tmp_path):
    from featcache.embedding.decode import image_dataset
    from featcache.threads import available_cores
    write_images(tmp_path / "d", {"a": 3})
    paths = sorted(str(p) for p in (tmp_path / "d" / "a").iterdir())
    plain = image_dataset(paths, [False] * 3, 16, 2)
    split = image_dataset(paths, [False] * 3, 16, 2, threads=1)
    assert split.options().threading.private_threadpool_size == 1
    assert split.options().threading.max_intra_op_parallelism == 1
    assert plain.options().threading.private_threadpool_size == available_cores()
    assert not plain.options().autotune.enabled and not split.options().autotune.enabled
    for (a, _), (b, _) in zip(plain, split):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # same pixels, fewer threads




def test_thread_split_gives_both_pools_every_core():
    from featcache.embedding.runtime import thread_split
    assert thread_split(2) == (2, 2) and thread_split(1) == (1, 1)
    assert thread_split(16) == (16, 16)
