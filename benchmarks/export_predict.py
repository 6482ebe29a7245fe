"""Export and predict: speed and size, on random-weight MobileNetV2 (nothing downloads).

Measured in one run, on the same 1,000 generated 640x480 JPEGs:

  embed        featcache.embed into a fresh cache: images/s of the backbone pass
  predict      featcache.load_model(dir).predict(files): images/s of the whole call
               (sniff + decode + resize + backbone + head), model already loaded
  saved_model  bare tf.saved_model.load + the serve_bytes signature, batches of 64 file bytes
  train_export `featcache train CACHE_5000 -o DIR` in a fresh process (TF start-up, C auto by
               5-fold CV, export, parity on 64 images), wall seconds
  size         SavedModel directory bytes vs backbone + head weight bytes

The 5,000-row cache is the 1,000 embedded rows five times over, with the files hard-linked
under five names, so its parity check runs on real files. embed/predict repeats are
interleaved; medians reported. Run:  python benchmarks/export_predict.py
[--tflite-only: re-measure only the TFLite variants, updating the results file]
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from embed_throughput import make_jpegs

RESULTS = Path(__file__).parent / "results" / "export_predict.json"
REPEATS = 3


def five_thousand(root: Path, cache: Path) -> Path:
    """A 5,000-row cache over hard-linked copies of the 1,000 embedded files."""
    import numpy as np

    import featcache
    from featcache.cache.features import Features
    f = featcache.load_features(cache)
    fingerprint = featcache.cache_info(cache)["entries"][0]["fingerprint"]
    data = root / "data5k"
    paths = []
    for k in range(5):
        for rel in f.paths:
            cls, name = rel.split("/")
            new = data / cls / f"copy{k}_{name}"
            new.parent.mkdir(parents=True, exist_ok=True)
            if not new.exists():
                os.link(root / "jpegs_1000" / rel, new)
            paths.append(f"{cls}/copy{k}_{name}")
    big = Features(np.tile(f.X, (5, 1)), np.tile(f.y, 5), np.asarray(paths), f.class_names,
                   np.tile(f.sha256, 5), spec=f.spec)
    out = root / "c5k.h5"
    featcache.save_features(out, big, fingerprint=fingerprint, data_dir=str(data))
    return out


def time_embed(folder: Path, root: Path, i: int) -> float:
    import featcache
    cache = root / f"embed_{i}.h5"
    cache.unlink(missing_ok=True)  # a fresh cache: embed every image
    s = featcache.embed(folder, cache, weights="none", progress=False)
    return s.images_per_second


def time_predict(model, files) -> float:
    t = time.perf_counter()
    rows = model.predict(files, top_k=1, progress=False)
    assert all(r["error"] is None for r in rows)
    return len(files) / (time.perf_counter() - t)


def time_saved_model(model_dir: Path, files) -> float:
    import tensorflow as tf
    sig = tf.saved_model.load(str(model_dir / "saved_model")).signatures["serve_bytes"]
    sig(image_bytes=tf.constant([Path(files[0]).read_bytes()]))  # warm-up trace
    t = time.perf_counter()
    for start in range(0, len(files), 64):
        batch = [Path(p).read_bytes() for p in files[start:start + 64]]
        sig(image_bytes=tf.constant(batch))["probabilities"].numpy()
    return len(files) / (time.perf_counter() - t)


def train_export(cache: Path, out: Path) -> float:
    t = time.perf_counter()
    cmd = [sys.executable, "-c", "from featcache.cli import main; main()", "train", str(cache),
           "--head", "logreg", "-o", str(out), "--force"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    print(res.stdout.strip())
    return time.perf_counter() - t


def sizes(model_dir: Path, mobilenet) -> dict:
    weights = sum(w.numpy().nbytes for w in mobilenet.model.weights)
    head = (mobilenet.spec.feature_dim + 1) * 10 * 4
    saved = sum(p.stat().st_size for p in (model_dir / "saved_model").rglob("*") if p.is_file())
    return {"saved_model_bytes": saved, "weights_bytes": weights + head,
            "ratio": saved / (weights + head)}


def tflite_figures(big: Path, root: Path) -> dict | None:
    """`featcache train --quantize dynamic --quantize float16`: every variant's size and parity."""
    tfl = subprocess.run([sys.executable, "-c", "from featcache.cli import main; main()", "train",
                          str(big), "--head", "logreg", "-o", str(root / "model_tfl"), "--force",
                          "--quantize", "dynamic", "--quantize", "float16"],
                         capture_output=True, text=True, check=False)
    print(tfl.stdout.strip(), tfl.stderr.strip().splitlines()[-1:] if tfl.returncode else "")
    if tfl.returncode:
        return None
    return json.loads((root / "model_tfl" / "featcache.json").read_text())["tflite"]


def main() -> None:
    import featcache
    root = Path(os.environ.get("FEATCACHE_BENCH_DIR", Path(tempfile.gettempdir()) / "fc_bench"))
    for stale in root.glob("c*.h5*"):  # caches of an earlier run (another backbone fingerprint)
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    if "--tflite-only" in sys.argv[1:]:  # re-measure TFLite only, into the earlier results
        out = json.loads(RESULTS.read_text())
        folder = make_jpegs(root, 1000)
        featcache.embed(folder, root / "c1k.h5", weights="none", progress=False)
        out["tflite"] = tflite_figures(five_thousand(root, root / "c1k.h5"), root) or out["tflite"]
        print(json.dumps(out["tflite"], indent=1))
        RESULTS.write_text(json.dumps(out, indent=1))
        return
    folder = make_jpegs(root, 1000)
    files = sorted(str(p) for p in folder.glob("*/*.jpg"))
    featcache.embed(folder, root / "c1k.h5", weights="none", progress=False)
    big = five_thousand(root, root / "c1k.h5")
    train_s = train_export(big, root / "model5k")
    model = featcache.load_model(root / "model5k")
    time_predict(model, files[:64])  # warm-up: freezing and tracing
    embed_ips, predict_ips = [], []
    for i in range(REPEATS):
        embed_ips.append(time_embed(folder, root, i))
        predict_ips.append(time_predict(model, files))
    out = {"images": len(files), "image_size": "640x480 JPEG", "backbone": "mobilenet_v2 (random)",
           "embed_images_per_s": statistics.median(embed_ips),
           "predict_images_per_s": statistics.median(predict_ips),
           "saved_model_images_per_s": time_saved_model(root / "model5k", files),
           "train_export_5000_rows_s": train_s,
           "size": sizes(root / "model5k", featcache.get_backbone("mobilenet_v2", weights="none")),
           "tflite": model.meta["tflite"], "parity": model.meta["parity"]["saved_model"],
           "repeats": {"embed": embed_ips, "predict": predict_ips},
           "machine": f"{os.cpu_count()} cores, 1-min load average {os.getloadavg()[0]:.2f} at the end"}
    out["predict_over_embed"] = out["predict_images_per_s"] / out["embed_images_per_s"]
    out["tflite"] = tflite_figures(big, root) or out["tflite"]
    print(json.dumps(out, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
