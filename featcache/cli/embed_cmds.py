"""CLI commands for the embed stage: ``embed`` and ``info``."""
from __future__ import annotations

import click

from featcache.cli.app import cli


@cli.command()
@click.argument("data_dir", type=click.Path(path_type=str))
@click.option("-o", "--output", "cache", required=True, type=click.Path(path_type=str),
              help="HDF5 cache file to create or update.")
@click.option("--backbone", default="mobilenet_v2", show_default=True,
              help="A name `featcache backbones` lists, a TF Hub handle or a SavedModel directory.")
@click.option("--weights", default=None,
              help="imagenet (default), none (random, seeded) or a weights file. Keras backbones only.")
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--image-size", default=None, type=int, help="Input side for hub modules (default 224).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed for --weights none and for the augmented views.")
@click.option("--views", default=None, type=int,
              help="Also embed K seeded augmented views of every image.")
@click.option("--augment", default=None,
              help="Augmentation of the views, e.g. flip,crop=0.8,rotate=10,color=0.2,blur "
                   "(default flip,crop=0.8,color=0.2).")
@click.option("--dtype", default=None,
              help="Stored precision: float32 (default, or the entry's own) or float16 (half the size).")
@click.option("--shard", default=None, metavar="i/N",
              help="Embed only shard i of N into CACHE.shards/; `featcache merge` joins them.")
@click.option("--ray", "address", default=None, is_flag=False, flag_value="auto",
              metavar="[auto|ADDRESS]", help="Run one shard per worker on Ray, then merge.")
@click.option("--workers", default=None, type=int, help="Ray workers (default: the cluster's CPUs).")
@click.option("--gpus-per-worker", default=0.0, show_default=True, type=float,
              help="GPUs per Ray worker; each sees its own via CUDA_VISIBLE_DEVICES.")
@click.option("--runtime", default="auto", show_default=True,
              help="auto, tensorflow or openvino: the engine of the forward pass (f32 features "
                   "from either share one cache entry).")
@click.option("--precision", default="f32", show_default=True,
              help="f32 or bf16 (OpenVINO on CPUs with bf16; its own cache entry).")
@click.option("--fast-decode", is_flag=True,
              help="Decode JPEGs at a reduced DCT scale (never below the input size) before the "
                   "resize: faster, but breaks exact parity with Keras (features differ "
                   "slightly); its own cache entry, not exportable.")
def embed(data_dir, cache, backbone, weights, batch_size, image_size, seed, views, augment, dtype,
          shard, address, workers, gpus_per_worker, runtime, precision, fast_decode):
    """Embed every image under DATA_DIR (one sub-folder per class) into a cache."""
    from featcache.errors import FeatcacheError
    options = dict(views=views, augment=augment, dtype=dtype, runtime=runtime, precision=precision,
                   fast_decode=fast_decode)
    if address is None and (workers is not None or gpus_per_worker):
        raise FeatcacheError("--workers and --gpus-per-worker apply to --ray runs only")
    if address is not None:
        if shard is not None:
            raise FeatcacheError("--shard and --ray do not mix: Ray picks the shards itself")
        from featcache.cluster.ray_embed import embed_on_ray
        click.echo(str(embed_on_ray(data_dir, cache, address, workers, gpus_per_worker, backbone,
                                    weights, batch_size, image_size, seed, **options)))
        return
    from featcache.embedding.run import embed as run
    summary = run(data_dir, cache, backbone=backbone, weights=weights, batch_size=batch_size,
                  image_size=image_size, seed=seed, shard=shard, **options)
    click.echo(str(summary))
    if shard is not None:
        from featcache.cluster.devices import describe_devices
        click.echo(f"shard {shard} embedded on: {describe_devices()}")
    if summary.failed:
        click.echo(f"{summary.failed} file(s) or folder(s) could not be embedded: "
                   f"`featcache info {cache}` lists why")


@cli.command()
@click.argument("cache", type=click.Path(path_type=str))
@click.option("--copy", is_flag=True,
              help="Copy the rows into CACHE (self-contained) instead of virtual datasets.")
@click.option("--shards", default=None, type=int, help="Merge the shards of this N only.")
def merge(cache, copy, shards):
    """Assemble CACHE.shards/shard-i-of-N.h5 (from `embed --shard`) into CACHE."""
    from featcache.cache._merge import merge as run
    click.echo(str(run(cache, copy=copy, shards=shards)))


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@cli.command()
@click.argument("cache", type=click.Path(path_type=str))
def info(cache):
    """Print a cache's backbones, counts per class, failures and sizes."""
    from featcache.cache.info import NO_CHECKSUMS, cache_info
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
        extra += ", fast decode (not Keras-exact)" if spec.get("fast_decode") else ""
        extra += f", runtime {'+'.join(e['runtimes'])}" if e.get("runtimes") else ""
        half = f" {e['dtype']}" if e.get("dtype", "float32") != "float32" else ""
        click.echo(f"\n[{e['key']}] {spec.get('name')} (weights {spec.get('weights')}{extra}) "
                   f"{spec.get('input_size')}px -> {e['feature_dim']}-d, {e['rows']} rows, "
                   f"features {_mb(e['feature_bytes'])}{half}"
                   + (" in its shard files (merged)" if e.get("virtual") else ""))
        for v in e.get("views", []):
            click.echo(f"  views {v['key']}: {v['views']} per image, augment {v['augment']}, "
                       f"seed {v['seed']}, {v['rows']} rows, {_mb(v['feature_bytes'])}")
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
