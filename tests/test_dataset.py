"""Folder scan and decoding: Keras class order, content sniffing, image modes, bad files."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from helpers import write_images
from featcache.embedding.scan import inspect_file, scan_folder
from featcache.errors import FeatcacheError
from featcache.embedding.decode import pil_rgb, to_rgb


def test_classes_sorted_like_keras_and_recursive(tmp_path):
    write_images(tmp_path, {"zebra": 2, "Apple": 1, "mango": 2})
    (tmp_path / "mango" / "clip1").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "mango" / "clip1" / "f.png")
    scan = scan_folder(tmp_path, progress=False)
    assert scan.class_names == sorted(["zebra", "Apple", "mango"])  # Python sort, as Keras
    assert "mango/clip1/f.png" in [f.rel for f in scan.files]
    mango = [f.rel for f in scan.files if f.rel.startswith("mango/")]
    assert mango == ["mango/img_000.jpg", "mango/img_001.jpg", "mango/clip1/f.png"]  # Keras walk order


def test_hidden_ignored_non_images_recorded_content_sniffed(tmp_path):
    write_images(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (tmp_path / ".cache").mkdir()
    (tmp_path / "b" / "readme.txt").write_text("not an image")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "b" / "really_png.jpg", format="PNG")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "b" / "no_extension", format="JPEG")
    scan = scan_folder(tmp_path, progress=False)
    rels = [f.rel for f in scan.files]
    assert "b/really_png.jpg" in rels and "b/no_extension" in rels
    assert not any(".DS_Store" in r for r in rels) and scan.class_names == ["a", "b"]
    assert [(p, r) for p, _, r in scan.failures] == [
        ("b/readme.txt", "not an image (content not recognised)")]


@pytest.mark.parametrize("layout, message", [
    (None, "does not exist"), ({}, "no class sub-folders"), ({"only": 2}, "single class"),
    ({"a": 0, "b": 0}, "no images found")])
def test_folder_errors_name_the_problem(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout is not None:
        root.mkdir()
        write_images(root, layout)
    with pytest.raises(FeatcacheError, match=message):
        scan_folder(root, progress=False)


def _sniff(tmp_path, im: Image.Image, fmt: str, **save):
    path = tmp_path / f"x.{fmt.lower()}"
    im.save(path, format=fmt, **save)
    f, bad = inspect_file(path, "a/x")
    assert bad is None
    return f, pil_rgb(str(path))


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # white left half of a landscape image
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; viewers rotate 90 degrees clockwise
    f, rgb = _sniff(tmp_path, Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=95)
    assert f.use_pil
    assert rgb.shape == (40, 20, 3)
    assert rgb[:15].mean() > 200 and rgb[25:].mean() < 50  # left half is now on top


def test_modes_become_correct_rgb(tmp_path):
    gray = Image.fromarray(np.full((6, 6), 77, np.uint8), "L")
    f, rgb = _sniff(tmp_path, gray, "PNG")
    assert not f.use_pil and (rgb == 77).all()

    pal = Image.new("P", (6, 6), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert (_sniff(tmp_path, pal, "PNG")[1] == [10, 200, 30]).all()

    rgba = Image.new("RGBA", (6, 6), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    f, rgb = _sniff(tmp_path, rgba, "PNG")
    assert f.use_pil and (rgb[0, 0] == [0, 0, 255]).all() and (rgb[1:, 1:] == 255).all()

    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    f, rgb = _sniff(tmp_path, cmyk, "JPEG", quality=100)
    assert f.use_pil and np.abs(rgb.astype(int) - [255, 0, 0]).max() <= 3

    deep = Image.fromarray(np.full((5, 5), 257 * 100, np.uint16))
    f, rgb = _sniff(tmp_path, deep, "PNG")
    assert f.use_pil and (rgb == 100).all()

    f, rgb = _sniff(tmp_path, Image.new("RGB", (7, 3), (1, 2, 3)), "WEBP", lossless=True)
    assert f.use_pil and rgb.shape == (3, 7, 3) and (rgb == [1, 2, 3]).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from(["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I;16", "I", "F"]),
       w=st.integers(1, 40), h=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_any_mode_any_size_gives_uint8_rgb(mode, w, h, seed):
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).convert(mode)
    rgb = to_rgb(im)
    assert rgb.dtype == np.uint8 and rgb.shape == (h, w, 3)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0, 1), noise=st.binary(max_size=64), fmt=st.sampled_from(["JPEG", "PNG", "GIF"]))
def test_corrupt_bytes_never_raise_from_scan(tmp_path, cut, noise, fmt):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(buf, format=fmt)
    data = buf.getvalue()
    data = data[: int(len(data) * cut)] + noise
    path = tmp_path / "corrupt.bin"
    path.write_bytes(data)
    f, bad = inspect_file(path, "a/corrupt.bin")
    assert (f is None) != (bad is None)
    if bad:
        assert bad[0] == "a/corrupt.bin" and bad[2]
