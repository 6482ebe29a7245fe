"""Scan an image folder: classes, labels, content hashes, and how to decode each file.

Class order follows Keras (``image_dataset_from_directory`` and
``flow_from_directory``): the sorted names of the sub-folders of the data
folder, labels ``0..K-1``. Files are found recursively inside each class
folder and recognised by their content, not their extension.
"""
from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from featcache.errors import FeatcacheError

# (format, mode) pairs that tf.io.decode_image turns into the right RGB, as Keras
# does; everything else (EXIF rotation, alpha, CMYK, 16-bit, WebP...) goes through PIL.
_TF_SAFE = {("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "L"), ("PNG", "P"),
            ("GIF", "P"), ("GIF", "L"), ("GIF", "RGB"), ("BMP", "RGB")}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageFile:
    """One image found by the scan."""

    rel: str          # relative path, '/'-separated; first part is the class folder
    path: str         # absolute path
    sha256: str
    use_pil: bool     # decode with PIL (see _TF_SAFE) instead of tf.io.decode_image


@dataclass
class Scan:
    """Result of :func:`scan_folder`."""

    root: Path
    class_names: list[str]
    files: list[ImageFile]
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (rel, sha256, reason)

    @cached_property
    def rows(self) -> frozenset:
        """``(rel, sha256)`` of every image: the identity of a cache row."""
        return frozenset((f.rel, f.sha256) for f in self.files)


def _needs_pil(data: bytes, im: Image.Image) -> bool:
    if (im.format, im.mode) not in _TF_SAFE:
        return True
    if im.format == "PNG" and (data[24:25] == b"\x10" or "transparency" in im.info):
        return True  # 16-bit samples, or a palette with transparency
    if im.format == "JPEG" and im.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        return True
    return False


def inspect_file(path: Path, rel: str):
    """Hash and sniff one file: ``(ImageFile, None)`` or ``(None, failure)``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, (rel, "", f"unreadable: {exc.strerror}")
    sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            use_pil = _needs_pil(data, im)
    except UnidentifiedImageError:
        return None, (rel, sha, "not an image (content not recognised)")
    except Exception as exc:  # PIL raises many types for bad headers (incl. decompression bombs)
        return None, (rel, sha, f"unreadable image header: {exc}")
    return ImageFile(rel, str(path), sha, use_pil), None


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(class_dir: Path, class_name: str):
    """Relative paths of every non-hidden file under one class folder, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        rel_dir = Path(dirpath).relative_to(class_dir).as_posix()
        for name in sorted(filenames):
            if not _is_hidden(name):
                parts = [class_name] + ([rel_dir] if rel_dir != "." else []) + [name]
                out.append("/".join(parts))
    return out


def list_classes(root: Path) -> list[str]:
    """Sorted class folder names, with the errors a user needs to see."""
    if not root.exists():
        raise FeatcacheError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise FeatcacheError(f"data folder {root} is not a directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not _is_hidden(d.name))
    if not classes:
        raise FeatcacheError(f"{root} has no class sub-folders: put each class's images in "
                             "its own sub-folder, as Keras image_dataset_from_directory expects")
    if len(classes) == 1:
        raise FeatcacheError(f"{root} has a single class folder ({classes[0]}): "
                             "classification needs at least two")
    return classes


def scan_folder(data_dir, workers: int = 4, progress: bool = True) -> Scan:
    """Find, hash and sniff every image under ``data_dir``.

    Parameters
    ----------
    data_dir : str or Path
        A folder with one sub-folder per class.
    workers : int
        Threads for reading and hashing (I/O bound, so more than the cores helps).
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    Scan
        Files in sorted relative-path order; non-images are listed in ``failures``.
    """
    root = Path(data_dir).expanduser().resolve()
    classes = list_classes(root)
    rels = [rel for c in classes for rel in _walk(root / c, c)]
    with ThreadPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(lambda r: inspect_file(root / r, r), rels), total=len(rels),
                            desc="scan", unit="file", disable=not progress or len(rels) < 200,
                            leave=False))
    files = [f for f, _ in results if f is not None]
    failures = [bad for _, bad in results if bad is not None]
    if not files:
        raise FeatcacheError(f"no images found under {root} ({len(failures)} other files)")
    return Scan(root, classes, files, failures)
