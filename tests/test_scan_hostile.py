"""Hostile folders and files: unlistable folders, stray root images, non-UTF-8 names,
PNG EXIF, BMPs TensorFlow cannot decode; backbone fallbacks; CLI flag names."""
from __future__ import annotations

import io
import logging
import os
import struct

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import write_images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import featcache
from featcache.cache import cache_info
from featcache.embedding.scan import inspect_file, scan_folder
from featcache.embedding.decode import image_dataset
from featcache.errors import FeatcacheError

DENIED = "cannot list folder: Permission denied"


def _deny(monkeypatch, *folders):
    """Make ``os.scandir`` refuse these folders, as chmod 000 would for a non-root user."""
    real = os.scandir
    blocked = {os.fspath(f) for f in folders}

    def scandir(path="."):
        if not isinstance(path, int) and os.fspath(path) in blocked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)


def test_unlistable_folders_are_failures_and_counted(tmp_path, mobilenet, monkeypatch):
    data = tmp_path / "data"
    write_images(data, {"a": 2, "b": 2, "c": 1})
    write_images(data / "a", {"sub": 2}, seed=1)
    _deny(monkeypatch, data / "a" / "sub", data / "c")
    scan = scan_folder(data, progress=False)
    assert scan.class_names == ["a", "b", "c"]  # an unreadable class folder is still a class
    assert [f.rel for f in scan.files] == ["a/img_000.jpg", "a/img_001.jpg",
                                           "b/img_000.jpg", "b/img_001.jpg"]
    assert sorted((p, r) for p, _, r in scan.failures) == [("a/sub", DENIED), ("c", DENIED)]

    summary = featcache.embed(data, tmp_path / "c.h5", backbone=mobilenet, progress=False)
    assert summary.embedded == 4 and summary.failed == 2
    [entry] = cache_info(tmp_path / "c.h5")["entries"]
    assert {(f["path"], f["reason"]) for f in entry["failures"]} == {("a/sub", DENIED),
                                                                      ("c", DENIED)}


def test_unlistable_data_folder_is_one_clear_error(tmp_path, monkeypatch):
    write_images(tmp_path / "data", {"a": 1, "b": 1})
    monkeypatch.setattr(os, "listdir", lambda *a: (_ for _ in ()).throw(
        PermissionError(13, "Permission denied", str(tmp_path / "data"))))
    with pytest.raises(FeatcacheError, match="cannot list data folder .*data: Permission denied"):
        scan_folder(tmp_path / "data", progress=False)


def test_images_in_data_folder_get_a_note(tmp_path, caplog):
    write_images(tmp_path, {"a": 1, "b": 1})
    Image.new("RGB", (8, 8)).save(tmp_path / "stray.png")
    (tmp_path / "README.txt").write_text("not an image, no note")
    with caplog.at_level(logging.WARNING, logger="featcache"):
        scan = scan_folder(tmp_path, progress=False)
    assert len(scan.notes) == 1 and "1 image(s) directly in" in scan.notes[0]
    assert "stray.png" in scan.notes[0] and "README" not in scan.notes[0]
    assert [r.getMessage() for r in caplog.records] == scan.notes
    write_images(tmp_path / "clean", {"a": 1, "b": 1})
    assert scan_folder(tmp_path / "clean", progress=False).notes == []


def test_non_utf8_name_is_a_failure_and_the_rest_embeds(tmp_path, mobilenet):
    data = tmp_path / "data"
    write_images(data, {"a": 2, "b": 2})
    buf = io.BytesIO()
    Image.new("RGB", (9, 9), "red").save(buf, format="PNG")
    fd = os.open(os.fsencode(data / "a") + b"/\xff\xfe.png", os.O_WRONLY | os.O_CREAT)
    os.write(fd, buf.getvalue())
    os.close(fd)
    cache = tmp_path / "c.h5"
    summary = featcache.embed(data, cache, backbone=mobilenet, progress=False)
    assert summary.embedded == 4 and summary.failed == 1
    [entry] = cache_info(cache)["entries"]
    assert [(f["path"], f["reason"]) for f in entry["failures"]] == [
        ("a/\\xff\\xfe.png", "file name is not valid UTF-8: rename it")]
    again = featcache.embed(data, cache, backbone=mobilenet, progress=False)
    assert (again.embedded, again.cached, again.failed) == (0, 4, 1)


def test_non_utf8_class_folder_is_one_clear_error(tmp_path):
    write_images(tmp_path, {"a": 1, "b": 1})
    os.mkdir(os.fsencode(tmp_path) + b"/\xe9t\xe9")
    with pytest.raises(FeatcacheError, match=r"'\\\\xe9t\\\\xe9' .* not valid UTF-8: rename it"):
        scan_folder(tmp_path, progress=False)


def _embed_pair(tmp_path, mobilenet, first: Image.Image, second: Image.Image, **save):
    data = tmp_path / "data"
    for name, im in (("a", first), ("b", second)):
        (data / name).mkdir(parents=True)
        im.save(data / name / "x.png", **save.get(name, {}))
    featcache.embed(data, tmp_path / "c.h5", backbone=mobilenet, progress=False)
    return featcache.load_features(tmp_path / "c.h5").X


def test_png_exif_orientation_applied(tmp_path, mobilenet):
    rng = np.random.default_rng(0)
    arr = np.asarray(Image.fromarray(rng.integers(0, 256, (4, 6, 3), np.uint8)).resize((60, 40)))
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers rotate 90 degrees clockwise
    sideways = Image.fromarray(arr)
    upright = sideways.transpose(Image.Transpose.ROTATE_270)
    X = _embed_pair(tmp_path, mobilenet, sideways, upright, a={"exif": exif.tobytes()})
    assert inspect_file(tmp_path / "data" / "a" / "x.png", "a/x.png")[0].use_pil
    np.testing.assert_allclose(X[0], X[1], rtol=1e-5, atol=1e-7)
    assert np.abs(X[0]).max() > 0


def bmp16(arr: np.ndarray) -> bytes:
    """An uncompressed 16-bit (RGB555) BMP of a uint8 RGB array."""
    h, w, _ = arr.shape
    v = arr.astype(np.uint16) >> 3
    px = (v[..., 0] << 10) | (v[..., 1] << 5) | v[..., 2]
    rows = [px[y].astype("<u2").tobytes() for y in range(h - 1, -1, -1)]
    rows = [r + b"\0" * (-len(r) % 4) for r in rows]
    pix = b"".join(rows)
    dib = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 16, 0, len(pix), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + len(pix), 0, 0, 54) + dib + pix


def test_16bit_bmp_decoded_through_pillow(tmp_path, mobilenet):
    arr = np.random.default_rng(1).integers(0, 256, (30, 20, 3), np.uint8)
    data = tmp_path / "data"
    write_images(data, {"a": 1, "b": 1})
    (data / "a" / "deep.bmp").write_bytes(bmp16(arr))
    f, bad = inspect_file(data / "a" / "deep.bmp", "a/deep.bmp")
    assert bad is None and f.use_pil
    pillow = np.asarray(Image.open(data / "a" / "deep.bmp").convert("RGB"))
    Image.fromarray(pillow).save(data / "b" / "same.png")
    s = featcache.embed(data, tmp_path / "c.h5", backbone=mobilenet, progress=False)
    assert s.embedded == 4 and s.failed == 0
    got = featcache.load_features(tmp_path / "c.h5")
    row = {p: x for p, x in zip(got.paths, got.X)}
    np.testing.assert_allclose(row["a/deep.bmp"], row["b/same.png"], rtol=1e-5, atol=1e-7)


def _decode_as_embed_does(path):
    f, bad = inspect_file(path, "a/x")
    assert bad is None
    h, w = Image.open(path).size[::-1]
    if h != w:
        return None
    [(images, _)] = list(image_dataset([str(path)], [f.use_pil], h, 1))
    return np.rint(images.numpy()[0]).astype(np.uint8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from([("BMP", "1"), ("BMP", "L"), ("BMP", "P"), ("BMP", "RGB"),
                             ("BMP", "RGBA"), ("BMP16", "RGB"), ("PNG", "L"), ("PNG", "P"),
                             ("PNG", "RGB"), ("GIF", "P"), ("TIFF", "RGB"), ("PPM", "RGB")]),
       side=st.integers(1, 24), seed=st.integers(0, 2**16))
def test_decoded_pixels_equal_pillows_for_any_bmp_png_gif(tmp_path, kind, side, seed):
    """Whatever decoder the scan picks, opaque images decode to exactly what Pillow reads."""
    fmt, mode = kind
    arr = np.random.default_rng(seed).integers(0, 256, (side, side, 3), np.uint8)
    path = tmp_path / "x.img"
    if fmt == "BMP16":
        path.write_bytes(bmp16(arr))
    else:
        Image.fromarray(arr).convert(mode).save(path, format=fmt)
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(_decode_as_embed_does(path), expected)


# --- backbones: fallbacks log what happened and catch only what they expect ---------------

def test_freeze_fallback_logs_and_other_errors_propagate(tmp_path, monkeypatch, caplog):
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants

    from featcache.embedding.backbones import load_hub_backbone

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, x):
            return tf.reduce_mean(x, axis=[1, 2]) * 2.0

    tf.saved_model.save(Tiny(), str(tmp_path / "tiny"))

    def cannot(*a, **k):
        raise ValueError("Cannot convert a resource op")
    monkeypatch.setattr(convert_to_constants, "convert_variables_to_constants_v2", cannot)
    with caplog.at_level(logging.INFO, logger="featcache.embedding.backbones"):
        bb = load_hub_backbone(str(tmp_path / "tiny"), image_size=4)
    assert "could not freeze" in caplog.text and "Cannot convert a resource op" in caplog.text
    x = np.full((1, 4, 4, 3), 51.0, np.float32)
    np.testing.assert_allclose(bb.fn(x).numpy(), [[0.4, 0.4, 0.4]], rtol=1e-6)

    def bug(*a, **k):
        raise RuntimeError("a bug, not an exotic graph")
    monkeypatch.setattr(convert_to_constants, "convert_variables_to_constants_v2", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        load_hub_backbone(str(tmp_path / "tiny"), image_size=4)


def test_imagenet_failure_that_is_not_network_is_not_called_offline(monkeypatch):
    from urllib.error import URLError

    import keras

    from featcache.embedding.backbones import get_backbone

    def corrupted(*a, **k):
        raise ValueError("Incomplete or corrupted file detected")
    monkeypatch.setattr(keras.applications, "MobileNetV2", corrupted)
    with pytest.raises(ValueError, match="corrupted") as info:
        get_backbone("mobilenet_v2", weights="imagenet")
    assert "while getting ImageNet weights for mobilenet_v2" in "".join(info.value.__notes__)

    def offline(*a, **k):
        try:
            raise URLError("[Errno -3] Temporary failure in name resolution")
        except URLError as e:
            raise Exception(f"download failed: {e}") from e  # keras.utils.get_file's bare Exception
    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    with pytest.raises(FeatcacheError, match="Offline.*weights=PATH"):
        get_backbone("mobilenet_v2", weights="imagenet")


def test_hub_errors_each_have_their_message(tmp_path, monkeypatch):
    from urllib.error import HTTPError, URLError

    import tensorflow_hub as hub

    from featcache.embedding.backbones import load_hub_backbone
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(FeatcacheError, match="not a readable SavedModel directory"):
        load_hub_backbone(str(tmp_path / "notamodel"))

    handle = "https://tfhub.dev/google/x/1"
    for exc, message in [(URLError("[Errno -2] Name or service not known"), "Offline"),
                         (HTTPError(handle, 404, "Not Found", {}, None), "no TF Hub module at"),
                         (ValueError("unsupported handle"), "could not load TF Hub module")]:
        monkeypatch.setattr(hub, "resolve", lambda h, exc=exc: (_ for _ in ()).throw(exc))
        with pytest.raises(FeatcacheError, match=message) as info:
            load_hub_backbone(handle)
        assert ("Offline" in str(info.value)) == (message == "Offline")
    monkeypatch.setattr(hub, "resolve", lambda h: (_ for _ in ()).throw(RuntimeError("bug")))
    with pytest.raises(RuntimeError, match="bug"):
        load_hub_backbone(handle)


def test_seed_is_part_of_the_spec_for_random_weights(mobilenet):
    from featcache.embedding.backbones import get_backbone
    assert mobilenet.spec.to_dict()["seed"] == 0
    other = get_backbone("mobilenet_v2", weights="none", seed=3)
    assert other.spec.to_dict()["seed"] == 3 and other.fingerprint != mobilenet.fingerprint


# --- CLI: flags, not Python names; notes surfaced ------------------------------------------

def test_cli_says_flags_and_surfaces_notes(tmp_path, mobilenet, monkeypatch):
    import featcache.embedding.run as embedding
    from featcache.embedding.backbones import get_backbone
    from featcache.cli import cli
    data = tmp_path / "data"
    write_images(data, {"a": 2, "b": 2})
    Image.new("RGB", (8, 8)).save(data / "stray.jpg")
    with pytest.raises(FeatcacheError, match="image_size=100"):
        get_backbone("mobilenet_v2", weights="none", image_size=100)
    r = CliRunner().invoke(cli, ["embed", str(data), "-o", str(tmp_path / "c.h5"),
                                 "--image-size", "100"])
    assert r.exit_code == 1 and "not --image-size 100" in r.output and "image_size=" not in r.output

    monkeypatch.setattr(embedding, "resolve_backbone", lambda *a, **k: lambda: mobilenet)
    r = CliRunner().invoke(cli, ["embed", str(data), "-o", str(tmp_path / "c.h5")])
    assert r.exit_code == 0, r.output
    assert "note: 1 image(s) directly in" in r.output and "stray.jpg" in r.output

    feats = featcache.load_features(tmp_path / "c.h5")
    featcache.save_features(tmp_path / "c.h5", feats.__class__(
        feats.X, feats.y, feats.paths, feats.class_names, feats.sha256, backbone="other",
        spec={"name": "other"}))
    r = CliRunner().invoke(cli, ["cv", str(tmp_path / "c.h5")])
    assert r.exit_code == 1 and "--backbone <key>" in r.output and "backbone=" not in r.output


def test_rows_under_an_unlistable_folder_are_unseen_not_gone(tmp_path, monkeypatch):
    write_images(tmp_path, {"a": 1, "b": 1, "c": 1})
    (tmp_path / "b" / "sub").mkdir()
    _deny(monkeypatch, tmp_path / "a", tmp_path / "b" / "sub")
    scan = scan_folder(tmp_path, progress=False)
    cached = {("a/x.jpg", "1"), ("a/deep/y.jpg", "2"), ("b/sub/z.jpg", "3"), ("b/subway.jpg", "4"),
              ("c/img_000.jpg", "5"), ("ab/w.jpg", "6")}
    assert scan.unlisted == ["a", "b/sub"]
    assert scan.unseen(cached) == {("a/x.jpg", "1"), ("a/deep/y.jpg", "2"), ("b/sub/z.jpg", "3")}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.05, 1), noise=st.binary(max_size=32),
       fmt=st.sampled_from(["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"]))
def test_corrupt_file_that_passes_the_scan_never_stops_the_stream(tmp_path, cut, noise, fmt):
    """A damaged file is decoded or dropped; the files around it always come through."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(buf, format=fmt)
    data = buf.getvalue()
    (tmp_path / "bad").write_bytes(data[: int(len(data) * cut)] + noise)
    Image.new("RGB", (16, 16), "red").save(tmp_path / "good.png")
    bad, _ = inspect_file(tmp_path / "bad", "a/bad")
    if bad is None:
        return  # the scan already recorded it as a failure
    paths = [str(tmp_path / "good.png"), bad.path, str(tmp_path / "good.png")]
    got = [int(i) for _, idx in image_dataset(paths, [False, bad.use_pil, True], 8, 2)
           for i in idx.numpy()]
    assert got in ([0, 1, 2], [0, 2])


def _move_exif_after_pixels(png: bytes) -> bytes:
    """The same PNG with its eXIf chunk moved after IDAT (allowed by PNG 1.2's extension)."""
    chunks, pos = [], 8
    while pos < len(png):
        length, = struct.unpack_from(">I", png, pos)
        chunks.append(png[pos:pos + length + 12])
        pos += length + 12
    exif = [c for c in chunks if c[4:8] == b"eXIf"]
    rest = [c for c in chunks if c[4:8] != b"eXIf"]
    return png[:8] + b"".join(rest[:-1] + exif + rest[-1:])


def test_png_exif_after_the_pixels_is_found(tmp_path):
    from featcache.embedding.decode import pil_rgb
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", exif=exif.tobytes())
    moved = _move_exif_after_pixels(buf.getvalue())
    assert moved != buf.getvalue() and moved.index(b"eXIf") > moved.index(b"IDAT")
    (tmp_path / "late.png").write_bytes(moved)
    f, bad = inspect_file(tmp_path / "late.png", "a/late.png")
    assert bad is None and f.use_pil
    rgb = pil_rgb(f.path)
    assert rgb.shape == (40, 20, 3) and rgb[:15].mean() > 200 and rgb[25:].mean() < 50


def test_reembed_keeps_rows_of_a_folder_that_became_unlistable(tmp_path, mobilenet, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "c.h5"
    write_images(data, {"a": 2, "b": 2})
    write_images(data / "a", {"sub": 2}, seed=1)
    featcache.embed(data, cache, backbone=mobilenet, progress=False)
    _deny(monkeypatch, data / "a" / "sub")
    summary = featcache.embed(data, cache, backbone=mobilenet, progress=False)
    assert summary.removed == 0 and summary.embedded == 0
    paths = set(featcache.load_features(cache).paths)
    assert {"a/sub/img_000.jpg", "a/sub/img_001.jpg"} <= paths and len(paths) == 6


def test_backbone_typo_is_rejected_before_the_scan(tmp_path, monkeypatch):
    import featcache.embedding.run as embedding
    write_images(tmp_path / "data", {"a": 1, "b": 1})

    def no_scan(*args, **kwargs):
        raise AssertionError("scanned before checking the backbone arguments")
    monkeypatch.setattr(embedding, "scan_folder", no_scan)
    for kwargs in ({"backbone": "mobilenet_v3"}, {"backbone": "mobilenet_v2", "image_size": 100},
                   {"backbone": "mobilenet_v2", "weights": str(tmp_path / "missing.h5")}):
        with pytest.raises(FeatcacheError):
            featcache.embed(tmp_path / "data", tmp_path / "c.h5", progress=False, **kwargs)


def test_info_tells_random_weight_entries_apart_by_seed(tmp_path):
    from featcache.embedding.backbones import get_backbone
    from featcache.cli import cli
    write_images(tmp_path / "data", {"a": 1, "b": 1})
    for seed in (0, 1):
        featcache.embed(tmp_path / "data", tmp_path / "c.h5", progress=False,
                        backbone=get_backbone("mobilenet_v2", weights="none", seed=seed))
    r = CliRunner().invoke(cli, ["info", str(tmp_path / "c.h5")])
    assert r.exit_code == 0, r.output
    assert "(weights none, seed 0," in r.output and "(weights none, seed 1," in r.output
