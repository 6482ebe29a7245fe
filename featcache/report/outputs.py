"""Checking that output paths can be written, before any work is done.

A ``--json``/``--plots``/``--out`` path that cannot be written used to fail
with a traceback after minutes of computing. :func:`check_writable` probes the
path first (it creates the missing folders and a temporary file there, then
removes the file), so the error comes at once, as one line.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from featcache.errors import FeatcacheError


def check_writable(path, option: str, *, folder: bool = False) -> Path | None:
    """Raise FeatcacheError unless ``path`` (a file, or a ``folder``) can be written.

    Parameters
    ----------
    path : str, Path or None
        None is accepted (no output asked for) and returned as None.
    option : str
        How the user named the path (``"--json"``), used in the message.
    folder : bool
        True when ``path`` is a folder to write files into.

    Returns
    -------
    Path or None
    """
    if path is None:
        return None
    path = Path(path)
    if not folder and path.is_dir():
        raise FeatcacheError(f"{option} {path} is a folder; give a file name")
    if folder and path.exists() and not path.is_dir():
        raise FeatcacheError(f"{option} {path} is a file; give a folder")
    target = path if folder else path.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".featcache-probe-"):
            pass
        if not folder and path.exists():
            with open(path, "ab"):
                pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise FeatcacheError(f"{option} {path} cannot be written ({why}); choose another "
                             "path; nothing was computed") from None
    return path
