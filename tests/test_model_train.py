"""``featcache.train``: C chosen by the sweep's own CV, head fitted on every row; head -> Dense."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import clip_features

import featcache
from featcache.errors import FeatcacheError
from featcache.heads import get_head
from featcache.model.graph import head_dense


@pytest.fixture(scope="module")
def feats():
    return clip_features(n_classes=3, clips_per_class=6, frames=3, d=10, signal=0.7)


def test_auto_uses_the_sweep_choice_and_score(feats):
    res = featcache.train(feats, "logreg", folds=3, group_by="folder", seed=1)
    sw = featcache.sweep(feats, "logreg", folds=3, group_by="folder", seed=1)
    h = sw.heads["logreg"]
    assert res.choice.auto and res.choice.param == "C"
    assert res.choice.value == h.best_value
    assert res.choice.grid == list(h.grid)
    assert res.choice.cv_mean == pytest.approx(np.mean(h.scores["accuracy"][h.best_index]))
    assert "group" in res.choice.splits
    ref = get_head("logreg", C=h.best_value).fit(feats.X, feats.y)
    np.testing.assert_allclose(res.head.predict_proba(feats.X), ref.predict_proba(feats.X),
                               atol=1e-6)


def test_given_value_is_not_cross_validated(feats):
    res = featcache.train(feats, "svm", C=0.05)
    assert not res.choice.auto and res.choice.value == 0.05 and res.choice.cv_mean is None
    assert res.head.probability and res.head.C == 0.05
    assert "not cross-validated" in str(res.choice)


def test_auto_on_a_too_small_cache_is_one_clear_error(feats):
    small = feats.subset(np.r_[0:3, 18:21, 36:39])  # 3 rows per class
    with pytest.raises(FeatcacheError, match=r"cannot cross-validate.*--C VALUE"):
        featcache.train(small, "logreg", folds=5)


def test_nested_estimate_is_recorded(feats):
    res = featcache.train(feats, "logreg", folds=3, nested=True, grid=[0.01, 0.1, 1.0])
    assert set(res.choice.nested) == {"mean", "std", "ci_low", "ci_high"}
    assert 0 <= res.choice.nested["mean"] <= 1
    assert "nested estimate" in str(res.choice)
    with pytest.raises(FeatcacheError, match="nested"):
        featcache.train(feats, "logreg", C=1.0, nested=True)


def test_class_weight_is_passed_to_the_head(feats):
    res = featcache.train(feats, "logreg", C=1.0, class_weight="balanced")
    assert res.head.class_weight == "balanced" and res.class_weight == "balanced"


@pytest.mark.parametrize("name,params", [("logreg", {"C": 0.3}), ("svm", {"C": 0.01,
                                                                          "probability": True}),
                                         ("softmax", {"l2": 1e-3, "epochs": 20})])
@pytest.mark.parametrize("k", [2, 3])
def test_head_dense_reproduces_predict_proba(name, params, k):
    f = clip_features(n_classes=k, clips_per_class=5, frames=2, d=8, signal=0.8, seed=k)
    head = get_head(name, **params).fit(f.X, f.y)
    hw = head_dense(head)
    p = hw.probabilities(f.X)
    np.testing.assert_allclose(p, head.predict_proba(f.X), atol=1e-5)
    np.testing.assert_allclose(hw.mean, head.scaler_.mean_, rtol=1e-6)
    assert (p.argmax(1) == np.searchsorted(head.classes_, head.predict(f.X))).all()


def test_head_dense_refuses_unfitted_or_uncalibrated():
    with pytest.raises(FeatcacheError, match="not a fitted"):
        head_dense(get_head("logreg"))
    f = clip_features(n_classes=2, clips_per_class=4, frames=2, d=6)
    with pytest.raises(FeatcacheError, match="probability=True"):
        head_dense(get_head("svm").fit(f.X, f.y))


def test_auto_with_near_duplicate_groups_matches_sweep(feats):
    res = featcache.train(feats, "svm", folds=3, group_by="near-duplicates")
    sw = featcache.sweep(feats, "svm", folds=3, group_by="near-duplicates")
    assert res.choice.value == sw.heads["svm"].best_value
    assert res.choice.splits == sw.plan.description and "near" in res.choice.splits
