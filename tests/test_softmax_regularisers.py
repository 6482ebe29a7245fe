"""SoftmaxHead's feature-space regularisers: mixup (``mixup_alpha``) and ``feature_noise``."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import clip_features
from featcache.errors import FeatcacheError, InvalidParameterError
from featcache.evaluate import sweep
from featcache.evaluate._estimators import default_grid
from featcache.heads import SoftmaxHead
from featcache.heads.batch_regularisers import batch_regulariser


def data(n=240, d=60, k=3, seed=0):
    """Few rows, many weakly informative features: a head can overfit them."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = 0.6 * rng.standard_normal((k, d))[y] + rng.standard_normal((n, d))
    return X.astype(np.float32), y


def regularised(x, y, step=0, **params):
    """One batch through :func:`batch_regulariser` as numpy arrays."""
    import tensorflow as tf
    head = SoftmaxHead(**params)
    out = batch_regulariser(head)(tf.constant(step, tf.int64),
                                  (tf.constant(x), tf.constant(y)))
    return [a.numpy() for a in out]


def test_defaults_are_off_and_declared():
    head = SoftmaxHead()
    assert head.mixup_alpha == 0 and head.feature_noise == 0
    assert {"mixup_alpha", "feature_noise"} <= set(SoftmaxHead._parameter_constraints)


@pytest.mark.parametrize("param", ["mixup_alpha", "feature_noise"])
def test_negative_values_are_clear_errors(param):
    X, y = data(60)
    with pytest.raises(InvalidParameterError, match=param):
        SoftmaxHead(**{param: -0.1}).fit(X, y)


def test_mixup_mixes_features_and_labels_with_one_coefficient():
    y = np.eye(4, dtype=np.float32)[np.arange(64) % 4]
    x, y2 = regularised(y.copy(), y, mixup_alpha=0.4)
    np.testing.assert_allclose(x, y2, atol=1e-6)  # same lam and partner for both
    np.testing.assert_allclose(y2.sum(axis=1), 1, atol=1e-6)
    assert not np.allclose(y2, y)  # something was mixed
    # one lam per batch: entries are lam and 1 - lam (or 1 where the partner has the same class)
    lam = np.unique(np.round(y2[(y2 > 1e-6) & (y2 < 1 - 1e-6)], 5))
    assert len(lam) == 2 and lam.sum() == pytest.approx(1, abs=1e-4)


def test_feature_noise_is_gaussian_with_the_given_std_and_leaves_labels():
    x = np.zeros((4000, 8), np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(4000) % 2]
    noisy, y2 = regularised(x, y, feature_noise=0.5)
    assert noisy.std() == pytest.approx(0.5, rel=0.03)
    assert abs(noisy.mean()) < 0.01
    np.testing.assert_array_equal(y2, y)


def test_batches_are_a_function_of_seed_and_step():
    x = np.ones((32, 4), np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(32) % 2]
    kw = dict(mixup_alpha=0.3, feature_noise=0.2)
    a, b = regularised(x, y, 3, **kw)[0], regularised(x, y, 3, **kw)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, regularised(x, y, 4, **kw)[0])
    assert not np.array_equal(a, regularised(x, y, 3, seed=1, **kw)[0])


def test_fits_are_deterministic_and_regularisers_change_them():
    X, y = data()
    off = SoftmaxHead(l2=0.0).fit(X, y)
    for kw in ({"mixup_alpha": 0.4}, {"feature_noise": 0.5},
               {"mixup_alpha": 0.4, "feature_noise": 0.5, "class_weight": "balanced"}):
        a = SoftmaxHead(l2=0.0, **kw).fit(X, y)
        b = SoftmaxHead(l2=0.0, **kw).fit(X, y)
        np.testing.assert_array_equal(a.coef_, b.coef_)
        assert not np.allclose(a.coef_, off.coef_)


def test_strong_feature_noise_regularises():
    X, y = data()
    tr, te = np.arange(160), np.arange(160, 240)
    kw = dict(l2=0.0, early_stopping=False, epochs=60)
    off = SoftmaxHead(**kw).fit(X[tr], y[tr])
    noisy = SoftmaxHead(feature_noise=3.0, **kw).fit(X[tr], y[tr])
    mixed = SoftmaxHead(mixup_alpha=1.0, **kw).fit(X[tr], y[tr])
    # smaller weights and a smaller train-validation gap than without
    for reg in (noisy, mixed):
        assert np.linalg.norm(reg.coef_) < np.linalg.norm(off.coef_)
    gap = [h.score(X[tr], y[tr]) - h.score(X[te], y[te]) for h in (off, noisy)]
    assert gap[1] < gap[0]


def test_sweep_over_mixup_alpha_and_default_grids():
    feats = clip_features(clips_per_class=6, frames=4, d=12, signal=0.8)
    res = sweep(feats, "softmax", param="mixup_alpha", grids=[0.1, 2.0], folds=3)
    h = res.heads["softmax"]
    assert h.param == "mixup_alpha" and h.grid == [0.1, 2.0] and h.stronger_when_larger
    assert not np.array_equal(h.scores["log_loss"][0], h.scores["log_loss"][1])
    for name in ("mixup_alpha", "feature_noise"):
        assert default_grid(SoftmaxHead(), name) == list(SoftmaxHead.param_grids[name])
    with pytest.raises(FeatcacheError, match="head 'logreg' has no such parameter"):
        sweep(feats, "logreg,softmax", param="mixup_alpha", folds=3)
    with pytest.raises(FeatcacheError, match="no default grid for param='dropout'"):
        sweep(feats, "softmax", param="dropout", folds=3)


def test_cli_sweeps_feature_noise(tmp_path):
    from featcache.cache import save_features
    from featcache.cli import cli
    path = tmp_path / "f.h5"
    save_features(path, clip_features(clips_per_class=6, frames=4, d=12, signal=0.8))
    r = CliRunner().invoke(cli, ["sweep", str(path), "--heads", "softmax", "--param",
                                 "feature_noise", "--grid", "0.1,1", "--folds", "3"])
    assert r.exit_code == 0, r.output
    assert "softmax (feature_noise)" in r.stdout
