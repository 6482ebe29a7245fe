"""Cross-validation, statistics, sweeps and learning curves (featcache.evaluate)."""
from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats as sst
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from featcache.errors import FeatcacheError
from featcache.evaluate import (compare_random_grouped, corrected_ttest, cross_validate_heads,
                                groups_from_paths, learning_curve, make_splits, summarize, sweep)
from featcache.evaluate.curve import training_order, stratified_order, tail_slopes
from featcache.cache.features import Features
from helpers import clip_features


def clips(**kw):
    return clip_features(**kw)


def blobs(seed=0):
    """Independent samples (no near-duplicates), hard enough that no fold scores 1.0."""
    return clips(clips_per_class=40, frames=1, signal=0.35, seed=seed)


def lr():
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=500))


SCORING = ["accuracy", "balanced_accuracy", "f1_macro", "neg_log_loss"]


@pytest.mark.parametrize("repeats", [1, 2])
def test_per_fold_numbers_equal_sklearn_cross_validate(repeats):
    feats = blobs()
    plan = make_splits(feats, folds=4, repeats=repeats, seed=3)
    assert plan.n_splits == 4 * repeats
    res = cross_validate_heads(feats, {"lr": lr()}, cv=plan.splits)
    ref = cross_validate(lr(), feats.X, feats.y, cv=plan.splits, scoring=SCORING,
                         return_train_score=True)
    got = res.heads["lr"].folds
    for name in ("accuracy", "balanced_accuracy", "f1_macro"):
        np.testing.assert_allclose(got[name], ref[f"test_{name}"], rtol=1e-12)
    np.testing.assert_allclose(got["log_loss"], -ref["test_neg_log_loss"], rtol=1e-9)
    np.testing.assert_allclose(got["train_accuracy"], ref["train_accuracy"], rtol=1e-12)
    np.testing.assert_allclose(got["gap"], ref["train_accuracy"] - ref["test_accuracy"])
    s = res.heads["lr"].summary["accuracy"]
    assert s["mean"] == pytest.approx(np.mean(ref["test_accuracy"]))
    assert s["std"] == pytest.approx(np.std(ref["test_accuracy"], ddof=1))
    assert s["ci_low"] < s["mean"] < s["ci_high"]


def test_featcache_head_matches_sklearn_on_same_splits():
    from featcache.heads import get_head
    feats = blobs(1)
    plan = make_splits(feats, folds=3, seed=1)
    res = cross_validate_heads(feats, "logreg", cv=plan.splits)
    ref = cross_validate(get_head("logreg"), feats.X, feats.y, cv=plan.splits,
                         scoring=SCORING)
    np.testing.assert_allclose(res.heads["logreg"].folds["accuracy"], ref["test_accuracy"])
    np.testing.assert_allclose(res.heads["logreg"].folds["log_loss"], -ref["test_neg_log_loss"],
                               rtol=1e-6)


def test_log_loss_survives_a_class_missing_from_training():
    feats = clips()
    y = feats.y
    train = np.flatnonzero(y != 2)[::2]
    test = np.setdiff1d(np.arange(len(y)), train)
    res = cross_validate_heads(feats, {"lr": lr()}, cv=[(train, test)])
    loss = res.heads["lr"].folds["log_loss"][0]
    assert math.isfinite(loss) and loss > 5  # class 2 gets probability ~0: a large, finite loss
    assert res.heads["lr"].confusion[2].sum() == (y[test] == 2).sum()


def test_heads_share_splits_and_confusion_counts_every_validation_row():
    feats = clips()
    res = cross_validate_heads(feats, {"a": lr(), "b": make_pipeline(
        StandardScaler(), LogisticRegression(C=1e-3))}, folds=4, repeats=2)
    assert set(res.heads) == {"a", "b"}
    assert res.heads["a"].confusion.sum() == 2 * len(feats)
    assert res.comparison["best"] in {"a", "b"}
    other = res.comparison["tests"][0]
    best, name = res.comparison["best"], other["other"]
    hand = corrected_ttest(res.heads[best].folds["accuracy"], res.heads[name].folds["accuracy"],
                           res.plan.n_train, res.plan.n_test)
    assert other["t"] == pytest.approx(hand["t"])
    json.dumps(res.to_dict(), allow_nan=False)


def test_corrected_ttest_matches_hand_computation():
    a = [0.81, 0.84, 0.79, 0.86, 0.83, 0.80, 0.85, 0.82, 0.84, 0.81]
    b = [0.78, 0.83, 0.77, 0.82, 0.80, 0.81, 0.80, 0.79, 0.83, 0.78]
    n_train, n_test = 160, 40
    d = [x - y for x, y in zip(a, b)]
    J = len(d)
    var = statistics.variance(d)  # sample variance, ddof=1
    t = statistics.fmean(d) / math.sqrt((1 / J + n_test / n_train) * var)
    p = 2 * (1 - sst.t.cdf(abs(t), J - 1))
    res = corrected_ttest(a, b, n_train, n_test)
    assert res["t"] == pytest.approx(t, rel=1e-12)
    assert res["p_value"] == pytest.approx(p, rel=1e-9)
    assert res["df"] == J - 1
    assert res["mean_diff"] == pytest.approx(statistics.fmean(d))
    # Without the n_test/n_train term it is the ordinary paired t-test, which is
    # over-confident: the correction must shrink |t|.
    naive = sst.ttest_rel(a, b)
    assert corrected_ttest(a, b, 1, 0)["t"] == pytest.approx(naive.statistic)
    assert abs(res["t"]) < abs(naive.statistic)


def test_summarize_interval_uses_the_corrected_variance():
    v = [0.7, 0.75, 0.72, 0.78, 0.74]
    s = summarize(v, n_train=80, n_test=20)
    half = sst.t.ppf(0.975, 4) * math.sqrt((1 / 5 + 20 / 80) * statistics.variance(v))
    assert s["ci_high"] - s["mean"] == pytest.approx(half)
    plain = summarize(v)
    assert plain["ci_high"] - plain["ci_low"] < s["ci_high"] - s["ci_low"]
    assert math.isnan(summarize([0.5])["std"])


@settings(max_examples=30, deadline=None)
@given(groups=st.lists(st.tuples(st.integers(1, 6), st.integers(0, 1)), min_size=4, max_size=40),
       folds=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_grouped_splits_never_let_a_group_straddle(groups, folds, seed):
    sizes, labels = zip(*groups)
    g = np.repeat(np.arange(len(sizes)), sizes)
    y = np.repeat(labels, sizes)  # one label per group, like frames of one clip
    X = np.random.default_rng(seed).normal(size=(len(y), 3))
    counts = np.bincount(y, minlength=2)
    groups_per_class = np.bincount(labels, minlength=2)
    if len(sizes) < folds or counts.min() < folds or groups_per_class.min() < 2:
        # impossible to split (or a fold would train on one class): a clear error
        with pytest.raises(FeatcacheError):
            make_splits((X, y), folds=folds, group_by=g, seed=seed)
        return
    plan = make_splits((X, y), folds=folds, repeats=2, group_by=g, seed=seed)
    assert plan.n_splits == 2 * folds
    for tr, te in plan.splits:
        assert not set(plan.groups[tr]) & set(plan.groups[te])
        assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(y)


@pytest.mark.parametrize("group_by", ["folder", r"(c\d/clip\d+)/frame", r"clip\d+"])
def test_path_groups_keep_clips_in_one_fold(group_by):
    feats = clips()
    plan = make_splits(feats, folds=4, group_by=group_by, seed=0)
    clip = np.array(["/".join(p.split("/")[:2]) for p in feats.paths])
    for tr, te in plan.splits:
        assert not set(clip[tr]) & set(clip[te])
    if group_by != r"clip\d+":  # that regex merges clip3 of every class into one group
        assert plan.group_info["n_groups"] == 3 * 8


def test_groups_from_paths_rules():
    paths = ["A/x_frame1.jpg", "A/x_frame2.jpg", "B/y_frame1.jpg", "B/single.jpg"]
    g, info = groups_from_paths(paths, r"(.*)_frame\d+")
    assert g[0] == g[1] != g[2] and len({*g}) == 3 and info["n_matched"] == 3
    g, _ = groups_from_paths(["A/s/1.jpg", "A/s/2.jpg", "A/3.jpg", "A/4.jpg"], "folder")
    assert g[0] == g[1] and len({*g}) == 3  # files without a sub-folder stay singletons
    with pytest.raises(FeatcacheError, match=r"zzz.*matches none.*example path: 'A/x_frame1"):
        groups_from_paths(paths, "zzz")
    with pytest.raises(FeatcacheError, match="not a valid regular expression"):
        groups_from_paths(paths, "(")
    with pytest.raises(FeatcacheError, match="no file sits in a sub-folder"):
        groups_from_paths(paths, "folder")


def test_any_sklearn_splitter_through_the_api():
    feats = clips()
    groups = groups_from_paths(feats.paths, "folder")[0]
    res = cross_validate_heads(feats, {"lr": lr()}, cv=GroupKFold(3), group_by="folder")
    assert res.plan.n_splits == 3
    for tr, te in res.plan.splits:
        assert not set(groups[tr]) & set(groups[te])


def test_bad_input_errors():
    feats = clips()
    one = feats.subset(feats.y == 0)
    with pytest.raises(FeatcacheError, match="only one class.*'c0'"):
        cross_validate_heads(one, {"lr": lr()})
    few = feats.subset(np.r_[np.flatnonzero(feats.y != 2), np.flatnonzero(feats.y == 2)[:3]])
    with pytest.raises(FeatcacheError, match="'c2' has only 3 samples.*5-fold"):
        make_splits(few, folds=5)
    X = feats.X.copy()
    X[[4, 9], 2] = np.nan
    X[11, 0] = np.inf
    bad = Features(X, feats.y, feats.paths, feats.class_names, feats.sha256)
    with pytest.raises(FeatcacheError, match="3 of 120 feature rows contain NaN or inf"):
        sweep(bad, {"lr": lr()}, grids=[1.0], param="logisticregression__C")
    with pytest.raises(FeatcacheError, match="only 3 groups"):
        make_splits(feats, folds=4, group_by=r"^(c\d)/")


def test_sweep_matches_plain_cv_per_setting_and_picks_best():
    feats = clips(signal=0.5)
    grid = [1e-3, 1e-1, 10.0]
    res = sweep(feats, {"lr": lr()}, grids=grid, param="logisticregression__C", folds=3)
    h = res.heads["lr"]
    assert h.scores["accuracy"].shape == (3, 3) and h.grid == grid
    for s, c in enumerate(grid):
        est = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=500))
        cv = cross_validate_heads(feats, {"x": est}, cv=res.plan.splits)
        np.testing.assert_allclose(h.scores["accuracy"][s], cv.heads["x"].folds["accuracy"])
        np.testing.assert_allclose(h.scores["train_accuracy"][s],
                                   cv.heads["x"].folds["train_accuracy"])
    assert h.best_index == int(np.argmax(h.scores["accuracy"].mean(axis=1)))
    assert res.best_confusion().sum() == len(feats)
    # Stronger regularisation (small C) fits the training folds less well.
    assert h.scores["train_accuracy"][0].mean() <= h.scores["train_accuracy"][-1].mean()


def test_sweep_featcache_heads_on_shared_splits():
    feats = clips(signal=0.5)
    res = sweep(feats, "logreg,svm", folds=3)
    assert set(res.heads) == {"logreg", "svm"}
    assert all(len(h.grid) == 10 for h in res.heads.values())
    assert res.heads["logreg"].param == "C"
    assert res.comparison["best"] in res.heads and len(res.comparison["tests"]) == 1
    doc = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert len(doc["heads"]["svm"]["folds"]["accuracy"][0]) == 3


def test_stratified_order_keeps_class_proportions_in_every_prefix():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [50, 30, 20])
    order = stratified_order(y, rng)
    assert sorted(order) == list(range(100))
    for m in range(1, 101):
        counts = np.bincount(y[order[:m]], minlength=3)
        assert np.all(np.abs(counts - m * np.array([0.5, 0.3, 0.2])) <= 1.5)


def test_learning_curve_is_monotone_in_size_and_ends_at_full_cv():
    feats = clips(signal=0.7)
    res = learning_curve(feats, lr(), fractions=[1.0, 0.25, 0.5], folds=3, seed=2)
    assert res.fractions == [0.25, 0.5, 1.0]
    assert np.all(np.diff(res.n_train) > 0)
    assert res.val.shape == res.train.shape == (3, 3)
    full = cross_validate_heads(feats, {"lr": lr()}, cv=res.plan.splits)
    np.testing.assert_allclose(res.val[-1], full.heads["lr"].folds["accuracy"])
    np.testing.assert_allclose(res.train[-1], full.heads["lr"].folds["train_accuracy"])
    assert math.isfinite(res.gain_per_doubling)
    json.dumps(res.to_dict(), allow_nan=False)
    with pytest.raises(FeatcacheError, match="fractions"):
        learning_curve(feats, lr(), fractions=[0.5, 1.5])


def test_tail_slopes_recover_a_known_line():
    n = np.array([100, 200, 400, 800])
    val = 0.6 + 0.03 * np.log2(n / 100)
    slope, gain = tail_slopes([0.125, 0.25, 0.5, 1.0], n, val, tail=0.25)
    assert gain == pytest.approx(0.03)
    assert slope > 0


def test_random_splits_are_optimistic_on_near_duplicates(monkeypatch):
    feats = clips(n_classes=2, clips_per_class=12, frames=6, d=20, signal=0.15, seed=4)
    clip_of = groups_from_paths(feats.paths, "folder")[0]
    import featcache.evaluate.neardup as nd
    monkeypatch.setattr(nd, "near_duplicate_groups",
                        lambda X, threshold=None: (clip_of, {"threshold": 0.9}))
    cmp = compare_random_grouped(feats, {"lr": lr()}, folds=4)
    r = cmp.random.heads["lr"].summary["accuracy"]["mean"]
    g = cmp.grouped.heads["lr"].summary["accuracy"]["mean"]
    assert r - g > 0.15
    assert cmp.straddling == 24 and cmp.believe == "grouped"
    assert "Believe the grouped score" in cmp.verdict
    for tr, te in cmp.grouped.plan.splits:
        assert not set(clip_of[tr]) & set(clip_of[te])


def test_grouped_learning_curve_adds_whole_groups():
    feats = clips(frames=5)
    groups = groups_from_paths(feats.paths, "folder")[0]
    tr = np.arange(len(feats))[::2]
    tr = np.flatnonzero(np.isin(groups, groups[tr]))  # whole clips in training
    order, ends = training_order(tr, feats.y, groups, np.random.default_rng(0))
    assert sorted(order) == sorted(tr) and ends[-1] == len(tr)
    for end in ends:  # every allowed prefix holds complete clips only
        taken = groups[order[:end]]
        assert np.all(np.bincount(taken)[np.unique(taken)] == 5)
    res = learning_curve(feats, lr(), fractions=[0.3, 1.0], folds=3, group_by="folder")
    assert round(res.n_train[0] * 3) % 5 == 0  # mean over 3 folds of whole-clip sizes
    assert res.val.shape == (2, 3) and isinstance(res.advice(), str)


def test_grouped_splits_fill_every_fold_when_stratification_cannot():
    # Found by hypothesis: StratifiedGroupKFold leaves a fold empty on these 5 groups.
    sizes, labels = (1, 1, 3, 5, 6), (1, 1, 1, 0, 0)
    g = np.repeat(np.arange(5), sizes)
    y = np.repeat(labels, sizes)
    X = np.zeros((len(y), 3))
    plan = make_splits((X, y), folds=5, repeats=2, group_by=g, seed=0)
    assert plan.n_splits == 10
    for tr, te in plan.splits:
        assert len(te) and len(set(plan.groups[te])) == 1  # one group per fold
        assert set(y[tr]) == {0, 1}
