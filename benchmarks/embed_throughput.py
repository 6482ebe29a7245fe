"""Embed throughput: featcache vs the raw forward pass vs the hand-written Keras pipeline.

Each measurement runs in its own fresh process (so peak memory is its own), on a
generated folder of 640x480 JPEGs, MobileNetV2 with random weights (offline):

  raw       the plain Keras model's forward pass on already-decoded, resized tensors
  raw_frozen  featcache's forward function (weights frozen as constants) on the same tensors
  keras     keras.utils.image_dataset_from_directory -> model.predict -> np.save
  featcache featcache.embed into a fresh cache (scan + hash + decode + forward + commit),
            forward pass on --runtime (default openvino), f32
  featcache_tf    the same on runtime="tensorflow" (featcache's TF runtime)
  featcache_bf16  the same in bf16 (OpenVINO, CPUs with bf16 only)
  split_I_D       featcache on OpenVINO with I inference threads and D tf.data threads

Repeats are interleaved and medians reported. Run:  python benchmarks/embed_throughput.py
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "embed_throughput.json"
BATCH = 64


def make_jpegs(root: Path, n: int, classes: int = 10) -> Path:
    """n realistic-size JPEGs (smooth content plus noise, quality 90), made once and reused."""
    import numpy as np
    from PIL import Image
    folder = root / f"jpegs_{n}"
    if (folder / ".done").exists():
        return folder
    rng = np.random.default_rng(0)
    for i in range(n):
        d = folder / f"class_{i % classes:02d}"
        d.mkdir(parents=True, exist_ok=True)
        base = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(
            (640, 480), Image.BICUBIC)
        arr = np.asarray(base, np.int16) + rng.integers(-12, 12, (480, 640, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(d / f"{i:05d}.jpg", quality=90)
    (folder / ".done").touch()
    return folder


def _model():
    import keras
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(include_top=False, weights=None, pooling="avg",
                                          input_shape=(224, 224, 3))


def _time_forward(fn, folder: Path):
    import numpy as np
    import tensorflow as tf
    n = len(list(folder.glob("*/*.jpg")))
    batch = tf.constant(np.random.default_rng(0).uniform(0, 255, (BATCH, 224, 224, 3)), tf.float32)
    fn(batch)  # trace outside the timing
    start = time.perf_counter()
    for _ in range(n // BATCH):
        np.asarray(fn(batch))
    return n // BATCH * BATCH, time.perf_counter() - start


def run_raw(folder: Path, out: Path):
    """The plain Keras model's forward pass, on tensors decoded and resized beforehand."""
    import keras
    import tensorflow as tf
    model, pre = _model(), keras.applications.mobilenet_v2.preprocess_input
    return _time_forward(tf.function(lambda x: model(pre(x), training=False)), folder)


def run_raw_frozen(folder: Path, out: Path):
    """featcache's own forward function (weights frozen into the graph), no decoding."""
    from featcache.embedding.backbones import get_backbone
    return _time_forward(get_backbone("mobilenet_v2", weights="none").fn, folder)


def run_keras(folder: Path, out: Path):
    """What a user writes: image_dataset_from_directory, predict, np.save."""
    import keras
    import numpy as np
    import tensorflow as tf
    start = time.perf_counter()  # model build included, as for featcache
    model = _model()
    ds = keras.utils.image_dataset_from_directory(folder, image_size=(224, 224), batch_size=BATCH,
                                                  shuffle=False, label_mode=None)
    ds = ds.map(keras.applications.mobilenet_v2.preprocess_input).prefetch(tf.data.AUTOTUNE)
    feats = model.predict(ds, verbose=0)
    np.save(out / "features.npy", feats)
    return len(feats), time.perf_counter() - start


def _bytes_read() -> int:
    """Bytes this process has read so far (Linux; 0 elsewhere)."""
    try:
        return int(dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())["rchar"])
    except OSError:
        return 0


def run_featcache(folder: Path, out: Path, runtime: str = "openvino", precision: str = "f32"):
    import tensorflow  # noqa: F401  imported before the clock starts, as in run_keras

    import featcache
    from featcache.embedding.backbones import get_backbone
    start = time.perf_counter()  # conversion to OpenVINO included
    bb = get_backbone("mobilenet_v2", weights="none")
    read0 = _bytes_read()
    s = featcache.embed(folder, out / "cache.h5", backbone=bb, batch_size=BATCH, progress=False,
                        runtime=runtime, precision=precision)
    image_bytes = sum(p.stat().st_size for p in folder.glob("*/*.jpg"))
    return (s.embedded, time.perf_counter() - start, s.embed_seconds,
            (_bytes_read() - read0) / image_bytes)


def run_split(folder: Path, out: Path, split: str):
    """featcache on OpenVINO with I inference threads and D tf.data decode threads."""
    import featcache.embedding.runtime as runtime
    runtime.INFERENCE_THREADS, runtime.DATA_THREADS = map(int, split.split("_"))
    return run_featcache(folder, out)


def _runner(mode: str):
    runtime = os.environ.get("BENCH_RUNTIME", "openvino")
    if mode.startswith("split_"):
        return lambda folder, out: run_split(folder, out, mode[len("split_"):])
    return {"raw": run_raw, "raw_frozen": run_raw_frozen, "keras": run_keras,
            "featcache": lambda f, o: run_featcache(f, o, runtime),
            "featcache_tf": lambda f, o: run_featcache(f, o, "tensorflow"),
            "featcache_bf16": lambda f, o: run_featcache(f, o, "openvino", "bf16")}[mode]


def child(mode: str, folder: str) -> None:
    """Entry point of one measurement process: prints one JSON line."""
    with tempfile.TemporaryDirectory() as tmp:
        n, seconds, *inner = _runner(mode)(Path(folder), Path(tmp))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # images_per_s: end to end (featcache and keras include building the model, scanning,
    # decoding and writing); pass_images_per_s: featcache's decode+forward+journal loop alone.
    print(json.dumps({"mode": mode, "images": n, "seconds": seconds, "images_per_s": n / seconds,
                      "pass_images_per_s": n / inner[0] if inner else n / seconds,
                      "bytes_read_per_image_byte": inner[1] if inner else None,
                      "peak_rss_mib": rss}))


def measure(mode: str, folder: Path, runtime: str = "openvino") -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", BENCH_RUNTIME=runtime)
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(folder)], env=env,
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(f"  {mode:<14} {result['images']:>5} images  {result['images_per_s']:6.1f} images/s  "
          f"peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--large", type=int, default=4000, help="folder size for the memory check")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "featcache_bench")
    p.add_argument("--runtime", default="openvino", choices=["openvino", "tensorflow", "auto"],
                   help="runtime of the 'featcache' mode")
    p.add_argument("--splits", default="1_1,2_1",
                   help="thread splits I_D (OpenVINO, tf.data) to measure besides the default")
    args = p.parse_args()
    if args.child:
        return child(*args.child)

    from featcache.embedding.runtime import cpu_description, thread_split
    cpu = cpu_description()
    small = make_jpegs(args.workdir, args.images)
    modes = ["raw", "raw_frozen", "keras", "featcache_tf", "featcache"]
    modes += ["featcache_bf16"] if cpu["avx512_bf16"] or cpu["amx"] else []
    modes += [f"split_{s}" for s in args.splits.split(",") if s]
    runs = {m: [] for m in modes}
    for r in range(args.repeats):
        print(f"repeat {r + 1}/{args.repeats} on {args.images} JPEGs (640x480)", flush=True)
        for mode in runs:
            runs[mode].append(measure(mode, small, args.runtime))
    med = {m: statistics.median(x["images_per_s"] for x in v) for m, v in runs.items()}
    med["featcache_pass"] = statistics.median(x["pass_images_per_s"] for x in runs["featcache"])
    med["featcache_tf_pass"] = statistics.median(x["pass_images_per_s"]
                                                 for x in runs["featcache_tf"])
    print(f"memory check on {args.large} JPEGs", flush=True)
    large = {m: measure(m, make_jpegs(args.workdir, args.large), args.runtime)
             for m in ("featcache", "keras")}
    result = {
        "machine": f"{os.cpu_count()} cores", "cpu": cpu, "runtime": args.runtime,
        "default_thread_split": "_".join(map(str, thread_split())),
        "backbone": "mobilenet_v2 (random weights)",
        "batch_size": BATCH, "images": args.images, "repeats": args.repeats,
        "median_images_per_s": med,
        "featcache_vs_raw": med["featcache"] / med["raw"],
        "featcache_pass_vs_raw": med["featcache_pass"] / med["raw"],
        "featcache_vs_keras": med["featcache"] / med["keras"],
        "featcache_vs_raw_frozen": med["featcache"] / med["raw_frozen"],
        "featcache_vs_featcache_tf": med["featcache"] / med["featcache_tf"],
        "featcache_tf_vs_keras": med["featcache_tf"] / med["keras"],
        "bf16_vs_featcache": (med["featcache_bf16"] / med["featcache"]
                              if "featcache_bf16" in med else None),
        "pass_featcache_vs_featcache_tf": med["featcache_pass"] / med["featcache_tf_pass"],
        "bytes_read_per_image_byte": runs["featcache"][0]["bytes_read_per_image_byte"],
        "peak_rss_mib": {"featcache": {str(args.images): statistics.median(
            x["peak_rss_mib"] for x in runs["featcache"]), str(args.large): large["featcache"][
            "peak_rss_mib"]}, "keras": {str(args.images): statistics.median(
                x["peak_rss_mib"] for x in runs["keras"]), str(args.large): large["keras"][
                "peak_rss_mib"]}},
        "runs": runs, "large_runs": large,
    }
    print("\nmedian images/s: " + ", ".join(f"{m} {v:.1f}" for m, v in med.items()))
    print(f"featcache / raw forward   = {result['featcache_vs_raw']:.2f} end to end, "
          f"{result['featcache_pass_vs_raw']:.2f} embed pass alone  (target >= 0.85)")
    print(f"featcache ({args.runtime}) / keras+np.save = {result['featcache_vs_keras']:.2f}  "
          "(target >= 1.8)")
    print(f"featcache ({args.runtime}) / featcache tensorflow = "
          f"{result['featcache_vs_featcache_tf']:.2f}  (target >= 1.6)")
    print(f"embed loop alone: featcache ({args.runtime}) / featcache tensorflow = "
          f"{result['pass_featcache_vs_featcache_tf']:.2f}")
    print(f"bytes read per image byte: {result['bytes_read_per_image_byte']:.2f} (1.00: read once)")
    print(f"CPU: {json.dumps(cpu)}")
    print(f"featcache / frozen forward = {result['featcache_vs_raw_frozen']:.2f}  (decode overhead)")
    print(f"peak RSS MiB: {json.dumps(result['peak_rss_mib'])}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
