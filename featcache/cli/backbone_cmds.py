"""CLI commands about backbones: ``backbones`` (the registry) and ``compare`` (which one to use)."""
from __future__ import annotations

from pathlib import Path

import click

from featcache.cli.app import cli


@cli.command()
def backbones():
    """List the named backbones: input size, feature dim, and whether ImageNet weights are cached.

    Weights are looked for where Keras downloads them ($KERAS_HOME/models, by
    default ~/.keras/models); a backbone without them needs network access for
    --weights imagenet, or a local file with --weights PATH.
    """
    from featcache.embedding.registry import keras_models_dir, list_backbones
    from featcache.report.tables import render
    rows = [[b["name"], b["keras"], f"{b['input_size']} px", b["feature_dim"], b["preprocessing"],
             "yes" if b["weights_cached"] else "no"] for b in list_backbones()]
    click.echo(render(["backbone", "keras.applications", "input", "dim", "preprocessing",
                       "imagenet weights cached"], rows))
    click.echo(f"weights cache: {keras_models_dir()}")


@cli.command()
@click.argument("cache", type=click.Path(dir_okay=False))
@click.option("--head", default="logreg", show_default=True, help="logreg, svm or softmax.")
@click.option("--backbones", "backbones", default="all", show_default=True, metavar="all|K1,K2,...",
              help="Entries to compare: entry keys or backbone names, comma-separated.")
@click.option("--folds", default=5, show_default=True, type=int, help="Outer folds.")
@click.option("--inner-folds", default=3, show_default=True, type=int,
              help="Folds of the inner CV that chooses C per backbone.")
@click.option("--repeats", default=1, show_default=True, type=int)
@click.option("--group-by", default=None, metavar="REGEX|folder|near-duplicates",
              help="Keep groups inside one fold (near-duplicates: found in the first backbone).")
@click.option("--seed", default=0, show_default=True, type=int, help="Split seed.")
@click.option("--metric", default="accuracy", show_default=True,
              type=click.Choice(["accuracy", "balanced_accuracy", "f1_macro"]))
@click.option("--json", "json_out", default=None, type=click.Path(),
              help="Write the comparison, with per-fold scores, to this JSON file.")
@click.option("--plots", "plots_dir", default=None, type=click.Path(),
              help="Directory for backbone_comparison.png.")
def compare(cache, head, backbones, folds, inner_folds, repeats, group_by, seed, metric,
            json_out, plots_dir):
    """Compare the backbone entries of CACHE (same images, other backbones) on the same splits.

    C is tuned per backbone by nested CV, so no backbone gains from the choice;
    the best backbone is tested against each other one (corrected t-test).
    """
    from featcache.evaluate.compare import compare_backbones
    from featcache.files import write_json
    from featcache.report.compare import format_backbone_comparison, plot_backbone_comparison
    from featcache.files import check_writable
    check_writable(json_out, "--json")
    check_writable(plots_dir, "--plots", folder=True)
    res = compare_backbones(cache, head, backbones, folds=folds, inner_folds=inner_folds,
                            repeats=repeats, group_by=group_by, seed=seed, metric=metric)
    click.echo(format_backbone_comparison(res))
    if plots_dir:
        png = plot_backbone_comparison(res, Path(plots_dir) / "backbone_comparison.png")
        click.echo(f"plot written: {png}")
    if json_out:
        write_json(json_out, {"command": "compare", **res.to_dict()})
        click.echo(f"JSON written to {json_out}")
