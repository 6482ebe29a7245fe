"""float16 storage: half the bytes, float32 to readers, checksums over the stored values,
no silent mixing of precisions, and no features float16 cannot hold."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

import featcache
from helpers import write_images
from featcache.errors import FeatcacheError
from helpers import tiny_backbone


@pytest.fixture(scope="module")
def tiny():
    return tiny_backbone()


def test_float16_halves_features_and_reads_back_as_float32(tmp_path, tiny):
    data = tmp_path / "data"
    write_images(data, {"a": 300, "b": 300}, size=(20, 20))
    f32 = featcache.embed(data, tmp_path / "f32.h5", backbone=tiny, progress=False)
    f16 = featcache.embed(data, tmp_path / "f16.h5", backbone=tiny, dtype="float16", progress=False)
    assert f16.key == f32.key  # same backbone, same features: dtype is storage, not identity
    a, b = featcache.load_features(tmp_path / "f32.h5"), featcache.load_features(tmp_path / "f16.h5")
    assert b.X.dtype == np.float32  # readers get float32 unless asked
    np.testing.assert_array_equal(b.X, a.X.astype(np.float16).astype(np.float32))
    assert featcache.load_features(tmp_path / "f16.h5", dtype="float16").X.dtype == np.float16
    with h5py.File(tmp_path / "f16.h5", "r") as h:
        assert h["backbones"][f16.key]["features"].dtype == np.float16
    sizes = [featcache.cache_info(tmp_path / n)["entries"][0] for n in ("f32.h5", "f16.h5")]
    assert sizes[1]["dtype"] == "float16"
    assert sizes[1]["feature_bytes"] * 2 == sizes[0]["feature_bytes"]


def test_float16_rows_are_checksummed(tmp_path, tiny):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 3, "b": 3})
    key = featcache.embed(data, cache, backbone=tiny, dtype="float16", progress=False).key
    with h5py.File(cache, "r+") as h:
        h["backbones"][key]["features"][2, 1] += np.float16(0.25)
    with pytest.raises(FeatcacheError, match="1 damaged row"):
        featcache.load_features(cache)
    featcache.embed(data, cache, backbone=tiny, progress=False)  # heals, keeps float16
    with h5py.File(cache, "r") as h:
        assert h["backbones"][key]["features"].dtype == np.float16
    assert len(featcache.load_features(cache)) == 6


def test_precisions_never_mix_in_one_entry(tmp_path, tiny):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 2, "b": 2})
    featcache.embed(data, cache, backbone=tiny, progress=False)
    before = cache.read_bytes()
    write_images(data, {"c": 2}, seed=3)
    with pytest.raises(FeatcacheError, match="stores float32 features; dtype='float16' would mix"):
        featcache.embed(data, cache, backbone=tiny, dtype="float16", progress=False)
    assert cache.read_bytes() == before
    f16 = tmp_path / "h.h5"
    featcache.embed(data, f16, backbone=tiny, dtype="float16", progress=False)
    write_images(data, {"d": 2}, seed=4)
    featcache.embed(data, f16, backbone=tiny, progress=False)  # no dtype: the entry's own
    with h5py.File(f16, "r") as h:
        assert next(iter(h["backbones"].values()))["features"].dtype == np.float16
    assert len(featcache.load_features(f16)) == 8


def test_views_stored_in_float16_too(tmp_path, tiny):
    data = tmp_path / "data"
    write_images(data, {"a": 3, "b": 3})
    featcache.embed(data, tmp_path / "a.h5", backbone=tiny, views=2, progress=False)
    featcache.embed(data, tmp_path / "b.h5", backbone=tiny, views=2, dtype="float16",
                    progress=False)
    a = featcache.load_features(tmp_path / "a.h5", views=True)
    b = featcache.load_features(tmp_path / "b.h5", views=True)
    assert b.views.dtype == np.float32
    np.testing.assert_array_equal(b.views, a.views.astype(np.float16).astype(np.float32))
    info = featcache.cache_info(tmp_path / "b.h5")["entries"][0]["views"][0]
    assert info["dtype"] == "float16"


def test_features_float16_cannot_hold_are_refused_and_journal_kept(tmp_path, mobilenet):
    """Random-weight MobileNetV2 features are ~1e-11: float16 would store zeros."""
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 2, "b": 2})
    with pytest.raises(FeatcacheError, match="do not fit float16.*dtype='float32'"):
        featcache.embed(data, cache, backbone=mobilenet, dtype="float16", progress=False)
    assert not cache.exists()
    s = featcache.embed(data, cache, backbone=mobilenet, progress=False)
    assert s.embedded == 0 and s.cached == 4  # the journal's rows, not embedded again
    assert np.abs(featcache.load_features(cache).X).max() > 0


@pytest.mark.parametrize("args, message", [
    (["--dtype", "float64"], "--dtype 'float64' cannot be stored: choose float32 or float16"),
    (["--dtype", "half-ish"], "--dtype 'half-ish' is not a numpy dtype"),
])
def test_cli_bad_dtype_one_line(tmp_path, args, message):
    from click.testing import CliRunner

    from featcache.cli import cli
    write_images(tmp_path / "data", {"a": 1, "b": 1})
    r = CliRunner().invoke(cli, ["embed", str(tmp_path / "data"), "-o", str(tmp_path / "c.h5"),
                                 "--weights", "none", *args])
    assert r.exit_code == 1 and message in r.output and len(r.output.strip().splitlines()) == 1


def test_read_dtype_validated(tmp_path, tiny):
    write_images(tmp_path / "data", {"a": 1, "b": 1})
    featcache.embed(tmp_path / "data", tmp_path / "c.h5", backbone=tiny, progress=False)
    with pytest.raises(FeatcacheError, match="cannot be read into"):
        featcache.load_features(tmp_path / "c.h5", dtype="int8")
