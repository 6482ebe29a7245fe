"""CLI commands for the embed stage: ``embed`` and ``info``."""
from __future__ import annotations

import click

from featcache.cli.app import cli


@cli.command()
@click.argument("data_dir", type=click.Path(path_type=str))
@click.option("-o", "--output", "cache", required=True, type=click.Path(path_type=str),
              help="HDF5 cache file to create or update.")
@click.option("--backbone", default="mobilenet_v2", show_default=True,
              help="mobilenet_v2, inception_v3, a TF Hub handle or a SavedModel directory.")
@click.option("--weights", default=None,
              help="imagenet (default), none (random, seeded) or a weights file. Keras backbones only.")
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--image-size", default=None, type=int, help="Input side for hub modules (default 224).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for --weights none.")
@click.option("--runtime", default="auto", show_default=True,
              help="auto, tensorflow or openvino: the engine of the forward pass (f32 features "
                   "from either share one cache entry).")
@click.option("--precision", default="f32", show_default=True,
              help="f32 or bf16 (OpenVINO on CPUs with bf16; its own cache entry).")
def embed(data_dir, cache, backbone, weights, batch_size, image_size, seed, runtime, precision):
    """Embed every image under DATA_DIR (one sub-folder per class) into a cache."""
    from featcache.embedding import embed as run
    summary = run(data_dir, cache, backbone=backbone, weights=weights, batch_size=batch_size,
                  image_size=image_size, seed=seed, runtime=runtime, precision=precision)
    click.echo(str(summary))
    if summary.failed:
        click.echo(f"{summary.failed} file(s) or folder(s) could not be embedded: "
                   f"`featcache info {cache}` lists why")


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@cli.command()
@click.argument("cache", type=click.Path(path_type=str))
def info(cache):
    """Print a cache's backbones, counts per class, failures and sizes."""
    from featcache.cache.read import NO_CHECKSUMS, cache_info
    report = cache_info(cache)
    if not report["exists"]:
        click.echo(f"{report['path']}: not written yet")
    else:
        n = len(report["entries"])
        click.echo(f"{report['path']}: schema {report['schema_version']}, {_mb(report['file_bytes'])}, "
                   f"{n} backbone entr{'y' if n == 1 else 'ies'}")
    for key, batches in report["interrupted"].items():
        click.echo(f"note: an interrupted embed run left {batches} batch(es) for {key}; "
                   "re-run the same `featcache embed` command to finish it")
    for e in report["entries"]:
        spec = e["spec"]
        extra = f", seed {spec['seed']}" if spec.get("seed") is not None else ""
        extra += f", precision {spec.get('precision', 'f32')}"
        extra += f", runtime {'+'.join(e['runtimes'])}" if e.get("runtimes") else ""
        click.echo(f"\n[{e['key']}] {spec.get('name')} (weights {spec.get('weights')}{extra}) "
                   f"{spec.get('input_size')}px -> {e['feature_dim']}-d, {e['rows']} rows, "
                   f"features {_mb(e['feature_bytes'])}")
        click.echo(f"  data: {e['data_dir']}")
        if not e["checksums"]:
            click.echo(f"  note: {NO_CHECKSUMS}")
        width = max(map(len, e["class_counts"]), default=0)
        for name, count in e["class_counts"].items():
            click.echo(f"  {name:<{width}}  {count}")
        if e["failures"]:
            click.echo(f"  failed ({len(e['failures'])}):")
            for fail in e["failures"]:
                click.echo(f"    {fail['path']}: {fail['reason']}")
