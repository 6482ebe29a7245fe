"""TFLite float16 on a random-weight MobileNetV2 (features ~1e-11) and refusal of unusable variants."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import featcache
from featcache.model import tflite
from featcache.model.graph import HeadWeights, Rescaled, pow2_steps


@pytest.fixture(scope="module")
def trained(trained_logreg):
    return trained_logreg


@pytest.mark.parametrize("k", [-40, -15, -14, -1, 0, 3, 14, 29, 41])
def test_pow2_steps_are_float16_constants_with_product_2_to_k(k):
    steps = pow2_steps(k)
    assert all(np.float32(np.float16(f)) == f and np.isfinite(np.float16(f)) for f in steps)
    assert np.prod(np.asarray(steps, np.float64)) == 2.0 ** k


def test_rescaled_head_gives_the_same_float32_numbers():
    rng = np.random.default_rng(0)
    X = (rng.random((20, 8)) * 3e-11).astype(np.float32)
    hw = HeadWeights(X.mean(0), X.std(0) + 1e-13, (rng.normal(size=(8, 3)) * 1e-5).astype(np.float32),
                     (rng.normal(size=3) * 1e-4).astype(np.float32))
    rs = Rescaled.of(hw)
    assert rs.feature_exp > 30 and 0.1 < np.median(rs.hw.scale) < 10
    assert np.all(np.abs(rs.hw.W) < 65504) and np.abs(rs.hw.W).max() > 0.1
    Xs = X.astype(np.float64) * 2.0 ** rs.feature_exp
    z = ((Xs.astype(np.float32) - rs.hw.mean) / rs.hw.scale) @ rs.hw.W + rs.hw.b
    z = z.astype(np.float64) * 2.0 ** -rs.logit_exp
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(1, keepdims=True), hw.probabilities(X), atol=1e-6)


def test_float16_variant_matches_the_saved_model(trained):
    """Before the rescaling: 44% top-1 agreement, max |Δp| 0.011 (mean and scale were 0 in float16)."""
    meta = featcache.export_model(trained.res, trained.root / "m16", cache=trained.root / "c.h5",
                                  tflite=True, quantize=["float16"])
    fig = meta["tflite"]["float16"]
    assert (trained.root / "m16" / "model_float16.tflite").is_file() and "refused" not in fig
    assert fig["agreement"] == 1.0 and fig["max_abs_diff"] <= 1e-3, fig
    assert meta["parity"]["saved_model"]["agreement"] == 1.0
    assert meta["tflite"]["none"]["max_abs_diff"] <= 1e-4


def _constant_model(size, out_path):
    """A real .tflite file whose serve_image returns the same distribution for every image."""
    import tensorflow as tf

    class Constant(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32,
                                                    name="images")])
        def serve(self, images):
            return {"probabilities": tf.tile([[0.2, 0.3, 0.5]], [tf.shape(images)[0], 1])}

    m = Constant()
    sm = out_path.parent / "constant_saved_model"
    tf.saved_model.save(m, str(sm), signatures={"serve_image": m.serve})
    out_path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(
        str(sm), signature_keys=["serve_image"]).convert())
    return out_path


@pytest.fixture
def broken_float16(monkeypatch):
    """The float16 conversion yields a model that ignores its input (the original bug's symptom)."""
    real = tflite.convert

    def convert(saved_model_dir, out_path, quantize="none"):
        if quantize == "float16":
            return _constant_model(224, out_path)
        return real(saved_model_dir, out_path, quantize)

    monkeypatch.setattr(tflite, "convert", convert)


def test_unusable_variant_is_refused_and_the_rest_exported(trained, broken_float16):
    out = trained.root / "bad"
    with pytest.warns(UserWarning, match=r"TFLite variant 'float16' \(model_float16.tflite\) "
                                         r"not written: on 18 sample images its top-1 agreement"):
        # pytest.warns records every warning and re-emits the others: keep Keras' quiet
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="keras")
        meta = featcache.export_model(trained.res, out, cache=trained.root / "c.h5",
                                      tflite=True, quantize=["float16"])
    fig = meta["tflite"]["float16"]
    assert fig["file"] is None and fig["agreement"] < tflite.MIN_AGREEMENT
    assert "not written" in fig["refused"] and f"{fig['agreement']:.1%}" in fig["refused"]
    assert not (out / "model_float16.tflite").exists()
    assert (out / "model.tflite").is_file() and (out / "saved_model" / "saved_model.pb").is_file()
    assert json.loads((out / "featcache.json").read_text())["tflite"]["float16"] == fig


def test_cli_prints_the_refusal_once_and_exports_the_rest(trained, broken_float16):
    from click.testing import CliRunner

    from featcache.cli import cli
    out = trained.root / "bad_cli"
    r = CliRunner().invoke(cli, ["train", str(trained.root / "c.h5"), "--C", "0.1", "-o", str(out),
                                 "--quantize", "float16"])
    assert r.exit_code == 0, r.output
    refused = [ln for ln in r.output.splitlines() if "float16" in ln]
    assert len(refused) == 1 and refused[0].startswith("warning: TFLite variant 'float16'"), r.output
    assert "UserWarning" not in r.output
    assert (out / "model.tflite").is_file() and not (out / "model_float16.tflite").exists()
