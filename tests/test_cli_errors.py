"""User mistakes in cv, sweep, curve, audit and diagnose: one clear line, exit 1, no work wasted."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import error_line, run, small_clips as clip_features

from featcache.cache import save_features
from featcache.cache.features import Features


@pytest.fixture
def cache(tmp_path):
    path = tmp_path / "feats.h5"
    save_features(path, clip_features())
    return path


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command starts computing (loading the features is the first step)."""
    import featcache.cache

    def refuse(*a, **k):
        raise AssertionError("the command computed before checking its arguments")
    monkeypatch.setattr(featcache.cache, "load_features", refuse)


@pytest.fixture
def blocker(tmp_path):
    """A regular file: nothing can be created beneath it, even as root."""
    path = tmp_path / "a-file"
    path.write_text("x")
    return path


@pytest.mark.parametrize("args", [
    ["cv", "--json", "{b}/out.json"],
    ["sweep", "--heads", "logreg", "--json", "{b}/out.json"],
    ["sweep", "--heads", "logreg", "--plots", "{b}/plots"],
    ["curve", "--json", "{b}/sub/out.json"],
    ["curve", "--plots", "{b}/plots"],
    ["audit", "--json", "{b}/audit.json"],
    ["diagnose", "--out", "{b}/report"],
])
def test_unwritable_outputs_fail_before_any_work(cache, blocker, no_work, args):
    err = error_line(run(args[0], cache, *[a.format(b=blocker) for a in args[1:]]))
    option = next(a for a in args if a.startswith("--") and a not in ("--heads",))
    assert option in err and str(blocker) in err, err
    assert "nothing was computed" in err, err


@pytest.mark.parametrize("args, said", [
    (["diagnose", "--out", "{b}"], "--out {b} is a file; give a folder"),
    (["sweep", "--heads", "logreg", "--plots", "{b}"], "--plots {b} is a file; give a folder"),
    (["cv", "--json", "{t}"], "--json {t} is a folder; give a file name"),
    (["audit", "--json", "{t}"], "--json {t} is a folder; give a file name"),
])
def test_an_output_of_the_wrong_kind_is_one_line(cache, blocker, tmp_path, no_work, args, said):
    fill = {"b": blocker, "t": tmp_path}
    r = run(args[0], cache, *[a.format(**fill) for a in args[1:]])
    assert r.exit_code == 1
    assert said.format(**fill) in error_line(r)


def test_check_writable_accepts_no_path_and_an_existing_file(tmp_path):
    from featcache.files import check_writable
    assert check_writable(None, "--json") is None
    old = tmp_path / "old.json"
    old.write_text("{}")
    assert check_writable(old, "--json") == old and old.read_text() == "{}"


def test_writable_outputs_still_work(cache, tmp_path):
    out = tmp_path / "new" / "deeper" / "cv.json"
    r = run("cv", cache, "--json", out)
    assert r.exit_code == 0, r.output
    assert out.is_file() and not list(out.parent.glob(".featcache-probe-*"))


def one_image_class_cache(tmp_path):
    f = clip_features()
    keep = np.r_[np.flatnonzero(f.y != 2), np.flatnonzero(f.y == 2)[:1]]
    path = tmp_path / "single.h5"
    save_features(path, f.subset(keep))
    return path


@pytest.mark.parametrize("folds", [5, 2])
def test_a_one_image_class_gets_advice_that_works(tmp_path, folds):
    err = error_line(run("cv", one_image_class_cache(tmp_path), "--folds", folds))
    assert "'k2'" in err and "only 1 sample" in err, err
    assert "--folds 2 or fewer" not in err and "use --folds" not in err, err
    assert "add images" in err and "merge" in err, err


def test_fewer_folds_advice_is_given_only_when_it_works(tmp_path):
    f = clip_features()
    keep = np.r_[np.flatnonzero(f.y != 1), np.flatnonzero(f.y == 1)[:3]]
    path = tmp_path / "few.h5"
    save_features(path, f.subset(keep))
    err = error_line(run("cv", path, "--folds", 5))
    assert "use --folds 3 or fewer" in err
    assert run("cv", path, "--folds", 3).exit_code == 0


def test_grid_with_a_mistyped_head_is_rejected(cache, no_work):
    err = error_line(run("sweep", cache, "--heads", "logreg,svm", "--grid", "lgreg=0.1,1"))
    assert "'lgreg'" in err and "logreg, svm" in err


def test_grid_for_a_head_not_swept_is_rejected_by_the_library(cache):
    from featcache.errors import FeatcacheError
    from featcache.evaluate import sweep
    with pytest.raises(FeatcacheError, match="'svm', not among the heads swept"):
        sweep(clip_features(), "logreg", grids={"svm": [1.0]}, folds=3)


def test_diagnose_checks_its_head_before_any_work(cache, tmp_path, monkeypatch):
    import featcache.evaluate.diagnosis

    def refuse(*a, **k):
        raise AssertionError("diagnose audited before checking --head")
    monkeypatch.setattr(featcache.evaluate.diagnosis, "audit", refuse)
    err = error_line(run("diagnose", cache, "--head", "logreg,svm", "--out", tmp_path / "d"))
    assert "one head" in err and "'svm'" in err
    err = error_line(run("diagnose", cache, "--head", "forest", "--out", tmp_path / "d"))
    assert "unknown head 'forest'" in err


def test_diagnose_checks_folds_before_any_work(tmp_path, monkeypatch):
    import featcache.evaluate.diagnosis
    monkeypatch.setattr(featcache.evaluate.diagnosis, "audit", lambda *a, **k: 1 / 0)
    err = error_line(run("diagnose", one_image_class_cache(tmp_path), "--out", tmp_path / "d"))
    assert "only 1 sample" in err


def test_diagnose_library_api_rejects_bad_grid_at_once():
    from featcache.evaluate.diagnosis import diagnose
    from featcache.errors import FeatcacheError
    f = clip_features()
    feats = Features(f.X, f.y, f.paths, f.class_names, f.sha256)
    with pytest.raises(FeatcacheError, match="grid= must be positive"):
        diagnose(feats, grid=[0.1, -1])


@pytest.mark.parametrize("grid", ["0.1,-1", "a,b", ",", "nan"])
def test_diagnose_grid_message_names_the_flag(cache, tmp_path, no_work, grid):
    err = error_line(run("diagnose", cache, "--grid", grid, "--out", tmp_path / "d"))
    assert "--grid takes comma-separated positive numbers" in err
