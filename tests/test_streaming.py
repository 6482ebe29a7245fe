"""Caches larger than memory: rows streamed from the file (CachedRows), the softmax head
trained from a stream, cv/sweep/audit choosing to stream, and a memory-capped CV."""
from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from featcache import load_features, save_features
from featcache.cache.streaming import CachedRows, open_rows
from featcache.errors import FeatcacheError
from featcache.evaluate import cross_validate_heads, make_splits
from featcache.evaluate.knn import knn_cosine
from featcache.evaluate.streaming import open_features
from featcache.cache.features import Features
from featcache.heads import LogisticHead, SoftmaxHead
from featcache.heads._streaming import streamed_scaler
from featcache.cache.memory import memory_budget, parse_size

BUDGET = 64 * 2**10  # bytes: small enough that reads come in several blocks


def synthetic(n=600, d=24, k=3, seed=0, spread=0.6):
    """Class-structured features in random file order (paths do not follow it)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = (rng.normal(0, spread, (k, d))[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    paths = np.array([f"c{c}/img_{rng.integers(10**9):010d}_{i}.jpg" for i, c in enumerate(y)])
    return Features(X, y, paths, [f"c{c}" for c in range(k)],
                    np.array([f"{i:064x}" for i in range(n)]), spec={"name": "synthetic"})


@pytest.fixture
def cache(tmp_path):
    path = tmp_path / "cache.h5"
    save_features(path, synthetic())
    return path


def test_parse_size_and_default_budget():
    assert parse_size("4GB") == 4 * 10**9
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("1.5k") == 1500
    assert parse_size(2048) == 2048
    for bad in ("lots", "-1GB", 0, "4 XB"):
        with pytest.raises(FeatcacheError, match="memory_budget="):
            parse_size(bad)
    assert 0 < memory_budget() < os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def test_cached_rows_match_load_features(cache):
    mem = load_features(cache)
    lazy = open_rows(cache, budget=BUDGET)
    X = lazy.X
    assert isinstance(X, CachedRows) and X.shape == mem.X.shape and len(X) == len(mem)
    assert np.array_equal(lazy.y, mem.y) and np.array_equal(lazy.paths, mem.paths)
    assert np.array_equal(lazy.sha256, mem.sha256)
    assert np.array_equal(X.read(), mem.X)
    idx = np.array([599, 3, 250, 3, 17])
    sub = X[idx]
    assert isinstance(sub, CachedRows)  # a selection stays lazy
    assert np.array_equal(sub.read(), mem.X[idx])
    assert np.array_equal(sub[1:4].read(), mem.X[idx][1:4])
    assert np.array_equal(X[mem.y == 1].read(), mem.X[mem.y == 1])
    assert np.array_equal(X[7], mem.X[7])
    assert np.array_equal(np.asarray(sub), mem.X[idx])  # fits the budget: materialises
    with pytest.raises(TypeError):
        X[:, 0]
    blocks = list(X.blocks())
    assert len(blocks) > 2  # the budget splits the reads
    assert sorted(np.concatenate([p for p, _ in blocks]).tolist()) == list(range(len(X)))


def test_materialising_over_budget_is_one_clear_error(cache):
    X = open_rows(cache, budget=4096).X
    with pytest.raises(FeatcacheError, match="softmax head trains from a stream"):
        LogisticHead().fit(X, np.zeros(len(X)))


def _damage_in_place(path, row):
    """Flip one stored feature, keeping the file's identity (as a bad disk sector would)."""
    st = os.stat(path)
    with h5py.File(path, "r+") as f:
        ds = f["backbones"][next(iter(f["backbones"]))]["features"]
        ds[row, 0] = ds[row, 0] + 1.0
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size


def test_damage_found_while_streaming_gives_the_load_error(cache):
    features = open_rows(cache, budget=BUDGET)
    file_row = int(features.X.index[5])
    _damage_in_place(cache, file_row)
    with pytest.raises(FeatcacheError) as streamed:
        features.X[np.arange(50)].read()
    with pytest.raises(FeatcacheError) as loaded:
        load_features(cache)
    assert str(streamed.value) == str(loaded.value)
    assert str(cache) in str(loaded.value) and f"rows {file_row} (" in str(loaded.value)
    with pytest.raises(FeatcacheError) as opened:
        open_rows(cache, budget=BUDGET)
    assert str(opened.value) == str(loaded.value)


def test_damage_found_while_training_gives_the_load_error(cache):
    features = open_rows(cache, budget=BUDGET)
    _damage_in_place(cache, int(features.X.index[300]))
    with pytest.raises(FeatcacheError) as loaded:
        load_features(cache)
    for standardize in (True, False):  # found by the scaler's pass, or inside tf.data
        with pytest.raises(FeatcacheError) as trained:
            SoftmaxHead(standardize=standardize, early_stopping=False, epochs=2).fit(
                features.X, features.y)
        assert str(trained.value) == str(loaded.value)


def test_a_rewritten_cache_is_refused_mid_stream(cache):
    features = open_rows(cache, budget=BUDGET)
    save_features(cache, synthetic(seed=1))  # another writer replaces the file
    with pytest.raises(FeatcacheError, match="changed while it was being read"):
        features.X.read()


def test_streaming_standardisation_equals_numpy(cache):
    features = open_rows(cache, budget=BUDGET)
    rows = np.random.default_rng(3).choice(len(features), 400, replace=False)
    scaler = streamed_scaler(features.X[rows])
    X64 = load_features(cache).X[rows].astype(np.float64)
    np.testing.assert_allclose(scaler.mean_, X64.mean(axis=0), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(scaler.var_, X64.var(axis=0), rtol=1e-10)
    assert scaler.n_samples_seen_ == 400


def test_softmax_from_a_stream_is_seeded_and_matches_memory(cache):
    mem, lazy = load_features(cache), open_rows(cache, budget=BUDGET)
    tr, te = np.arange(450), np.arange(450, 600)
    fits = [SoftmaxHead(seed=s).fit(lazy.X[tr], lazy.y[tr]) for s in (0, 0, 1)]
    assert np.array_equal(fits[0].coef_, fits[1].coef_)  # same seed, same model
    assert not np.array_equal(fits[0].coef_, fits[2].coef_)
    ref = SoftmaxHead(seed=0).fit(mem.X[tr], mem.y[tr])
    streamed_acc = np.mean(fits[0].predict(lazy.X[te]) == mem.y[te])
    assert abs(streamed_acc - np.mean(ref.predict(mem.X[te]) == mem.y[te])) <= 0.03
    np.testing.assert_allclose(fits[0].predict_proba(lazy.X[te]),
                               fits[0].predict_proba(mem.X[te]), rtol=1e-5, atol=1e-6)
    assert fits[0].scaler_.mean_.shape == (mem.X.shape[1],)
    narrow = cache.with_name("narrow.h5")
    save_features(narrow, synthetic(n=30, d=5))
    with pytest.raises(ValueError, match="X has 5 features, but SoftmaxHead is expecting 24"):
        fits[0].predict(open_rows(narrow, budget=BUDGET).X)


def test_class_weights_and_no_early_stopping_stream(cache):
    lazy = open_rows(cache, budget=BUDGET)
    head = SoftmaxHead(class_weight="balanced", early_stopping=False, epochs=3)
    head.fit(lazy.X, lazy.y)
    assert head.n_epochs_ == 3 and "val_loss" not in head.history_
    weighted = SoftmaxHead(class_weight="balanced", epochs=4).fit(lazy.X, lazy.y)
    assert "val_loss" in weighted.history_ and np.isfinite(weighted.history_["val_loss"]).all()


def test_open_features_chooses_and_says_why(cache, caplog):
    with caplog.at_level(logging.WARNING, logger="featcache"):
        small = open_features(cache, heads="softmax", memory_budget=BUDGET)
    assert isinstance(small.X, CachedRows)
    assert "streaming the features" in caplog.text and "memory budget" in caplog.text
    big = open_features(cache, heads="softmax")
    assert isinstance(big.X, np.ndarray)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="featcache"):
        fallback = open_features(cache, heads="softmax,logreg", streaming=True)
    assert isinstance(fallback.X, np.ndarray) and "logreg" in caplog.text
    with pytest.raises(FeatcacheError, match="not logreg, svm"):
        open_features(cache, heads="logreg,svm,softmax", memory_budget=BUDGET)


def test_nonfinite_rows_are_found_when_streaming(tmp_path):
    f = synthetic(n=60)
    X = f.X.copy()
    X[7, 2] = np.nan
    save_features(tmp_path / "nan.h5", Features(X, f.y, f.paths, f.class_names, f.sha256,
                                                spec=f.spec))
    lazy = open_rows(tmp_path / "nan.h5", budget=BUDGET)
    with pytest.raises(FeatcacheError, match=f"1 of 60 feature rows.*{f.paths[7]}"):
        make_splits(lazy, folds=3)


def test_knn_and_audit_read_streamed_rows_in_tiles(cache):
    from featcache.evaluate._audit import audit, audit_cache
    mem, lazy = load_features(cache), open_rows(cache, budget=BUDGET)
    a, b = knn_cosine(mem.X, 5, tile=128), knn_cosine(lazy.X, 5, tile=128)
    assert np.array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)
    assert audit(lazy).summary == audit(mem).summary
    assert audit_cache(cache, memory_budget=BUDGET).summary == audit(mem).summary


def test_streaming_cv_and_sweep_match_in_memory(cache):
    from featcache.evaluate import sweep
    mem, lazy = load_features(cache), open_rows(cache, budget=BUDGET)
    head = SoftmaxHead(epochs=30)
    r_mem = cross_validate_heads(mem, head, folds=3)
    r_lazy = cross_validate_heads(lazy, head, folds=3)
    accs = [r.heads["SoftmaxHead"].summary["accuracy"]["mean"] for r in (r_mem, r_lazy)]
    assert abs(accs[0] - accs[1]) <= 0.02
    s = sweep(lazy, {"softmax": head}, grids=[1e-4, 1e-2], folds=3)
    assert np.isfinite(s.heads["softmax"].scores["accuracy"]).all()


def test_cli_cv_streams_with_a_note_and_rejects_bad_sizes(cache):
    from featcache.cli import cli
    res = CliRunner().invoke(cli, ["cv", str(cache), "--head", "softmax", "--folds", "3",
                                   "--memory-budget", "64KiB"])
    assert res.exit_code == 0, res.output
    assert "note: streaming the features" in res.output and "softmax" in res.output
    res = CliRunner().invoke(cli, ["cv", str(cache), "--memory-budget", "lots"])
    assert res.exit_code == 1 and "--memory-budget 'lots' is not a size" in res.output
    res = CliRunner().invoke(cli, ["sweep", str(cache), "--memory-budget", "64KiB"])
    assert res.exit_code == 1 and "only the softmax head" in res.output
    assert "Traceback" not in res.output


# --- the requirement: a CV on a cache 2x larger than the process may use -----------

_CAPPED = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import tensorflow  # noqa: F401  (TensorFlow's own footprint is not the features')
    from featcache import cross_validate_heads, load_features, save_features
    from featcache.evaluate.streaming import open_features
    from featcache.heads import SoftmaxHead

    def vm_data():
        for line in open("/proc/self/status"):
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024

    path, warm, mode, headroom = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    head, budget = SoftmaxHead(epochs=10), headroom // 4
    small = open_features(warm, streaming=True, memory_budget=budget)
    # a whole streamed CV first: Keras's traced functions, tf.data's threads and malloc's
    # arenas reach their steady size, which is TensorFlow's, not the features'
    cross_validate_heads(small, head, folds=3)
    cap = vm_data() + headroom
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if mode == "stream":
        features = open_features(path, streaming=True, memory_budget=budget)
    else:
        features = load_features(path)
    res = cross_validate_heads(features, head, folds=3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"accuracy": res.heads["SoftmaxHead"].summary["accuracy"]["mean"],
                      "rss_growth": peak - rss0}))
""")


def _small_stacks():
    # RLIMIT_DATA counts each thread's reserved stack (8 MiB by default, mostly untouched) and
    # tf.data starts threads at its own pace: 1 MiB stacks keep that noise out of the measure
    resource.setrlimit(resource.RLIMIT_STACK, (1 << 20, resource.getrlimit(resource.RLIMIT_STACK)[1]))


def _capped_run(*args):
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", _CAPPED, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=900,
                          preexec_fn=_small_stacks)


@pytest.mark.slow
def test_streaming_cv_within_a_memory_cap_half_the_cache(tmp_path):
    # beyond the warmed-up process, the per-row metadata (paths, hashes: about 0.7 KB a row)
    # and a fold's tf.data pipeline take about 55 MB whatever the budget (measured with the
    # newest and the minimum versions), so the matrix is well above 110 MB for "twice the
    # headroom" to be a real constraint with a margin against noise
    n, d = 40000, 1024
    matrix = n * d * 4  # 164 MB of features
    big, warm = tmp_path / "big.h5", tmp_path / "warm.h5"
    save_features(big, synthetic(n=n, d=d, k=4, seed=5, spread=0.08))
    save_features(warm, synthetic(n=300, d=d, k=4, seed=6, spread=0.08))
    headroom = matrix // 2  # the process may use half the matrix beyond TensorFlow's own
    streamed = _capped_run(big, warm, "stream", headroom)
    assert streamed.returncode == 0, streamed.stderr[-3000:]
    out = json.loads(streamed.stdout.strip().splitlines()[-1])
    assert out["rss_growth"] < headroom
    loaded = _capped_run(big, warm, "memory", headroom)  # the cap bites: loading cannot work
    assert loaded.returncode != 0 and "MemoryError" in loaded.stderr + loaded.stdout
    reference = cross_validate_heads(load_features(big), SoftmaxHead(epochs=10), folds=3)
    in_memory = reference.heads["SoftmaxHead"].summary["accuracy"]["mean"]
    assert abs(out["accuracy"] - in_memory) <= 0.005, (out, in_memory)


def test_hdf5_out_of_memory_is_not_reported_as_damage(cache):
    from featcache.cache.read import reading
    with pytest.raises(FeatcacheError, match="out of memory while reading .*memory_budget="):
        with reading(cache):
            raise OSError("Can't synchronously read data (memory allocation failed for chunk)")


def test_nested_cv_on_streamed_rows(cache):
    from featcache.evaluate import nested_cv
    lazy = open_rows(cache, budget=BUDGET)
    res = nested_cv(lazy, {"softmax": SoftmaxHead(epochs=5)}, grids=[1e-4, 1e-2], folds=3,
                    inner_folds=2)
    assert "softmax" in res.summary() and isinstance(lazy.X, CachedRows)
