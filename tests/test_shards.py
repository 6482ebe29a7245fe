"""Deterministic shards (embed shard="i/N"), merge into virtual datasets or a copy, devices."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import featcache
from helpers import lock_held_in_thread, save_tiny_model, write_images
from featcache.cache.shards import find_shards, parse_shard, shard_of, shard_path
from featcache.cli import cli
from featcache.errors import FeatcacheError
from featcache.cluster.devices import check_assigned, describe_devices, visible_devices

N = 3


def run_embed(data, cache, model, **kw):
    return featcache.embed(data, cache, backbone=model, image_size=32, progress=False, batch_size=4, **kw)


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, tiny_model):
    """A folder embedded once in one process and once as N shards (not merged yet)."""
    root = tmp_path_factory.mktemp("sharded")
    data = root / "data"
    write_images(data, {"a": 6, "b": 5, "c": 4})
    (data / "c" / "notes.txt").write_text("not an image")
    run_embed(data, root / "single.h5", tiny_model)
    for i in range(N):
        run_embed(data, root / "c.h5", tiny_model, shard=f"{i}/{N}")
    return root


@pytest.fixture
def shards(sharded, tmp_path):
    """A fresh copy of the shards (tests may break them)."""
    shutil.copytree(sharded / "c.h5.shards", tmp_path / "c.h5.shards")
    shutil.copytree(sharded / "data", tmp_path / "data")
    return tmp_path


def same(a, b):
    return (np.array_equal(a.X, b.X) and (a.paths == b.paths).all() and (a.y == b.y).all()
            and (a.sha256 == b.sha256).all() and a.class_names == b.class_names)


@pytest.mark.parametrize("bad, said", [("3/2", "0..1"), ("0/0", "at least 1"), ("x", "form i/N"),
                                       ("1/2/3", "form i/N"), ((1,), "pair"), ("-1/2", "form i/N")])
def test_bad_shard_values_are_one_line_and_nothing_is_written(tmp_path, bad, said):
    with pytest.raises(FeatcacheError, match=said):
        parse_shard(bad)
    if isinstance(bad, str):
        (tmp_path / "data").mkdir()
        res = CliRunner().invoke(cli, ["embed", str(tmp_path / "data"), "-o", str(tmp_path / "c.h5"),
                                       "--shard", bad])
        assert res.exit_code == 1 and "--shard" in res.output and "Traceback" not in res.output
        assert res.output.strip().count("\n") == 0 and not list(tmp_path.glob("c.h5*"))


def test_shard_of_is_a_stable_partition_across_processes():
    rels = [f"cls{k}/img_{i}.jpg" for k in range(3) for i in range(200)]
    assert all(sum(shard_of(r, 4) == i for i in range(4)) == 1 for r in rels)
    assert min(np.bincount([shard_of(r, 4) for r in rels])) > 100  # spread, not all in one
    code = ("import sys; from featcache.cache.shards import shard_of; "
            "print([shard_of(f'cls{k}/img_{i}.jpg', 4) for k in range(3) for i in range(200)])")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1 and outs.pop().strip() == str([shard_of(r, 4) for r in rels])


def test_shards_hold_their_part_and_every_class_name(sharded):
    files = find_shards(sharded / "c.h5")[N]
    seen = []
    for i, path in files.items():
        f = featcache.load_features(path)
        assert f.class_names == ["a", "b", "c"]  # the whole folder's, even if a class is absent
        assert all(shard_of(p, N) == i for p in f.paths)
        seen += list(f.paths)
    assert sorted(seen) == sorted(featcache.load_features(sharded / "single.h5").paths)


def test_a_shard_lacking_a_class_keeps_the_labels_of_the_folder(tmp_path, tiny_model):
    write_images(tmp_path / "d", {"a": 1, "b": 6, "c": 6})
    i = next(i for i in range(4) if shard_of("a/img_000.jpg", 4) != i)
    run_embed(tmp_path / "d", tmp_path / "c.h5", tiny_model, shard=(i, 4))
    f = featcache.load_features(shard_path(tmp_path / "c.h5", i, 4))
    assert f.class_names == ["a", "b", "c"] and "a" not in {p.split("/")[0] for p in f.paths}
    assert all(f.class_names[y] == p.split("/")[0] for y, p in zip(f.y, f.paths))


@pytest.mark.parametrize("copy", [False, True])
def test_merge_equals_a_single_process_embed_bit_for_bit(shards, sharded, copy):
    summary = featcache.merge(shards / "c.h5", copy=copy)
    assert summary.rows == 15 and summary.shards == N
    merged, single = featcache.load_features(shards / "c.h5"), featcache.load_features(sharded / "single.h5")
    assert same(merged, single) and merged.backbone == single.backbone
    with h5py.File(shards / "c.h5") as f:
        g = f["backbones"][merged.backbone]
        assert g["features"].is_virtual is (not copy) and g["paths"].is_virtual is (not copy)
    info = featcache.cache_info(shards / "c.h5")["entries"][0]
    assert [x["path"] for x in info["failures"]] == ["c/notes.txt"]
    assert info["class_counts"] == {"a": 6, "b": 5, "c": 4}
    if not copy:  # the rows' bytes in the shards, not the 0 bytes the virtual dataset stores
        assert info["feature_bytes"] == 15 * info["feature_dim"] * 4
    assert info["virtual"] is (not copy) and info["feature_bytes"] > 0
    if copy:  # self-contained: the shards may go
        shutil.rmtree(shards / "c.h5.shards")
        assert same(featcache.load_features(shards / "c.h5"), single)


def test_cv_sweep_audit_and_info_read_a_merged_cache_unchanged(shards, sharded):
    featcache.merge(shards / "c.h5")
    run = CliRunner()
    for args in (["cv", "--head", "logreg", "--folds", "3"], ["sweep", "--heads", "logreg", "--folds", "3"],
                 ["audit", "--folds", "3"], ["info"]):
        merged = run.invoke(cli, [args[0], str(shards / "c.h5"), *args[1:]])
        single = run.invoke(cli, [args[0], str(sharded / "single.h5"), *args[1:]])
        assert merged.exit_code == 0, merged.output
        if args[0] != "info":  # same numbers, same words
            assert merged.output.replace(str(shards / "c.h5"), "C") == \
                single.output.replace(str(sharded / "single.h5"), "C")
    assert "15 rows" in merged.output and "in its shard files (merged)" in merged.output


def test_the_merged_cache_moves_with_its_shards_folder(shards, sharded, tmp_path_factory):
    featcache.merge(shards / "c.h5")
    moved = tmp_path_factory.mktemp("moved")
    shutil.move(shards / "c.h5", moved / "c.h5")
    shutil.move(shards / "c.h5.shards", moved / "c.h5.shards")
    assert same(featcache.load_features(moved / "c.h5"), featcache.load_features(sharded / "single.h5"))


def test_a_missing_or_changed_shard_file_is_one_line_never_zeros(shards, tiny_model):
    featcache.merge(shards / "c.h5")
    one = shard_path(shards / "c.h5", 1, N)
    one.rename(shards / "aside.h5")
    with pytest.raises(FeatcacheError, match="shard file .*shard-1-of-3.h5 is missing"):
        featcache.load_features(shards / "c.h5")
    (shards / "aside.h5").rename(one)
    write_images(shards / "data", {"b": 12}, seed=9)  # new images, some in shard 1
    run_embed(shards / "data", shards / "c.h5", tiny_model, shard=f"1/{N}")
    with pytest.raises(FeatcacheError, match="changed since it was merged.*merge"):
        featcache.load_features(shards / "c.h5")
    featcache.merge(shards / "c.h5")
    parts = [featcache.load_features(shard_path(shards / "c.h5", i, N)).paths for i in range(N)]
    assert sorted(featcache.load_features(shards / "c.h5").paths) == sorted(np.concatenate(parts))


def test_a_shard_resumes_and_is_incremental(shards, tiny_model):
    before = featcache.load_features(shard_path(shards / "c.h5", 0, N))
    new = [f"a/{r}" for r in write_images(shards / "data" / "a", {"more": 14}, seed=5)]
    mine = [r for r in new if shard_of(r, N) == 0]
    assert 0 < len(mine) < len(new)
    s = run_embed(shards / "data", shards / "c.h5", tiny_model, shard=f"0/{N}")
    assert s.embedded == len(mine) and s.cached == len(before.paths)


def test_plain_embed_into_a_merged_cache_rewrites_a_real_file_and_leaves_shards(shards, tiny_model):
    featcache.merge(shards / "c.h5")
    files = sorted((shards / "c.h5.shards").glob("*.h5"))
    before = {p: digest(p) for p in files}
    write_images(shards / "data" / "a", {"more": 2}, seed=7)  # 2 new images
    s = run_embed(shards / "data", shards / "c.h5", tiny_model)
    assert s.embedded == 2 and s.cached == 15
    assert {p: digest(p) for p in files} == before
    with h5py.File(shards / "c.h5") as f:
        g = f["backbones"][s.key]
        assert not g["features"].is_virtual and len(g["features"]) == 17


def test_merge_concatenates_any_new_row_aligned_subgroup(shards):
    for p in find_shards(shards / "c.h5")[N].values():
        with h5py.File(p, "a") as f:
            g = f["backbones"][next(iter(f["backbones"]))]
            view = g.create_group("views").create_group("flip")
            view.create_dataset("features", data=np.repeat(g["features"][:][:, None], 2, axis=1))
            view.attrs["augment"] = "flip"
    featcache.merge(shards / "c.h5")
    with h5py.File(shards / "c.h5") as f:
        g = f["backbones"][next(iter(f["backbones"]))]
        assert g["views/flip"].attrs["augment"] == "flip" and g["views/flip/features"].shape[1] == 2
        assert np.array_equal(g["views/flip/features"][:, 1], g["features"][:]) and len(g["features"])


def expect_refusal(cache, said, **kw):
    before = digest(cache) if cache.exists() else None
    with pytest.raises(FeatcacheError, match=said):
        featcache.merge(cache, **kw)
    assert (digest(cache) if cache.exists() else None) == before  # nothing written or lost


def test_merge_refuses_missing_foreign_duplicated_and_unfinished_shards(shards, tiny_model):
    cache, folder = shards / "c.h5", shards / "c.h5.shards"
    res = CliRunner().invoke(cli, ["merge", str(shards / "none.h5")])
    assert res.exit_code == 1 and "no shard files" in res.output
    (folder / f"shard-1-of-{N}.h5").rename(shards / "one.h5")
    expect_refusal(cache, "shard\\(s\\) 1 of 3 missing.*--shard 1/3")
    res = CliRunner().invoke(cli, ["merge", str(cache)])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "missing" in res.output
    shutil.copy(folder / f"shard-0-of-{N}.h5", folder / f"shard-1-of-{N}.h5")  # duplicated
    expect_refusal(cache, "both .*shard-0-of-3.h5 and .*shard-1-of-3.h5")
    (shards / "one.h5").replace(folder / f"shard-1-of-{N}.h5")
    run_embed(shards / "data", cache, tiny_model, shard="0/2")
    expect_refusal(cache, "different N \\(2, 3\\)")
    featcache.merge(cache, shards=N)  # naming N picks those
    (folder / "shard-0-of-2.h5").unlink()
    other = save_tiny_model(shards / "other_model", seed=3)  # other weights, same name
    run_embed(shards / "data", folder / "other.h5", other)
    (folder / "other.h5").replace(folder / f"shard-2-of-{N}.h5")
    expect_refusal(cache, "different backbones or weights")


def test_merge_refuses_a_shard_being_written_or_interrupted(shards):
    cache = shards / "c.h5"
    with lock_held_in_thread(shard_path(cache, 2, N)):
        expect_refusal(cache, "another featcache process is writing .*shard-2-of-3.h5")
    partial = shards / "c.h5.shards" / f"shard-2-of-{N}.h5.partial" / "key"
    partial.mkdir(parents=True)
    (partial / "seg-00000000.npz").write_bytes(b"")
    expect_refusal(cache, "interrupted run.*--shard 2/3")


def test_two_shards_embed_at_once(shards, tiny_model):
    """Each shard has its own lock: one being written does not block another."""
    with lock_held_in_thread(shard_path(shards / "c.h5", 0, N)):
        s = run_embed(shards / "data", shards / "c.h5", tiny_model, shard=f"1/{N}")
    assert s.cached > 0


@pytest.mark.parametrize("env, tf_gpus, said", [
    ({}, 0, "CPU"), ({}, 2, "2 GPU(s), all"), ({"CUDA_VISIBLE_DEVICES": ""}, 0, "hides every GPU"),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, 0, "hides every GPU"),
    ({"CUDA_VISIBLE_DEVICES": "3"}, 1, "GPU 3 (CUDA_VISIBLE_DEVICES=3; TensorFlow sees 1"),
    ({"CUDA_VISIBLE_DEVICES": "1, 2,-1,4"}, 2, "GPU 1,2 "),
    ({"CUDA_VISIBLE_DEVICES": "0"}, 0, "TensorFlow sees no GPU")])
def test_describe_devices_reads_cuda_visible_devices(env, tf_gpus, said):
    assert said in describe_devices(env, tf_gpus)


def test_check_assigned_warns_when_a_gpu_is_not_the_one_visible(caplog):
    with caplog.at_level(logging.WARNING, "featcache"):
        assert "GPU 1" in check_assigned([1], {"CUDA_VISIBLE_DEVICES": "1"}, 1)
        assert not caplog.records
        check_assigned([1], {}, 4)
        assert "may share a GPU" in caplog.text
        check_assigned([0], {"CUDA_VISIBLE_DEVICES": "0"}, 0)
        assert "embeds on the CPU" in caplog.text
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]


def test_cli_shard_says_which_device_the_shell_gave_it(shards, tiny_model, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    res = CliRunner().invoke(cli, ["embed", str(shards / "data"), "-o", str(shards / "c.h5"),
                                   "--backbone", tiny_model, "--image-size", "32", "--shard", f"2/{N}"])
    assert res.exit_code == 0, res.output
    assert "shard-2-of-3.h5" in res.output and "hides every GPU" in res.output
    res = CliRunner().invoke(cli, ["merge", str(shards / "c.h5"), "--copy"])
    assert res.exit_code == 0 and "copied" in res.output


def test_sharded_views_merge_to_the_single_process_views(tmp_path, tiny_model):
    # views live in a subgroup of the entry: the merge carries them without knowing them
    data = tmp_path / "data"
    write_images(data, {"a": 4, "b": 3})
    views = dict(views=2, augment="flip,crop=0.8", seed=3)
    run_embed(data, tmp_path / "single.h5", tiny_model, **views)
    for i in range(2):
        run_embed(data, tmp_path / "c.h5", tiny_model, shard=f"{i}/2", **views)
    featcache.merge(tmp_path / "c.h5")
    merged = featcache.load_features(tmp_path / "c.h5", views=True)
    single = featcache.load_features(tmp_path / "single.h5", views=True)
    assert same(merged, single) and merged.views.shape == (7, 2, single.X.shape[1])
    assert np.array_equal(merged.views, single.views)
