"""Does training on augmented views help logreg on the offline digits demo?

Builds the demo's digit images (``scripts/demo.py``), writes ``K`` seeded
image-space augmented copies of every training image (random crop of 80-100%
of the side resized back, rotation within +-10 degrees, no flip: digits are
not mirror-symmetric), embeds the clean folder and every view folder with the
same backbone through ``featcache.embed`` (one cache per view), aligns the
views with the clean rows by relative path, and runs
``featcache.sweep(features, "logreg,softmax", augmented="both")``: each head's
grid with and without views on the same 5 folds, with the corrected paired
t-test per head, and the regularisation-path plot with both paths.

This stands in for ``featcache embed --views K --augment crop=0.8,rotate=10``
until that lands; rerun the sweep on such a cache to check the figures.

Usage: python benchmarks/augmented_digits.py [--views 5] [--out /tmp/augdigits]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

RESULTS = Path(__file__).parent / "results" / "augmented_digits.json"


def augment(img: Image.Image, rng) -> Image.Image:
    """A seeded random crop (80-100% of the side, resized back) and rotation (+-10 deg)."""
    w, h = img.size
    s = rng.uniform(0.8, 1.0)
    cw, ch = int(round(w * s)), int(round(h * s))
    x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    out = img.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BILINEAR)
    return out.rotate(rng.uniform(-10, 10), resample=Image.BILINEAR)


def write_views(data: Path, root: Path, k: int, seed: int = 0) -> list:
    """``root/view_j/<class>/<file>`` for j < k; a view depends only on (file, j, seed)."""
    folders = []
    files = sorted(p for p in data.rglob("*.png"))
    for j in range(k):
        folder = root / f"view_{j}"
        for p in files:
            rel = p.relative_to(data)
            out = folder / rel
            if out.exists():
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([seed, j, int(p.stem)])
            augment(Image.open(p).convert("RGB"), rng).save(out)
        folders.append(folder)
    return folders


def load_with_views(data, folders, out, backbone):
    """Clean Features of ``data`` with the views of ``folders`` attached (aligned by path)."""
    import featcache
    from featcache import load_features
    caches = []
    for i, folder in enumerate([data, *folders]):
        cache = out / f"cache_{i}.h5"
        featcache.embed(folder, cache, backbone=backbone, progress=False)
        caches.append(load_features(cache))
    clean, views = caches[0], caches[1:]
    order = [dict(zip(v.paths, range(len(v)))) for v in views]
    V = np.stack([v.X[[o[p] for p in clean.paths]] for v, o in zip(views, order)], axis=1)
    return dataclasses.replace(clean, views=V)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--out", default="/tmp/augdigits", type=Path)
    parser.add_argument("--json", default=str(RESULTS))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from demo import pick_backbone, write_digits
    from featcache.evaluate import sweep
    data, test = args.out / "digits", args.out / "digits_test"
    if not data.exists():
        write_digits(data, test)
    t0 = time.perf_counter()
    folders = write_views(data, args.out / "views", args.views)
    backbone = pick_backbone(args.backbone, "imagenet")
    feats = load_with_views(data, folders, args.out, backbone)
    t_embed = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = sweep(feats, "logreg,softmax", augmented="both", folds=5, seed=0)
    t_sweep = time.perf_counter() - t0
    from featcache.report.tables import format_sweep
    print(format_sweep(res))
    from featcache.report.plots import plot_regularisation_path
    png = plot_regularisation_path(res, args.out / "regularisation_path.png")
    t = res.views_tests["logreg"]
    out = {"n_images": len(feats), "n_views": args.views, "backbone": feats.backbone,
           "weights": "random (seeded)" if "none" in str(feats.spec) else str(feats.spec.get(
               "weights", "")), "augmentation": "crop 0.8-1.0 + rotate +-10 deg (PIL)",
           "embed_seconds": t_embed, "sweep_both_seconds": t_sweep, "tests": res.views_tests,
           "plot": str(png)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"logreg accuracy without views {t['without']['mean']:.4f} (C={t['without']['value']:.3g}),"
          f" with {args.views} views {t['with']['mean']:.4f} (C={t['with']['value']:.3g}); "
          f"difference {t['mean_diff']:+.4f}, p = {t['p_value']:.3g}; written {args.json}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
