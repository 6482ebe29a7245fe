"""Leakage audit on planted feature-level data: clips of jittered frames.

Each clip is a centre in feature space; its frames are the centre plus small
noise, so the frames of a clip are the planted near-duplicate groups.
"""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from featcache.errors import FeatcacheError
from featcache.evaluate._audit import (KERAS_DATASET, KERAS_FLOW, audit, exact_duplicates,
                                      keras_validation_mask, split_leakage)
from featcache.evaluate.neardup import DEFAULT_THRESHOLD, knn_cosine, near_duplicate_groups
from featcache.cache.features import Features
from helpers import pairwise_precision_recall, planted








@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_near_duplicates_are_recovered(seed):
    feats, clip = planted(seed=seed)
    groups, info = near_duplicate_groups(feats.X)
    precision, recall = pairwise_precision_recall(clip, groups)
    msg = (f"pairwise precision {precision:.3f}, recall {recall:.3f} "
           f"(threshold {info['threshold']:.4f}, {info['threshold_source']}: {info['reason']})")
    assert precision >= 0.95 and recall >= 0.95, msg
    assert info["threshold_source"] == "adaptive", msg
    assert info["n_groups"] == 60, msg


def test_group_ids_follow_the_contract():
    feats, _ = planted(n_clips=10, n_single=15)
    groups, info = near_duplicate_groups(feats.X)
    assert groups.shape == (len(feats),) and np.issubdtype(groups.dtype, np.integer)
    sizes = np.bincount(groups)
    assert (sizes[groups] == 1).sum() == 15  # singletons each get their own id
    assert info["n_rows_in_groups"] == 60 and info["largest_group"] == 6
    json.dumps(info)  # the info explains itself in plain JSON


def test_no_duplicates_falls_back_to_the_default_and_says_why():
    X = np.random.default_rng(0).standard_normal((500, 64)).astype(np.float32)
    groups, info = near_duplicate_groups(X)
    assert info["threshold_source"] == "default" and info["threshold"] == DEFAULT_THRESHOLD
    assert "no clear gap" in info["reason"]
    assert len(np.unique(groups)) == 500


def test_a_few_copies_among_many_unrelated_images_are_found():
    feats, clip = planted(n_clips=20, frames=2, n_single=3000, d=128)
    groups, info = near_duplicate_groups(feats.X)
    precision, recall = pairwise_precision_recall(clip, groups)
    assert info["threshold_source"] == "adaptive", info["reason"]
    assert precision >= 0.95 and recall >= 0.95, f"precision {precision:.3f}, recall {recall:.3f}"


def test_tight_small_classes_are_not_taken_for_copies():
    rng = np.random.default_rng(0)
    centres = 2 * rng.standard_normal((10, 64))
    X = centres[np.arange(150) % 10] + rng.standard_normal((150, 64))  # 15 images per class
    groups, info = near_duplicate_groups(X.astype(np.float32))
    assert info["threshold_source"] == "default", info["reason"]
    assert info["n_groups"] == 0, info


def test_user_threshold_is_used_and_bad_ones_rejected():
    feats, _ = planted(n_clips=10, n_single=10)
    groups, info = near_duplicate_groups(feats.X, threshold=-1.0)
    assert info["threshold_source"] == "user" and len(np.unique(groups)) == 1
    groups, info = near_duplicate_groups(feats.X, threshold="default")
    assert info["threshold_source"] == "default" and info["threshold"] == DEFAULT_THRESHOLD
    for bad in (1.5, "high"):
        with pytest.raises(FeatcacheError, match="threshold"):
            near_duplicate_groups(feats.X, threshold=bad)
    with pytest.raises(FeatcacheError, match="NaN"):
        near_duplicate_groups(np.full((4, 3), np.nan))


@pytest.mark.parametrize("tile", [7, 64, 2048])
def test_tiled_knn_matches_the_full_matrix(tile):
    X = np.random.default_rng(1).standard_normal((150, 20)).astype(np.float32)
    idx, sim = knn_cosine(X, k=5, tile=tile)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    expected = -np.sort(-S, axis=1)[:, :5]
    np.testing.assert_allclose(sim, expected, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(S, idx.astype(np.int64), axis=1), sim, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 60), d=st.integers(1, 6), k=st.integers(1, 12), tile=st.integers(1, 70),
       copies=st.booleans(), seed=st.integers(0, 2**16))
def test_knn_similarities_match_brute_force_for_any_shape(n, d, k, tile, copies, seed):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    if copies:  # exact ties must not confuse the merge
        X[n // 2:] = X[:n - n // 2]
    idx, sim = knn_cosine(X, k=k, tile=tile)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = (Xn @ Xn.T).astype(np.float64)
    np.fill_diagonal(S, -np.inf)
    kk = min(k, n - 1)
    assert sim.shape == (n, kk)
    np.testing.assert_allclose(sim, -np.sort(-S, axis=1)[:, :kk], atol=1e-5)
    assert (idx != np.arange(n)[:, None]).all()  # never its own neighbour
    assert all(len(set(r)) == kk for r in idx.tolist())  # no neighbour twice


def test_degenerate_inputs():
    groups, info = near_duplicate_groups(np.ones((1, 3)))
    assert groups.tolist() == [0] and info["n_groups"] == 0
    assert near_duplicate_groups(np.ones((3, 3)))[0].tolist() == [0, 0, 0]
    # all-zero rows have no direction: never near-duplicates of anything
    assert len(set(near_duplicate_groups(np.zeros((4, 3)))[0].tolist())) == 4
    with pytest.raises(FeatcacheError, match="2-D"):
        near_duplicate_groups(np.ones(5))


def test_exact_duplicates_and_label_conflicts():
    sha = np.array(["a", "b", "a", "c", "c", "d", "d", "d"])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 0])
    paths = np.array([f"p{i}" for i in range(8)])
    groups, conflicts = exact_duplicates(sha, y, paths, ["cat", "dog"])
    assert sorted(map(list, groups)) == [[0, 2], [3, 4], [5, 6, 7]]
    assert [c["paths"] for c in conflicts] == [["p3", "p4"], ["p5", "p6", "p7"]]
    assert conflicts[0]["classes"] == ["cat", "dog"]


def test_audit_finds_planted_copies_and_leaky_splits():
    feats, clip = planted()
    sha = feats.sha256.copy()
    sha[1], sha[200] = sha[0], sha[7]  # one copy within a class, one across classes
    report = audit(Features(feats.X, feats.y, feats.paths, feats.class_names, sha))
    s = report.summary
    assert s["n_exact_duplicate_groups"] == 2 and s["n_label_conflicts"] == 1
    assert report.label_conflicts[0]["paths"] == [feats.paths[7], feats.paths[200]]
    assert s["n_near_duplicate_groups"] == 60
    # Random folds cut through most clips; the audit must say so.
    cv = report.splits["featcache_cv"]
    assert cv["groups_straddling_any_fold"] >= 50
    assert cv["mean_val_fraction_with_train_duplicate"] > 0.5
    assert any("--group-by near-duplicates" in f for f in report.findings)
    assert report.class_balance["counts"] == {"class0": 140, "class1": 140, "class2": 140}


def test_keras_flow_split_takes_the_first_files_of_each_class():
    paths = np.array(["b/z.png", "a/y.png", "a/x.png", "b/sub/a.png", "a/w.png", "b/a.png"])
    y = np.array([1, 0, 0, 1, 0, 1])
    mask = keras_validation_mask(paths, y, 0.5, KERAS_FLOW)
    # class a: w, x, y -> int(1.5) = 1 file (w); class b: a, z, then sub/a -> 1 file (b/a)
    assert sorted(paths[mask]) == ["a/w.png", "b/a.png"]
    ds = keras_validation_mask(paths, y, 0.5, KERAS_DATASET, seed=1)
    assert ds.sum() == 3


def test_grouped_cv_on_audit_groups_never_straddles():
    from featcache.evaluate.splits import make_splits
    feats, _ = planted(seed=3)
    report = audit(feats)
    plan = make_splits(feats, folds=5, group_by=report.groups)
    for tr, te in plan.splits:
        assert split_leakage(report.groups, tr, te)["groups_straddling"] == 0
        assert not set(report.groups[tr]) & set(report.groups[te])


def test_random_cv_is_optimistic_against_grouped_cv():
    from featcache.evaluate.cv import compare_random_grouped
    feats, _ = planted(seed=4)
    report = audit(feats)
    cmp = compare_random_grouped(feats, "logreg", group_by=report.groups)
    rnd = cmp.random.heads["logreg"].summary["accuracy"]["mean"]
    grp = cmp.grouped.heads["logreg"].summary["accuracy"]["mean"]
    assert rnd - grp >= 0.15, f"random CV {rnd:.3f} vs grouped CV {grp:.3f}"
    assert cmp.believe == "grouped"


def test_audit_cli_writes_the_documented_json(tmp_path):
    from featcache.cache import save_features
    from featcache.cli import cli
    feats, _ = planted(n_clips=12, n_single=12)
    sha = feats.sha256.copy()
    sha[3] = sha[80]
    cache = tmp_path / "c.h5"
    save_features(cache, Features(feats.X, feats.y, feats.paths, feats.class_names, sha))
    out = tmp_path / "audit.json"
    res = CliRunner().invoke(cli, ["audit", str(cache), "--json", str(out),
                                   "--validation-split", "0.4"])
    assert res.exit_code == 0, res.output
    assert "near-duplicate groups" in res.output and "validation_split=0.4" in res.output
    doc = json.loads(out.read_text())
    for key in ("exact_duplicate_groups", "near_duplicate_groups", "label_conflicts", "summary"):
        assert key in doc
    assert len(doc["near_duplicate_groups"]) == 12
    assert all(p.startswith("class") for g in doc["near_duplicate_groups"] for p in g)
    assert doc["label_conflicts"][0]["paths"] == [feats.paths[3], feats.paths[80]]
    bad = CliRunner().invoke(cli, ["audit", str(cache), "--threshold", "high"])
    assert bad.exit_code != 0 and "--threshold" in bad.output
