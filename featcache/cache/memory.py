"""Memory budgets: parsing sizes like ``4GB`` and reading the memory available."""
from __future__ import annotations

import os
import re

from featcache.errors import FeatcacheError

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(value, name: str = "memory_budget") -> int:
    """Bytes from an int or a size string: ``4GB``, ``4G`` (10**9), ``512MiB`` (2**20), ``1e9``.

    Raises
    ------
    FeatcacheError
        Naming ``name`` when the value is not a positive size.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]i?)?b?\s*", str(value), re.I)
        if m is None:
            raise FeatcacheError(f"{name}={value!r} is not a size: give one such as 4GB, "
                                 "512MiB or a number of bytes")
        number, unit = float(m.group(1)), (m.group(2) or "").lower()
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise FeatcacheError(f"{name}={value!r} is not a positive size: give one such as 4GB")
    return size


def available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable``; free pages elsewhere)."""
    try:
        import psutil  # optional: the most portable answer when installed
        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def memory_budget(value=None) -> int:
    """The budget in bytes: ``value`` parsed, or half of the memory available now."""
    return available_memory() // 2 if value is None else parse_size(value)
