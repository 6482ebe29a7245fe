"""``featcache cv``, ``sweep`` and ``curve`` through click's CliRunner on tiny caches."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from featcache.cache import save_features
from featcache.cache.features import Features
from helpers import error_line, run, small_clips as clip_features




@pytest.fixture
def cache(tmp_path):
    path = tmp_path / "feats.h5"
    save_features(path, clip_features())
    return path




def test_cv_prints_table_and_writes_per_fold_json(cache, tmp_path):
    out = tmp_path / "cv.json"
    r = run("cv", cache, "--head", "logreg,svm", "--folds", 3, "--repeats", 2, "--C", 0.5,
            "--json", out)
    assert r.exit_code == 0, r.output
    assert "logreg" in r.stdout and "svm" in r.stdout and "±" in r.stdout
    assert "Nadeau-Bengio" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["command"] == "cv" and doc["splits"]["n_splits"] == 6
    folds = doc["heads"]["logreg"]["folds"]
    assert len(folds["accuracy"]) == 6 and all(0 <= a <= 1 for a in folds["accuracy"])
    assert doc["heads"]["logreg"]["params"]["C"] == 0.5
    mean = doc["heads"]["logreg"]["summary"]["accuracy"]["mean"]
    assert mean == pytest.approx(np.mean(folds["accuracy"]))
    assert doc["heads"]["svm"]["folds"]["log_loss"][0] is None  # no probabilities, no log-loss
    assert doc["comparison"]["best"] in ("logreg", "svm")


def test_cv_group_by_folder_keeps_clips_together(cache, tmp_path):
    out = tmp_path / "cv.json"
    r = run("cv", cache, "--group-by", "folder", "--folds", 3, "--json", out)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["splits"]["group_by"] == "folder"
    assert doc["splits"]["group_info"]["n_groups"] == 18
    assert all(n % 4 == 0 for n in doc["splits"]["test_sizes"])  # whole 4-frame clips


def test_cv_near_duplicates_shows_random_and_grouped(cache, tmp_path, monkeypatch):
    import featcache.evaluate.neardup as nd

    def fake_groups(X, threshold=None):  # the planted clips, found by row order of frames
        return np.arange(len(X)) // 4, {"threshold": 0.97, "n_groups": len(X) // 4}
    monkeypatch.setattr(nd, "near_duplicate_groups", fake_groups)
    out = tmp_path / "nd.json"
    r = run("cv", cache, "--group-by", "near-duplicates", "--folds", 3, "--json", out)
    assert r.exit_code == 0, r.output
    assert "accuracy random" in r.stdout and "accuracy grouped" in r.stdout
    assert "Believe the grouped score" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["believe"] == "grouped" and doc["straddling_groups"] > 0
    assert doc["grouped"]["splits"]["group_info"]["threshold"] == 0.97
    assert len(doc["random"]["heads"]["logreg"]["folds"]["accuracy"]) == 3


def test_sweep_writes_plots_and_json(cache, tmp_path):
    plots, out = tmp_path / "plots", tmp_path / "sweep.json"
    r = run("sweep", cache, "--heads", "logreg,svm", "--folds", 3, "--grid", "logreg=0.01,0.1,1",
            "--grid", "svm=0.001,0.1", "--plots", plots, "--json", out)
    assert r.exit_code == 0, r.output
    assert "best setting per head" in r.stdout and "regularisation_path.png" in r.stdout
    doc = json.loads(out.read_text())
    lr = doc["heads"]["logreg"]
    assert lr["grid"] == [0.01, 0.1, 1.0] and doc["heads"]["svm"]["grid"] == [0.001, 0.1]
    assert np.shape(lr["folds"]["accuracy"]) == (3, 3)
    means = [s["mean"] for s in lr["summary"]["accuracy"]]
    assert lr["best_index"] == int(np.argmax(means))
    assert doc["best_settings"]["logreg"]["value"] == lr["grid"][lr["best_index"]]
    best = doc["heads"][doc["best_head"]]
    assert np.sum(best["best_confusion"]) == 72  # every row validated exactly once
    for name in ("regularisation_path.png", "confusion_matrix.png"):
        with Image.open(plots / name) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
            assert np.asarray(im.convert("L")).std() > 10  # not a blank canvas


def test_sweep_default_grid_and_grouped_note(cache, tmp_path, monkeypatch):
    import featcache.evaluate.neardup as nd
    monkeypatch.setattr(nd, "near_duplicate_groups",
                        lambda X, threshold=None: (np.arange(len(X)) // 4, {}))
    out = tmp_path / "s.json"
    r = run("sweep", cache, "--heads", "logreg", "--folds", 3, "--group-by", "near-duplicates",
            "--json", out)
    assert r.exit_code == 0, r.output
    assert "grouped by near-duplicates" in r.stdout
    assert len(json.loads(out.read_text())["heads"]["logreg"]["grid"]) == 10


def test_curve_table_plot_and_json(cache, tmp_path):
    plots, out = tmp_path / "p", tmp_path / "curve.json"
    r = run("curve", cache, "--head", "logreg", "--fractions", "0.3,0.6,1", "--folds", 3,
            "--plots", plots, "--json", out)
    assert r.exit_code == 0, r.output
    assert "per doubling" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["fractions"] == [0.3, 0.6, 1.0]
    assert doc["n_train"] == sorted(doc["n_train"]) and doc["n_train"][-1] == 48
    assert np.shape(doc["folds"]["val"]) == (3, 3)
    assert isinstance(doc["gain_per_doubling"], float)
    with Image.open(plots / "learning_curve.png") as im:
        assert im.format == "PNG"




def test_one_class_cache_is_one_clear_error(tmp_path):
    f = clip_features()
    one = f.subset(f.y == 0)
    path = tmp_path / "one.h5"
    save_features(path, Features(one.X, one.y, one.paths, ["k0"], one.sha256, spec={"name": "s"}))
    assert "only one class" in error_line(run("cv", path))


def test_too_few_samples_per_class(tmp_path):
    f = clip_features()
    keep = np.r_[np.flatnonzero(f.y != 1), np.flatnonzero(f.y == 1)[:3]]
    path = tmp_path / "few.h5"
    save_features(path, f.subset(keep))
    err = error_line(run("sweep", path, "--heads", "logreg", "--folds", 5))
    assert "'k1' has only 3 samples" in err and "5-fold" in err


def test_group_regex_matching_nothing(cache):
    err = error_line(run("curve", cache, "--group-by", r"(.*)_shot\d+"))
    assert r"(.*)_shot\d+" in err and "matches none" in err and "k0/clip0/frame_0000.jpg" in err


def test_nan_features(tmp_path):
    f = clip_features()
    X = f.X.copy()
    X[[3, 7], 0] = np.nan
    path = tmp_path / "nan.h5"
    save_features(path, Features(X, f.y, f.paths, f.class_names, f.sha256, spec={"name": "s"}))
    err = error_line(run("cv", path))
    assert "2 of 72 feature rows contain NaN" in err


def test_bad_option_values(cache):
    assert "--grid" in error_line(run("sweep", cache, "--grid", "a,b"))
    assert "fractions" in error_line(run("curve", cache, "--fractions", "0.5,2"))
    assert "unknown head" in error_line(run("cv", cache, "--head", "forest"))
