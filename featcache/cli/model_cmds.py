"""CLI commands for models: ``train``, ``export-check``, ``predict`` and ``evaluate``."""
from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

import click

from featcache.cli.app import cli
from featcache.errors import FeatcacheError
from featcache.files import check_writable, write_text

_METRICS = click.Choice(["accuracy", "balanced_accuracy", "f1_macro"])


def _reg(text: str):
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise FeatcacheError(f"--C takes a positive number or 'auto', got {text!r}")
    return value


def _grid(text):
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FeatcacheError(f"--grid takes comma-separated numbers, got {text!r}") from None


@cli.command()
@click.argument("cache", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False),
              help="MODEL_DIR to create.")
@click.option("--head", default="logreg", show_default=True,
              type=click.Choice(["logreg", "svm", "softmax"]))
@click.option("--C", "--reg", "reg", default="auto", show_default=True,
              help="C for logreg/svm, l2 for softmax, or 'auto' to choose it by CV (as sweep).")
@click.option("--grid", default=None, help="Comma-separated values tried by --C auto.")
@click.option("--folds", default=5, show_default=True, type=int)
@click.option("--group-by", default=None, metavar="REGEX|folder|near-duplicates",
              help="Grouping of the CV splits, as for sweep.")
@click.option("--seed", default=0, show_default=True, type=int, help="Split and head seed.")
@click.option("--metric", default="accuracy", show_default=True, type=_METRICS)
@click.option("--class-weight", default=None, type=click.Choice(["balanced"]))
@click.option("--nested", is_flag=True, help="Also estimate the whole tuning by nested CV.")
@click.option("--backbone", default=None, help="Cache entry, when the cache holds several.")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Original images for the parity check (default: the folder embedded).")
@click.option("--sample", default=64, show_default=True, type=int, help="Parity sample size.")
@click.option("--tflite", is_flag=True, help="Also write model.tflite.")
@click.option("--quantize", multiple=True, type=click.Choice(["dynamic", "float16"]),
              help="Extra quantized TFLite variants (repeatable; implies --tflite).")
@click.option("--force", is_flag=True, help="Replace an existing MODEL_DIR.")
@click.option("--augmented", is_flag=True,
              help="Fit (and choose C) on every image plus its cached augmented views.")
def train(cache, out, head, reg, grid, folds, group_by, seed, metric, class_weight, nested,
          backbone, data_dir, sample, tflite, quantize, force, augmented):
    """Train a head on every row of CACHE and export it with its backbone to MODEL_DIR."""
    from featcache.model.export import check_cache_exportable, check_output, export_model
    from featcache.model._train import train as run
    check_output(out, force)  # before any work
    check_cache_exportable(cache, backbone)  # fast-decode and bf16 entries: before fitting
    res = run(cache, head, _reg(reg), backbone=backbone, grid=_grid(grid), folds=folds,
              group_by=group_by, seed=seed, metric=metric, class_weight=class_weight,
              nested=nested, progress=None, augmented=augmented)
    click.echo(f"{head}: {res.choice}")
    with warnings.catch_warnings():  # a refused TFLite variant is printed below, once
        warnings.filterwarnings("ignore", message="TFLite variant", category=UserWarning)
        meta = export_model(res, out, cache=cache, data_dir=data_dir, force=force,
                            tflite=tflite or bool(quantize), quantize=quantize, sample=sample)
    par = meta["parity"]["saved_model"]
    click.echo(f"parity (SavedModel vs cache, {par['n']} images): max |Δp| "
               f"{par['max_abs_diff']:.1e}, top-1 agreement {par['agreement']:.0%}")
    for q, fig in meta["tflite"].items():
        if fig.get("refused"):
            click.echo(f"warning: {fig['refused']}", err=True)
            continue
        click.echo(f"TFLite {q}: {fig['file']} {fig['bytes'] / 2**20:.1f} MiB, max |Δp| "
                   f"{fig['max_abs_diff']:.1e}, top-1 agreement {fig['agreement']:.1%}")
    click.echo(f"model written to {out}")


@cli.command("export-check")
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--cache", default=None, type=click.Path(dir_okay=False),
              help="Compare with this cache's features (fresh sample) instead of the recorded one.")
@click.option("--sample", default=64, show_default=True, type=int)
def export_check(model_dir, data_dir, cache, sample):
    """Re-run MODEL_DIR's parity check on the original images in DATA_DIR."""
    from featcache.model.check import check_export
    click.echo(f"parity OK: {check_export(model_dir, data_dir, cache=cache, sample=sample)}")


def _csv(rows, top_k) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "predicted", "probability"]
               + [f"{kind}_{i + 1}" for i in range(top_k) for kind in ("label", "prob")] + ["error"])
    for r in rows:
        top = [v for t in r["top_k"] for v in (t["label"], f"{t['probability']:.6f}")]
        prob = "" if r["probability"] is None else f"{r['probability']:.6f}"
        w.writerow([r["path"], r["predicted"] or "", prob]
                   + top + [""] * (2 * top_k - len(top)) + [r["error"] or ""])
    return buf.getvalue()


@cli.command()
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.argument("paths", nargs=-1, required=True)
@click.option("--top-k", default=3, show_default=True, type=int)
@click.option("--csv", "csv_out", default=None, type=click.Path(dir_okay=False))
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False))
@click.option("--batch-size", default=64, show_default=True, type=int)
def predict(model_dir, paths, top_k, csv_out, json_out, batch_size):
    """Classify image files, folders (recursive) or .txt lists of paths with MODEL_DIR."""
    from featcache.model.predict import load_model
    check_writable(csv_out, "--csv")
    check_writable(json_out, "--json")
    rows = load_model(model_dir).predict(list(paths), top_k=top_k, batch_size=batch_size)
    if csv_out:
        write_text(csv_out, _csv(rows, top_k))
    if json_out:
        write_text(json_out, json.dumps(rows, indent=1))
    bad = [r for r in rows if r["error"]]
    if not (csv_out or json_out):
        for r in rows:
            if not r["error"]:
                top = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top_k"])
                click.echo(f"{r['path']}\t{r['predicted']}\t{top}")
    for r in bad:
        click.echo(f"skipped {r['path']}: {r['error']}", err=True)
    click.echo(f"{len(rows) - len(bad)} image(s) classified, {len(bad)} skipped"
               + "".join(f"; written to {p}" for p in (csv_out, json_out) if p), err=True)


@cli.command()
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.argument("test_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Folder for confusion/reliability PNGs, report.json and report.html.")
@click.option("--force", is_flag=True, help="Write into an existing --out folder.")
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap seed.")
def evaluate(model_dir, test_dir, out_dir, force, batch_size, seed):
    """Held-out evaluation of MODEL_DIR on TEST_DIR (one sub-folder per class)."""
    from featcache.model.heldout import evaluate_model
    out = Path(out_dir) if out_dir else None
    if out and out.is_dir() and any(out.iterdir()) and not force:
        raise FeatcacheError(f"--out {out_dir} already exists: pass --force to write into it")
    check_writable(out, "--out", folder=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        report, files = evaluate_model(model_dir, test_dir, out_dir, batch_size=batch_size,
                                       seed=seed)
    for w in caught:
        if "featcache" in str(w.filename):  # ours; library noise stays quiet
            click.echo(f"warning: {w.message}", err=True)
    click.echo(report.summary())
    if files:
        click.echo("report written: " + ", ".join(str(f) for f in files))
