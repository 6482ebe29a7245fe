"""Files of a held-out evaluation: confusion matrix, reliability diagram, JSON and HTML.

:func:`write_heldout_report` writes ``confusion_matrix.png``, ``reliability.png``,
``report.json`` and ``report.html``. The HTML page embeds both PNGs and a
small JPEG thumbnail of every misclassified image (up to ``MAX_THUMBNAILS``)
as ``data:`` URIs, so it loads nothing from anywhere.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from featcache.files import write_json, write_text
from featcache.report.html import Section, render_html
from featcache.report.plots import plot_confusion_matrix, save_figure

MAX_THUMBNAILS = 500
"""Misclassified images shown as thumbnails; the rest are counted, and listed in report.json."""

THUMB_PX = 96

_GALLERY_CSS = (".gallery{display:flex;flex-wrap:wrap;gap:.6em}"
                ".gallery figure{margin:0;width:128px;font-size:.75em;text-align:center}"
                ".gallery img{max-width:96px;max-height:96px;border:1px solid #ddd}"
                ".gallery .path{color:#666;word-break:break-all}")


def write_heldout_report(report, out_dir) -> list:
    """Write the held-out report files into ``out_dir`` (created if needed).

    Parameters
    ----------
    report : featcache.evaluate.heldout.HeldoutReport
    out_dir : str or Path

    Returns
    -------
    list of Path: confusion_matrix.png, reliability.png, report.json, report.html.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cm_png = plot_confusion_matrix(report.confusion, report.class_names,
                                   out / "confusion_matrix.png",
                                   f"Held-out test set: counts of {report.n} images")
    rel_png = plot_reliability(report, out / "reliability.png")
    js = write_json(out / "report.json", report.to_dict())
    page = out / "report.html"
    write_text(page, render_report_html(report, cm_png, rel_png))
    return [cm_png, rel_png, js, page]


def plot_reliability(report, path) -> Path:
    """Reliability diagram: accuracy against mean confidence per bin, with bin counts."""
    rel = report.reliability
    lo, hi = np.asarray(rel["bin_low"]), np.asarray(rel["bin_high"])
    acc = np.nan_to_num(np.asarray(rel["accuracy"], dtype=float))
    conf = np.asarray(rel["confidence"], dtype=float)
    count = np.asarray(rel["count"])
    fig = Figure(figsize=(5, 5.4), layout="constrained")
    ax, bx = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    ax.bar(lo, acc, width=hi - lo, align="edge", color="tab:blue", edgecolor="white",
           label="accuracy in bin")
    filled = count > 0
    ax.bar(lo[filled], (conf - acc)[filled], bottom=acc[filled], width=(hi - lo)[filled],
           align="edge", color="tab:red", alpha=0.35, edgecolor="tab:red",
           label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"Reliability diagram; ECE {report.ece:.4f} ({len(lo)} equal-width bins)",
                 fontsize=9)
    bx.bar(lo, count, width=hi - lo, align="edge", color="tab:grey", edgecolor="white")
    bx.set_xlim(0, 1)
    bx.set_xlabel("confidence (max predicted probability)")
    bx.set_ylabel("images")
    return save_figure(fig, path)


def render_report_html(report, confusion_png, reliability_png) -> str:
    """The self-contained HTML page of a held-out report."""
    names = ("accuracy", "balanced accuracy", "macro-F1")
    rows = [[label, f"{v[0]:.3f}", f"[{v[1]:.3f}, {v[2]:.3f}]"]
            for label, v in zip(names, (report.accuracy, report.balanced_accuracy,
                                        report.f1_macro))]
    per = [[c, "undefined (no test image)" if not np.isfinite(r) else f"{r:.3f}", int(s)]
           for c, r, s in zip(report.class_names, report.recall, report.support)]
    sections = [
        Section("Metrics", report.notes(), [(["metric", "value", "95% CI"], rows),
                                            (["class", "recall", "support"], per)],
                [confusion_png]),
        Section("Calibration", [f"Expected calibration error: {report.ece:.4f}. The max "
                                "predicted probability is binned into equal-width bins; ECE "
                                "is the image-weighted mean gap between accuracy and mean "
                                "confidence in each bin."], [], [reliability_png]),
    ]
    acc = report.accuracy
    conclusion = [f"Accuracy on {report.n} held-out images: {acc[0]:.3f} "
                  f"(95% CI {acc[1]:.3f} to {acc[2]:.3f}); {len(report.misclassified)} "
                  "misclassified.",
                  f"Balanced accuracy {report.balanced_accuracy[0]:.3f}, macro-F1 "
                  f"{report.f1_macro[0]:.3f}, expected calibration error {report.ece:.3f}."]
    return render_html("Held-out evaluation", conclusion, sections,
                       f"{len(report.class_names)} classes, {report.n} test images",
                       extra_html=misclassified_html(report.misclassified))


def misclassified_html(misclassified, limit: int = MAX_THUMBNAILS) -> str:
    """A section of thumbnails of the misclassified images, most confident first."""
    shown = misclassified[:limit]
    figs = "".join(_figure(m) for m in shown)
    note = (f"<p class=\"note\">Showing the {limit} most confident of {len(misclassified)} "
            "misclassified images; report.json lists them all.</p>"
            if len(misclassified) > limit else "")
    if not misclassified:
        note = "<p class=\"note\">No misclassified images.</p>"
    return (f"<style>{_GALLERY_CSS}</style><h2>Misclassified images "
            f"({len(misclassified)})</h2>{note}<div class=\"gallery\">{figs}</div>")


def _figure(m) -> str:
    uri, why = thumbnail_uri(m.path)
    img = (f"<img alt=\"{html.escape(Path(m.path).name)}\" src=\"{uri}\">" if uri
           else f"<div>(no thumbnail: {html.escape(why)})</div>")
    return (f"<figure>{img}<figcaption>true: <b>{html.escape(m.true)}</b><br>"
            f"predicted: <b>{html.escape(m.predicted)}</b> ({m.prob:.2f})<br>"
            f"<span class=\"path\" title=\"{html.escape(m.path)}\">{html.escape(_short(m.path))}"
            "</span></figcaption></figure>")


def _short(path) -> str:
    """The last two path components (class folder and file name)."""
    return "/".join(Path(path).parts[-2:])


def thumbnail_uri(path, size: int = THUMB_PX):
    """``(data URI, None)`` of a small JPEG of the image, or ``(None, reason)``."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), None
