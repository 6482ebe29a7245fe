"""Training on cached augmented views: no leakage, the same splits, clean-row train scores."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.base import clone

from helpers import clip_features
from featcache.errors import FeatcacheError
from featcache.evaluate import (cross_validate_heads, learning_curve, make_splits,
                                sweep)
from featcache.evaluate.views import (check_augmented, training_index, training_rows,
                                          views_test)
from featcache.evaluate.metrics import score
from featcache.evaluate.verdicts import (GAP_MODERATE, VIEWS_MARGIN, VIEWS_P,
                                         augmentation_verdict)
from featcache.heads import LogisticHead

K = 3


def with_views(features, k=K, noise=0.3, seed=0):
    """``features`` with ``k`` views per row: the row plus Gaussian noise (0: exact copies)."""
    rng = np.random.default_rng(seed)
    X = features.X
    views = X[:, None, :] + noise * X.std() * rng.standard_normal((len(X), k, X.shape[1]))
    return dataclasses.replace(features, views=views.astype(np.float32))


@pytest.fixture
def feats():
    return with_views(clip_features(clips_per_class=6, frames=4, d=12, signal=0.8))


def test_subset_slices_views(feats):
    sub = feats.subset(np.array([3, 0, 5]))
    np.testing.assert_array_equal(sub.views, feats.views[[3, 0, 5]])
    assert clip_features().subset([0, 1]).views is None


@pytest.mark.parametrize("group_by", [None, "folder", "near-duplicates"])
def test_no_view_of_a_validation_image_is_ever_trained_on(feats, group_by):
    plan = make_splits(feats, 4, group_by=group_by, seed=1)
    for tr, te in plan.splits:
        source, view = training_index(tr, K, True)
        assert not np.isin(source, te).any()
        # every training image brings its clean row and all K views, nothing else
        assert sorted(source) == sorted(np.repeat(tr, K + 1))
        assert np.array_equal(np.bincount(view + 1), [len(tr)] * (K + 1))
        X, y = training_rows(feats, tr, True)
        expect = np.where((view < 0)[:, None], feats.X[source],
                          feats.views[source, np.maximum(view, 0)])
        np.testing.assert_array_equal(X, expect)
        np.testing.assert_array_equal(y, feats.y[source])
        if plan.groups is not None:  # whole groups, with their views, on one side
            assert not np.isin(plan.groups[source], plan.groups[te]).any()


def test_clean_training_rows_when_not_augmented(feats):
    tr = np.array([4, 1, 7])
    X, y = training_rows(feats, tr, False)
    np.testing.assert_array_equal(X, feats.X[tr])
    assert training_index(tr, K, False)[0].tolist() == [4, 1, 7]


def _manual_fold(head, feats, tr, te, rows_X, rows_y):
    model = clone(head).fit(rows_X, rows_y)
    return (score("accuracy", feats.y[te], model.predict(feats.X[te])),
            score("accuracy", feats.y[tr], model.predict(feats.X[tr])),
            score("accuracy", rows_y, model.predict(rows_X)))


def test_zero_noise_views_equal_the_clean_run_on_duplicated_rows(feats):
    copies = with_views(feats, noise=0.0)
    res = cross_validate_heads(copies, "logreg", folds=4, augmented=True)
    head = LogisticHead()
    for j, (tr, te) in enumerate(res.plan.splits):
        dup = np.tile(tr, K + 1)
        val, train, _ = _manual_fold(head, copies, tr, te, copies.X[dup], copies.y[dup])
        assert res.heads["logreg"].folds["accuracy"][j] == pytest.approx(val)
        assert res.heads["logreg"].folds["train_accuracy"][j] == pytest.approx(train)


def test_train_score_is_measured_on_clean_training_rows(feats):
    noisy = with_views(feats, noise=3.0)
    res = cross_validate_heads(noisy, "logreg", folds=4, augmented=True)
    clean_rows, all_rows = [], []
    for j, (tr, te) in enumerate(res.plan.splits):
        val, train, every = _manual_fold(LogisticHead(), noisy, tr, te,
                                         *training_rows(noisy, tr, True))
        assert res.heads["logreg"].folds["accuracy"][j] == pytest.approx(val)
        clean_rows.append(train)
        all_rows.append(every)
    np.testing.assert_allclose(res.heads["logreg"].folds["train_accuracy"], clean_rows)
    assert not np.allclose(clean_rows, all_rows)  # the choice matters on these views


def test_augmented_switch_changes_the_fit_and_keeps_the_splits(feats):
    noisy = with_views(feats, noise=3.0)
    a = cross_validate_heads(noisy, "logreg", folds=4)
    b = cross_validate_heads(noisy, "logreg", folds=4, augmented=True)
    for (tr1, te1), (tr2, te2) in zip(a.plan.splits, b.plan.splits):
        assert np.array_equal(tr1, tr2) and np.array_equal(te1, te2)
    assert a.heads["logreg"].folds["train_accuracy"] != b.heads["logreg"].folds["train_accuracy"]


@pytest.mark.parametrize("call", [
    lambda f: cross_validate_heads(f, "logreg", folds=3, augmented=True),
    lambda f: sweep(f, "logreg", folds=3, augmented="both"),
    lambda f: learning_curve(f, "logreg", folds=3, augmented=True),
])
def test_augmented_without_views_is_one_clear_error(call):
    with pytest.raises(FeatcacheError, match="needs augmented views.*--views K"):
        call(clip_features())


def test_bad_views_and_bad_switch_values_are_errors(feats):
    with pytest.raises(FeatcacheError, match=r"shape \(n, K, d\)"):
        check_augmented(dataclasses.replace(feats, views=feats.views[:-1]), True)
    nan = feats.views.copy()
    nan[2, 1, 0] = np.nan
    with pytest.raises(FeatcacheError, match=r"NaN or inf.*first: .c0/clip0/frame_0002.jpg.\)"):
        check_augmented(dataclasses.replace(feats, views=nan), True)
    with pytest.raises(FeatcacheError, match="augmented= must be False or True"):
        cross_validate_heads(feats, "logreg", augmented="both")
    with pytest.raises(FeatcacheError, match="augmented= must be"):
        sweep(feats, "logreg", augmented="yes")


def test_sweep_both_runs_with_and_without_views_on_the_same_splits(feats, tmp_path):
    grid = [0.01, 0.1, 1.0]
    both = sweep(feats, "logreg,svm", grids=grid, folds=4, augmented="both")
    clean = sweep(feats, "logreg,svm", grids=grid, folds=4)
    views = sweep(feats, "logreg,svm", grids=grid, folds=4, augmented=True)
    for name in ("logreg", "svm"):
        np.testing.assert_array_equal(both.heads[name].scores["accuracy"],
                                      clean.heads[name].scores["accuracy"])
        np.testing.assert_array_equal(both.views[name].scores["accuracy"],
                                      views.heads[name].scores["accuracy"])
        t = both.views_tests[name]
        assert t["without"]["value"] == clean.heads[name].best_value
        assert t["with"]["value"] == views.heads[name].best_value
        assert t["mean_diff"] == pytest.approx(
            views.heads[name].scores["accuracy"][views.heads[name].best_index].mean()
            - clean.heads[name].scores["accuracy"][clean.heads[name].best_index].mean())
    doc = both.to_dict()
    assert set(doc["with_views"]["heads"]) == {"logreg", "svm"}
    assert "p_value" in doc["with_views"]["tests"]["logreg"]
    assert "with_views" not in clean.to_dict()
    json.dumps(doc)
    from featcache.report.tables import format_sweep
    text = format_sweep(both)
    assert "accuracy with views" in text and "with vs without augmented views" in text
    from featcache.report.plots import plot_regularisation_path
    assert plot_regularisation_path(both, tmp_path / "p.png").stat().st_size > 1000


def test_curve_counts_images_and_trains_on_views(feats):
    noisy = with_views(feats, noise=3.0)
    a = learning_curve(noisy, "logreg", folds=3, fractions=[0.5, 1.0])
    b = learning_curve(noisy, "logreg", folds=3, fractions=[0.5, 1.0], augmented=True)
    assert a.n_train == b.n_train
    assert not np.array_equal(a.train, b.train)


def test_train_fits_every_image_and_its_views(feats):
    from featcache.model._train import train
    res = train(feats, "logreg", C=0.5, augmented=True)
    expect = LogisticHead(C=0.5).fit(*training_rows(feats, slice(None), True))
    np.testing.assert_allclose(res.head.coef_, expect.coef_, rtol=1e-5, atol=1e-6)
    auto = train(feats, "logreg", grid=[0.01, 1.0], folds=3, augmented=True)
    assert auto.choice.auto and auto.choice.value in (0.01, 1.0)
    with pytest.raises(FeatcacheError, match="needs augmented views"):
        train(clip_features(), "logreg", C=1.0, augmented=True)


def _test(without_mean, without_gap, with_mean, with_gap, p):
    return {"param": "C", "without": {"value": 1.0, "mean": without_mean, "train": 1.0,
                                      "gap": without_gap},
            "with": {"value": 1.0, "mean": with_mean, "train": 1.0, "gap": with_gap},
            "mean_diff": with_mean - without_mean, "t": 0.0, "df": 4, "p_value": p}


@pytest.mark.parametrize("numbers,kind", [
    ((0.80, GAP_MODERATE + 0.10, 0.81, GAP_MODERATE - 0.01, 0.3), "closes"),
    ((0.80, 0.20, 0.80, 0.15, 0.9), "narrows"),
    ((0.80, 0.02, 0.80 + VIEWS_MARGIN + 0.01, 0.02, VIEWS_P / 2), "helps"),
    ((0.80, 0.02, 0.80 + VIEWS_MARGIN + 0.01, 0.02, VIEWS_P * 2), "no_effect"),
    ((0.80, 0.02, 0.80 - VIEWS_MARGIN - 0.01, 0.02, VIEWS_P / 2), "hurts"),
    ((0.80, 0.20, 0.70, 0.05, 0.01), "hurts"),  # a closed gap at a lower score is no fix
])
def test_augmentation_verdict_rule(numbers, kind):
    v = augmentation_verdict(_test(*numbers))
    assert v.kind == kind
    assert "0.800" in v.sentence


def test_views_test_pairs_best_settings(feats):
    both = sweep(feats, "logreg", grids=[0.01, 1.0], folds=4, augmented="both")
    t = views_test(both.heads["logreg"], both.views["logreg"], "accuracy", 10, 5)
    assert t["df"] == 3 and 0 <= t["p_value"] <= 1


def test_diagnose_says_whether_views_close_the_gap(feats, tmp_path):
    from featcache.evaluate.diagnosis import diagnose
    from featcache.report.diagnosis import write_diagnosis
    diag = diagnose(feats, "logreg", folds=3, grid=[0.01, 1.0], augmented=True)
    aug = diag.numbers["augmentation"]
    assert set(aug) >= {"without", "with", "p_value"}
    verdict = augmentation_verdict(aug)
    assert verdict.sentence in diag.conclusion
    files = write_diagnosis(diag, tmp_path)
    assert "augmented views close the gap" in files.html.read_text()
    assert "augmentation" in json.loads(files.json.read_text())["numbers"]
    with pytest.raises(FeatcacheError, match="needs augmented views"):
        diagnose(clip_features(), "logreg", augmented=True)


@pytest.fixture
def cli_cache(tmp_path, monkeypatch, feats):
    """A real cache on disk, loaded with views by a stand-in for the views loader."""
    import featcache.cache as cache_mod
    from featcache.cache import save_features
    path = tmp_path / "f.h5"
    save_features(path, dataclasses.replace(feats, views=None))
    real = cache_mod.load_features
    calls = []

    def load(cache, backbone=None, views=False):
        calls.append(views)
        f = real(cache, backbone)
        mine = views and str(cache) == str(path)
        return dataclasses.replace(f, views=feats.views if mine else None)
    monkeypatch.setattr(cache_mod, "load_features", load)
    return path, calls


def _run(*args):
    from featcache.cli import cli
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_sweep_augmented_both_and_cv_augmented(cli_cache, tmp_path):
    path, calls = cli_cache
    out = tmp_path / "s.json"
    r = _run("sweep", path, "--heads", "logreg", "--grid", "0.01,1", "--folds", 3,
             "--json", out, "--plots", tmp_path / "plots", "--augmented", "both")
    assert r.exit_code == 0, r.output
    assert calls == [True]
    assert "with vs without augmented views" in r.stdout
    doc = json.loads(out.read_text())
    assert "with_views" in doc and doc["augmented"] == "both"
    r = _run("cv", path, "--folds", 3, "--augmented", "--json", out)
    assert r.exit_code == 0, r.output
    assert "plus their 3 augmented views" in r.stdout
    assert json.loads(out.read_text())["augmented"] is True
    r = _run("curve", path, "--folds", 3, "--augmented")
    assert r.exit_code == 0 and "augmented views" in r.stdout, r.output
    r = _run("sweep", path, "--heads", "logreg", "--grid", "0.1,1", "--folds", 3, "--augmented")
    assert r.exit_code == 0, r.output
    assert "with views" not in r.stdout


def test_cli_augmented_on_a_cache_without_views_is_one_line(cli_cache, tmp_path):
    path, _ = cli_cache
    other = tmp_path / "other.h5"
    other.write_bytes(path.read_bytes())
    for cmd in (["cv", other, "--augmented"], ["curve", other, "--augmented"],
                ["sweep", other, "--augmented", "both"]):
        r = _run(*cmd)
        assert r.exit_code == 1, r.output
        assert "needs augmented views" in r.output and "Traceback" not in r.output
    r = _run("sweep", path, "--nested", "--augmented")
    assert r.exit_code == 1 and "--nested does not take --augmented" in r.output


def test_random_vs_grouped_comparison_trains_on_views_in_both(feats):
    from featcache.evaluate import compare_random_grouped
    noisy = with_views(feats, noise=3.0)
    a = compare_random_grouped(noisy, "logreg", folds=3)
    b = compare_random_grouped(noisy, "logreg", folds=3, augmented=True)
    for run in ("random", "grouped"):
        ra, rb = getattr(a, run), getattr(b, run)
        assert [te.tolist() for _, te in ra.plan.splits] == [te.tolist() for _, te in rb.plan.splits]
        assert ra.heads["logreg"].folds["accuracy"] != rb.heads["logreg"].folds["accuracy"]
