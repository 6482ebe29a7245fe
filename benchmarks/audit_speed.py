"""Benchmark: leakage audit of 20,000 x 1,280 features (target <= 20 s, bounded memory).

Compares, in the same run:

- featcache's ``audit`` (tiled upper-triangle products + top-k, never n x n);
- the naive approach, one full n x n similarity matrix, at 5,000 rows (at
  20,000 rows it needs 1.6 GB for the matrix alone, at 100,000 rows 40 GB);
- scikit-learn's ``NearestNeighbors(metric="cosine", algorithm="brute")``,
  the strongest alternative a user would write (it chunks, so it also has
  bounded memory), at 5,000 and 20,000 rows.

Peak memory is the tracemalloc peak of numpy/Python allocations during the
call (BLAS work buffers are not included) and the process max-RSS growth.
BLAS runs on one thread for every contender (the machines are shared).
Writes benchmarks/results/audit_speed.json.

Usage: python benchmarks/audit_speed.py [--rows 20000] [--dim 1280] [--repeats 3]
(times are medians of the repeats; the machines are shared, so read ratios)
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from featcache.evaluate._audit import audit
from featcache.evaluate.neardup import knn_cosine
from featcache.cache.features import Features

K = 32


def planted(n, d, frames=8, clip_fraction=0.8, n_classes=10, seed=0):
    """Non-negative (ReLU-like) features: clips of ``frames`` noisy frames, plus singletons."""
    rng = np.random.default_rng(seed)
    n_clips = int(n * clip_fraction) // frames
    clip = np.concatenate([np.repeat(np.arange(n_clips), frames),
                           n_clips + np.arange(n - n_clips * frames)])
    centres = rng.standard_normal((clip.max() + 1, d), dtype=np.float32)
    X = centres[clip] + 0.15 * rng.standard_normal((n, d), dtype=np.float32)
    np.maximum(X, 0, out=X)
    y = clip % n_classes
    paths = np.array([f"class{c}/clip{g:05d}_{i:06d}.jpg" for i, (c, g) in enumerate(zip(y, clip))])
    sha = np.array([f"{i:064x}" for i in range(n)])
    return Features(X, y, paths, [f"class{c}" for c in range(n_classes)], sha), clip


def measure(fn, *args, **kwargs):
    """(result, seconds, tracemalloc peak MiB, max-RSS growth MiB)."""
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0  # KiB on Linux
    return out, dt, peak / 2**20, rss / 2**10


def naive_full_matrix(X, k=K):
    """What a user writes first: the whole n x n similarity matrix, then top-k per row."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    idx = np.argpartition(S, -k, axis=1)[:, -k:]
    return idx, np.take_along_axis(S, idx, axis=1)


def sklearn_brute(X, k=K):
    from sklearn.neighbors import NearestNeighbors
    nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(X)
    dist, idx = nn.kneighbors(X)
    return idx[:, 1:], 1 - dist[:, 1:]


def pair_recall_precision(clip, groups):
    """Pairwise precision/recall over same-group pairs, counted from group sizes."""
    def pairs(labels):
        c = np.bincount(labels)
        return int((c * (c - 1) // 2).sum())
    _, joint = np.unique(np.stack([clip, groups]), axis=1, return_inverse=True)
    hits = pairs(joint.ravel())
    return hits / max(pairs(groups), 1), hits / max(pairs(clip), 1)


def repeat(repeats, fn, *args):
    """(last result, median seconds, all seconds, max tracemalloc peak, max RSS growth)."""
    runs = [measure(fn, *args) for _ in range(repeats)]
    times = [r[1] for r in runs]
    return (runs[-1][0], float(np.median(times)), times, max(r[2] for r in runs),
            max(r[3] for r in runs))


def row(name, n, dt, times, peak, rss, **extra):
    print(f"{name:<34} n={n:>6}  median {dt:7.2f} s of {len(times)}  tracemalloc peak "
          f"{peak:8.1f} MiB  max-RSS growth {rss:8.1f} MiB")
    return {"method": name, "rows": n, "seconds_median": round(dt, 3),
            "seconds_all": [round(t, 3) for t in times], "tracemalloc_peak_mib": round(peak, 1),
            "maxrss_growth_mib": round(rss, 1), **extra}


def main(rows, dim, repeats, small=5000):
    results = []
    with threadpool_limits(1):
        feats, clip = planted(rows, dim)
        small_feats, _ = planted(small, dim, seed=1)
        audit(small_feats.subset(np.arange(500)))  # warm-up: imports (slow under tracemalloc), BLAS
        rep, dt, times, peak, rss = repeat(repeats, audit, feats)
        p, r = pair_recall_precision(clip, rep.groups)
        nd = rep.near_duplicates
        results.append(row("featcache audit (full)", rows, dt, times, peak, rss,
                           pair_precision=round(p, 4), pair_recall=round(r, 4),
                           threshold=nd["threshold"], threshold_source=nd["threshold_source"]))
        print(f"  planted groups: pairwise precision {p:.4f}, recall {r:.4f}, "
              f"threshold {nd['threshold']:.4f} ({nd['threshold_source']})")
        (_, sims), dt, times, peak, rss = repeat(repeats, knn_cosine, small_feats.X, K)
        results.append(row("featcache knn_cosine", small, dt, times, peak, rss))
        (_, nsim), dt, times, peak, rss = repeat(repeats, naive_full_matrix, small_feats.X)
        results.append(row("naive full n x n matrix", small, dt, times, peak, rss))
        agree = float(np.abs(np.sort(nsim, axis=1)[:, ::-1] - sims).max())
        print(f"  max |top-{K} similarity difference| featcache vs naive: {agree:.2e}")
        for n, X in ((small, small_feats.X), (rows, feats.X)):
            _, dt, times, peak, rss = repeat(repeats, sklearn_brute, X)
            results.append(row("sklearn NearestNeighbors brute", n, dt, times, peak, rss))
        _, dt, times, peak, rss = repeat(repeats, knn_cosine, feats.X, K)
        results.append(row("featcache knn_cosine", rows, dt, times, peak, rss))
    return results, agree


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    results, agree = main(args.rows, args.dim, args.repeats)
    by = {(r["method"], r["rows"]): r for r in results}
    ratio_sk = by[("sklearn NearestNeighbors brute", args.rows)]["seconds_median"] / \
        by[("featcache knn_cosine", args.rows)]["seconds_median"]
    ratio_naive = by[("naive full n x n matrix", 5000)]["seconds_median"] / \
        by[("featcache knn_cosine", 5000)]["seconds_median"]
    print(f"\nsklearn brute / featcache knn_cosine at {args.rows} rows: {ratio_sk:.2f}x time")
    print(f"naive full matrix / featcache knn_cosine at 5000 rows: {ratio_naive:.2f}x time")
    out = Path(__file__).parent / "results" / "audit_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": args.rows, "dim": args.dim, "k": K, "blas_threads": 1,
                               "machine": platform.processor() or platform.machine(),
                               "target_seconds": 20, "results": results,
                               "naive_max_abs_similarity_diff": agree,
                               "repeats": args.repeats,
                               "sklearn_over_featcache_time_ratio": round(ratio_sk, 2),
                               "naive_over_featcache_time_ratio_5000": round(ratio_naive, 2)},
                              indent=2) + "\n")
    print(f"wrote {out}")
