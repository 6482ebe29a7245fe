"""The backbone registry: Keras parity of every family on tiny random-weight models, the
table itself, the old specs kept, and ``featcache backbones``."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import featcache
from helpers import write_images
from featcache.errors import FeatcacheError
from featcache.embedding.registry import BUILT_IN, KERAS_BACKBONES

# One member per family, at a small input the architecture accepts (Xception needs 71 px).
FAMILIES = {"mobilenet_v3": ("mobilenet_v3_small", 32), "efficientnet": ("efficientnet_b0", 32),
            "efficientnet_v2": ("efficientnet_v2_b0", 32), "resnet_v2": ("resnet50_v2", 32),
            "convnext": ("convnext_tiny", 32), "densenet": ("densenet121", 32),
            "xception": ("xception", 71)}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Six images in three formats and shapes (one grayscale PNG, one BMP), two classes."""
    data = tmp_path_factory.mktemp("zoo") / "data"
    write_images(data, {"a": 2, "b": 1}, size=(61, 47))
    write_images(data, {"b": 1}, fmt="PNG", seed=1, size=(30, 90))
    Image.new("L", (30, 20), 90).save(data / "a" / "gray.png")
    Image.new("RGB", (25, 33), (200, 10, 40)).save(data / "b" / "flat.bmp")
    return data


@pytest.fixture(scope="module")
def tiny():
    """``tiny(name)``: the family member at its small test size, loaded once per module."""
    from featcache.embedding.backbones import load_keras_backbone
    loaded = {}

    def get(name):
        if name not in loaded:
            size = dict(FAMILIES.values())[name]
            loaded[name] = load_keras_backbone(name, "none", image_size=size)
        return loaded[name]
    return get


def _plain_keras(data, name, size):
    """What a user writes with plain Keras: the parity target."""
    import importlib

    import keras
    entry = KERAS_BACKBONES[name]
    keras.utils.set_random_seed(0)  # the seed featcache uses for weights="none"
    model = getattr(keras.applications, entry.constructor)(
        include_top=False, weights=None, pooling="avg", input_shape=(size, size, 3))
    preprocess = importlib.import_module(f"keras.applications.{entry.module}").preprocess_input
    ds = keras.utils.image_dataset_from_directory(
        data, image_size=(size, size), interpolation="bilinear", shuffle=False, batch_size=16)
    feats = np.concatenate([np.asarray(model(preprocess(x), training=False)) for x, _ in ds])
    return feats, [p.split("/data/", 1)[1] for p in ds.file_paths]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_matches_plain_keras(images, tmp_path, tiny, family):
    name, size = FAMILIES[family]
    bb = tiny(name)
    assert (bb.spec.input_size, bb.spec.feature_dim) == (size, KERAS_BACKBONES[name].feature_dim)
    assert bb.spec.preprocessing == KERAS_BACKBONES[name].preprocessing
    featcache.embed(images, tmp_path / "c.h5", backbone=bb, progress=False)
    got = featcache.load_features(tmp_path / "c.h5")
    ref, ref_paths = _plain_keras(images, name, size)
    order = np.argsort(ref_paths)
    np.testing.assert_array_equal(got.paths, np.array(ref_paths)[order])
    ref = ref[order]
    assert got.X.shape == ref.shape == (6, KERAS_BACKBONES[name].feature_dim)
    diff = np.abs(got.X - ref).max()
    assert diff < 1e-4 and diff <= 1e-4 * np.abs(ref).max(), diff
    assert np.ptp(got.X, axis=0).max() > 1e-3 * np.abs(ref).max()  # rows really differ


def test_table_names_real_constructors_and_preprocessing():
    """Every entry's constructor exists, and "built-in" families' preprocess_input is a no-op."""
    import importlib

    import keras
    families = {e.module for e in KERAS_BACKBONES.values()}
    assert families - {"mobilenet_v2", "inception_v3"} == set(FAMILIES)
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    for e in KERAS_BACKBONES.values():
        assert callable(getattr(keras.applications, e.constructor)), e.name
        out = np.asarray(importlib.import_module(f"keras.applications.{e.module}").preprocess_input(x.copy()))
        assert np.array_equal(out, x) == e.builtin_preprocessing, e.name
        assert e.min_size <= e.input_size and e.weights_file.endswith(".h5")


def test_old_backbone_specs_and_fingerprints_unchanged(mobilenet):
    """The registry rewrite keeps mobilenet_v2/inception_v3 specs byte for byte (cache keys)."""
    assert mobilenet.spec.to_dict() == {
        "name": "mobilenet_v2", "source": "keras", "input_size": 224,
        "preprocessing": "keras:mobilenet_v2.preprocess_input", "feature_dim": 1280,
        "weights": "none", "resize": "bilinear", "seed": 0}
    inc = KERAS_BACKBONES["inception_v3"]
    assert (inc.input_size, inc.feature_dim, inc.preprocessing) == (
        299, 2048, "keras:inception_v3.preprocess_input")


def test_image_size_override_checked():
    from featcache.embedding.backbones import get_backbone, load_keras_backbone
    with pytest.raises(FeatcacheError, match="xception takes images of at least 71 px"):
        load_keras_backbone("xception", "none", image_size=32)
    with pytest.raises(FeatcacheError, match="unknown keras backbone 'resnet51'"):
        load_keras_backbone("resnet51", "none")
    with pytest.raises(FeatcacheError, match="efficientnet_b3 takes 300 px images"):
        get_backbone("efficientnet_b3", "none", image_size=32)  # the public call keeps the size
    with pytest.raises(FeatcacheError, match="`featcache backbones` lists.*convnext_small"):
        get_backbone("convnext_huge")


def test_export_keras_file_only_where_preprocessing_is_rebuilt():
    """The .keras export rebuilds x/127.5-1 or nothing; DenseNet's torch scaling gets no file."""
    from types import SimpleNamespace

    from featcache.embedding.backbones import BackboneSpec
    from featcache.model.graph import keras_model
    dense = SimpleNamespace(spec=BackboneSpec("densenet121", "keras", 224,
                                              KERAS_BACKBONES["densenet121"].preprocessing, 1024, "none"))
    assert keras_model(dense, None) is None


def test_export_keras_file_of_builtin_preprocessing_matches_features(images, tiny):
    from featcache.embedding.decode import image_dataset
    from featcache.model.graph import HeadWeights, keras_model
    bb = tiny("mobilenet_v3_small")
    rng = np.random.default_rng(0)
    d = bb.spec.feature_dim
    hw = HeadWeights(rng.normal(size=d).astype(np.float32), rng.uniform(0.5, 2, d).astype(np.float32),
                     rng.normal(size=(d, 2)).astype(np.float32), np.zeros(2, np.float32))
    paths = sorted(str(p) for p in images.rglob("*.jpg"))
    x = np.concatenate([im.numpy() for im, _ in image_dataset(paths, [False] * len(paths), 32, 8)])
    want = hw.probabilities(bb.fn(x).numpy())
    got = np.asarray(keras_model(bb, hw)(x))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_backbones_command_lists_sizes_dims_and_cached_weights(tmp_path, monkeypatch):
    from featcache.cli import cli
    models = tmp_path / "keras_home" / "models"
    models.mkdir(parents=True)
    (models / KERAS_BACKBONES["efficientnet_b0"].weights_file).write_bytes(b"fake weights")
    (models / KERAS_BACKBONES["xception"].weights_file).write_bytes(b"")  # an aborted download
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    r = CliRunner().invoke(cli, ["backbones"])
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line.split() for line in r.output.splitlines()[2:-1]}
    assert set(rows) == set(KERAS_BACKBONES)
    assert rows["efficientnet_b0"][-1] == "yes"
    assert all(rows[n][-1] == "no" for n in KERAS_BACKBONES if n != "efficientnet_b0")
    assert rows["efficientnet_v2_s"][2:5] == ["384", "px", "1280"]
    assert rows["densenet121"][-2] == "keras:densenet.preprocess_input"
    assert rows["convnext_tiny"][-2] == BUILT_IN
    assert f"weights cache: {models}" in r.output
