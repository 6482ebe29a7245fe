"""Folds in parallel threads (``n_jobs``): same numbers as one thread, one BLAS thread each."""
from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from threadpoolctl import threadpool_info

from helpers import clip_features
from featcache.cache import save_features
from featcache.cli import cli
from featcache.errors import FeatcacheError
from featcache.evaluate import cross_validate_heads, learning_curve, nested_cv, sweep
from featcache.evaluate.parallel import available_cores, check_n_jobs, fold_jobs, map_folds
from featcache.heads import LogisticHead, SoftmaxHead


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(400, 64, n_informative=24, n_classes=4, random_state=0)
    X = X.astype(np.float32) * np.linspace(0.1, 10, 64, dtype=np.float32)  # uneven scales
    return X, y


def _fold_scores(res):
    return {name: {k: v for k, v in h.folds.items() if k != "fit_time"}
            for name, h in res.heads.items()}


def _same(a, b):
    """Bitwise equal, NaN where NaN (log-loss of a head without probabilities)."""
    return np.array_equal(np.asarray(a, float), np.asarray(b, float), equal_nan=True)


def test_default_uses_every_core_of_the_affinity_mask():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert available_cores() == cores
    assert check_n_jobs(-1) == check_n_jobs(None) == cores
    assert check_n_jobs(3) == 3


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_n_jobs_is_one_clear_error(bad, data):
    with pytest.raises(FeatcacheError, match=r"n_jobs=.* is not a number of threads"):
        check_n_jobs(bad)
    with pytest.raises(FeatcacheError, match="n_jobs="):
        cross_validate_heads(data, "logreg", n_jobs=bad)


def test_cli_n_jobs_zero_is_one_line(tmp_path):
    cache = tmp_path / "f.h5"
    save_features(cache, clip_features())
    for command in ("cv", "sweep", "curve"):
        r = CliRunner().invoke(cli, [command, str(cache), "--n-jobs", "0"])
        assert r.exit_code == 1 and "Traceback" not in r.output
        assert "--n-jobs 0 is not a number of threads" in r.output
        assert len(r.output.strip().splitlines()) == 1


def test_cli_n_jobs_runs_and_matches_one_thread(tmp_path):
    cache = tmp_path / "f.h5"
    save_features(cache, clip_features())
    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"cv{jobs}.json"
        r = CliRunner().invoke(cli, ["cv", str(cache), "--head", "logreg,svm", "--folds", "3",
                                     "--n-jobs", jobs, "--json", str(out)])
        assert r.exit_code == 0, r.output
        outs.append(json.loads(out.read_text()))
    for head in ("logreg", "svm"):
        assert outs[0]["heads"][head]["folds"]["accuracy"] == \
            outs[1]["heads"][head]["folds"]["accuracy"]


def test_cv_default_threads_equal_one_thread_bitwise(data):
    heads = ["logreg", "svm", "softmax"]
    one = cross_validate_heads(data, heads, folds=5, n_jobs=1)
    default = cross_validate_heads(data, heads, folds=5)  # every core
    two = cross_validate_heads(data, heads, folds=5, n_jobs=2)
    for res in (default, two):
        for name, folds in _fold_scores(one).items():
            for k, v in folds.items():
                assert _same(v, _fold_scores(res)[name][k]), (name, k)
            assert np.array_equal(one.heads[name].confusion, res.heads[name].confusion)


def test_sweep_threads_equal_one_thread_bitwise(data):
    kw = dict(grids={"softmax": [1e-4, 1e-2]}, folds=4)
    one = sweep(data, ("logreg", "svm", "softmax"), n_jobs=1, **kw)
    two = sweep(data, ("logreg", "svm", "softmax"), n_jobs=2, **kw)
    for name, h in one.heads.items():
        for k, v in h.scores.items():
            assert _same(v, two.heads[name].scores[k]), (name, k)
        assert np.array_equal(h.confusion, two.heads[name].confusion)
        assert h.best_index == two.heads[name].best_index


def test_curve_and_nested_threads_equal_one_thread_bitwise(data):
    c1 = learning_curve(data, "logreg", folds=4, n_jobs=1)
    c2 = learning_curve(data, "logreg", folds=4, n_jobs=2)
    assert _same(c1.train, c2.train) and _same(c1.val, c2.val) and c1.n_train == c2.n_train
    n1 = nested_cv(data, "logreg", grids=[1e-3, 1e-1, 10], folds=3, inner_folds=2, n_jobs=1)
    n2 = nested_cv(data, "logreg", grids=[1e-3, 1e-1, 10], folds=3, inner_folds=2, n_jobs=2)
    assert n1.heads["logreg"].chosen == n2.heads["logreg"].chosen
    for k, v in n1.heads["logreg"].folds.items():
        assert _same(v, n2.heads["logreg"].folds[k]), k


class _Probe(ClassifierMixin, BaseEstimator):
    """Records how many fits run at once and the BLAS threads each one sees."""

    active, peak, blas = 0, 0, []
    lock = threading.Lock()

    def fit(self, X, y):
        cls = type(self)
        with cls.lock:
            cls.active += 1
            cls.peak = max(cls.peak, cls.active)
            cls.blas.append(max(i["num_threads"] for i in threadpool_info()
                                if i["user_api"] == "blas"))
        time.sleep(0.3)
        with cls.lock:
            cls.active -= 1
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


@pytest.mark.parametrize("n_jobs, peak", [(1, 1), (2, 2)])
def test_folds_really_run_in_threads_with_one_blas_thread(data, n_jobs, peak):
    _Probe.active, _Probe.peak, _Probe.blas = 0, 0, []
    cross_validate_heads(data, _Probe(), folds=4, n_jobs=n_jobs)
    assert _Probe.peak == peak
    assert _Probe.blas == [1] * 4


def test_softmax_folds_run_one_after_another():
    assert fold_jobs(SoftmaxHead(), 4) == 1
    assert fold_jobs(LogisticHead(), 4) == 4


def test_map_folds_keeps_order_counts_progress_and_raises():
    class Bar:
        n = 0

        def update(self):
            self.n += 1

    def slow_square(i):
        time.sleep(0.02 * (5 - i))  # later items finish first
        return i * i

    bar = Bar()
    assert map_folds(slow_square, range(5), n_jobs=3, bar=bar) == [0, 1, 4, 9, 16]
    assert bar.n == 5

    def fail_on_two(i):
        if i == 2:
            raise FeatcacheError("fold 2 is impossible")
        return i

    with pytest.raises(FeatcacheError, match="fold 2"):
        map_folds(fail_on_two, range(6), n_jobs=2)


# --- the logistic path's L-BFGS: line search on logits, two passes over X per iteration ---

class _CountingX(np.ndarray):
    """float32 features counting matrix products (passes over the data)."""

    passes = 0

    def __matmul__(self, other):
        type(self).passes += 1
        return np.asarray(self) @ other

    def __rmatmul__(self, other):  # G.T @ Xs, the gradient's pass
        type(self).passes += 1
        return other @ np.asarray(self)


def _problem(k, weighted):
    from functools import partial
    from featcache.heads._linear import multinomial_loss_grad
    X, y = make_classification(300, 20, n_informative=8, n_classes=k, random_state=1)
    Xs = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    onehot = np.eye(k, dtype=np.float32)[y]
    Y = onehot[:, 1:] if k == 2 else onehot
    sw = np.linspace(0.5, 2, len(y)).astype(np.float32) if weighted else None
    return Xs, Y, partial(multinomial_loss_grad, sw=sw)


@pytest.mark.parametrize("k, weighted", [(2, False), (4, False), (4, True)])
def test_logit_lbfgs_reaches_scipys_optimum(k, weighted):
    from featcache.heads._linear import fit_linear
    from featcache.heads._logit_lbfgs import fit_linear_logits
    Xs, Y, loss = _problem(k, weighted)
    w0 = np.zeros((Xs.shape[1] + 1, Y.shape[1]))
    W, b, _ = fit_linear(Xs, Y, 0.5, loss, w0=w0, tol=1e-7)
    theta, Z, n_iter = fit_linear_logits(Xs, Y, 0.5, loss, w0, tol=1e-7)
    assert n_iter > 1
    np.testing.assert_allclose(theta[:-1], W, atol=1e-4)
    np.testing.assert_allclose(theta[-1], b, atol=1e-4)
    np.testing.assert_allclose(Z, Xs @ theta[:-1] + theta[-1], atol=1e-4)  # logits kept in step


def test_logit_lbfgs_passes_over_x_twice_per_iteration():
    from featcache.heads._logit_lbfgs import fit_linear_logits
    Xs, Y, loss = _problem(4, False)
    _CountingX.passes = 0
    _, _, n_iter = fit_linear_logits(Xs.view(_CountingX), Y, 0.5, loss,
                                     np.zeros((Xs.shape[1] + 1, 4)), tol=1e-6)
    assert n_iter > 5 and _CountingX.passes == 2 + 2 * n_iter  # start: logits + gradient


def test_logit_lbfgs_warns_at_max_iter():
    from sklearn.exceptions import ConvergenceWarning
    from featcache.heads._logit_lbfgs import fit_linear_logits
    Xs, Y, loss = _problem(4, False)
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        fit_linear_logits(Xs, Y, 10.0, loss, np.zeros((Xs.shape[1] + 1, 4)), tol=1e-9,
                          max_iter=3)
