"""Atomic writes: a file or a whole directory appears complete under its final name, or not at all.

A directory is assembled under a temporary name beside its final place (``begin``), then ``commit`` fsyncs
every file and directory in it and renames it into place, so a process killed at any moment leaves either
the previous state or the complete new one, never a half-written directory under the final name. Both the
token cache and checkpoints are written this way.

A written directory can carry the crc32 of its files (``file_checksums``: per 64 MiB chunk, chunks summed in
parallel), so that a later reader finds a file changed in place or truncated since (token caches, checkpoints).

Running out of space (``ENOSPC``, or ``EDQUOT`` past a quota) while writing becomes ``DiskFull``: one line that
names the path, the bytes the write needed when known, and the bytes free there once the partial write is gone.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # how a Rust library's I/O error ends
CHECKSUM_CHUNK_BYTES = 64 << 20  # a crc32 per chunk: chunks are checked in parallel, and a mismatch says where


class DiskFull(OSError):
    """Writing ``path`` ran out of space: ``str()`` is one line naming it, the bytes ``needed`` (more than that
    when ``at_least``), the bytes free there now, and ``hint`` (what to do)."""

    def __init__(
        self,
        path: str | os.PathLike,
        needed: int | None = None,
        *,
        at_least: bool = False,
        hint: str = "",
        quota: bool = False,
    ) -> None:
        self.path, self.needed, self.free = Path(path), needed, free_bytes(path)
        need = "" if needed is None else f"it needs {'more than ' if at_least else ''}{size_text(needed)}; "
        free = size_text(self.free)
        left = f"the disk quota is used up ({free} free on the filesystem)" if quota else f"{free} are free there"
        message = f"no space left to write {self.path}: {need}{left}"
        super().__init__(errno.EDQUOT if quota else errno.ENOSPC, message + (f"; {hint}" if hint else ""))

    def __str__(self) -> str:
        return self.args[1]


def disk_full_cause(error: BaseException | None) -> OSError | None:
    """``error``, or the error it was raised from or while handling (torch.save's "unexpected pos" after the
    write that failed), when that is running out of space or quota; else None."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return error
        rust = None if isinstance(error, OSError) else RUST_OS_ERROR.search(str(error))
        if rust and int(rust[1]) in DISK_FULL_ERRNOS:  # safetensors', tokenizers' I/O error, as a message
            return OSError(int(rust[1]), os.strerror(int(rust[1])))
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def space_for(path: str | os.PathLike, needed: int | None = None, hint: str = "") -> Iterator[None]:
    """Raise ``DiskFull`` when the block runs out of space, naming ``path`` and the bytes ``needed``; without
    ``needed``, the file the error names (when it names one). The block removes its partial output first, so
    the free bytes reported are what a retry would find."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as e:
        cause = disk_full_cause(e)
        if cause is None:
            raise
        where = cause.filename if cause.filename and needed is None else path
        raise DiskFull(where, needed, hint=hint, quota=cause.errno == errno.EDQUOT) from e


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free to an unprivileged writer on the filesystem of ``path`` (or of its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return 0


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when it is gone)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def size_text(n: int) -> str:
    """``n`` bytes for people: ``15.2 MB (15,234,567 bytes)``, or ``512 bytes``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def file_checksums(path: Path, chunk_bytes: int = CHECKSUM_CHUNK_BYTES) -> list[int]:
    """``zlib.crc32`` of each ``chunk_bytes`` of ``path``, over a memory map, chunks in parallel threads (zlib
    releases the GIL while it sums)."""
    size = path.stat().st_size
    if size == 0:
        return []
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:

        def crc(start: int) -> int:
            with memoryview(mapped) as whole, whole[start : start + chunk_bytes] as chunk:
                return zlib.crc32(chunk)

        starts = range(0, size, chunk_bytes)
        with ThreadPoolExecutor(max_workers=min(len(starts), os.cpu_count() or 1)) as pool:
            return list(pool.map(crc, starts))


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
    """A new empty temporary directory ``parent/.tmp-<name>-<pid>-*`` to assemble ``parent/<name>`` in, with the
    permissions ``mkdir`` gives under the umask (mkdtemp's 0700 would keep a shared cache or a run's checkpoints
    from the rest of a team)."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-{os.getpid()}-", dir=parent))
    os.chmod(tmp, 0o777 & ~umask())
    return tmp


def umask() -> int:
    """The process's umask, read without changing it (os.umask sets it, for every thread, to read it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def restore_set_aside(parent: Path) -> list[Path]:
    """Put back what a ``commit`` killed between its two renames left aside (``.old-<name>-<pid>`` with no
    ``<name>``): the only copy of ``<name>``, which is otherwise lost to the next cleanup. Returns what it put
    back. Call it only where no other process commits under ``parent`` (a run directory's lock held)."""
    restored = []
    for entry in sorted(parent.glob(".old-*")) if parent.is_dir() else []:
        name, _, pid = entry.name.removeprefix(".old-").rpartition("-")  # .old-<name>-<pid>
        final = parent / name
        if name and entry.is_dir() and not final.exists() and not alive(pid):
            os.rename(entry, final)
            restored.append(final)
    return restored


def alive(pid: str) -> bool:
    """Whether process ``pid`` of this host runs (a commit it is in the middle of is its own to finish)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's: alive
        return True
    return True


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
