"""Exact vs fast JPEG decode (``--fast-decode``): speed, and its effect on CV accuracy.

One process, on a generated folder of 640x480 JPEGs (``embed_throughput.make_jpegs``),
files warm in the page cache; MobileNetV2 (224 px) with random weights (offline).
Repeats are interleaved and medians reported:

  decode_exact / decode_fast   featcache.embedding.decode.image_dataset alone (decode + bilinear resize),
                               Keras-exact, or with fast_decode=True (DCT-domain downscale first)
  embed_exact / embed_fast     featcache.embed end to end into a fresh cache, on --runtime

Each mode also reports process CPU time per image (all threads), which a busy
machine disturbs far less than wall time. ``--accuracy`` adds logreg 5-fold CV
accuracy, exact vs fast, on the digits demo (PNG: unaffected) and a generated set
of 640x480 JPEG scenes (``--scenes``, default 2,500).

Run:  python benchmarks/decode_speed.py [--n 1000] [--repeats 3] [--runtime auto] [--accuracy]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "scripts")]
RESULTS = HERE / "results" / "decode_speed.json"
ACCURACY = HERE / "results" / "decode_accuracy.json"
SIZE, BATCH = 224, 64


def decode_only(folder: Path, fast: bool) -> dict:
    from featcache.embedding.scan import scan_folder
    from featcache.embedding.decode import image_dataset
    scan = scan_folder(folder, progress=False)
    start = time.perf_counter()
    ds = image_dataset([f.path for f in scan.files], [f.use_pil for f in scan.files], SIZE, BATCH,
                       fast_decode=fast)
    n = sum(int(idx.shape[0]) for _, idx in ds)
    return {"images": n, "seconds": time.perf_counter() - start}


def embed_run(folder: Path, backbone, fast: bool, tmp: Path, runtime: str) -> dict:
    import featcache
    cache = tmp / f"embed_{time.monotonic_ns()}.h5"
    s = featcache.embed(folder, cache, backbone=backbone, progress=False, fast_decode=fast,
                        runtime=runtime)
    cache.unlink()
    return {"images": s.embedded, "seconds": s.seconds}


def _summary(rs: list) -> dict:
    med = statistics.median(r["seconds"] for r in rs)
    return {"median_s": med, "images_per_s": rs[0]["images"] / med,
            "best_s": min(r["seconds"] for r in rs), "runs_s": [r["seconds"] for r in rs],
            "cpu_ms_per_image": 1e3 * statistics.median(r["cpu_s"] for r in rs) / rs[0]["images"]}


def speed(n: int, repeats: int, tmp: Path, runtime: str, only=()) -> dict:
    from embed_throughput import make_jpegs

    from featcache.embedding.backbones import get_backbone
    from featcache.embedding.runtime import use_runtime
    folder = make_jpegs(tmp, n)
    bb = use_runtime(get_backbone("mobilenet_v2", weights="none"), runtime)  # converted once
    modes = {"decode_exact": lambda: decode_only(folder, False),
             "decode_fast": lambda: decode_only(folder, True),
             "embed_exact": lambda: embed_run(folder, bb, False, tmp, runtime),
             "embed_fast": lambda: embed_run(folder, bb, True, tmp, runtime)}
    modes = {k: v for k, v in modes.items() if not only or k in only}
    decode_only(folder, True)  # warm: page cache, graph tracing
    runs = {k: [] for k in modes}
    for _ in range(repeats):
        for name, fn in modes.items():
            cpu = time.process_time()
            runs[name].append(fn())
            runs[name][-1]["cpu_s"] = time.process_time() - cpu  # all threads: robust to load
    return {"runtime": bb.runtime, **{name: _summary(rs) for name, rs in runs.items()}}


def _scenes(root: Path, n: int) -> Path:
    """n 640x480 JPEGs: an sklearn digit (10 classes), 320-480 px at a random place, bright
    on a dark smooth random background, plus noise; quality 90."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    folder = root / f"digit_scenes_{n}"
    if (folder / ".done").exists():
        return folder
    digits, rng = load_digits(), np.random.default_rng(0)
    for i in range(n):
        k = i % len(digits.target)
        side = int(rng.integers(320, 480))
        glyph = Image.fromarray((digits.images[k] / 16 * 255).astype(np.uint8)).resize(
            (side, side), Image.BILINEAR)
        bg = Image.fromarray(rng.integers(0, 90, (6, 8, 3), dtype=np.uint8)).resize(
            (640, 480), Image.BICUBIC)
        x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side + 1))
        bg.paste(Image.new("RGB", (side, side), tuple(int(c) for c in rng.integers(180, 256, 3))),
                 (x, y), glyph)
        arr = np.asarray(bg, np.int16) + rng.integers(-12, 12, (480, 640, 3))
        d = folder / f"digit_{digits.target[k]}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(d / f"{i:05d}.jpg", quality=90)
    (folder / ".done").touch()
    return folder


def _cv(folder: Path, backbone, tmp: Path) -> dict:
    import numpy as np

    import featcache
    cache, out, X = tmp / f"acc_{folder.name}.h5", {}, {}
    for mode, fast in (("exact", False), ("fast", True)):
        s = featcache.embed(folder, cache, backbone=backbone, progress=False, fast_decode=fast)
        feats = featcache.load_features(cache, backbone=s.key)
        acc = featcache.cross_validate_heads(feats, "logreg", folds=5, seed=0).heads[
            "logreg"].summary["accuracy"]
        out[mode] = {"accuracy_mean": acc["mean"], "accuracy_std": acc["std"],
                     "images": len(feats)}
        X[mode] = feats.X
    a, b = X["exact"], X["fast"]
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
    out["cosine_exact_vs_fast"] = {"mean": float(cos.mean()), "min": float(cos.min())}
    out["delta_points"] = 100 * (out["fast"]["accuracy_mean"] - out["exact"]["accuracy_mean"])
    return out


def accuracy(tmp: Path, scenes: int) -> dict:
    from demo import write_digits

    from featcache.embedding.backbones import get_backbone
    bb = get_backbone("mobilenet_v2", weights="none")
    digits = tmp / "digits"
    if not digits.exists():
        write_digits(digits, tmp / "digits_test")
    return {"digits_demo_png": _cv(digits, bb, tmp),
            f"scenes_{scenes}_jpeg": _cv(_scenes(tmp, scenes), bb, tmp)}


def _print_speed(s: dict) -> dict:
    for name, r in s.items():
        if isinstance(r, dict):
            print(f"{name:13s} median {r['median_s']:6.2f} s ({r['images_per_s']:6.1f} images/s), "
                  f"best {r['best_s']:6.2f} s, CPU {r['cpu_ms_per_image']:.2f} ms/image")
    ratios = {f"{kind}_fast/{kind}_exact": {k: s[f"{kind}_exact"][k] / s[f"{kind}_fast"][k]
                                            for k in ("median_s", "best_s", "cpu_ms_per_image")}
              for kind in ("decode", "embed") if f"{kind}_fast" in s and f"{kind}_exact" in s}
    print("speed-ups (x, same run; wall median, wall best, CPU time):",
          {k: tuple(round(x, 2) for x in v.values()) for k, v in ratios.items()})
    return ratios


def _save(path: Path, res: dict) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print(f"-> {path}")


def main(argv=None) -> int:
    from featcache.embedding.runtime import cpu_description
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--runtime", default="auto", help="embed's runtime (default: %(default)s)")
    p.add_argument("--modes", default="", help="comma-separated speed modes (default: all)")
    p.add_argument("--accuracy", action="store_true", help="also measure CV accuracy")
    p.add_argument("--scenes", type=int, default=2500, help="JPEG scenes for --accuracy")
    p.add_argument("--no-speed", action="store_true", help="skip the speed figures")
    p.add_argument("--out", type=Path, default=RESULTS, help="speed JSON (default: %(default)s)")
    p.add_argument("--accuracy-out", type=Path, default=ACCURACY)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "featcache_decode")
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    machine = {**cpu_description(), "cores": os.cpu_count(), "python": sys.version.split()[0],
               "load_average": os.getloadavg()}
    if not args.no_speed:
        res = {"machine": machine, "n": args.n, "repeats": args.repeats,
               "speed": speed(args.n, args.repeats, args.workdir, args.runtime,
                              [m for m in args.modes.split(",") if m])}
        res["speedups"] = _print_speed(res["speed"])
        _save(args.out, res)
    if args.accuracy:
        res = {"machine": machine, "accuracy": accuracy(args.workdir, args.scenes)}
        print(json.dumps(res["accuracy"], indent=1))
        _save(args.accuracy_out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
