"""Export of a random-weight MobileNetV2 + logreg model: layout, parity, signatures, TFLite, predict.

One export (module-scoped) serves every test here: MobileNetV2 takes seconds to build.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import write_images

import featcache
from featcache.model.parity import TOLERANCE


@pytest.fixture(scope="module")
def exported(trained_logreg):
    root, data, res = trained_logreg.root, trained_logreg.data, trained_logreg.res
    meta = featcache.export_model(res, root / "model", cache=root / "c.h5", tflite=True,
                                  quantize=["dynamic"])
    feats = featcache.load_features(root / "c.h5")
    return SimpleNamespace(root=root, data=data, model=root / "model", res=res, meta=meta,
                           feats=feats, ref=res.head.predict_proba(feats.X))


def test_layout_and_metadata(exported):
    m, meta = exported.model, exported.meta
    for name in ("saved_model/saved_model.pb", "model.keras", "labels.json", "featcache.json",
                 "model.tflite", "model_dynamic.tflite"):
        assert (m / name).is_file(), name
    assert json.loads((m / "labels.json").read_text()) == ["a", "b", "c"]
    assert json.loads((m / "featcache.json").read_text()) == meta
    entry = featcache.cache_info(exported.root / "c.h5")["entries"][0]
    assert meta["backbone"]["fingerprint"] == entry["fingerprint"]
    assert meta["head"]["name"] == "logreg" and meta["head"]["params"]["C"] == exported.res.choice.value
    assert meta["choice"]["auto"] and meta["choice"]["grid"]
    assert {"featcache_version", "tensorflow_version", "keras_version", "created"} <= set(meta)
    par = meta["parity"]["saved_model"]
    assert par["n"] == len(exported.feats) == 18 and par["agreement"] == 1.0
    assert par["max_abs_diff"] <= TOLERANCE
    assert not list(exported.root.glob("model.tmp-*"))


def _plain_files(feats, data):
    """Rows that embed decoded with tf.io (not PIL), and their files."""
    rows = [i for i, p in enumerate(feats.paths) if not p.endswith("alpha.png")]
    return rows, [str(data / feats.paths[i]) for i in rows]


def test_pure_tensorflow_snippet_matches_the_cache(exported):
    """The README's serving snippet: tf.saved_model.load, the bytes signature, labels.json."""
    import tensorflow as tf
    model = tf.saved_model.load(str(exported.model / "saved_model"))
    labels = json.loads((exported.model / "labels.json").read_text())
    rows, files = _plain_files(exported.feats, exported.data)
    out = model.signatures["serve_bytes"](image_bytes=tf.constant([Path(f).read_bytes()
                                                                   for f in files]))
    probs = out["probabilities"].numpy()
    np.testing.assert_allclose(probs, exported.ref[rows], atol=TOLERANCE)
    assert [labels[i] for i in probs.argmax(1)] == [x.decode() for x in out["label"].numpy()]
    assert (probs.argmax(1) == exported.ref[rows].argmax(1)).all()


def test_uint8_signature_equals_bytes_signature(exported):
    import tensorflow as tf
    model = tf.saved_model.load(str(exported.model / "saved_model"))
    _, files = _plain_files(exported.feats, exported.data)
    for f in files[:4]:
        data = Path(f).read_bytes()
        pixels = tf.io.decode_image(data, channels=3, expand_animations=False)[None]
        a = model.serve_uint8(pixels)["probabilities"].numpy()
        b = model.serve_bytes(tf.constant([data]))["probabilities"].numpy()
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_keras_file_is_the_same_model(exported):
    import keras
    import tensorflow as tf

    from featcache.embedding.decode import image_dataset
    model = tf.saved_model.load(str(exported.model / "saved_model"))
    kmodel = keras.saving.load_model(exported.model / "model.keras")
    _, files = _plain_files(exported.feats, exported.data)
    images = next(iter(image_dataset(files, [False] * len(files), 224, 64)))[0]
    np.testing.assert_allclose(kmodel.predict(images, verbose=0),
                               model.serve_image(images)["probabilities"].numpy(), atol=1e-5)


def test_tflite_variants_have_parity_figures(exported):
    from featcache.model.tflite import tflite_probabilities
    from featcache.embedding.decode import image_dataset
    tfl = exported.meta["tflite"]
    assert set(tfl) == {"none", "dynamic"}
    assert tfl["none"]["max_abs_diff"] <= TOLERANCE and tfl["none"]["agreement"] == 1.0
    assert tfl["dynamic"]["bytes"] < tfl["none"]["bytes"]
    rows, files = _plain_files(exported.feats, exported.data)
    images = next(iter(image_dataset(files, [False] * len(files), 224, 64)))[0].numpy()
    got = tflite_probabilities(exported.model / "model_dynamic.tflite", images)
    assert np.max(np.abs(got - exported.ref[rows])) <= tfl["dynamic"]["max_abs_diff"] + 1e-6


def test_saved_model_size_close_to_weights(exported, mobilenet):
    weights = sum(w.numpy().nbytes for w in mobilenet.model.weights) + (1280 + 1) * 3 * 4
    size = sum(f.stat().st_size for f in (exported.model / "saved_model").rglob("*") if f.is_file())
    assert size <= 1.10 * weights, (size, weights)


def test_export_check_reruns_parity(exported):
    with_cache = featcache.check_export(exported.model, exported.data, cache=exported.root / "c.h5")
    recorded = featcache.check_export(exported.model, exported.data)
    assert with_cache.ok and recorded.ok and with_cache.n == recorded.n == 18


def test_predict_rows_and_bad_files(exported, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{exported.data / 'a' / 'img_000.jpg'}\n# comment\nmissing.png\n")
    rows = featcache.load_model(exported.model).predict(
        [exported.data, tmp_path / "broken.jpg", listing], top_k=2, batch_size=4)
    by_path = {r["path"]: r for r in rows}
    assert len(rows) == 18 + 3
    assert "cannot decode" in by_path[str(tmp_path / "broken.jpg")]["error"] \
        or "not an image" in by_path[str(tmp_path / "broken.jpg")]["error"]
    assert by_path[str(tmp_path / "missing.png")]["error"] == "no such file"
    for i, rel in enumerate(exported.feats.paths):
        r = by_path[str(exported.data / rel)]
        assert r["error"] is None and len(r["top_k"]) == 2
        assert r["predicted"] == "abc"[exported.ref[i].argmax()]
        assert r["probability"] == pytest.approx(exported.ref[i].max(), abs=TOLERANCE)


def test_predict_in_a_process_without_training_code(exported):
    code = f"""
import json, sys, featcache
rows = featcache.load_model({str(exported.model)!r}).predict([{str(exported.data)!r}], top_k=1)
# (TensorFlow itself imports sklearn/scipy/h5py when they are installed: not checked)
loaded = [m for m in ("featcache.heads", "featcache.evaluate", "featcache.model._train",
                      "featcache.model.export", "featcache.cache", "featcache.embedding.run")
          if m in sys.modules]
print(json.dumps({{"rows": rows, "loaded": loaded}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         check=False,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["loaded"] == []
    preds = {r["path"]: r["predicted"] for r in doc["rows"]}
    assert preds == {str(exported.data / p): "abc"[exported.ref[i].argmax()]
                     for i, p in enumerate(exported.feats.paths)}


def test_random_weights_are_rebuilt_from_the_seed_the_cache_records(tmp_path):
    from featcache.embedding.backbones import get_backbone
    from featcache.model.export import rebuild_backbone
    write_images(tmp_path / "d", {"a": 1, "b": 1})
    bb = get_backbone("mobilenet_v2", weights="none", seed=3)
    featcache.embed(tmp_path / "d", tmp_path / "c.h5", backbone=bb, progress=False)
    assert rebuild_backbone(featcache.load_features(tmp_path / "c.h5")).fingerprint == bb.fingerprint
