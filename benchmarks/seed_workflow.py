"""The seed user's workflow against featcache, on the same image folder.

(a) Seed: frozen MobileNetV2 + Dense softmax trained end to end through
    ``keras.utils.image_dataset_from_directory``, so the frozen backbone
    re-runs on every image in every epoch.
(b) featcache: ``featcache.embed`` once, then ``SoftmaxHead`` on the cache.

Both use MobileNetV2 with random weights (``weights=None`` / ``"none"``):
there are no ImageNet weights offline, and the timing does not depend on the
weight values. Both heads train 5 epochs at batch size 32 (Keras' default)
without early stopping, so they do the same number of updates.

Timed in one process after TensorFlow is imported (import not counted):
* one 5-epoch training on all images;
* a 5-fold CV. For (a) one fold (train on 80%, evaluate on 20%, via
  ``validation_split=0.2``) is timed and multiplied by 5; (b) runs all 5
  folds, and its time includes the one-off embedding.

Usage: python benchmarks/seed_workflow.py [--images 600] [--quick] [--data-dir D]
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
RESULTS = Path(__file__).parent / "results" / "seed_workflow.json"
EPOCHS, BATCH, SIZE = 5, 32, 224


def make_folder(root, n_images, n_classes=4, seed=0):
    """Write ``n_images`` JPEGs (160x120, class-tinted noise) in class folders."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    tints = rng.integers(40, 216, (n_classes, 3))
    for i in range(n_images):
        c = i % n_classes
        folder = Path(root) / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (6, 8, 3)) * 0.5 + tints[c] * 0.5
        img = Image.fromarray(base.astype(np.uint8)).resize((160, 120), Image.BILINEAR)
        img.save(folder / f"img_{i:04d}.jpg", quality=90)
    return Path(root)


def seed_model(n_classes):
    """Frozen MobileNetV2 (random weights) + Dense softmax, as the seed builds it."""
    import keras
    base = keras.applications.MobileNetV2(include_top=False, weights=None,
                                          pooling="avg", input_shape=(SIZE, SIZE, 3))
    base.trainable = False
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)),
                              keras.layers.Rescaling(1 / 127.5, offset=-1),  # preprocess_input
                              base, keras.layers.Dense(n_classes, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def seed_train(data_dir, n_classes):
    """(a) one 5-epoch training on every image; returns seconds."""
    import keras
    t0 = time.perf_counter()
    ds = keras.utils.image_dataset_from_directory(
        data_dir, image_size=(SIZE, SIZE), batch_size=BATCH, seed=0, verbose=False)
    seed_model(n_classes).fit(ds, epochs=EPOCHS, verbose=0)
    return time.perf_counter() - t0


def seed_fold(data_dir, n_classes):
    """(a) one CV fold: train on 80%, evaluate on 20%; returns (seconds, acc)."""
    import keras
    t0 = time.perf_counter()
    train, val = keras.utils.image_dataset_from_directory(
        data_dir, image_size=(SIZE, SIZE), batch_size=BATCH, seed=0,
        validation_split=0.2, subset="both", verbose=False)
    model = seed_model(n_classes)
    model.fit(train, epochs=EPOCHS, verbose=0)
    acc = model.evaluate(val, verbose=0)[1]
    return time.perf_counter() - t0, float(acc)


def featcache_runs(data_dir, cache_path):
    """(b) embed once, then one training and a 5-fold CV on the cache."""
    from sklearn.model_selection import StratifiedKFold
    import featcache
    from featcache.heads import SoftmaxHead
    t0 = time.perf_counter()
    featcache.embed(data_dir, cache_path, backbone="mobilenet_v2", weights="none",
                    batch_size=64, progress=False)
    t_embed = time.perf_counter() - t0
    feats = featcache.load_features(cache_path)
    X, y = feats.X, feats.y
    head = SoftmaxHead(epochs=EPOCHS, batch_size=BATCH, early_stopping=False)
    t0 = time.perf_counter()
    head.fit(X, y)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    accs = [SoftmaxHead(**head.get_params()).fit(X[tr], y[tr]).score(X[te], y[te])
            for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y)]
    t_cv = time.perf_counter() - t0
    return {"embed_seconds": t_embed, "head_train_seconds": t_train,
            "head_cv_seconds": t_cv, "cv_accuracy": float(np.mean(accs)),
            "n_rows": int(len(y))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--quick", action="store_true", help="60 images, smoke run")
    parser.add_argument("--data-dir", help="use this folder instead of generating one")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    n_images = 60 if args.quick else args.images
    import warnings
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    import keras  # noqa: F401  (imported up front: not counted for either side)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else make_folder(
            Path(tmp) / "images", n_images)
        n_classes = len([p for p in data_dir.iterdir() if p.is_dir()])
        ours = featcache_runs(data_dir, Path(tmp) / "cache.h5")
        t_seed_train = seed_train(data_dir, n_classes)
        t_seed_fold, seed_acc = seed_fold(data_dir, n_classes)
    out = summarise(ours, t_seed_train, t_seed_fold, seed_acc, str(data_dir), n_classes)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return out


def summarise(ours, t_seed_train, t_seed_fold, seed_acc, data_dir, n_classes):
    """Build the result dict and print the headline figures."""
    fc_train = ours["embed_seconds"] + ours["head_train_seconds"]
    fc_cv = ours["embed_seconds"] + ours["head_cv_seconds"]
    out = {"images": ours["n_rows"], "classes": n_classes, "epochs": EPOCHS,
           "batch_size": BATCH, "weights": "random (offline; timing only)",
           "seed_train_seconds": t_seed_train,
           "seed_cv_seconds_1fold_x5": 5 * t_seed_fold,
           "seed_fold_accuracy": seed_acc, "featcache": ours,
           "featcache_train_seconds_incl_embed": fc_train,
           "featcache_cv_seconds_incl_embed": fc_cv,
           "ratio_train": t_seed_train / fc_train,
           "ratio_cv": 5 * t_seed_fold / fc_cv,
           "ratio_train_cache_warm": t_seed_train / ours["head_train_seconds"],
           "ratio_cv_cache_warm": 5 * t_seed_fold / ours["head_cv_seconds"]}
    print(f"{out['images']} images, {n_classes} classes, {EPOCHS} epochs, batch {BATCH}")
    print(f"one training: seed {t_seed_train:.1f} s | featcache {fc_train:.1f} s "
          f"(embed {ours['embed_seconds']:.1f} + head {ours['head_train_seconds']:.2f}) "
          f"-> {out['ratio_train']:.1f}x; cache already built: "
          f"{out['ratio_train_cache_warm']:.0f}x")
    print(f"5-fold CV:    seed {5 * t_seed_fold:.1f} s (1 fold x 5) | featcache "
          f"{fc_cv:.1f} s (embed + 5 folds {ours['head_cv_seconds']:.2f}) "
          f"-> {out['ratio_cv']:.1f}x; cache already built: "
          f"{out['ratio_cv_cache_warm']:.0f}x")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
