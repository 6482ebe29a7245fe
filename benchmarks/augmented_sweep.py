"""How long does a logreg sweep on cached augmented views take?

Target (issue 10): a 5-fold x 10-C logreg sweep on 5,000 images x 5 views
(30,000 rows in all, 24,000 training rows per fold) in at most 30 s on a
2-core machine.

Data: synthetic pooled-CNN-like features (as ``benchmarks/heads_speed.py``:
5,000 x 1,280, 10 classes, a 32-d latent class signal, ReLU sparsity, spread
feature scales) and K views per image that share the image's latent code but
draw fresh "pixel" noise and a fresh contrast gain, i.e. feature-space
stand-ins for augmented crops. Or real features and views from a cache with
``--cache`` (needs the views loader, ``load_features(..., views=True)``).

Timed in the same run: ``featcache.sweep(features, "logreg")`` without views,
with ``augmented=True`` and with ``augmented="both"`` (folds one after
another, one BLAS thread), and the same augmented fits with the folds in two
threads (one BLAS thread each), i.e. what running sweep's folds in parallel
gives on 2 cores.

Usage: python benchmarks/augmented_sweep.py [--quick] [--repeats 3] [--views 5]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from heads_speed import timed  # noqa: E402  (one timing helper for every head benchmark)

RESULTS = Path(__file__).parent / "results" / "augmented_sweep.json"


def make_features(n=5000, d=1280, k=10, views=5, seed=0):
    """(Features with ``views``): clean rows and ``views`` noisy re-draws per image."""
    from featcache.cache.features import Features
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    latent = 32
    A = rng.standard_normal((latent, d)) / np.sqrt(latent)
    mu = rng.standard_normal((k, latent)) * 0.5
    z = mu[y] + rng.standard_normal((n, latent))
    scale = np.exp(rng.normal(0, 0.7, d))

    def draw(jitter):
        zz = z + jitter * rng.standard_normal(z.shape)
        h = zz @ A + 0.3 * rng.standard_normal((n, d))
        gain = np.exp(rng.normal(0, 0.3, n))[:, None]
        return (np.maximum(h, 0) * scale * gain).astype(np.float32)

    X = draw(0.0)
    V = np.stack([draw(0.3) for _ in range(views)], axis=1)
    paths = np.array([f"c{c}/{i:05d}.png" for i, c in enumerate(y)])
    return Features(X, y.astype(np.int64), paths, [f"c{c}" for c in range(k)],
                    np.array([f"{i:064x}" for i in range(n)]), "synthetic", {}, V)


def threaded_folds(feats, plan, augmented, n_jobs=2):
    """The augmented sweep's fits and validation scores, folds in ``n_jobs`` threads."""
    from joblib import Parallel, delayed
    from threadpoolctl import threadpool_limits
    from featcache.evaluate.views import training_rows
    from featcache.heads import LogisticHead

    def one(tr, te):
        with threadpool_limits(1):
            models = LogisticHead().fit_path(*training_rows(feats, tr, augmented),
                                             LogisticHead.default_grid)
            return [m.score(feats.X[te], feats.y[te]) for m in models]
    return np.array(Parallel(n_jobs=n_jobs, backend="threading")(
        delayed(one)(tr, te) for tr, te in plan.splits))


def best(h, metric="accuracy"):
    return float(np.nanmean(h.scores[metric][h.best_index]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--cache", help="real features and views from this cache")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    from featcache import evaluate
    if args.cache:
        from featcache import load_features
        feats = load_features(args.cache, views=True)
    elif args.quick:
        feats = make_features(600, 128, 5, args.views)
    else:
        feats = make_features(views=args.views)
    repeats = 1 if args.quick else args.repeats
    plan = evaluate.make_splits(feats, 5, seed=0)

    def run(augmented):
        return evaluate.sweep(feats, "logreg", plan=plan, augmented=augmented)

    out = {"n_images": len(feats), "n_views": int(feats.views.shape[1]),
           "n_features": int(feats.X.shape[1]), "n_classes": len(feats.class_names),
           "training_rows_per_fold": int(plan.n_train * (1 + feats.views.shape[1])),
           "data": args.cache or "synthetic", "cpu_count": os.cpu_count(), "repeats": repeats,
           "load_1min": os.getloadavg()[0]}
    for label, aug in (("clean", False), ("augmented", True), ("both", "both")):
        t_med, t_all, res = timed(lambda aug=aug: run(aug), repeats)
        h = res.heads["logreg"]
        out[label] = {"seconds_median": t_med, "seconds_all": t_all,
                      "best_C": h.best_value, "best_accuracy": best(h)}
        if aug == "both":
            out[label]["views_test"] = res.views_tests["logreg"]
        print(f"{label:9s} sweep 5-fold x {len(h.grid)} C: {t_med:6.1f} s (median of "
              f"{repeats}: {t_all}), best accuracy {best(h):.4f} at C={h.best_value:.3g}",
              flush=True)
    t_med, t_all, acc = timed(lambda: threaded_folds(feats, plan, True), repeats)
    out["augmented_2_threads"] = {"seconds_median": t_med, "seconds_all": t_all,
                                  "best_accuracy": float(acc.mean(0).max())}
    print(f"augmented fits, folds in 2 threads: {t_med:6.1f} s ({t_all}), best accuracy "
          f"{acc.mean(0).max():.4f}", flush=True)
    out["augmented_over_clean"] = out["augmented"]["seconds_median"] / out["clean"]["seconds_median"]
    out["target_seconds"] = 30.0
    out["meets_target"] = out["augmented"]["seconds_median"] <= 30.0
    out["meets_target_2_threads"] = t_med <= 30.0
    print(f"augmented / clean time: {out['augmented_over_clean']:.1f}x; target <= 30 s: "
          f"{'met' if out['meets_target'] else 'NOT met'} (load {out['load_1min']:.1f})")
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2, default=float) + "\n")
        print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
