"""Streaming vs in-memory softmax cross-validation on a cache: time, accuracy, peak memory.

Data: 20,000 x 1,280 float32 features in 10 classes (100 MB), generated like
pooled CNN outputs (``make_features`` of ``heads_speed.py``), written with
``featcache.save_features`` to a temporary cache.

Each mode runs in its own fresh process (so peak RSS is its own), on the same
cache and the same stratified splits:

* memory: ``load_features`` + ``cross_validate_heads(features, SoftmaxHead())``;
* stream: ``open_features(streaming=True, memory_budget=--budget)`` and the same
  call; the head trains from the file (chunks, tf.data shuffle buffer).

Reported per mode: seconds to open/load, seconds of the CV, mean accuracy,
peak RSS of the process and its growth over the process after importing
TensorFlow (the part the features are responsible for). Modes alternate
over ``--repeats``; medians are reported, with the stream/memory ratios.

Usage: python benchmarks/scale_streaming.py [--rows 20000] [--folds 3] [--epochs 30]
       [--budget 64MiB] [--repeats 1]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
RESULTS = Path(__file__).parent / "results" / "scale_streaming.json"


def worker(cache, mode, budget, folds, epochs):
    """One CV in this process; prints a JSON line."""
    import tensorflow  # noqa: F401  (its footprint is the baseline, not the features')

    from featcache import cross_validate_heads, load_features
    from featcache.evaluate.streaming import open_features
    from featcache.heads import SoftmaxHead
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    features = (open_features(cache, streaming=True, memory_budget=budget) if mode == "stream"
                else load_features(cache))
    t1 = time.perf_counter()
    res = cross_validate_heads(features, SoftmaxHead(epochs=epochs), folds=folds)
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    h = res.heads["SoftmaxHead"]
    print(json.dumps({"mode": mode, "open_seconds": t1 - t0, "cv_seconds": t2 - t1,
                      "accuracy": h.summary["accuracy"]["mean"],
                      "fold_accuracy": h.folds["accuracy"],
                      "peak_rss_bytes": peak, "rss_growth_bytes": peak - rss0}))


def run_mode(cache, mode, args):
    cmd = [sys.executable, __file__, "--worker", str(cache), mode, args.budget,
           str(args.folds), str(args.epochs)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise SystemExit(f"{mode} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--budget", default="64MiB", help="memory_budget= of the streaming run")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        cache, mode, budget, folds, epochs = args.worker
        return worker(cache, mode, budget, int(folds), int(epochs))
    sys.path.insert(0, str(Path(__file__).parent))
    from heads_speed import make_features

    from featcache import save_features
    from featcache.cache.features import Features
    X, y = make_features(args.rows, args.dim, 10)
    paths = np.array([f"c{c}/img_{i:06d}.jpg" for i, c in enumerate(y)])
    runs = {"memory": [], "stream": []}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "bench.h5"
        save_features(cache, Features(X, y, paths, [f"c{c}" for c in range(10)],
                                      np.array([f"{i:064x}" for i in range(len(y))]),
                                      spec={"name": "synthetic"}))
        for _ in range(args.repeats):
            for mode in runs:
                runs[mode].append(run_mode(cache, mode, args))
                print(json.dumps(runs[mode][-1]), flush=True)
    med = {m: {k: float(np.median([r[k] for r in rs])) for k in
               ("open_seconds", "cv_seconds", "accuracy", "peak_rss_bytes", "rss_growth_bytes")}
           for m, rs in runs.items()}
    ratios = {k: med["stream"][k] / med["memory"][k]
              for k in ("cv_seconds", "peak_rss_bytes", "rss_growth_bytes")}
    result = {"rows": args.rows, "dim": args.dim, "classes": 10,
              "matrix_bytes": args.rows * args.dim * 4, "folds": args.folds,
              "epochs": args.epochs, "budget": args.budget, "repeats": args.repeats,
              "cpu_count": os.cpu_count(), "median": med, "stream_over_memory": ratios,
              "accuracy_difference_points": 100 * (med["stream"]["accuracy"]
                                                   - med["memory"]["accuracy"]),
              "runs": runs}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    for m, v in med.items():
        print(f"{m:7s} open {v['open_seconds']:6.1f} s  cv {v['cv_seconds']:7.1f} s  "
              f"accuracy {v['accuracy']:.4f}  peak RSS {v['peak_rss_bytes'] / 2**20:7.0f} MiB  "
              f"growth {v['rss_growth_bytes'] / 2**20:6.0f} MiB")
    print(f"stream/memory: cv time x{ratios['cv_seconds']:.2f}, peak RSS "
          f"x{ratios['peak_rss_bytes']:.2f}, RSS growth x{ratios['rss_growth_bytes']:.2f}; "
          f"accuracy {result['accuracy_difference_points']:+.2f} points  -> {RESULTS}")


if __name__ == "__main__":
    main()
