"""Every file featcache writes goes through here: one atomic writer, one JSON writer.

The protocol (:func:`atomic_path`): write a temporary file in the target's own
folder, fsync it, ``os.replace`` it over the target, fsync the folder. A reader
(or a crash, or a full disk) therefore sees the old file or the new one, never
a torn one, and a failed write leaves no temporary file behind. A full disk or
quota becomes one :class:`~featcache.errors.FeatcacheError` line that names the
mount point. Folders (an exported model) are replaced the same way by
:func:`replace_dir`.

JSON: :func:`jsonable` is the one sanitiser, so NaN and inf are written the
same way everywhere, as ``null`` (strict JSON).
"""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from featcache.errors import FeatcacheError, NoSpaceError

TMP = ".tmp-"  # temporary names are <name>.tmp-<pid>: a dead pid's leftovers are stale


def is_no_space(exc: BaseException) -> bool:
    """True for a full disk, quota or file-size limit, as raised by Python or wrapped by HDF5."""
    text = str(exc).lower()
    return (getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            or "no space left" in text or "file too large" in text)


def _mount_point(path: Path) -> str:
    p = os.path.realpath(path.parent)
    while not os.path.ismount(p):
        p = os.path.dirname(p)
    return p


def no_space_message(path) -> str:
    """The one line a full disk gets."""
    path = Path(os.path.realpath(Path(path).expanduser()))
    return (f"no space left on {_mount_point(path)} while writing {path}; nothing lost; "
            "free space and re-run")


def fsync_dir(path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def real_path(path) -> Path:
    """The file ``path`` names, symlinks resolved (writes go through a link, never replace it).

    A symlink loop is one clear error, not a file written over the link.
    """
    path = Path(path).expanduser()
    real = Path(os.path.realpath(path))
    if real.is_symlink():
        raise FeatcacheError(f"{path} is a symlink loop (it points back to itself); remove it "
                             "or point it at a real file")
    return real


def temp_name(path: Path) -> Path:
    """``path.tmp-<pid>`` beside ``path``."""
    return path.with_name(f"{path.name}{TMP}{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path) -> None:
    """Remove ``path.tmp-<pid>`` files or folders whose process is gone (a ``kill -9`` mid-write)."""
    path = Path(path)
    try:
        leftovers = list(path.parent.glob(path.name + TMP + "*"))
    except OSError:
        return
    for stale in leftovers:
        pid = stale.name.rsplit(TMP, 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it atomically becomes ``path``.

    For writers that want a path (HDF5, matplotlib, Keras). A symlink at
    ``path`` is written through: its target is replaced, the link stays.
    On any error the temporary file is removed and ``path`` is untouched; a
    full disk raises one ``FeatcacheError`` line.
    """
    path = real_path(path)
    if path.is_dir():
        raise FeatcacheError(f"{path} is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FeatcacheError(f"cannot write {path}: {exc.strerror or exc}") from None
    tmp = temp_name(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        _remove(tmp)
        if is_no_space(exc):
            raise NoSpaceError(no_space_message(path)) from None
        raise
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_write(path, mode: str = "w"):
    """Open a temporary file beside ``path`` for writing (``"w"`` text UTF-8, ``"wb"`` bytes);
    it replaces ``path`` when the block ends without error (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        kw = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with open(tmp, mode, **kw) as fh:
            yield fh
            fh.flush()


def write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; folders are created."""
    with atomic_write(path) as fh:
        fh.write(text)
    return Path(path)


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; folders are created."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def replace_dir(tmp: Path, out: Path) -> None:
    """Make the finished folder ``tmp`` become ``out``; an old ``out`` is removed only once
    the new one is in place. Every file in ``tmp`` is fsynced first."""
    tmp, out = Path(tmp), Path(out)
    try:
        for root, _, names in os.walk(tmp):
            for name in names:
                fsync_file(Path(root) / name)
            fsync_dir(root)
        old = out.with_name(f"{out.name}.old{TMP}{os.getpid()}")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        fsync_dir(out.parent)
    except OSError as exc:
        if is_no_space(exc):
            raise NoSpaceError(no_space_message(out)) from None
        raise
    shutil.rmtree(old, ignore_errors=True)


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


def dumps(doc) -> str:
    """``jsonable(doc)`` as indented, strict JSON text."""
    return json.dumps(jsonable(doc), indent=2, allow_nan=False) + "\n"


def write_json(path, doc) -> Path:
    """Write ``jsonable(doc)`` as indented, strict JSON to ``path``, atomically."""
    return write_text(path, dumps(doc))


def check_writable(path, option: str, *, folder: bool = False) -> Path | None:
    """Raise FeatcacheError unless ``path`` (a file, or a ``folder``) can be written.

    Run before any computing, so a bad ``--json``/``--plots``/``--out`` path fails
    at once, as one line, not after minutes of work.

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
