"""CLI commands for evaluation: ``cv``, ``sweep`` and ``curve``.

Thin wrappers over :mod:`featcache.evaluate` and :mod:`featcache.report`.
"""
from __future__ import annotations

from pathlib import Path

import click

from featcache.cli.app import cli
from featcache.errors import FeatcacheError
from featcache.files import check_writable

_METRICS = click.Choice(["accuracy", "balanced_accuracy", "f1_macro"])


def _split_options(f):
    """Options shared by cv, sweep and curve (applied bottom-up)."""
    opts = [
        click.option("--folds", default=5, show_default=True, type=int, help="Number of folds."),
        click.option("--repeats", default=1, show_default=True, type=int,
                     help="Repeat k-fold with different shuffles."),
        click.option("--group-by", default=None, metavar="REGEX|folder|near-duplicates",
                     help="Keep groups inside one fold: a regex on the relative path (first "
                          "capture group is the key), 'folder' (the class's sub-folder), or "
                          "'near-duplicates' (groups found from feature similarity)."),
        click.option("--seed", default=0, show_default=True, type=int, help="Split seed."),
        click.option("--metric", default="accuracy", show_default=True, type=_METRICS,
                     help="Metric that ranks heads and settings."),
        click.option("--backbone", default=None, help="Cache entry, when the cache holds several."),
        click.option("--n-jobs", "n_jobs", default=-1, show_default="-1, every core", type=int,
                     help="Threads running folds, one BLAS thread each; results equal --n-jobs 1."),
        click.option("--json", "json_out", default=None, type=click.Path(),
                     help="Write the full result, with per-fold numbers, to this JSON file."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return click.argument("cache", type=click.Path(dir_okay=False))(f)


def _tuning_options(f):
    """``--nested``, ``--inner-folds`` and ``--class-weight`` for cv and sweep."""
    f = click.option("--class-weight", "class_weight", default=None,
                     type=click.Choice(["balanced"]),
                     help="Weight classes inversely to their frequency in each training fold.")(f)
    f = click.option("--inner-folds", default=3, show_default=True, type=int,
                     help="Folds of the inner CV of --nested.")(f)
    return click.option("--nested", is_flag=True,
                        help="Choose C per head inside each outer fold (inner CV on its training "
                             "rows only) and report that unbiased score next to the optimistic "
                             "best-of-sweep score.")(f)


def augmented_option(both=False):
    """``--augmented``: train on clean rows plus cached views (``--augmented both`` for sweep)."""
    text = ("Train each fold on its images plus their cached augmented views (cache made with "
            "embed --views K); validate on clean images only.")
    if not both:
        return click.option("--augmented", is_flag=True, help=text)
    return click.option("--augmented", default=None, is_flag=False, flag_value="on",
                        type=click.Choice(["on", "both"]), metavar="[both]",
                        help=text + " '--augmented both' sweeps without and with views on the "
                                    "same splits and tests the difference.")


def augmented_value(value):
    """The API's ``augmented=`` for a ``--augmented`` value (flag, ``on`` or ``both``)."""
    return "both" if value == "both" else bool(value)


def _views_note(features, augmented):
    """Say how views were used, so a printed score is never mistaken for a clean-only one."""
    if augmented:
        k = features.views.shape[1]
        click.echo(f"note: each training fold used its images plus their {k} augmented views"
                   + (" (and, separately, without them)" if augmented == "both" else "")
                   + "; validation and the train score use clean images only.")


def _no_nested_augmented(nested, augmented):
    if nested and augmented:
        raise FeatcacheError("--nested does not take --augmented yet: run them separately")


def _memory_options(f):
    """``--streaming`` and ``--memory-budget`` for cv and sweep."""
    f = click.option("--memory-budget", default=None, metavar="SIZE",
                     help="Memory the features may take (4GB, 512MiB); when a run would need "
                          "more, softmax trains from the file. Default: half the available "
                          "memory.")(f)
    return click.option("--streaming/--no-streaming", default=None,
                        help="Stream the features from the file (softmax only) instead of "
                             "loading them. Default: only when they do not fit "
                             "--memory-budget.")(f)


def _weights(class_weight):
    """Head parameters for --class-weight (none when not given)."""
    return {"class_weight": class_weight} if class_weight else {}


def _load(cache, backbone, augmented=False, heads=None, streaming=False, memory_budget=None):
    from featcache.evaluate.streaming import open_features
    return open_features(cache, backbone, heads=heads, streaming=streaming,
                         memory_budget=memory_budget, views=bool(augmented))


def _check_outputs(json_out, plots_dir=None):
    """Fail at once, before any computing, when an output path cannot be written."""
    check_writable(json_out, "--json")
    check_writable(plots_dir, "--plots", folder=True)


def _write_json(path, command, features, cache, payload):
    from featcache.files import write_json
    write_json(path, {"command": command, "cache": str(cache), "backbone": features.backbone,
                      **payload})
    click.echo(f"JSON written to {path}")


def _floats(text, option):
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FeatcacheError(f"{option} takes comma-separated numbers, got {text!r}") from None


def _grids(values, heads: str):
    """``--grid`` values: ``"0.1,1"`` for every head or ``"logreg=0.1,1"`` for one of ``heads``."""
    if not values:
        return None
    per_head, common = {}, None
    swept = [h.strip() for h in heads.split(",") if h.strip()]
    for v in values:
        name, sep, nums = v.partition("=")
        if sep:
            if name.strip() not in swept:
                raise FeatcacheError(f"--grid {v!r} names head {name.strip()!r}, which is not "
                                     f"among --heads ({', '.join(swept)})")
            per_head[name.strip()] = _floats(nums, "--grid")
        else:
            common = _floats(v, "--grid")
    if per_head and common is not None:
        raise FeatcacheError("--grid: give either one grid for all heads or NAME=... per head")
    return per_head or common


@cli.command()
@click.option("--head", default="logreg", show_default=True,
              help="logreg, svm or softmax; comma-separate several for a paired comparison.")
@click.option("--C", "--reg", "reg", default=None, type=float,
              help="Regularisation strength: C for logreg/svm, l2 weight decay for softmax.")
@augmented_option()
@_memory_options
@_tuning_options
@_split_options
def cv(cache, head, reg, folds, repeats, group_by, seed, metric, backbone, n_jobs, json_out,
       nested, inner_folds, class_weight, augmented, streaming, memory_budget):
    """Cross-validate heads on CACHE: per-fold scores, mean ± std and 95% intervals.

    With --group-by near-duplicates the score under random splits and under
    grouped splits is shown side by side, with which one to believe. With
    --nested, C is chosen inside each outer fold from the head's default grid.
    """
    from featcache.evaluate import compare_random_grouped, cross_validate_heads, nested_cv
    from featcache.report.tables import format_comparison, format_cv
    if nested and reg is not None:
        raise FeatcacheError("--C and --nested exclude each other: --nested chooses C inside "
                             "each outer fold")
    _no_nested_augmented(nested, augmented)
    _check_outputs(json_out)
    features = _load(cache, backbone, augmented, head, streaming, memory_budget)
    kw = dict(folds=folds, repeats=repeats, seed=seed, metric=metric, progress=None,
              head_params={"reg": reg, **_weights(class_weight)}, n_jobs=n_jobs)
    if nested:
        res = nested_cv(features, head, group_by=group_by, inner_folds=inner_folds, **kw)
        click.echo(res.summary())
    elif group_by == "near-duplicates":
        res = compare_random_grouped(features, head, group_by=group_by, augmented=augmented, **kw)
        click.echo(format_cv(res.grouped))
        click.echo("")
        click.echo(format_comparison(res))
    else:
        res = cross_validate_heads(features, head, group_by=group_by, augmented=augmented, **kw)
        click.echo(format_cv(res))
    _views_note(features, augmented)
    if json_out:
        _write_json(json_out, "cv", features, cache, {"augmented": augmented, **res.to_dict()})


def _grouping_note(features, folds, repeats, group_by, seed, plan):
    """One line on what grouped splits avoid, for sweep and curve."""
    if group_by != "near-duplicates":
        return None
    from featcache.evaluate import make_splits, straddling_groups
    random = make_splits(features, folds, repeats, None, seed)
    n = straddling_groups(random.splits, plan.groups)
    return (f"note: grouped by near-duplicates; random splits would put {n} near-duplicate "
            "groups on both sides of a split" + (" and overstate the score: believe these "
                                                 "grouped numbers." if n else "."))


@cli.command()
@click.option("--heads", default="logreg,svm,softmax", show_default=True,
              help="Comma-separated heads to sweep on the same splits.")
@click.option("--grid", multiple=True,
              help="Comma-separated values for all heads, or HEAD=v1,v2,... per head "
                   "(repeatable). Default: each head's own 10-value log grid.")
@click.option("--plots", "plots_dir", default=None, type=click.Path(),
              help="Directory for regularisation_path.png and confusion_matrix.png.")
@click.option("--param", default=None, metavar="NAME",
              help="Sweep this parameter instead of each head's C/l2, e.g. --heads softmax "
                   "--param mixup_alpha (or feature_noise, dropout with --grid).")
@augmented_option(both=True)
@_memory_options
@_tuning_options
@_split_options
def sweep(cache, heads, grid, plots_dir, folds, repeats, group_by, seed, metric, backbone,
          n_jobs, json_out, nested, inner_folds, class_weight, augmented, param,
          streaming, memory_budget):
    """Sweep each head's regularisation strength on CACHE, all heads on the same splits.

    With --nested, each outer fold also re-runs the sweep on its training rows
    only, giving an unbiased score of "sweep, then train" next to the best of the sweep.
    """
    from featcache.evaluate import nested_cv
    from featcache.evaluate import sweep as run_sweep
    from featcache.report.tables import format_sweep
    grids = _grids(grid, heads)
    _no_nested_augmented(nested, augmented)
    _check_outputs(json_out, plots_dir)
    features = _load(cache, backbone, augmented, heads, streaming, memory_budget)
    kw = dict(grids=grids, folds=folds, repeats=repeats, group_by=group_by, seed=seed,
              metric=metric, progress=None, head_params=_weights(class_weight) or None,
              n_jobs=n_jobs, param=param)
    nest = nested_cv(features, heads, inner_folds=inner_folds, **kw) if nested else None
    res = (nest.sweep if nested else
           run_sweep(features, heads, augmented=augmented_value(augmented), **kw))
    click.echo(format_sweep(res))
    _views_note(features, augmented_value(augmented))
    if nest:
        click.echo("\n" + nest.summary())
    note = _grouping_note(features, folds, repeats, group_by, seed, res.plan)
    if note:
        click.echo(note)
    if plots_dir:
        from featcache.report.plots import plot_confusion_matrix, plot_regularisation_path
        best = res.heads[res.best]
        p1 = plot_regularisation_path(res, Path(plots_dir) / "regularisation_path.png")
        p2 = plot_confusion_matrix(res.best_confusion(), res.class_names,
                                   Path(plots_dir) / "confusion_matrix.png",
                                   f"{best.name}, {best.param}={best.best_value:.3g}\n"
                                   "out-of-fold counts, summed over folds")
        click.echo(f"plots written: {p1}, {p2}")
    if json_out:
        extra = {"nested": nest.to_dict()} if nest else {}
        _write_json(json_out, "sweep", features, cache,
                    {"augmented": augmented_value(augmented), **res.to_dict(), **extra})


@cli.command()
@click.option("--head", default="logreg", show_default=True, help="logreg, svm or softmax.")
@click.option("--C", "--reg", "reg", default=None, type=float,
              help="Regularisation strength: C for logreg/svm, l2 weight decay for softmax.")
@click.option("--fractions", default="0.1,0.2,0.35,0.5,0.75,1", show_default=True,
              help="Comma-separated fractions of each training fold to train on.")
@click.option("--plots", "plots_dir", default=None, type=click.Path(),
              help="Directory for learning_curve.png.")
@augmented_option()
@_split_options
def curve(cache, head, reg, fractions, plots_dir, folds, repeats, group_by, seed, metric,
          backbone, n_jobs, json_out, augmented):
    """Learning curve on CACHE: train and validation score vs training-set size.

    A validation curve still rising at the right means more data should help; a
    flat one with a large train-validation gap calls for more regularisation.
    """
    from featcache.evaluate import learning_curve
    from featcache.report.tables import format_curve
    fraction_values = _floats(fractions, "--fractions")
    _check_outputs(json_out, plots_dir)
    features = _load(cache, backbone, augmented)
    res = learning_curve(features, head, fractions=fraction_values,
                         folds=folds, repeats=repeats, group_by=group_by, seed=seed,
                         head_params={"reg": reg}, metric=metric, progress=None,
                         n_jobs=n_jobs, augmented=augmented)
    click.echo(format_curve(res))
    _views_note(features, augmented)
    note = _grouping_note(features, folds, repeats, group_by, seed, res.plan)
    if note:
        click.echo(note)
    if plots_dir:
        from featcache.report.plots import plot_learning_curve
        png = plot_learning_curve(res, Path(plots_dir) / "learning_curve.png")
        click.echo(f"plot written: {png}")
    if json_out:
        _write_json(json_out, "curve", features, cache, {"augmented": augmented, **res.to_dict()})
