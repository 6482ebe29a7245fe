"""``compare``: backbone entries of one cache on the same images and splits, C tuned by nested CV."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import featcache
from helpers import write_images
from featcache.errors import FeatcacheError
from featcache.evaluate.compare import align_rows, compare_backbones
from featcache.cache.features import Features

CLASSES = ["a", "b", "c"]


def _entry(name, ids, signal, seed, classes=CLASSES, changed=(), d=12):
    """Features of images ``ids`` (class = id % 3) as backbone ``name`` would give them.

    Column 0 holds the image id, so a test can see which image a row came from;
    ``changed`` ids get another sha256 (the file changed after that entry was embedded).
    """
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).normal(0, 1, (3, d))
    ids = np.asarray(ids)
    cls = ids % 3
    X = signal * means[cls] + rng.normal(0, 1, (len(ids), d))
    X[:, 0] = ids
    names = [CLASSES[c] for c in cls]
    y = np.array([classes.index(n) for n in names])
    paths = np.array([f"{n}/img_{i:03d}.jpg" for n, i in zip(names, ids)])
    sha = np.array([f"{i + 1000 * (i in changed):064x}" for i in ids])
    order = rng.permutation(len(ids))  # rows stored in another order than the other entries
    return Features(X[order].astype(np.float32), y[order], paths[order], list(classes), sha[order],
                    backbone=name, spec={"name": name})


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """A cache with three backbones of 120 images: strong, medium and weak features.

    medium saw one image with other bytes (id 50); weak misses ten images and has five others.
    """
    cache = tmp_path_factory.mktemp("cmp") / "c.h5"
    featcache.save_features(cache, _entry("strong", range(120), 2.5, 1))
    featcache.save_features(cache, _entry("medium", range(120), 0.8, 2, changed=(50,)))
    featcache.save_features(cache, _entry("weak", [*range(10, 120), *range(200, 205)], 0.2, 3))
    return cache


def test_compare_ranks_backbones_on_shared_rows_with_nested_cv(three):
    res = featcache.compare_backbones(three, "logreg", "all", folds=4, inner_folds=3)
    assert res.n_images == 120 - 10 - 1  # only images every entry holds, with the same bytes
    assert list(res.backbones) == ["medium", "strong", "weak"]
    assert res.best == "strong"
    assert [t["other"] for t in res.comparison["tests"]] == ["medium", "weak"]
    assert all(t["mean_diff"] > 0 for t in res.comparison["tests"])
    weak = res.backbones["weak"]
    assert weak.rows == 115 and weak.feature_dim == 12 and weak.seconds_per_image is None
    # a backbone's score is exactly nested CV on the one shared outer plan
    aligned = align_rows([featcache.load_features(three, k) for k in ("medium", "strong", "weak")])
    ref = featcache.nested_cv(aligned[2], "logreg", inner_folds=3, plan=res.plan)
    assert weak.folds == ref.heads["logreg"].folds["accuracy"]
    assert weak.chosen == ref.heads["logreg"].chosen and len(weak.chosen) == 4
    s = res.backbones["strong"].summary
    assert s["ci_low"] <= s["mean"] <= s["ci_high"] and s["n"] == 4


def test_rows_are_matched_by_path_and_sha_and_labels_recoded(tmp_path):
    a = _entry("a", range(60), 1.0, 1)
    b = _entry("b", [*range(5, 60), 300], 1.0, 2, classes=["Z", *CLASSES], changed=(9,))
    al, bl = align_rows([a, b])
    assert len(al) == len(bl) == 54  # ids 5..59 but 9
    np.testing.assert_array_equal(al.X[:, 0], bl.X[:, 0])  # the same image on the same row
    np.testing.assert_array_equal(al.paths, bl.paths)
    assert 9 not in al.X[:, 0] and al.class_names == bl.class_names == CLASSES
    np.testing.assert_array_equal(al.y, bl.y)
    np.testing.assert_array_equal(al.y, al.X[:, 0].astype(int) % 3)


def test_bad_input_gets_one_clear_line(three, tmp_path):
    from featcache.cli import cli
    one = tmp_path / "one.h5"
    featcache.save_features(one, _entry("strong", range(60), 1.0, 1))
    with pytest.raises(FeatcacheError, match="at least two backbone entries.*gives 1"):
        compare_backbones(one)
    held = r"it holds: medium-\w+ \(medium\), strong-"
    with pytest.raises(FeatcacheError, match=rf"no backbone 'resnet', 'vit'; {held}"):
        compare_backbones(three, backbones="strong,resnet,vit")
    with pytest.raises(FeatcacheError, match="at least two backbone entries"):
        compare_backbones(three, backbones="strong,strong")
    with pytest.raises(FeatcacheError, match="takes one head"):
        compare_backbones(three, head="logreg,svm")
    few = tmp_path / "few.h5"
    featcache.save_features(few, _entry("x", range(60), 1.0, 1))
    featcache.save_features(few, _entry("y", range(11, 70), 1.0, 2))
    with pytest.raises(FeatcacheError, match="share only 49 images.*x 60, y 59.*at least 50"):
        compare_backbones(few)
    twice = tmp_path / "twice.h5"
    featcache.save_features(twice, _entry("x", range(60), 1.0, 1))
    featcache.save_features(twice, _entry("x", range(60), 1.0, 2), fingerprint="f" * 64)
    featcache.save_features(twice, _entry("y", range(60), 1.0, 3))
    with pytest.raises(FeatcacheError, match="2 entries for 'x'.*pass the full keys"):
        compare_backbones(twice, backbones="x,y")
    for args in ([str(three), "--backbones", "strong,nope"], [str(twice), "--backbones", "x,y"]):
        r = CliRunner().invoke(cli, ["compare", *args])
        assert r.exit_code == 1 and "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
    assert "pass the full keys to --backbones" in r.output


def test_cli_writes_table_json_and_plot(three, tmp_path):
    from featcache.cli import cli
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["compare", str(three), "--backbones", "strong,weak", "--folds", "3",
                                 "--json", str(out / "cmp.json"), "--plots", str(out)])
    assert r.exit_code == 0, r.output
    assert "110 images present in every compared entry" in r.output
    assert "best backbone by accuracy: strong" in r.output and "strong vs weak" in r.output
    row = next(line for line in r.output.splitlines() if line.startswith("* strong"))
    assert row.split()[2:4] == ["12", "-"]  # dim, no embed time recorded by save_features
    doc = json.loads((out / "cmp.json").read_text())
    assert doc["n_images"] == 110 and [b["label"] for b in doc["backbones"]] == ["strong", "weak"]
    assert len(doc["backbones"][0]["folds"]) == 3 and doc["comparison"]["best"] == "strong"
    assert (out / "backbone_comparison.png").stat().st_size > 1000


def _pixels_backbone():
    """A cheap stand-in backbone (8-d colour statistics) for a second real cache entry."""
    import tensorflow as tf

    from featcache.embedding.backbones import Backbone, BackboneSpec
    proj = tf.constant(np.random.default_rng(0).normal(size=(6, 8)), tf.float32)

    def fn(x):
        stats = tf.concat([tf.reduce_mean(x, [1, 2]), tf.math.reduce_std(x, [1, 2])], axis=1)
        return tf.matmul(stats / 255.0, proj)
    return Backbone(BackboneSpec("pixels", "test", 16, "none", 8, "none"), "9" * 64, fn)


def test_embed_records_seconds_per_image_shown_by_compare(tmp_path, mobilenet):
    """A real cache: two backbones embed the same 54 images; embed records their time."""
    from featcache.cache.read import list_entries
    from featcache.report.compare import format_backbone_comparison
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 18, "b": 18, "c": 18}, size=(24, 24))
    for bb in (mobilenet, _pixels_backbone()):
        featcache.embed(data, cache, backbone=bb, progress=False)
    before = {e["key"]: e["seconds_per_image"] for e in list_entries(cache)}
    assert len(before) == 2 and all(v > 0 for v in before.values())
    featcache.embed(data, cache, backbone=mobilenet, progress=False)  # nothing new: time kept
    assert {e["key"]: e["seconds_per_image"] for e in list_entries(cache)} == before
    Image.new("RGB", (20, 30), (9, 99, 199)).save(data / "a" / "extra.png")  # one new image
    featcache.embed(data, cache, backbone=mobilenet, progress=False)
    after = {e["key"]: e["seconds_per_image"] for e in list_entries(cache)}
    key = res_key = next(k for k in after if k.startswith("mobilenet_v2"))
    assert after[key] != before[key]
    res = compare_backbones(cache, folds=3)
    assert res.n_images == 54 and set(res.backbones) == {"mobilenet_v2", "pixels"}
    text = format_backbone_comparison(res)
    row = next(line for line in text.splitlines() if line.lstrip("* ").startswith("mobilenet"))
    assert f"{after[res_key] * 1000:.1f} ms" in row and "1280" in row
