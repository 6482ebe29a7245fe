"""The quickstart: build an offline demo dataset, embed it once, run the head experiments,
then train, export, predict and evaluate on held-out images.

The images are scikit-learn's bundled handwritten digits (no download), written
out as one PNG per image in one folder per class, like a user's own data; every
fifth image goes to a held-out test folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def write_digits(root: Path, test_root: Path, size: int = 64) -> int:
    """Write sklearn's 8x8 digits as RGB PNGs in ``root/<digit>/`` (every fifth in
    ``test_root/<digit>/``); returns the count."""
    digits = load_digits()
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        folder = (test_root if i % 5 == 0 else root) / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        gray = (img / 16.0 * 255).astype(np.uint8)
        Image.fromarray(gray).resize((size, size), Image.BILINEAR).convert("RGB").save(
            folder / f"{i:04d}.png")
    return len(digits.target)


def pick_backbone(name: str, weights: str):
    """Try ImageNet weights; offline, say so plainly and fall back to random weights."""
    from featcache.embedding.backbones import get_backbone
    from featcache.errors import FeatcacheError
    try:
        return get_backbone(name, weights=weights)
    except FeatcacheError as exc:
        if weights != "imagenet":
            raise
        print(f"\n[demo] ImageNet weights are not available here: {exc}\n"
              "[demo] Carrying on with RANDOM weights (seeded): everything below works the same, "
              "but the numbers are not those of pretrained features.\n"
              "[demo] To use real weights offline, download the Keras file once elsewhere and run:\n"
              f"         featcache embed demo/digits -o demo/digits.h5 --weights /path/to/{name}"
              "_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5\n", flush=True)
        return get_backbone(name, weights="none")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo", type=Path)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--weights", default="imagenet")
    args = parser.parse_args(argv)

    import featcache
    data, test, cache = args.out / "digits", args.out / "digits_test", args.out / "digits.h5"
    if not test.exists():
        print(f"[demo] writing {write_digits(data, test)} digit images to {data}/ "
              f"(one in five held out in {test}/)")
    backbone = pick_backbone(args.backbone, args.weights)
    print("[demo] embedding every image once (re-running skips what is cached)")
    print(featcache.embed(data, cache, backbone=backbone))
    from featcache.cli import cli
    cli(["info", str(cache)], standalone_mode=False)

    plots = args.out / "plots"
    print("\n[demo] sweeping the regularisation of every head on the same 5 folds (seconds, not minutes)")
    cli(["sweep", str(cache), "--heads", "logreg,svm,softmax", "--plots", str(plots),
         "--json", str(args.out / "sweep.json")], standalone_mode=False)
    print(f"\n[demo] plots: {plots}/regularisation_path.png and {plots}/confusion_matrix.png; "
          f"per-fold numbers: {args.out / 'sweep.json'}")
    model = args.out / "model"
    print("\n[demo] training logreg on every cached image (C chosen by the same CV), exporting "
          "image -> probabilities as one SavedModel, and checking it reproduces the cache")
    cli(["train", str(cache), "--head", "logreg", "-o", str(model), "--force"],
        standalone_mode=False)
    sample = sorted((test / "digit_3").iterdir())[:3]
    print("\n[demo] predicting three held-out images with the exported model")
    cli(["predict", str(model), *map(str, sample), "--top-k", "2"], standalone_mode=False)
    print("\n[demo] the honest final number: held-out images the model never saw")
    cli(["evaluate", str(model), str(test), "--out", str(args.out / "heldout"), "--force"],
        standalone_mode=False)
    print(f"\n[demo] next: featcache audit {cache}   |   featcache diagnose {cache} --head logreg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
