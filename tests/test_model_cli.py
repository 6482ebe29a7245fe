"""Model commands through the CLI on a tiny SavedModel backbone (hub path): the bad-input list,
parity failures naming their step, atomic replacement, evaluate."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import write_images

import featcache
from featcache.cli import cli
from featcache.errors import FeatcacheError
from featcache.model import export as export_mod
from featcache.model import graph


def tiny_module(path, seed):
    """A SavedModel feature extractor (mean colour @ w), loaded through hub.load like TF Hub's."""
    import tensorflow as tf

    class Tiny(tf.Module):
        def __init__(self):
            self.w = tf.Variable(np.random.default_rng(seed).normal(size=(3, 6)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, x):
            return tf.concat([tf.reduce_mean(x, axis=[1, 2]), tf.reduce_max(x, axis=[1, 2])],
                             axis=1)[:, :3] @ self.w

    tf.saved_model.save(Tiny(), str(path))
    return str(path)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    write_images(root / "data", {"cat": 8, "dog": 8, "fox": 6})
    write_images(root / "test", {"cat": 3, "dog": 2}, seed=5)
    tiny = tiny_module(root / "tiny", 0)
    featcache.embed(root / "data", root / "c.h5", backbone=tiny, progress=False)
    r = run("train", root / "c.h5", "--head", "svm", "--folds", 3, "-o", root / "model")
    assert r.exit_code == 0, r.output
    return root


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(r, *fragments):
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in r.output, r.output
    for f in fragments:
        assert f in errors[0], r.output


def test_hub_backbone_exports_with_parity(env):
    meta = json.loads((env / "model" / "featcache.json").read_text())
    assert meta["backbone"]["spec"]["source"] == "hub" and meta["head"]["name"] == "svm"
    assert meta["parity"]["saved_model"]["max_abs_diff"] <= 1e-4
    assert not (env / "model" / "model.keras").exists()  # a .keras file cannot hold a hub module
    r = run("export-check", env / "model", env / "data", "--cache", env / "c.h5")
    assert r.exit_code == 0 and "parity OK" in r.output, r.output


def test_existing_model_dir_is_refused_and_kept(env):
    before = (env / "model" / "featcache.json").read_text()
    one_line_error(run("train", env / "c.h5", "--C", "0.1", "-o", env / "model"),
                   "already exists", "--force")
    assert (env / "model" / "featcache.json").read_text() == before


@pytest.mark.parametrize("step,patch", [("the head", "head"), ("the backbone", "backbone"),
                                        ("decode/resize", "decode")])
def test_parity_failure_names_the_step_and_writes_nothing(env, monkeypatch, step, patch):
    target = env / f"bad_{patch}"
    shutil.copytree(env / "model", target)  # an old model that a failed --force must keep
    before = (target / "featcache.json").read_text()
    if patch == "head":
        dense = graph.head_dense
        monkeypatch.setattr(export_mod, "head_dense",
                            lambda h: dataclasses.replace(dense(h), W=dense(h).W * 1.5))
    elif patch == "backbone":
        other = featcache.get_backbone(tiny_module(env / f"other_{patch}", 1))
        monkeypatch.setattr(export_mod, "rebuild_backbone", lambda *a: other)
    else:
        decode = graph.decode_one
        monkeypatch.setattr(graph, "decode_one", lambda data, size: 255.0 - decode(data, size))
    r = run("train", env / "c.h5", "--head", "svm", "--C", "0.01", "-o", target, "--force")
    one_line_error(r, "parity check failed", step)
    assert (target / "featcache.json").read_text() == before
    assert not list(env.glob(f"bad_{patch}.tmp-*")) and not list(env.glob(f"bad_{patch}.old-*"))


def test_force_replaces_the_model(env, tmp_path):
    target = tmp_path / "m"
    shutil.copytree(env / "model", target)
    r = run("train", env / "c.h5", "--head", "logreg", "--C", "0.5", "-o", target, "--force")
    assert r.exit_code == 0, r.output
    assert json.loads((target / "featcache.json").read_text())["head"]["name"] == "logreg"
    assert not list(tmp_path.glob("m.*"))


def test_fingerprint_mismatch_in_export_check(env, tmp_path):
    featcache.embed(env / "data", tmp_path / "other.h5",
                    backbone=tiny_module(tmp_path / "tiny2", 2), progress=False)
    one_line_error(run("export-check", env / "model", env / "data", "--cache", tmp_path / "other.h5"),
                   "fingerprint", "matches no entry")


def test_cache_whose_backbone_changed_cannot_export(env, tmp_path):
    shutil.copytree(env / "tiny", tmp_path / "tiny")
    featcache.embed(env / "data", tmp_path / "c.h5", backbone=str(tmp_path / "tiny"),
                    progress=False)
    tiny_module(tmp_path / "tiny", 3)  # the backbone changed after embedding
    one_line_error(run("train", tmp_path / "c.h5", "--C", "0.1", "-o", tmp_path / "m"),
                   "fingerprint", "re-embed")
    assert not (tmp_path / "m").exists()


def test_auto_on_too_small_cache(env, tmp_path):
    write_images(tmp_path / "few", {"a": 2, "b": 2})
    featcache.embed(tmp_path / "few", tmp_path / "few.h5", backbone=str(env / "tiny"),
                    progress=False)
    one_line_error(run("train", tmp_path / "few.h5", "-o", tmp_path / "m"),
                   "cannot cross-validate", "--C VALUE")
    assert not (tmp_path / "m").exists()


def test_missing_or_incomplete_model_dir(env, tmp_path):
    one_line_error(run("predict", tmp_path / "nope", env / "data"), "does not exist")
    shutil.copytree(env / "model", tmp_path / "m")
    (tmp_path / "m" / "labels.json").unlink()
    one_line_error(run("predict", tmp_path / "m", env / "data"), "incomplete", "labels.json")
    one_line_error(run("export-check", tmp_path / "m", env / "data"), "incomplete")


def test_predict_folder_without_images(env, tmp_path):
    (tmp_path / "empty").mkdir()
    one_line_error(run("predict", env / "model", tmp_path / "empty"), "no files")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "notes.md").write_text("hello")
    one_line_error(run("predict", env / "model", tmp_path / "texts"), "none of the 1")


def test_predict_writes_csv_and_json(env, tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"junk")
    r = run("predict", env / "model", env / "test", tmp_path / "junk.jpg", "--top-k", 2,
            "--csv", tmp_path / "p.csv", "--json", tmp_path / "p.json", "--batch-size", 2)
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == 6 and sum(r["error"] is not None for r in rows) == 1
    assert "skipped" in r.output and "junk.jpg" in r.output
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0].startswith("path,predicted,probability,label_1,prob_1,label_2,prob_2")
    assert len(lines) == 7
    api = featcache.load_model(env / "model").predict([env / "test", tmp_path / "junk.jpg"],
                                                      top_k=2)
    assert api == rows


def test_evaluate_writes_report_and_warns_about_absent_classes(env, tmp_path):
    r = run("evaluate", env / "model", env / "test", "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    assert "no folder for model class(es) fox" in r.output
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {"report.html", "confusion_matrix.png"}
    one_line_error(run("evaluate", env / "model", env / "test", "--out", tmp_path / "rep"),
                   "already exists")


def test_evaluate_refuses_unknown_classes(env, tmp_path):
    write_images(tmp_path / "t", {"cat": 2, "bird": 2})
    one_line_error(run("evaluate", env / "model", tmp_path / "t"), "bird", "does not know")


def test_evaluate_model_scores_the_predictions(env):
    rep, files = featcache.evaluate_model(env / "model", env / "data", n_boot=50)
    rows = featcache.load_model(env / "model").predict([env / "data"])
    truth = [r["path"].split("/")[-2] for r in rows]
    assert rep.n == 22 and files == []
    assert rep.accuracy[0] == pytest.approx(np.mean([r["predicted"] == t
                                                     for r, t in zip(rows, truth)]))


def test_library_errors_are_featcache_errors(env, tmp_path):
    with pytest.raises(FeatcacheError, match="does not exist"):
        featcache.load_model(tmp_path / "none")


def test_train_nested_states_the_estimate(env, tmp_path):
    r = run("train", env / "c.h5", "--folds", 3, "--grid", "0.01,1", "--nested", "-o",
            tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert "nested estimate of the whole procedure" in r.output
    meta = json.loads((tmp_path / "m" / "featcache.json").read_text())
    assert meta["choice"]["nested"]["ci_low"] <= meta["choice"]["nested"]["mean"]
    assert meta["choice"]["grid"] == [0.01, 1.0]


def test_damaged_metadata_is_one_line(env, tmp_path):
    shutil.copytree(env / "model", tmp_path / "m")
    (tmp_path / "m" / "featcache.json").write_text("{not json")
    one_line_error(run("predict", tmp_path / "m", env / "test"), "damaged", "re-export")


def test_evaluate_a_test_folder_of_one_class(env, tmp_path):
    write_images(tmp_path / "t", {"dog": 3}, seed=7)
    r = run("evaluate", env / "model", tmp_path / "t")
    assert r.exit_code == 0, r.output
    assert "no folder for model class(es) cat, fox" in r.output
    with pytest.warns(UserWarning, match="cat, fox"):
        rep, _ = featcache.evaluate_model(env / "model", tmp_path / "t", n_boot=20)
    rows = featcache.load_model(env / "model").predict([tmp_path / "t"])
    assert rep.n == 3 and rep.accuracy[0] == pytest.approx(np.mean([r["predicted"] == "dog"
                                                                    for r in rows]))


def test_unwritable_outputs_are_one_line_before_any_work(env, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(run("train", env / "c.h5", "-o", blocker / "m"), "cannot be written")
    for opt in ("--csv", "--json"):
        one_line_error(run("predict", env / "model", env / "test", opt, blocker / "p.out"),
                       opt, "cannot be written")
    one_line_error(run("evaluate", env / "model", env / "test", "--out", blocker / "rep"),
                   "--out", "cannot be written")
