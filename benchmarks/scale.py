"""Scaling past one process: merging shards, and 2 local Ray workers vs one process.

merge   16 shards of 10,000 rows (1280-d float32, written with save_features) merged
        into virtual datasets (default) and by copying (--copy); then the time to
        load_features (every checksum verified) through the VDS and from the copy.
ray     MobileNetV2 (random weights, offline) on a folder of 640x480 JPEGs: one
        process using both cores (featcache.embed) vs embed_on_ray with 2 local
        workers (1 CPU each) on a fresh local Ray. Steady-state throughput is images
        over the backbone pass (the workers run at once, so the slower one counts);
        the overheads (Ray start, worker start + model load, merge) are stated apart
        so they can be extrapolated to N machines.

Run:  python benchmarks/scale.py [--images 384] [--skip-ray]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from embed_throughput import make_jpegs  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "scale.json"


def write_shards(cache: Path, n_shards=16, rows=10_000, dim=1280) -> None:
    """n_shards shard files of exactly ``rows`` rows each, every path in its own shard."""
    from featcache.cache.shards import shard_of, shard_path
    from featcache.cache.write import save_features
    from featcache.cache.features import Features
    buckets = [[] for _ in range(n_shards)]
    j = 0
    while min(map(len, buckets)) < rows:
        p = f"c{j % 10}/img_{j:07d}.jpg"
        if len(buckets[shard_of(p, n_shards)]) < rows:
            buckets[shard_of(p, n_shards)].append(p)
        j += 1
    rng = np.random.default_rng(0)
    spec = {"name": "bench", "input_size": 224, "feature_dim": dim}
    for i, paths in enumerate(buckets):
        y = np.array([int(p[1]) for p in paths])
        f = Features(rng.standard_normal((rows, dim)).astype(np.float32), y, np.array(paths),
                     [f"c{k}" for k in range(10)], np.array([f"{k:064x}" for k in range(rows)]),
                     backbone="bench", spec=spec)
        save_features(shard_path(cache, i, n_shards), f, fingerprint="f" * 64)


def bench_merge(tmp: Path) -> dict:
    import featcache
    cache = tmp / "merge" / "c.h5"
    write_shards(cache)
    out = {}
    for copy in (False, True):
        t0 = time.perf_counter()
        s = featcache.merge(cache, copy=copy)
        out["copy" if copy else "virtual"] = {"merge_s": time.perf_counter() - t0, "rows": s.rows,
                                              "file_mib": cache.stat().st_size / 2**20}
        t0 = time.perf_counter()
        X = featcache.load_features(cache).X
        out["copy" if copy else "virtual"]["load_features_s"] = time.perf_counter() - t0
        assert X.shape == (160_000, 1280)
    shutil.rmtree(tmp / "merge")
    return out


def bench_ray(tmp: Path, n_images: int) -> dict:
    import featcache
    import ray
    from featcache.cluster.ray_embed import embed_on_ray
    folder = make_jpegs(tmp, n_images)
    t0 = time.perf_counter()
    one = featcache.embed(folder, tmp / "one.h5", weights="none", progress=False)
    one_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    try:
        r = embed_on_ray(folder, tmp / "ray.h5", weights="none", workers=2, progress=False)
    finally:
        ray.shutdown()
    a, b = featcache.load_features(tmp / "one.h5"), featcache.load_features(tmp / "ray.h5")
    steady_one = one.embedded / one.embed_seconds
    steady_ray = r.embedded / max(s.embed_seconds for s in r.shards)
    worker_start = r.seconds - r.merge.seconds - max(s.seconds for s in r.shards)
    return {"images": n_images, "bit_for_bit": bool(np.array_equal(a.X, b.X)),
            "one_process": {"images_per_s": steady_one, "wall_s": one_wall,
                            "embed_s": one.embed_seconds},
            "ray_2_workers": {"images_per_s": steady_ray, "wall_s": r.seconds + ray_start,
                              "per_shard_embed_s": [s.embed_seconds for s in r.shards]},
            "ratio_steady": steady_ray / steady_one,
            "ratio_end_to_end": one_wall / (r.seconds + ray_start),
            "overhead_s": {"ray_init": ray_start, "model_load_per_worker": list(r.load_seconds),
                           "worker_start_incl_load": worker_start, "merge": r.merge.seconds}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=384)
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as d:
        results["merge_16x10000"] = bench_merge(Path(d))
        print(json.dumps(results["merge_16x10000"], indent=1))
        if not args.skip_ray:
            results["ray_vs_one_process"] = bench_ray(Path(d), args.images)
            print(json.dumps(results["ray_vs_one_process"], indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
