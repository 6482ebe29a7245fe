"""The one JSON sanitiser of featcache, and the one JSON writer.

Every ``--json`` file, ``diagnosis.json`` and ``to_dict()`` goes through
:func:`jsonable`, so NaN and inf are written the same way everywhere: as
``null`` (strict JSON; ``json.dump`` would otherwise write ``NaN``, which
most parsers reject).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def num(value):
    """``float(value)``, or None when it is NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else None


def jsonable(obj):
    """A copy of ``obj`` that strict ``json.dump`` accepts.

    numpy scalars become Python scalars, arrays and tuples become lists,
    non-finite floats become None, paths become strings and dict keys strings.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        return num(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path, doc) -> Path:
    """Write ``jsonable(doc)`` as indented, strict JSON to ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(doc), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path
