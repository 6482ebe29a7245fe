"""bf16 against f32 on the same images: logreg 5-fold CV accuracy and feature agreement.

Two image sets, both made offline from scikit-learn's digits (ImageNet weights
cannot be downloaded here, so MobileNetV2 has seeded random weights):

  digits      the quickstart demo's folder (scripts/demo.py: 4 in 5 of the 1,797 digits, 64 px PNGs)
  digits_x2   all 1,797 digits twice: as they are and rotated by +-12 degrees (3,594 PNGs)

Each set is embedded once in f32 and once in bf16 (OpenVINO) into one cache (two
entries), then both are cross-validated on the same splits. Run:
python benchmarks/bf16_accuracy.py
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

RESULTS = Path(__file__).parent / "results" / "bf16_accuracy.json"
sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))


def write_doubled(root: Path, size: int = 64) -> Path:
    """Every digit as it is plus one rotated copy, one folder per class."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    rng = np.random.default_rng(0)
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray((img / 16.0 * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
        im.convert("RGB").save(folder / f"{i:04d}.png")
        im.rotate(float(rng.choice([-12, 12])), Image.BILINEAR).convert("RGB").save(
            folder / f"{i:04d}_rot.png")
    return root


def compare(data: Path, cache: Path) -> dict:
    import featcache
    from featcache.embedding.backbones import get_backbone
    bb = get_backbone("mobilenet_v2", weights="none")
    out = {}
    for precision in ("f32", "bf16"):
        s = featcache.embed(data, cache, backbone=bb, precision=precision, progress=False)
        feats = featcache.load_features(cache, s.key)
        cv = featcache.cross_validate_heads(feats, "logreg", folds=5, seed=0)
        acc = cv.heads["logreg"].summary["accuracy"]
        out[precision] = {"images": len(feats), "images_per_s": s.images_per_second,
                          "accuracy_mean": acc["mean"], "accuracy_std": acc["std"], "X": feats.X}
    a, b = out["f32"].pop("X"), out["bf16"].pop("X")
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    out["cosine_bf16_f32"] = {"mean": float(cos.mean()), "min": float(cos.min())}
    out["accuracy_delta_points"] = 100 * (out["bf16"]["accuracy_mean"] - out["f32"]["accuracy_mean"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "featcache_bf16")
    args = p.parse_args()
    from demo import write_digits
    from featcache.embedding.runtime import cpu_description
    demo = args.workdir / "digits"
    if not demo.exists():
        write_digits(demo, args.workdir / "digits_test")
    doubled = args.workdir / "digits_x2"
    if not doubled.exists():
        write_doubled(doubled)
    result = {"cpu": cpu_description(), "backbone": "mobilenet_v2 (random weights, seed 0)",
              "head": "logreg, 5-fold stratified CV, seed 0"}
    for name, folder in (("digits", demo), ("digits_x2", doubled)):
        result[name] = compare(folder, args.workdir / f"{name}.h5")
        print(name, json.dumps(result[name]), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
