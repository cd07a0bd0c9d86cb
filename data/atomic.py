"""Atomic writes: a file or a whole directory appears complete under its final name, or not at all.

A directory is assembled under a temporary name beside its final place (``begin``), then ``commit`` fsyncs
every file and directory in it and renames it into place, so a process killed at any moment leaves either
the previous state or the complete new one, never a half-written directory under the final name. Both the
token cache and checkpoints are written this way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

# Windows only fsyncs a file opened for writing; POSIX fsyncs a read-only descriptor too.
_FSYNC_FILE_FLAGS = os.O_RDWR if os.name == "nt" else os.O_RDONLY


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename inside it) to disk; best effort where a directory can't be opened."""
    with contextlib.suppress(OSError):  # not every platform lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, _FSYNC_FILE_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes | str) -> None:
    """Write ``data`` (str as UTF-8) to ``path``, flushed and fsynced."""
    with open(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())


def replace_file(path: Path, data: bytes | str) -> None:
    """Write ``path`` atomically: a temporary file beside it, fsynced, renamed over it, the directory fsynced."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def begin(parent: Path, name: str) -> Path:
    """A new empty temporary directory ``parent/.tmp-<name>-<pid>-*`` to assemble ``parent/<name>`` in."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".tmp-{name}-{os.getpid()}-", dir=parent))


def commit(tmp: Path, final: Path, *, replace: bool = True) -> Path:
    """Fsync everything under ``tmp``, rename it to ``final`` and fsync ``final.parent``; returns ``final``.

    When ``final`` exists, ``replace=True`` swaps it out (the old one is renamed aside, then deleted) and
    ``replace=False`` raises FileExistsError. Any failure removes ``tmp`` and re-raises.
    """
    try:
        dirs = [tmp]
        for path in sorted(tmp.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                dirs.append(path)
            elif path.is_file():
                _fsync_file(path)
        for d in reversed(dirs):  # the deepest first, so each directory's entries are durable before its parent's
            fsync_dir(d)
        if final.exists():
            if not replace:
                raise FileExistsError(errno.EEXIST, "already exists", str(final))
            old = final.with_name(f".old-{final.name}-{os.getpid()}")
            os.rename(final, old)
            try:
                os.rename(tmp, final)
            except BaseException:
                os.rename(old, final)  # put the previous one back: ``final`` is never left missing
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, final)
            except OSError as e:  # another process renamed its own into place since the check above
                if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise FileExistsError(errno.EEXIST, "already exists", str(final)) from e
                raise
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
