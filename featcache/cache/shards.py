"""Deterministic shards of a cache: which shard an image belongs to, and where shards live.

An image's shard is ``int(sha256(relative path)[:8 bytes]) mod N``, computed from
the '/'-separated path relative to the data folder (never Python's ``hash()``,
which is salted per process). Every process, on every machine, therefore puts
the same image in the same shard, and adding images never moves old ones.

Shard ``i`` of ``N`` of ``CACHE.h5`` is ``CACHE.h5.shards/shard-i-of-N.h5``: an
ordinary featcache cache, written with the same lock, journal and atomic
rewrite as any other. :func:`featcache.cache._merge.merge` assembles them.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from featcache.cache.layout import sibling
from featcache.errors import FeatcacheError

_SHARD_FILE = re.compile(r"^shard-(\d+)-of-(\d+)\.h5$")


def parse_shard(shard) -> tuple[int, int]:
    """``"i/N"`` or ``(i, N)`` -> ``(i, N)``, with one clear error for a bad value.

    Raises
    ------
    FeatcacheError
        For a malformed value, ``N < 1`` or ``i`` outside ``0..N-1``.
    """
    if isinstance(shard, str):
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
        if not m:
            raise FeatcacheError(f"shard={shard} is not of the form i/N (for example 0/4: the first "
                                 "of 4 shards)")
        i, n = int(m.group(1)), int(m.group(2))
    else:
        try:
            i, n = (int(v) for v in shard)
        except (TypeError, ValueError):
            raise FeatcacheError(f"shard={shard!r} must be 'i/N' or a pair (i, N) of integers") from None
    if n < 1:
        raise FeatcacheError(f"shard={i}/{n}: the number of shards N must be at least 1")
    if not 0 <= i < n:
        raise FeatcacheError(f"shard={i}/{n}: the shard index must be in 0..{n - 1} "
                             f"(shards are numbered from 0)")
    return i, n


def shard_of(rel: str, n: int) -> int:
    """The shard (``0..n-1``) of the image at relative path ``rel``."""
    digest = hashlib.sha256(rel.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % n


def in_shard(i: int, n: int):
    """A predicate on relative paths: True for those in shard ``i`` of ``n``."""
    return lambda rel: shard_of(rel, n) == i


def shards_dir(cache_path) -> Path:
    """``CACHE.h5.shards/`` beside the real cache file."""
    return sibling(cache_path, ".shards")


def shard_path(cache_path, i: int, n: int) -> Path:
    """The file shard ``i`` of ``n`` of ``cache_path`` is written to."""
    return shards_dir(cache_path) / f"shard-{i}-of-{n}.h5"


def find_shards(cache_path) -> dict[int, dict[int, Path]]:
    """Shard files beside a cache: ``{N: {i: path}}`` (lock, journal and temp files ignored)."""
    folder = shards_dir(cache_path)
    found: dict[int, dict[int, Path]] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            m = _SHARD_FILE.match(p.name)
            if m and p.is_file():
                found.setdefault(int(m.group(2)), {})[int(m.group(1))] = p
    return found
