"""The Ray runner on a real local Ray cluster: bit-for-bit equal to one process, retried, merged."""
from __future__ import annotations

import sys
import threading
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import featcache
from helpers import write_images
from featcache.cli import cli
from featcache.errors import FeatcacheError
from featcache.cluster import ray_embed as ray_runner
from featcache.cluster.ray_embed import embed_on_ray, start_workers, worker_name

import ray  # noqa: E402  CI installs the [ray] extra: a missing Ray must fail here, not skip


@pytest.fixture
def data(tmp_path):
    write_images(tmp_path / "data", {"a": 9, "b": 8, "c": 7}, size=(24, 24))
    return tmp_path / "data"


def test_without_ray_the_runner_says_how_to_install_it(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(FeatcacheError, match=r"pip install 'featcache\[ray\]'"):
        embed_on_ray(data, tmp_path / "c.h5", progress=False)
    res = CliRunner().invoke(cli, ["embed", str(data), "-o", str(tmp_path / "c.h5"), "--ray"])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "featcache[ray]" in res.output
    assert not (tmp_path / "c.h5").exists()


def test_an_unreachable_cluster_is_one_line_and_loses_nothing(data, tmp_path):
    assert not ray.is_initialized()
    cache = tmp_path / "c.h5"
    cache.write_bytes(b"previous")
    t0 = time.perf_counter()
    with pytest.raises(FeatcacheError, match="cannot reach the Ray cluster at 127.0.0.1:9"):
        embed_on_ray(data, cache, address="127.0.0.1:9", connect_timeout=1, progress=False)
    assert time.perf_counter() - t0 < 5 and cache.read_bytes() == b"previous"
    res = CliRunner().invoke(cli, ["embed", str(data), "-o", str(cache), "--ray", "127.0.0.1:9"])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "cannot reach" in res.output


def test_ray_and_shard_flags_are_checked_before_any_work(data, tmp_path):
    for args, said in ((["--ray", "--shard", "0/2"], "do not mix"), (["--workers", "2"], "--ray runs only"),
                       (["--ray", "--workers", "0"], "--workers 0 must be at least 1")):
        res = CliRunner().invoke(cli, ["embed", str(data), "-o", str(tmp_path / "c.h5"), *args])
        assert res.exit_code == 1 and said in res.output, res.output
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def cluster():
    """One real local Ray cluster for the module; 2 CPUs and 2 declared (fake) GPUs."""
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_embed_equals_one_process_bit_for_bit_even_after_a_worker_dies(
        cluster, data, tmp_path, tiny_model, capsys):
    cache = tmp_path / "r.h5"
    killed = []

    def kill_worker_0():  # a crash while the worker starts: Ray restarts it and retries its shard
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            try:
                actor = ray.get_actor(worker_name(cache, 0, 2))
            except ValueError:
                time.sleep(0.05)
                continue
            ray.kill(actor, no_restart=False)
            killed.append(True)
    killer = threading.Thread(target=kill_worker_0)
    killer.start()
    s = embed_on_ray(data, cache, backbone=tiny_model, image_size=32, batch_size=4, workers=2)
    killer.join()
    assert killed and s.embedded == 24 and len(s.shards) == 2 and s.merge.shards == 2
    assert "24/24" in capsys.readouterr().err  # one bar, every worker's images
    featcache.embed(data, tmp_path / "one.h5", backbone=tiny_model, image_size=32, progress=False)
    a, b = featcache.load_features(tmp_path / "one.h5"), featcache.load_features(cache)
    assert np.array_equal(a.X, b.X) and a.X.tobytes() == b.X.tobytes()
    assert (a.paths == b.paths).all() and (a.y == b.y).all() and (a.sha256 == b.sha256).all()
    with h5py.File(cache) as f:
        assert f["backbones"][b.backbone]["features"].is_virtual
    assert ray.is_initialized()  # a caller's Ray is left running


def test_each_gpu_worker_sees_its_own_gpu(cluster, tmp_path, tiny_model):
    actors = start_workers(ray, tmp_path / "g.h5", 2, gpus_per_worker=1, max_retries=0,
                           model_args=(tiny_model, None, 32, 0))
    try:
        devices = ray.get([a.devices.remote() for a in actors])
    finally:
        for a in actors:
            ray.kill(a)
    assert sorted(d.split("CUDA_VISIBLE_DEVICES=")[1][0] for d in devices) == ["0", "1"]


def test_workers_default_to_the_clusters_cpus_or_gpus(cluster):
    assert ray_runner.default_workers(ray, 0) == 2 and ray_runner.default_workers(ray, 0.5) == 4
    with pytest.raises(FeatcacheError, match="gpus_per_worker=3"):
        ray_runner.default_workers(ray, 3)
