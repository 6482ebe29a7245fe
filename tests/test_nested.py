"""Nested cross-validation, and cv/sweep --nested / --class-weight on the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import clip_features
from featcache.cache import save_features
from featcache.cli import cli
from featcache.errors import FeatcacheError
from featcache.evaluate import cross_validate_heads, nested_cv
from featcache.cache.features import Features


def small_clips(**kw):
    return clip_features(**{"clips_per_class": 6, "frames": 4, "d": 12, "signal": 0.8, **kw})


@pytest.mark.parametrize("head, group_by", [("logreg", None), ("svm", None),
                                            ("logreg", "folder")])
def test_one_value_grid_equals_plain_cv_on_the_same_outer_splits(head, group_by):
    f = small_clips()
    nested = nested_cv(f, head, grids=[0.3], folds=4, group_by=group_by, seed=2)
    plain = cross_validate_heads(f, head, folds=4, group_by=group_by, seed=2,
                                 head_params={"reg": 0.3})
    assert nested.heads[head].chosen == [0.3] * 4
    for m in ("accuracy", "balanced_accuracy", "f1_macro", "train_accuracy"):
        assert nested.heads[head].folds[m] == plain.heads[head].folds[m], m
        assert nested.heads[head].summary[m] == plain.heads[head].summary[m], m
    assert nested.plan.description == plain.plan.description


def noise(seed, n=48, d=30):
    """Labels independent of the features: every score above chance is luck."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.repeat([0, 1], n // 2)


def test_nested_score_is_below_best_of_sweep_on_noise():
    grid = np.logspace(-4, 3, 12)
    nested, best = [], []
    for seed in range(6):
        res = nested_cv(noise(seed), "logreg", grids=grid, folds=4, seed=seed)
        h = res.heads["logreg"]
        assert all(c in h.grid for c in h.chosen) and len(h.chosen) == 4
        nested.append(h.summary["accuracy"]["mean"])
        best.append(h.best_of_sweep["mean"])
        # best of sweep is the sweep's own best setting on the same outer splits
        assert best[-1] == pytest.approx(np.mean(res.sweep.heads["logreg"].scores["accuracy"]
                                                 [res.sweep.heads["logreg"].best_index]))
    assert np.mean(nested) < np.mean(best)
    assert np.mean(best) > 0.5  # the sweep's best looks better than chance on pure noise


def test_inner_cv_keeps_the_groups():
    """Outer training folds hold 12 clips per class: too few groups for 13 inner folds,
    though plenty of rows (16 per class) for ungrouped 13-fold CV."""
    f = small_clips()
    res = nested_cv(f, "logreg", grids=[0.1, 1], folds=3, inner_folds=13)
    assert res.inner_folds == 13
    with pytest.raises(FeatcacheError, match="inner 13-fold CV.*--inner-folds"):
        nested_cv(f, "logreg", grids=[0.1, 1], folds=3, inner_folds=13, group_by="folder")


def test_result_text_and_json():
    res = nested_cv(small_clips(), "logreg,svm", folds=3, seed=0)
    text = res.summary()
    assert "best of sweep" in text and "optimistic" in text and "nested accuracy" in text
    assert "Nadeau-Bengio" in text
    doc = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert set(doc["heads"]) == {"logreg", "svm"} and doc["inner_folds"] == 3
    assert len(doc["heads"]["svm"]["chosen"]) == 3
    assert doc["heads"]["svm"]["folds"]["log_loss"] == [None] * 3  # no probabilities
    with pytest.raises(FeatcacheError, match="metric"):
        nested_cv(small_clips(), "logreg", metric="log_loss")


@pytest.fixture
def cache(tmp_path):
    path = tmp_path / "feats.h5"
    save_features(path, small_clips(prefix="k"))
    return path


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cv_nested_cli(cache, tmp_path):
    out = tmp_path / "cv.json"
    r = run("cv", cache, "--nested", "--folds", 3, "--inner-folds", 2, "--json", out)
    assert r.exit_code == 0, r.output
    assert "best of sweep" in r.stdout and "optimistic" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["command"] == "cv" and doc["inner_folds"] == 2
    assert len(doc["heads"]["logreg"]["chosen"]) == 3


def test_sweep_nested_cli_prints_sweep_then_nested(cache, tmp_path):
    out = tmp_path / "sweep.json"
    r = run("sweep", cache, "--heads", "logreg", "--grid", "0.01,1", "--folds", 3, "--nested",
            "--json", out)
    assert r.exit_code == 0, r.output
    assert r.stdout.index("best setting per head") < r.stdout.index("nested CV")
    doc = json.loads(out.read_text())
    assert doc["heads"]["logreg"]["grid"] == [0.01, 1.0]
    assert doc["nested"]["heads"]["logreg"]["grid"] == [0.01, 1.0]
    assert set(doc["nested"]["heads"]["logreg"]["chosen"]) <= {0.01, 1.0}


def test_cv_nested_refuses_a_fixed_C(cache):
    r = run("cv", cache, "--nested", "--C", 1)
    assert r.exit_code == 1
    assert "--C and --nested exclude each other" in r.output and "Traceback" not in r.output


def imbalanced(seed=0, n0=90, n1=18):
    """Two overlapping classes, 5:1: unweighted heads mostly predict the majority."""
    rng = np.random.default_rng(seed)
    X = np.r_[rng.normal(0, 1, (n0, 6)), rng.normal(0, 1, (n1, 6)) + [0.9, 0.9, 0, 0, 0, 0]]
    y = np.r_[np.zeros(n0, int), np.ones(n1, int)]
    paths = np.array([f"c{c}/img{i}.jpg" for i, c in enumerate(y)])
    return Features(X.astype(np.float32), y, paths, ["c0", "c1"],
                    np.array([f"{i:064x}" for i in range(len(y))]), backbone="synthetic",
                    spec={"name": "synthetic"})


# Needs the heads' class_weight parameter (branch h3-heads-deps): run after merging it.
def test_class_weight_balanced_on_cv_and_sweep(tmp_path):
    path = tmp_path / "imb.h5"
    save_features(path, imbalanced())
    docs = {}
    for cw in ([], ["--class-weight", "balanced"]):
        out = tmp_path / f"cv{len(cw)}.json"
        r = run("cv", path, "--folds", 3, "--metric", "balanced_accuracy", "--json", out, *cw)
        assert r.exit_code == 0, r.output
        docs[len(cw)] = json.loads(out.read_text())["heads"]["logreg"]
    assert docs[2]["params"]["class_weight"] == "balanced"
    assert docs[0]["params"].get("class_weight") is None
    ba = {k: d["summary"]["balanced_accuracy"]["mean"] for k, d in docs.items()}
    assert ba[2] > ba[0] + 0.05
    sweeps = {}
    for cw in ([], ["--class-weight", "balanced"]):
        out = tmp_path / f"sweep{len(cw)}.json"
        r = run("sweep", path, "--heads", "logreg,svm", "--grid", "1", "--folds", 3,
                "--metric", "balanced_accuracy", "--json", out, *cw)
        assert r.exit_code == 0, r.output
        sweeps[len(cw)] = json.loads(out.read_text())["heads"]
    for head in ("logreg", "svm"):
        unweighted = sweeps[0][head]["summary"]["balanced_accuracy"][0]["mean"]
        assert sweeps[2][head]["summary"]["balanced_accuracy"][0]["mean"] > unweighted + 0.05


def test_nested_gap_is_in_the_chosen_metric():
    f = small_clips()
    nested = nested_cv(f, "logreg", grids=[0.3], folds=4, seed=2, metric="f1_macro")
    plain = cross_validate_heads(f, "logreg", folds=4, seed=2, metric="f1_macro",
                                 head_params={"reg": 0.3})
    for m in ("train_score", "gap"):
        assert nested.heads["logreg"].folds[m] == plain.heads["logreg"].folds[m], m
