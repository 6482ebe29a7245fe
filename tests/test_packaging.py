"""Packaging promises: true dependency floors, one version, a listed public API."""
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import featcache

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def test_min_constraints_pin_every_floor():
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "min_constraints.py"),
                          str(ROOT / "pyproject.toml")],
                         capture_output=True, text=True, check=True).stdout.split()
    project = _pyproject()["project"]
    names = [Requirement(r).name for r in project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra]]
    assert [line.split("==")[0] for line in out] == names and "ray" in names  # CI's min venv too
    pins = dict(line.split("==") for line in out)
    # validate_data needs 1.6; l1_ratio alone selects L1 and StratifiedGroupKFold
    # shuffles groups with their class counts from 1.8
    assert Version(pins["scikit-learn"]) >= Version("1.8")


def test_min_constraints_refuse_a_dependency_without_floor(tmp_path):
    bad = tmp_path / "pyproject.toml"
    bad.write_text('[project]\ndependencies = ["numpy"]\n'
                   '[project.optional-dependencies]\ntest = []\n')
    run = subprocess.run([sys.executable, str(ROOT / ".ci" / "min_constraints.py"), str(bad)],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "numpy" in run.stderr


def test_deprecation_warnings_are_not_all_ignored():
    filters = _pyproject()["tool"]["pytest"]["ini_options"]["filterwarnings"]
    assert "ignore::DeprecationWarning" not in filters
    assert any(f.startswith("error::DeprecationWarning:featcache") for f in filters)
    with pytest.raises(DeprecationWarning):
        from featcache.heads import _base  # a featcache module: its warnings are errors
        exec(compile("import warnings; warnings.warn('old', DeprecationWarning)",
                     _base.__file__, "exec"), {"__name__": _base.__name__})


def test_version_has_one_source():
    project = _pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert (_pyproject()["tool"]["setuptools"]["dynamic"]["version"]
            == {"attr": "featcache._version.__version__"})
    assert importlib.metadata.version("featcache") == featcache.__version__


def test_dir_lists_the_public_api():
    names = dir(featcache)
    assert set(featcache.__all__) <= set(names)
    assert "__version__" in names
    assert not [n for n in names if n.startswith("_") and n != "__version__"]
    assert "import_module" not in names
    for name in featcache.__all__:
        assert getattr(featcache, name) is not None


def test_grouped_splits_stay_stratified_on_the_sklearn_floor():
    # Below scikit-learn 1.8, StratifiedGroupKFold(shuffle=True) shuffled the per-group
    # class counts without the groups: this split then trained on one class.
    import numpy as np

    from featcache.evaluate import make_splits
    sizes, labels = (1, 1, 2, 1), (0, 0, 1, 1)
    y = np.repeat(labels, sizes)
    X = np.random.default_rng(2).normal(size=(len(y), 3))
    plan = make_splits((X, y), folds=2, repeats=2, group_by=np.repeat(np.arange(4), sizes), seed=2)
    assert all(len(np.unique(y[tr])) == 2 for tr, _ in plan.splits)
