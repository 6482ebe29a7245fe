"""How long does ``featcache compare`` take over three backbones of a 5,000-image cache?

Data: three synthetic backbone entries of the same 5,000 images (10 classes),
576-, 1,280- and 2,048-d like MobileNetV3Small, EfficientNetB0 and ResNet50V2,
generated like pooled CNN features (``heads_speed.make_features``, a different
seed and strength per backbone) and saved with ``featcache.save_features``.
``compare_backbones`` runs the default logreg head: 5 outer folds, C chosen
from its 10-value grid by an inner 3-fold CV in every outer fold (nested CV),
(the plain best-of-sweep sweep that ``featcache cv --nested`` adds is skipped).

Baseline (same run, BLAS pinned to one thread on both sides): what a user
writes with scikit-learn for ONE backbone, ``GridSearchCV(make_pipeline(
StandardScaler(), LogisticRegression(max_iter=1000)), C grid, cv=3)`` inside
the same outer folds; ``--baseline-folds`` outer folds (default 1) are timed
and scaled to 5. Target: the whole comparison under 60 s.

Usage: python benchmarks/compare_speed.py [--baseline-folds 1] [--repeats 1]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))
RESULTS = Path(__file__).parent / "results" / "compare_speed.json"
BACKBONES = {"mobilenet_v3_small": 576, "efficientnet_b0": 1280, "resnet50_v2": 2048}


def make_cache(path: Path, n: int) -> None:
    """Three entries of the same ``n`` images, saved as featcache would store them."""
    import featcache
    from featcache.cache.features import Features
    from heads_speed import make_features
    paths = np.array([f"c{i % 10}/img_{i:05d}.jpg" for i in range(n)])
    sha = np.array([f"{i:064x}" for i in range(n)])
    y = np.arange(n) % 10
    for seed, (name, d) in enumerate(BACKBONES.items()):
        Xk, yk = make_features(n=n, d=d, k=10, seed=seed)
        X = np.empty_like(Xk)  # the same image keeps its class in every entry
        X[np.argsort(y, kind="stable")] = Xk[np.argsort(yk, kind="stable")]
        featcache.save_features(path, Features(X, y, paths, [f"c{c}" for c in range(10)], sha,
                                               backbone=name, spec={"name": name}))


def baseline(path: Path, folds: int) -> dict:
    """Nested CV of one backbone with plain scikit-learn on the same outer folds."""
    import featcache
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from featcache.heads import get_head
    feats = featcache.load_features(path, "efficientnet_b0")
    plan = featcache.make_splits(feats, 5, seed=0)
    grid = {"logisticregression__C": list(get_head("logreg").default_grid)}
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    t0, scores = time.perf_counter(), []
    with threadpool_limits(1):
        for tr, te in plan.splits[:folds]:
            search = GridSearchCV(pipe, grid, cv=3).fit(feats.X[tr], feats.y[tr])
            scores.append(search.score(feats.X[te], feats.y[te]))
    seconds = time.perf_counter() - t0
    return {"folds_run": folds, "seconds_scaled_to_5_folds": seconds * 5 / folds,
            "accuracy_on_folds_run": float(np.mean(scores))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--baseline-folds", type=int, default=1, help="0 skips the baseline")
    parser.add_argument("--n-jobs", type=int, default=None, help="compare_backbones(n_jobs=)")
    args = parser.parse_args()
    from featcache.evaluate.compare import compare_backbones
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "c.h5"
        make_cache(cache, args.n)
        times, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            res = compare_backbones(cache, "logreg", "all", n_jobs=args.n_jobs)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        out = {"n_images": res.n_images, "backbones": BACKBONES, "cpu_count": os.cpu_count(),
               "n_jobs": args.n_jobs or min(3, os.cpu_count() or 1),
               "folds": 5, "inner_folds": 3, "grid_size": 10,
               "compare_seconds_median": float(np.median(times)), "compare_seconds_all": times,
               # CPU seconds of this process (all threads): the wall time one idle core would take
               "compare_cpu_seconds_median": float(np.median(cpu)),
               "load_average_1min_after": os.getloadavg()[0],
               "accuracy": {k: b.summary["mean"] for k, b in res.backbones.items()},
               "chosen_C": {k: b.chosen for k, b in res.backbones.items()}}
        if args.baseline_folds:
            out["sklearn_one_backbone"] = base = baseline(cache, args.baseline_folds)
            ours = res.backbones["efficientnet_b0"]
            out["featcache_one_backbone_accuracy_on_folds_run"] = float(
                np.mean(ours.folds[:args.baseline_folds]))
            out["speedup_vs_sklearn_for_all_three"] = (
                base["seconds_scaled_to_5_folds"] / out["compare_seconds_median"])
    print(json.dumps(out, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"compare over 3 backbones of {out['n_images']} images: "
          f"{out['compare_seconds_median']:.1f} s wall, {out['compare_cpu_seconds_median']:.1f} s CPU "
          f"(target < 60 s; load average {out['load_average_1min_after']:.1f}) -> {RESULTS}")


if __name__ == "__main__":
    main()
