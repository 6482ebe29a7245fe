"""Tests for featcache.heads: sklearn contract, fit_path, scaling, accuracy."""
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from featcache.errors import FeatcacheError, InvalidParameterError
from featcache.heads import (HEADS, BaseHead, LinearSVMHead, LogisticHead, SoftmaxHead,
                             get_head)
from featcache.heads.softmax import auto_batch_size
from featcache.threads import active_blas_limit, blas_thread_limit

FAST_SOFTMAX = dict(epochs=15, batch_size=64, learning_rate=0.05, patience=3)


def _data(n=300, d=20, k=3, seed=0, shift=0.0):
    X, y = make_classification(n, d, n_informative=8, n_classes=k,
                               n_clusters_per_class=1, random_state=seed)
    # raw features on wildly different scales, like pooled CNN activations
    scale = np.logspace(-2, 2, d)
    return ((X + shift) * scale).astype(np.float32), y


@parametrize_with_checks([
    LogisticHead(),
    LogisticHead(penalty="elasticnet", C=0.5, max_iter=200),
    LogisticHead(penalty="l1", class_weight="balanced"),
    LinearSVMHead(),
    LinearSVMHead(probability=True, C=0.1, class_weight="balanced"),
    SoftmaxHead(),  # the defaults must pass check_classifiers_train too
    SoftmaxHead(**FAST_SOFTMAX, class_weight="balanced"),
])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


def test_registry_and_get_head():
    assert set(HEADS) == {"logreg", "svm", "softmax"}
    head = get_head("logreg", C=0.3)
    assert isinstance(head, LogisticHead) and head.C == 0.3
    for cls in HEADS.values():
        assert issubclass(cls, BaseHead)
        assert cls.reg_param in cls._get_param_names()
        assert len(cls.default_grid) == 10 and np.all(np.diff(cls.default_grid) > 0)
    with pytest.raises(FeatcacheError, match="logreg, softmax, svm"):
        get_head("forest")
    with pytest.raises(FeatcacheError, match="no parameter.*alpha"):
        get_head("svm", alpha=1)


@pytest.mark.parametrize("head, values", [
    (LogisticHead(tol=1e-6), [1.0, 0.001, 0.1, 0.01]),
    (LogisticHead(penalty="l1", tol=1e-6, max_iter=5000), [1.0, 0.05]),
    (LinearSVMHead(tol=1e-6), [0.1, 1e-4, 0.01]),
    (LinearSVMHead(tol=1e-6, probability=True), [0.1, 1e-3]),
])
def test_fit_path_matches_refits(head, values):
    X, y = _data()
    models = head.fit_path(X, y, values)
    assert [m.C for m in models] == values
    for value, model in zip(values, models):
        ref = clone(head).set_params(C=value).fit(X, y)
        assert model.get_params() == ref.get_params()
        np.testing.assert_allclose(model.decision_function(X),
                                   ref.decision_function(X), atol=2e-3, rtol=1e-3)
        assert np.mean(model.predict(X) == ref.predict(X)) >= 0.99


def test_softmax_fit_path_matches_refits():
    X, y = _data(n=200)
    head = SoftmaxHead(**FAST_SOFTMAX)
    values = [1e-2, 1e-4]
    models = head.fit_path(X, y, values)
    for value, model in zip(values, models):
        ref = clone(head).set_params(l2=value).fit(X, y)
        assert model.l2 == value
        np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X),
                                   atol=1e-5)
    # stronger weight decay gives smaller weights
    assert np.abs(models[0].coef_).sum() < np.abs(models[1].coef_).sum()


def test_fit_path_rejects_bad_values():
    X, y = _data(n=60)
    for bad in ([], [0.1, -1], [np.nan], "abc"):
        with pytest.raises(FeatcacheError, match="C"):
            LogisticHead().fit_path(X, y, bad)


@pytest.mark.parametrize("make", [
    lambda: LogisticHead(), lambda: LinearSVMHead(),
    lambda: SoftmaxHead(**FAST_SOFTMAX)])
def test_scaler_sees_training_rows_only(make):
    X, y = _data(n=200)
    train, test = np.arange(150), np.arange(150, 200)
    X_shifted = X.copy()
    X_shifted[test] += 1e6  # absurd test rows: must not move the scaler
    a = make().fit(X[train], y[train])
    b = make().fit(X_shifted[train], y[train])
    np.testing.assert_allclose(a.scaler_.mean_, X[train].mean(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(a.scaler_.mean_, b.scaler_.mean_)
    # inside cross_validate the fitted scaler also equals the fold's statistics
    res = cross_validate(make(), X_shifted, y, cv=[(train, test)],
                         return_estimator=True)
    np.testing.assert_allclose(res["estimator"][0].scaler_.mean_,
                               X[train].mean(axis=0), rtol=1e-5)


def test_standardisation_makes_heads_scale_invariant():
    X, y = _data()
    scale = np.logspace(-3, 3, X.shape[1]).astype(np.float32)
    for head in (LogisticHead(C=0.1), LinearSVMHead(C=0.01)):
        p1 = clone(head).fit(X, y).predict(X)
        p2 = clone(head).fit(X * scale, y).predict(X * scale)
        assert np.mean(p1 == p2) >= 0.99


@pytest.mark.parametrize("k", [2, 4])
def test_logistic_matches_sklearn_on_scaled_data(k):
    X, y = _data(n=400, k=k, seed=1)
    Xs = StandardScaler().fit_transform(X)
    for C in (0.01, 1.0):
        ours = LogisticHead(C=C, tol=1e-7).fit(X, y)
        ref = LogisticRegression(C=C, tol=1e-8, max_iter=10000).fit(Xs, y)
        np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(Xs),
                                   atol=1e-3)
        assert abs(ours.score(X, y) - ref.score(Xs, y)) <= 0.005


def test_l1_penalty_gives_sparse_weights():
    X, y = _data()
    dense = LogisticHead(C=0.05).fit(X, y)
    sparse = LogisticHead(C=0.05, penalty="l1", max_iter=2000).fit(X, y)
    assert np.mean(sparse.coef_ == 0) > 0.3 > np.mean(dense.coef_ == 0)


def test_calibrated_svm_probabilities():
    X, y = _data(k=4)
    head = LinearSVMHead(probability=True).fit(X, y)
    proba = head.predict_proba(X)
    assert proba.shape == (len(y), 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-9)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_array_equal(head.classes_[proba.argmax(1)], head.predict(X))
    assert not hasattr(LinearSVMHead().fit(X, y), "predict_proba")


def test_heads_work_in_grid_search():
    X, y = _data()
    search = GridSearchCV(LogisticHead(), {"C": [0.01, 1.0]}, cv=3).fit(X, y)
    assert search.best_score_ > 0.7
    search = GridSearchCV(LinearSVMHead(), {"C": [1e-3, 0.1]}, cv=3).fit(X, y)
    assert search.best_score_ > 0.7


def test_softmax_early_stopping_stops_and_restores_best():
    X, y = _data(n=300, d=40)
    y = np.random.default_rng(0).permutation(y)  # noise: val loss only gets worse
    head = SoftmaxHead(epochs=200, patience=3, learning_rate=0.05, l2=0,
                       batch_size=64).fit(X, y)
    assert head.n_epochs_ < 200
    assert head.n_epochs_ == head.best_epoch_ + 3
    losses = head.history_["val_loss"]
    assert losses[head.best_epoch_ - 1] == min(losses)


def test_softmax_is_deterministic_for_a_seed():
    X, y = _data(n=200)
    params = dict(FAST_SOFTMAX, dropout=0.3, label_smoothing=0.1)
    a = SoftmaxHead(seed=1, **params).fit(X, y).predict_proba(X)
    b = SoftmaxHead(seed=1, **params).fit(X, y).predict_proba(X)
    c = SoftmaxHead(seed=2, **params).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_softmax_to_keras_matches_predict_proba():
    X, y = _data(n=120)
    head = SoftmaxHead(**FAST_SOFTMAX).fit(X, y)
    keras_out = np.asarray(head.to_keras()(X[:10]))
    np.testing.assert_allclose(keras_out, head.predict_proba(X[:10]), atol=1e-4)


@pytest.mark.parametrize("head, message", [
    (LogisticHead(penalty="l3"), "'penalty' parameter of LogisticHead must be a str among"),
    (LogisticHead(C=-1), "'C' parameter of LogisticHead must be a float in the range"),
    (LogisticHead(penalty="elasticnet", l1_ratio=2), "'l1_ratio' parameter .* range"),
    (LogisticHead(class_weight="even"), "'class_weight' parameter"),
    (LinearSVMHead(C=0), "'C' parameter of LinearSVMHead"),
    (LinearSVMHead(probability=True, calibration_folds=1), "'calibration_folds'"),
    (SoftmaxHead(dropout=1.5), "'dropout' parameter of SoftmaxHead"),
    (SoftmaxHead(optimizer="adamx"), "'optimizer' parameter"),
    (SoftmaxHead(epochs=0), "'epochs' parameter"),
    (SoftmaxHead(batch_size="big"), "'batch_size' parameter"),
])
def test_bad_params_give_clear_errors(head, message):
    X, y = _data(n=60)
    with pytest.raises(InvalidParameterError, match=message) as info:
        head.fit(X, y)
    assert isinstance(info.value, FeatcacheError) and isinstance(info.value, ValueError)
    with pytest.raises(InvalidParameterError):
        head.fit_path(X, y, [0.1])


def test_class_weight_labels_must_be_classes():
    X, y = _data(n=60)
    with pytest.raises(InvalidParameterError, match="class_weight"):
        LogisticHead(class_weight={"cat": 2.0}).fit(X, y)


def test_one_class_is_a_clear_error():
    X, _ = _data(n=30)
    with pytest.raises(FeatcacheError, match="at least 2 classes"):
        LogisticHead().fit(X, np.zeros(30, int))


def _imbalanced(seed=0):
    X, y = make_classification(600, 10, n_informative=3, weights=[0.9, 0.1],
                               class_sep=0.5, flip_y=0.05, random_state=seed)
    return (X * np.logspace(-1, 1, 10)).astype(np.float32), y


@pytest.mark.parametrize("make", [
    lambda **kw: LogisticHead(C=0.1, **kw), lambda **kw: LinearSVMHead(C=0.01, **kw),
    lambda **kw: LogisticHead(C=0.1, penalty="l1", **kw),
    lambda **kw: SoftmaxHead(**FAST_SOFTMAX, **kw)])
def test_balanced_class_weight_raises_minority_recall(make):
    X, y = _imbalanced()
    recall = [np.mean(make(class_weight=cw).fit(X, y).predict(X)[y == 1] == 1)
              for cw in (None, "balanced")]
    assert recall[1] > recall[0] + 0.15
    # fit_path honours it too: same models as fit
    head = make(class_weight="balanced")
    value = getattr(head, head.reg_param)
    [model] = head.fit_path(X, y, [value])
    assert np.mean(model.predict(X)[y == 1] == 1) == pytest.approx(recall[1], abs=0.02)


@pytest.mark.parametrize("class_weight", ["balanced", {0: 1.0, 1: 4.0}])
def test_weighted_logistic_matches_sklearn(class_weight):
    X, y = _imbalanced(seed=1)
    Xs = StandardScaler().fit_transform(X)
    ours = LogisticHead(C=0.1, tol=1e-7, class_weight=class_weight).fit(X, y)
    ref = LogisticRegression(C=0.1, tol=1e-8, max_iter=10000,
                             class_weight=class_weight).fit(Xs, y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(Xs), atol=2e-3)


@pytest.mark.parametrize("n, batch", [(60, 16), (100, 16), (270, 64), (1000, 128),
                                      (3600, 512), (100_000, 512)])
def test_auto_batch_size_gives_enough_steps(n, batch):
    assert auto_batch_size(n) == batch
    assert n // batch >= 4 or batch == 16


def test_default_softmax_learns_a_small_set():
    # sklearn's check_classifiers_train data: with the old fixed batch of 512
    # (one step per epoch, 100 steps in all) it reached only 0.65 accuracy
    from sklearn.datasets import make_blobs
    X, y = make_blobs(n_samples=300, random_state=0)
    X = StandardScaler().fit_transform(X)
    assert SoftmaxHead().fit(X, y).score(X, y) > 0.85


def test_one_blas_limit_for_nested_fits(monkeypatch):
    import threadpoolctl
    calls = []
    original = threadpoolctl.ThreadpoolController.limit

    def counting(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(threadpoolctl.ThreadpoolController, "limit", counting)
    X, y = _data(n=100)
    with blas_thread_limit(1):
        assert active_blas_limit() == 1
        LogisticHead().fit(X, y)
        LinearSVMHead().fit_path(X, y, [0.1, 1.0])
    assert len(calls) == 1 and active_blas_limit() is None
    LogisticHead(blas_threads=None).fit(X, y)
    assert len(calls) == 1
