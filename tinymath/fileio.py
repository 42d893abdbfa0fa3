"""Atomic output: a temp file (or folder) beside the destination, fsync, then rename.

A reader of the final name sees the old content or the whole new content, never
part of it, so an interrupted run loses nothing; a failure removes the temp
file. A destination in a directory that does not exist is an error, not an
invitation to create it.

A temp name carries its writer's process id (`.NAME.PID.RANDOM.tmp`). A kill
leaves its temp behind, so the next writer of the same destination removes the
temps of writers that are gone (their process no longer exists), never those of
a writer still running (a sweep shard writing the same file).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


def check_parent(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {path.parent}/ (for {path}); create it first")
    return path


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove temp files and folders a killed writer of `path` left beside it; return them."""
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _readable(tmp: str) -> None:
    """mkstemp makes 0600 files; give the final file the usual mode (0666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # not possible on some systems (Windows); the rename is still atomic
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file handle on a temp file beside `path`; on success it becomes `path`."""
    path = check_parent(path)
    if path.is_dir():
        raise IsADirectoryError(f"output path is a directory: {path}")
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        _readable(tmp)
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path beside `path` for writers that want a file name (savefig); on success it becomes `path`."""
    path = check_parent(path)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _readable(tmp)
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A directory to fill; on success it is in place at `path`.

    A new `path` is built as a temp folder beside it and renamed into place (all
    or nothing). An existing directory is not removed (it may hold the user's
    other files): this yields `path` itself, and the caller writes each file
    with atomic_file, so every file still appears whole.
    """
    path = check_parent(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"output path exists and is not a directory: {path}")
    if path.is_dir():
        yield path
        return
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700 folders; give the usual mode
        yield tmp
        _fsync_dir(tmp)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
