"""CLI commands for honest evaluation: ``audit`` and ``diagnose``.

Thin wrappers over :mod:`featcache.evaluate._audit` and :mod:`featcache.evaluate.diagnosis`.
"""
from __future__ import annotations

import click

from featcache.cli.app import cli
from featcache.errors import FeatcacheError
from featcache.files import check_writable


def _threshold(text):
    """``--threshold``: ``auto`` (from the data), ``default`` or a cosine similarity."""
    if text in (None, "auto", "default"):
        return text
    try:
        return float(text)
    except ValueError:
        raise FeatcacheError(f"--threshold takes 'auto', 'default' or a number in [-1, 1], "
                             f"got {text!r}") from None


def _audit_options(f):
    opts = [
        click.option("--backbone", default=None, help="Cache entry, when the cache holds several."),
        click.option("--threshold", default="auto", show_default=True, metavar="auto|default|T",
                     help="Near-duplicate cosine similarity: 'auto' picks it at the gap in the "
                          "nearest-neighbour similarities (falls back to the default 0.95).",),
        click.option("--validation-split", default=0.2, show_default=True, type=float,
                     help="The Keras validation_split to model."),
        click.option("--keras-seed", default=123, show_default=True, type=int,
                     help="The seed given to image_dataset_from_directory "
                          "(DEFAULT_KERAS_SEED in featcache.evaluate._audit)."),
        click.option("--folds", default=5, show_default=True, type=int,
                     help="Folds of featcache's stratified CV (the audit checks it for "
                          "leakage; diagnose also evaluates with it)."),
        click.option("--seed", default=0, show_default=True, type=int, help="CV split seed."),
        click.option("--memory-budget", default=None, metavar="SIZE",
                     help="Memory the features may take (4GB, 512MiB); larger caches stream "
                          "from the file. Default: half the available memory."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return click.argument("cache", type=click.Path(dir_okay=False))(f)


@cli.command()
@_audit_options
@click.option("--json", "json_out", default=None, type=click.Path(),
              help="Write every group, conflict and number to this JSON file.")
def audit(cache, backbone, threshold, validation_split, keras_seed, folds, seed, memory_budget,
          json_out):
    """Audit CACHE for duplicates, near-duplicates and leaky validation splits.

    Reports byte-identical files (and label conflicts), near-duplicate groups
    from the cosine similarity of the cached features, what Keras's
    validation_split and featcache's CV put on both sides of a cut, and the
    per-class counts.
    """
    from featcache.evaluate._audit import audit_cache, format_text
    check_writable(json_out, "--json")
    report = audit_cache(cache, backbone, threshold=_threshold(threshold),
                         validation_split=validation_split, keras_seed=keras_seed,
                         folds=folds, seed=seed, memory_budget=memory_budget)
    click.echo(format_text(report))
    if json_out:
        report.write_json(json_out)
        click.echo(f"\nJSON written to {json_out}")


@cli.command()
@_audit_options
@click.option("--head", default="logreg", show_default=True, help="logreg, svm or softmax.")
@click.option("--grid", default=None, help="Comma-separated regularisation values to sweep "
                                           "(default: the head's log grid).")
@click.option("--metric", default="accuracy", show_default=True,
              type=click.Choice(["accuracy", "balanced_accuracy", "f1_macro"]))
@click.option("--out", "out_dir", default="featcache-diagnosis", show_default=True,
              type=click.Path(), help="Folder for report.html, PNGs and JSON.")
@click.option("--augmented", is_flag=True,
              help="Also sweep with the cache's augmented views (embed --views K) and say "
                   "whether they close the train-validation gap.")
def diagnose(cache, backbone, threshold, validation_split, keras_seed, folds, seed, memory_budget,
             head, grid, metric, out_dir, augmented):
    """Why is my model overfitting? Evidence and a plain-language answer for CACHE.

    Runs the audit, a regularisation sweep, random vs grouped CV and a
    learning curve for one head, then writes report.html (self-contained),
    PNG plots and diagnosis.json to --out.
    """
    from featcache.evaluate.diagnosis import diagnose_cache
    from featcache.report.diagnosis import write_diagnosis
    grid_values = None
    if grid:
        try:
            grid_values = [float(v) for v in grid.split(",") if v.strip()]
        except ValueError:
            grid_values = []
        if not grid_values or not all(0 < v < float("inf") for v in grid_values):
            raise FeatcacheError(f"--grid takes comma-separated positive numbers, got {grid!r}")
    check_writable(out_dir, "--out", folder=True)
    diag = diagnose_cache(cache, backbone, head=head, folds=folds, seed=seed,
                          memory_budget=memory_budget,
                          threshold=_threshold(threshold), validation_split=validation_split,
                          keras_seed=keras_seed, grid=grid_values, metric=metric, progress=None,
                          augmented=augmented)
    files = write_diagnosis(diag, out_dir)
    click.echo("Why is the model overfitting?")
    for sentence in diag.conclusion:
        click.echo(f"  - {sentence}")
    click.echo(f"\nReport: {files.html}\nPlots:  "
               + ", ".join(str(p) for p in files.plots.values()))
