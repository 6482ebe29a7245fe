"""Benchmark: the read cost of verifying row checksums (schema 2) in ``load_features``.

Same run, same file contents, alternating order, median of the repeats:

- ``load_features`` on a schema-2 entry (reads, then CRC-32 of every row);
- ``load_features`` on the identical entry without its ``checksum`` dataset
  (what a schema-1 cache costs: no verification);
- plain h5py reading ``features``, ``labels`` and ``paths`` (the floor).

Writes benchmarks/results/integrity_overhead.json.

Usage: python benchmarks/integrity_overhead.py [--rows 20000] [--dim 1280] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from featcache.cache import load_features, save_features
from featcache.cache.features import Features


def _make(folder: Path, rows: int, dim: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, rows)
    feats = Features(rng.normal(size=(rows, dim)).astype(np.float32), y,
                     np.array([f"c{c}/img_{i:06d}.jpg" for i, c in enumerate(y)]),
                     [f"c{c}" for c in range(10)],
                     np.array([f"{i:064x}" for i in range(rows)]), spec={"name": "bench"})
    checked, unchecked = folder / "checked.h5", folder / "unchecked.h5"
    save_features(checked, feats)
    shutil.copy(checked, unchecked)
    with h5py.File(unchecked, "a") as f:
        del f["backbones"][next(iter(f["backbones"]))]["checksum"]
    return checked, unchecked


def _plain(path: Path):
    with h5py.File(path, "r") as f:
        g = f["backbones"][next(iter(f["backbones"]))]
        return g["features"][:], g["labels"][:], g["paths"].asstr()[:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checked, unchecked = _make(Path(tmp), args.rows, args.dim)
        times = {"verified": [], "unverified": [], "plain_h5py": []}
        calls = {"verified": lambda: load_features(checked),
                 "unverified": lambda: load_features(unchecked),
                 "plain_h5py": lambda: _plain(checked)}
        for name in calls:
            calls[name]()  # warm the page cache
        for _ in range(args.repeats):
            for name, fn in calls.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"rows": args.rows, "dim": args.dim, "repeats": args.repeats, "seconds": times,
              "median_s": med, "verify_overhead_s": med["verified"] - med["unverified"],
              "ratio_verified_to_unverified": med["verified"] / med["unverified"],
              "machine": platform.platform()}
    out = Path(__file__).parent / "results" / "integrity_overhead.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_s", "verify_overhead_s",
                                              "ratio_verified_to_unverified")}, indent=2))


if __name__ == "__main__":
    main()
