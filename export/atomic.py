"""Atomic output: a temp file (or folder) in the destination's directory, fsync, os.replace.

A reader of the final name sees the old content or the whole new content, never
part of it; a failure removes the temp file. A destination in a directory that
does not exist is an error, not an invitation to create it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from .layout import ExportError


def check_parent(path: str | os.PathLike) -> Path:
    """The destination as a Path; ExportError if its directory is missing or it is a directory."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise ExportError(f"output directory does not exist: {parent}/ (for {path}); create it first")
    return path


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # not possible on some systems (Windows): the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temp file beside `path` for binary writing; on success it becomes `path`."""
    path = check_parent(path)
    if path.is_dir():
        raise ExportError(f"output path is a directory: {path}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def write_json(path: str | os.PathLike, obj: object) -> None:
    write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a directory to fill; on success it is in place at `path`.

    A new `path` is built as a temp folder beside it and renamed into place (all
    or nothing). An existing directory is not removed (it may hold the user's
    other files): the caller writes each file into it with atomic_file instead,
    so this yields `path` itself and every file still appears whole.
    """
    path = check_parent(path)
    if path.exists() and not path.is_dir():
        raise ExportError(f"output path exists and is not a directory: {path}")
    if path.is_dir():
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _fsync_dir(tmp)  # its files were fsynced by atomic_file; now the folder's entries
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)
