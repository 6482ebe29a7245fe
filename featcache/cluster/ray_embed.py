"""Embed a folder on a Ray cluster: one shard per worker, one progress bar, then the merge.

Each worker is a Ray *actor* that loads the backbone once and embeds its shard
with the ordinary :func:`featcache.embed` (``shard=(i, N)``), so a shard has
the same lock, journal, resume and incremental behaviour as any embed, and the
merged cache equals a single-process embed bit for bit. Actors rather than
tasks: a task would load the model for every call, and Ray Data's
``map_batches`` would move decoded images between processes and bypass the
cache's journal. A worker that dies is restarted (``max_restarts``) and its
call retried (``max_task_retries``); the retry resumes from the shard's journal.
Ray is imported only here, and only when this runs.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from featcache.errors import FeatcacheError

INSTALL = ("the Ray runner needs Ray, which is not installed: pip install 'featcache[ray]' "
           "(or pip install 'ray>=2.9'), or run one `featcache embed --shard i/N` per machine")


def import_ray():
    """``ray``, or one clear line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise FeatcacheError(INSTALL) from None
    return ray


@dataclass(frozen=True)
class RaySummary:
    """What one ``embed_on_ray`` call did: per shard its embed summary and devices, then the merge."""

    shards: tuple       # EmbedSummary per shard, in shard order
    devices: tuple      # per shard: what its worker embedded on (describe_devices)
    load_seconds: tuple  # per shard: the worker's model load
    merge: object       # MergeSummary
    seconds: float

    @property
    def embedded(self) -> int:
        return sum(s.embedded for s in self.shards)

    def __str__(self) -> str:
        counts = {k: sum(getattr(s, k) for s in self.shards) for k in ("cached", "failed", "removed")}
        per = "; ".join(f"shard {i}: {s.embedded} on {d}" for i, (s, d) in
                        enumerate(zip(self.shards, self.devices)))
        return (f"Ray: {len(self.shards)} worker(s) embedded {self.embedded}, already cached "
                f"{counts['cached']}, failed {counts['failed']}, removed {counts['removed']} in "
                f"{self.seconds:.1f} s ({per})\n{self.merge}")


class ProgressBoard:
    """Ray actor: the latest ``(done, total)`` of every shard, for the driver's one bar."""

    def __init__(self):
        self.state = {}

    def report(self, shard: int, done: int, total: int) -> None:
        self.state[shard] = (done, total)

    def totals(self) -> tuple[int, int]:
        return sum(d for d, _ in self.state.values()), sum(t for _, t in self.state.values())


class ShardWorker:
    """Ray actor: loads the backbone once, then embeds shards with it."""

    def __init__(self, backbone, weights, image_size, seed):
        import ray
        import tensorflow as tf

        from featcache.embedding.backbones import get_backbone
        # TF would start one thread per core of the node: keep to the CPUs Ray gave us,
        # or W workers on one node run W x cores threads
        cpus = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(cpus)
        t0 = time.perf_counter()
        self.backbone = get_backbone(backbone, weights, image_size, seed)
        self.load_seconds = time.perf_counter() - t0

    def devices(self) -> str:
        import ray

        from featcache.cluster.devices import check_assigned
        return check_assigned(ray.get_gpu_ids())

    def embed(self, data_dir, cache_path, shard, batch_size, board, options):
        import ray

        from featcache.embedding.run import embed
        last = [0, 0]

        def report(done, total):
            last[:] = done, total
            board.report.remote(shard[0], done, total)
        summary = embed(data_dir, cache_path, backbone=self.backbone, batch_size=batch_size,
                        shard=shard, progress=False, on_batch=report, **options)
        ray.get(board.report.remote(shard[0], *last))  # the bar's last count is never behind
        return summary, self.devices(), self.load_seconds


def worker_name(cache_path, i: int, n: int) -> str:
    """The Ray actor name of shard ``i`` of ``n`` of a cache (two runs on one cache collide)."""
    return f"featcache:{Path(cache_path).expanduser().absolute()}:shard-{i}-of-{n}"


def _reachable(address: str, timeout: float) -> None:
    """Fail fast, in one line, when nothing listens at a cluster address (Ray itself retries long)."""
    client = address.startswith("ray://")
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host:
        host, port = hostport, ("10001" if client else "6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise FeatcacheError(f"cannot reach the Ray cluster at {address} ({why}, waited up to "
                             f"{timeout:g} s): check the address and that `ray start --head` runs "
                             "there, or pass auto to start Ray on this machine") from None


def connect(address: str | None = "auto", timeout: float = 10.0, **init_kwargs) -> bool:
    """Connect to (or start) Ray; True if this call initialised it and should shut it down.

    ``auto`` (or None) joins the cluster ``RAY_ADDRESS`` or ``ray start`` names,
    else starts Ray on this machine; anything else is a cluster address.
    An already initialised Ray (``ray.init`` by the caller) is used as it is.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address not in (None, "auto"):
        _reachable(address, timeout)
    try:
        ray.init(address=None if address in (None, "auto") else address, include_dashboard=False,
                 **init_kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FeatcacheError(f"cannot connect to the Ray cluster at {address}: {first}") from None
    return True


def default_workers(ray, gpus_per_worker: float) -> int:
    """One worker per CPU of the cluster, or per ``gpus_per_worker`` of its GPUs."""
    resources = ray.cluster_resources()
    if gpus_per_worker:
        n = int(resources.get("GPU", 0) // gpus_per_worker)
        if n < 1:
            raise FeatcacheError(f"gpus_per_worker={gpus_per_worker:g} but the Ray cluster has "
                                 f"{resources.get('GPU', 0):g} GPU(s): pass gpus_per_worker=0")
        return n
    return max(1, int(resources.get("CPU", 1)))


def _check(batch_size, workers, gpus_per_worker, max_retries) -> None:
    if int(batch_size) < 1:
        raise FeatcacheError(f"batch_size={batch_size} must be at least 1")
    if workers is not None and int(workers) < 1:
        raise FeatcacheError(f"workers={workers} must be at least 1")
    if gpus_per_worker < 0:
        raise FeatcacheError(f"gpus_per_worker={gpus_per_worker} must be 0 (CPU) or more")
    if int(max_retries) < 0:
        raise FeatcacheError(f"max_retries={max_retries} must be 0 or more")


def start_workers(ray, cache_path, n: int, gpus_per_worker: float = 0, max_retries: int = 2,
                  model_args=("mobilenet_v2", None, None, 0)) -> list:
    """Start ``n`` :class:`ShardWorker` actors (1 CPU and ``gpus_per_worker`` GPUs each)."""
    env = {"TF_FORCE_GPU_ALLOW_GROWTH": "true"} if gpus_per_worker else {}  # GPUs may be shared
    cls = ray.remote(ShardWorker)
    return [cls.options(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=max_retries,
                        max_task_retries=max_retries, name=worker_name(cache_path, i, n),
                        runtime_env={"env_vars": env} if env else None).remote(*model_args)
            for i in range(n)]


def _wait(ray, refs: list, board, progress: bool) -> list:
    """Results in shard order, updating one bar from every worker's reports meanwhile."""
    pending = list(refs)
    with tqdm(total=0, unit="img", desc=f"embed on Ray ({len(refs)} workers)", disable=not progress,
              dynamic_ncols=True) as bar:
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            done, total = ray.get(board.totals.remote())
            bar.total, bar.n = total, done
            bar.refresh()
    out = []
    for i, ref in enumerate(refs):
        try:
            out.append(ray.get(ref))
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, FeatcacheError):
                raise FeatcacheError(str(exc.cause)) from None
            raise
        except ray.exceptions.RayActorError as exc:
            first = str(exc).strip().splitlines()[0]
            raise FeatcacheError(f"the Ray worker of shard {i}/{len(refs)} died and its retries "
                                 f"ran out ({first}); finished batches are kept: re-run the same "
                                 "command to resume") from None
    return out


def embed_on_ray(data_dir, cache_path, address: str | None = "auto", workers: int | None = None,
                 gpus_per_worker: float = 0, backbone: str = "mobilenet_v2", weights=None,
                 batch_size: int = 64, image_size: int | None = None, seed: int = 0,
                 progress: bool = True, copy: bool = False, max_retries: int = 2,
                 connect_timeout: float = 10.0, **options) -> RaySummary:
    """Embed ``data_dir`` into ``cache_path`` with ``workers`` Ray actors, one shard each, then merge.

    Parameters
    ----------
    data_dir, cache_path
        As for :func:`featcache.embed`; both must be reachable at the same path
        from every Ray node (a shared filesystem).
    address : str, optional
        ``auto`` (join ``RAY_ADDRESS`` / ``ray start``'s cluster, else start one
        here) or a cluster address (``host:6379``, ``ray://host:10001``).
    workers : int, optional
        Actors, hence shards (default: the cluster's CPUs, or GPUs divided by
        ``gpus_per_worker``).
    gpus_per_worker : float
        GPUs per actor; Ray sets each actor's ``CUDA_VISIBLE_DEVICES``.
    backbone, weights, batch_size, image_size, seed
        As for :func:`featcache.embed`.
    progress : bool
        One progress bar on stderr for all workers.
    copy : bool
        Merge by copying (see :func:`featcache.merge`).
    max_retries : int
        Restarts of a dead worker, and retries of its shard.
    connect_timeout : float
        Seconds to wait for a cluster address to answer.
    **options
        Passed on to :func:`featcache.embed` in every worker (``views``,
        ``augment``, ``dtype``, ...).

    Returns
    -------
    RaySummary
    """
    from featcache.embedding.backbones import resolve_backbone
    from featcache.cache._merge import merge
    from featcache.embedding.scan import list_classes
    _check(batch_size, workers, gpus_per_worker, max_retries)
    resolve_backbone(backbone, weights, image_size, seed)  # a typo fails before Ray starts
    data_dir = Path(data_dir).expanduser().resolve()
    list_classes(data_dir)
    cache_path = Path(cache_path).expanduser().absolute()
    ray = import_ray()
    start = time.perf_counter()
    owned = connect(address, connect_timeout)
    actors = []
    try:
        n = int(workers) if workers is not None else default_workers(ray, gpus_per_worker)
        actors = start_workers(ray, cache_path, n, gpus_per_worker, max_retries,
                               (backbone, weights, image_size, seed))
        board = ray.remote(ProgressBoard).options(num_cpus=0).remote()
        refs = [a.embed.remote(str(data_dir), str(cache_path), (i, n), batch_size, board, options)
                for i, a in enumerate(actors)]
        results = _wait(ray, refs, board, progress)
        merged = merge(cache_path, copy=copy, shards=n)
    finally:
        for a in actors:
            ray.kill(a)
        if owned:
            ray.shutdown()
    return RaySummary(tuple(r[0] for r in results), tuple(r[1] for r in results),
                      tuple(r[2] for r in results), merged, time.perf_counter() - start)
