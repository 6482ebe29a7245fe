"""Cached augmented views and float16 storage: cost, size and accuracy, measured side by side.

1. cost   ``embed --views K`` vs a clean embed of the same images (fresh caches,
          repeats interleaved, medians), and adding K views to a clean cache.
          The bound to meet: views cost <= (K+1) x clean.
2. views  logreg (sklearn ``LogisticRegression`` on standardised features, the
          same 5 stratified folds) trained on clean rows vs clean + views rows of
          the training images, validated on clean rows only (the digits demo).
3. float16  file size of a float16 vs float32 cache (clean + views), and CV
          accuracy of featcache's logreg and softmax heads on float32 vs float16
          features: the digits demo and a generated 10-class cache of 2,000+ rows.

Offline, the backbone is MobileNetV2 with seeded random weights. Its features
are ~1e-11, which float16 cannot hold (featcache refuses to store them), so this
benchmark multiplies them by 2**36 (exact in float32, and every head
standardises its input) to bring them to the range of ImageNet features. The
float16 features are read back from real float16 caches where it is cheap (the
cost set), and elsewhere taken as ``X.astype(float16).astype(float32)``, which
the benchmark checks is bit-identical to what a float16 cache returns.

Run:  python benchmarks/views_cost.py [--n-cost 240] [--views 2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
RESULTS = Path(__file__).parent / "results" / "views_cost.json"
SCALE = 2.0 ** 36
AUGMENT = "flip,crop=0.8,rotate=10,color=0.2"


def scaled_backbone():
    """Random-weight MobileNetV2 with its features multiplied by 2**36 (see the docstring)."""
    from featcache.embedding.backbones import get_backbone
    bb = get_backbone("mobilenet_v2", weights="none")
    return dataclasses.replace(bb, fn=lambda x: bb.fn(x) * SCALE)


def make_shapes(root: Path, n: int, classes: int = 10, size: int = 64) -> Path:
    """n generated images in `classes` folders: a per-class colour layout plus per-image noise."""
    from PIL import Image
    rng = np.random.default_rng(1)
    templates = rng.integers(0, 256, (classes, 4, 4, 3))
    for i in range(n):
        c = i % classes
        d = root / f"class_{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        base = np.clip(templates[c] + rng.normal(0, 70, (4, 4, 3)), 0, 255).astype(np.uint8)
        img = np.asarray(Image.fromarray(base).resize((size, size), Image.BILINEAR), np.int16)
        img = np.clip(img + rng.integers(-30, 30, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"{i:05d}.png")
    return root


def subset(src: Path, dst: Path, n: int) -> Path:
    """The first n images of src (round-robin over classes), linked into dst."""
    folders = sorted(p for p in src.iterdir() if p.is_dir())
    files = [sorted(f.iterdir()) for f in folders]
    for i in range(n):
        f = files[i % len(files)][i // len(files)]
        (dst / f.parent.name).mkdir(parents=True, exist_ok=True)
        (dst / f.parent.name / f.name).symlink_to(f)
    return dst


def cost(bb, data: Path, tmp: Path, k: int, repeats: int) -> dict:
    """Clean embed vs views embed vs views added to a clean cache, interleaved."""
    import featcache
    runs = {"clean": [], "views": [], "add_views": [], "clean_embed": [], "views_embed": []}
    sizes = {}
    for r in range(repeats):
        for dtype in ("float32", "float16") if r == 0 else ("float32",):  # size: once
            c, v = tmp / f"clean-{r}-{dtype}.h5", tmp / f"views-{r}-{dtype}.h5"
            s = featcache.embed(data, c, backbone=bb, dtype=dtype, progress=False)
            t = featcache.embed(data, v, backbone=bb, views=k, augment=AUGMENT, dtype=dtype,
                                progress=False)
            a = featcache.embed(data, c, backbone=bb, views=k, augment=AUGMENT, dtype=dtype,
                                progress=False)
            if dtype == "float32":
                runs["clean"].append(s.seconds), runs["views"].append(t.seconds)
                runs["add_views"].append(a.seconds)
                runs["clean_embed"].append(s.embed_seconds)
                runs["views_embed"].append(t.embed_seconds)
            e = featcache.cache_info(v)["entries"][0]
            sizes[dtype] = {"file": v.stat().st_size,
                            "features": e["feature_bytes"] + sum(x["feature_bytes"] for x in e["views"])}
    f32 = featcache.load_features(tmp / "views-0-float32.h5", views=True)
    f16 = featcache.load_features(tmp / "views-0-float16.h5", views=True)
    exact = bool(np.array_equal(f16.X, f32.X.astype(np.float16).astype(np.float32))
                 and np.array_equal(f16.views, f32.views.astype(np.float16).astype(np.float32)))
    med = {name: statistics.median(v) for name, v in runs.items()}
    return {"images": len(f32), "views": k, "repeats": repeats, "runs_s": runs, "median_s": med,
            "ratio_views_over_clean": med["views"] / med["clean"],
            "ratio_views_over_clean_backbone_pass": med["views_embed"] / med["clean_embed"],
            "ratio_add_views_over_clean": med["add_views"] / med["clean"], "bound": k + 1,
            "bytes": sizes,
            "file_ratio_f16_over_f32": sizes["float16"]["file"] / sizes["float32"]["file"],
            "feature_ratio_f16_over_f32": (sizes["float16"]["features"]
                                           / sizes["float32"]["features"]),
            "float16_read_equals_rounded_float32": exact}


def folds(y, n_splits=5):
    from sklearn.model_selection import StratifiedKFold
    return list(StratifiedKFold(n_splits, shuffle=True, random_state=0).split(np.zeros(len(y)), y))


def logreg_with_views(f, splits) -> dict:
    """sklearn logreg on clean vs clean+views training rows; clean validation rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    out = {"clean": [], "clean+views": []}
    k = f.views.shape[1]
    for tr, va in splits:
        for name in out:
            X, y = f.X[tr], f.y[tr]
            if name == "clean+views":
                X = np.concatenate([X, f.views[tr].reshape(-1, f.X.shape[1])])
                y = np.concatenate([y, np.repeat(f.y[tr], k)])
            model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
            out[name].append(float(model.fit(X, y).score(f.X[va], f.y[va])))
    return _summary(out, "clean+views", "clean")


def dtype_effect(f, splits) -> dict:
    """featcache's logreg and softmax heads on float32 vs float16-stored features."""
    from sklearn.model_selection import cross_val_score

    from featcache.heads import get_head
    X16 = f.X.astype(np.float16).astype(np.float32)
    res = {}
    for head in ("logreg", "softmax"):
        scores = {dt: cross_val_score(get_head(head), X, f.y, cv=splits).tolist()
                  for dt, X in (("float32", f.X), ("float16", X16))}
        res[head] = _summary(scores, "float16", "float32")
    return res


def _summary(scores: dict, a: str, b: str) -> dict:
    diff = np.subtract(scores[a], scores[b])
    return {"folds": scores, **{f"{n}_mean": float(np.mean(v)) for n, v in scores.items()},
            **{f"{n}_std": float(np.std(v)) for n, v in scores.items()},
            f"{a}_minus_{b}_points": float(100 * diff.mean()),
            f"{a}_minus_{b}_points_std": float(100 * diff.std())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-cost", type=int, default=240)
    p.add_argument("--n-shapes", type=int, default=2000)
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--n-digits", type=int, default=0, help="a subset of the digits (0: all)")
    p.add_argument("--cost-only", action="store_true",
                   help="re-measure the cost part only, keeping the other results in the JSON")
    args = p.parse_args(argv)
    from demo import write_digits
    bb, res = scaled_backbone(), {"augment": AUGMENT, "backbone": "mobilenet_v2 random x 2**36"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_digits(tmp / "digits", tmp / "digits_test")
        res["cost"] = cost(bb, subset(tmp / "digits", tmp / "cost", args.n_cost), tmp, args.views,
                           args.repeats)
        print(json.dumps(res["cost"]["median_s"]), res["cost"]["ratio_views_over_clean"], flush=True)
        if args.cost_only:
            res = {**json.loads(RESULTS.read_text()), "cost": res["cost"]}
        else:
            res.update(accuracy(bb, tmp, args))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    _print(res)
    return 0


def accuracy(bb, tmp: Path, args) -> dict:
    """Views vs clean logreg on the digits; float32 vs float16 heads on digits and shapes."""
    import featcache
    res = {}
    t0 = time.perf_counter()
    digits = subset(tmp / "digits", tmp / "dsub", args.n_digits) if args.n_digits else tmp / "digits"
    featcache.embed(digits, tmp / "d.h5", backbone=bb, views=args.views,
                    augment=AUGMENT, progress=False)
    f = featcache.load_features(tmp / "d.h5", views=True)
    res["digits_embed_s"], splits = time.perf_counter() - t0, folds(f.y)
    res["digits_views_logreg"] = logreg_with_views(f, splits)
    res["digits_dtype"] = dtype_effect(f, splits)
    print(json.dumps(res["digits_views_logreg"]["clean+views_minus_clean_points"]), flush=True)
    featcache.embed(make_shapes(tmp / "shapes", args.n_shapes), tmp / "s.h5", backbone=bb,
                    progress=False)
    s = featcache.load_features(tmp / "s.h5")
    res["shapes_rows"], res["shapes_dtype"] = len(s), dtype_effect(s, folds(s.y))
    return res


def _print(res: dict) -> None:
    c = res["cost"]
    print(f"\ncost ({c['images']} digits, K={c['views']}, medians of {c['repeats']}): clean "
          f"{c['median_s']['clean']:.1f} s, views {c['median_s']['views']:.1f} s -> "
          f"{c['ratio_views_over_clean']:.2f}x (bound {c['bound']}x; backbone pass alone "
          f"{c['ratio_views_over_clean_backbone_pass']:.2f}x); adding views to the clean cache "
          f"{c['ratio_add_views_over_clean']:.2f}x")
    print(f"float16/float32 (clean + views): file {c['file_ratio_f16_over_f32']:.3f}, features "
          f"{c['feature_ratio_f16_over_f32']:.3f}; float16 "
          f"read == rounded float32: {c['float16_read_equals_rounded_float32']}")
    v = res["digits_views_logreg"]
    print(f"digits logreg: clean {100 * v['clean_mean']:.2f} +- {100 * v['clean_std']:.2f}, clean+views "
          f"{100 * v['clean+views_mean']:.2f} +- {100 * v['clean+views_std']:.2f}")
    for name in ("digits_dtype", "shapes_dtype"):
        for head, r in res[name].items():
            print(f"{name} {head}: float32 {100 * r['float32_mean']:.2f}, float16 "
                  f"{100 * r['float16_mean']:.2f} (diff {r['float16_minus_float32_points']:+.2f} "
                  f"+- {r['float16_minus_float32_points_std']:.2f} points)")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
