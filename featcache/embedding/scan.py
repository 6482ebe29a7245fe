"""Scan an image folder: classes, labels, content hashes, and how to decode each file.

Class order follows Keras (``image_dataset_from_directory`` and
``flow_from_directory``): the sorted names of the sub-folders of the data
folder, labels ``0..K-1``. Files are found recursively inside each class
folder and recognised by their content, not their extension.

What Keras skips without a word is said here: a folder that cannot be listed
and a file whose name is not valid UTF-8 become failures (the rest is still
embedded), and images lying directly in the data folder get a note.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import struct
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
_BAD_NAME = "file name is not valid UTF-8: rename it"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFile:
    """One image found by the scan (``sha256`` "" and ``use_pil`` None: deferred, not read)."""

    rel: str          # relative path, '/'-separated; first part is the class folder
    path: str         # absolute path
    sha256: str
    use_pil: bool | None  # decode with PIL (see _TF_SAFE) instead of tf.io.decode_image


@dataclass
class Scan:
    """Result of :func:`scan_folder`."""

    root: Path
    class_names: list[str]
    files: list[ImageFile]
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (rel, sha256, reason)
    notes: list[str] = field(default_factory=list)  # things Keras would skip silently
    unlisted: list[str] = field(default_factory=list)  # folders that could not be listed
    pending: list[ImageFile] = field(default_factory=list)  # deferred: read by the decoder
    may_be_empty: bool = False  # one shard's part of a folder: no images is no error

    def resolve(self, found, failed) -> Scan:
        """This scan once the decoder read its pending files: ``found`` images, ``failed`` others.

        Raises like :func:`scan_folder` when no file at all is an image.
        """
        files, failures = self.files + list(found), self.failures + list(failed)
        if not files and not self.may_be_empty:
            raise no_images(self.root, failures)
        return Scan(self.root, self.class_names, files, failures, self.notes, self.unlisted,
                    may_be_empty=self.may_be_empty)

    @cached_property
    def rows(self) -> frozenset:
        """``(rel, sha256)`` of every image: the identity of a cache row."""
        return frozenset((f.rel, f.sha256) for f in self.files)

    def unseen(self, rows) -> set:
        """The ``(rel, sha256)`` rows under a folder this scan could not list.

        They were not seen, but are not known to be gone either: a cache keeps them.
        """
        if not self.unlisted:
            return set()
        prefixes = tuple(f"{d}/" for d in self.unlisted)
        return {row for row in rows if row[0].startswith(prefixes)}


def _bmp_tf_safe(data: bytes) -> bool:
    """TF decodes only uncompressed 24/32-bit BMPs with a Windows header (not 16-bit, RLE...)."""
    if len(data) < 34:
        return False
    header, = struct.unpack_from("<I", data, 14)
    bits, compression = struct.unpack_from("<HI", data, 28)
    return header >= 40 and bits in (24, 32) and compression == 0


def _png_has_exif(data: bytes) -> bool:
    """Whether a PNG has an eXIf chunk, hopping over chunk headers (a byte search costs 5x more)."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind in (b"eXIf", b"IEND"):
            return kind == b"eXIf"
        pos += length + 12  # length, type, data, CRC
    return False


def _rotated(data: bytes, im: Image.Image) -> bool:
    """EXIF orientation other than 1 (PNG keeps EXIF in an eXIf chunk, maybe after the pixels)."""
    if im.format == "PNG" and not _png_has_exif(data):
        return False  # spare getexif(), which would decode the whole PNG to look for it
    return im.getexif().get(_EXIF_ORIENTATION, 1) != 1


def _needs_pil(data: bytes, im: Image.Image) -> bool:
    if (im.format, im.mode) not in _TF_SAFE:
        return True
    if im.format == "PNG" and (data[24:25] == b"\x10" or "transparency" in im.info):
        return True  # 16-bit samples, or a palette with transparency
    if im.format == "BMP":
        return not _bmp_tf_safe(data)
    return im.format in ("JPEG", "PNG") and _rotated(data, im)


def display_name(rel: str) -> str:
    """``rel`` as valid UTF-8 text: undecodable bytes of a file name shown as ``\\xff``."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def inspect_file(path: Path, rel: str):
    """Hash and sniff one file: ``(ImageFile, None)`` or ``(None, failure)``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, (display_name(rel), "", f"unreadable: {exc.strerror}")
    return inspect_bytes(data, path, rel)


def inspect_bytes(data: bytes, path, rel: str):
    """:func:`inspect_file` of bytes already read (the decoder reads deferred files once)."""
    sha = hashlib.sha256(data).hexdigest()
    if display_name(rel) != rel:  # tf.data and the cache's UTF-8 strings cannot carry it
        return None, (display_name(rel), sha, _BAD_NAME)
    try:
        with Image.open(io.BytesIO(data)) as im:
            use_pil = _needs_pil(data, im)
    except UnidentifiedImageError:
        return None, (rel, sha, "not an image (content not recognised)")
    except Exception as exc:  # PIL raises many types for bad headers (incl. decompression bombs)
        return None, (rel, sha, f"unreadable image header: {exc}")
    return ImageFile(rel, str(path), sha, use_pil), None


def no_images(root, failures) -> FeatcacheError:
    """The error for a folder with no image at all."""
    unlisted = [f for f in failures if f[2].startswith("cannot list folder")]
    return FeatcacheError(f"no images found under {root} ({len(failures)} other files"
                          + "".join(f"; {p}: {r}" for p, _, r in unlisted[:3]) + ")")


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(class_dir: Path, class_name: str, failures: list):
    """Relative paths of every non-hidden file under one class folder, sorted.

    A folder that cannot be listed is appended to ``failures`` (``os.walk``
    would skip it silently).
    """
    out = []

    def unlisted(exc: OSError):
        rel = Path(exc.filename).relative_to(class_dir).as_posix()
        rel = class_name if rel == "." else f"{class_name}/{rel}"
        failures.append((display_name(rel), "", f"cannot list folder: {exc.strerror}"))

    for dirpath, dirnames, filenames in os.walk(class_dir, onerror=unlisted):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        rel_dir = Path(dirpath).relative_to(class_dir).as_posix()
        for name in sorted(filenames):
            if not _is_hidden(name):
                parts = [class_name] + ([rel_dir] if rel_dir != "." else []) + [name]
                out.append("/".join(parts))
    return out


def _root_images(root: Path, entries) -> list[str]:
    """Notes for images lying directly in the data folder, which Keras ignores."""
    names = []
    for e in entries:
        if e.is_file() and not _is_hidden(e.name):
            try:
                with Image.open(e):
                    names.append(display_name(e.name))
            except Exception:  # not an image (or unreadable): nothing a user would miss
                continue
    if not names:
        return []
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return [f"{len(names)} image(s) directly in {root} are not in a class folder and were "
            f"ignored, as Keras does ({shown}); move them into a class folder to use them"]


def _entries(root: Path) -> list:
    """The data folder's entries, with the errors a user needs to see."""
    if not root.exists():
        raise FeatcacheError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise FeatcacheError(f"data folder {root} is not a directory")
    try:
        return sorted(root.iterdir())
    except OSError as exc:
        raise FeatcacheError(f"cannot list data folder {root}: {exc.strerror}") from None


def list_classes(root: Path, entries=None, min_classes: int = 2) -> list[str]:
    """Sorted class folder names, with the errors a user needs to see."""
    entries = _entries(root) if entries is None else entries
    classes = sorted(d.name for d in entries if d.is_dir() and not _is_hidden(d.name))
    if not classes:
        raise FeatcacheError(f"{root} has no class sub-folders: put each class's images in "
                             "its own sub-folder, as Keras image_dataset_from_directory expects")
    if len(classes) < min_classes:
        raise FeatcacheError(f"{root} has a single class folder ({classes[0]}): "
                             "classification needs at least two")
    bad = [display_name(c) for c in classes if display_name(c) != c]
    if bad:
        raise FeatcacheError(f"class folder name {bad[0]!r} in {root} is not valid UTF-8: "
                             "rename it (it becomes a class name)")
    return classes


def scan_folder(data_dir, workers: int = 4, progress: bool = True, min_classes: int = 2,
                select=None, defer=None) -> Scan:
    """Find, hash and sniff every image under ``data_dir``.

    Parameters
    ----------
    data_dir : str or Path
        A folder with one sub-folder per class.
    workers : int
        Threads for reading and hashing (I/O bound, so more than the cores helps).
    progress : bool
        Show a progress bar on stderr.
    min_classes : int
        Fewer class folders is an error: 2 to train, 1 for a held-out test folder.
    select : callable, optional
        Keep only the relative paths (files, and folders that cannot be listed) it
        is true for, before hashing: one shard's part of the folder. Class names
        stay those of the whole folder, and an empty selection is no error.
    defer : callable, optional
        ``defer(rel)`` true: the file is not read here but listed in ``Scan.pending``
        for a reader that hashes and sniffs it from the bytes it decodes, so it is
        read once (``embed`` defers the files its cache has never seen; see
        :meth:`Scan.resolve`).

    Returns
    -------
    Scan
        Files in Keras walk order. Non-images, unreadable files, folders that
        cannot be listed and non-UTF-8 file names are in ``failures``; images
        directly in the data folder are mentioned in ``notes`` (and logged).
    """
    root = Path(data_dir).expanduser().resolve()
    entries = _entries(root)
    classes = list_classes(root, entries, min_classes)
    unlisted: list = []
    rels = [rel for c in classes for rel in _walk(root / c, c, unlisted)]
    everything = len(rels) + len(unlisted)
    if select is not None:
        rels, unlisted = [r for r in rels if select(r)], [u for u in unlisted if select(u[0])]
    later = [defer is not None and display_name(r) == r and bool(defer(r)) for r in rels]
    pending = [ImageFile(r, str(root / r), "", None) for r, d in zip(rels, later) if d]
    rels = [r for r, d in zip(rels, later) if not d]
    with ThreadPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(lambda r: inspect_file(root / r, r), rels), total=len(rels),
                            desc="scan", unit="file", disable=not progress or len(rels) < 200,
                            leave=False))
    files = [f for f, _ in results if f is not None]
    failures = unlisted + [bad for _, bad in results if bad is not None]
    may_be_empty = select is not None and bool(everything)
    if not files and not pending and not may_be_empty:
        raise no_images(root, failures)
    notes = _root_images(root, entries)
    for note in notes:
        logger.warning(note)
    return Scan(root, classes, files, failures, notes, [p for p, _, _ in unlisted], pending,
                may_be_empty)
