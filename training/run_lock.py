"""One writer per run directory: rank 0 holds an exclusive lock on ``<run dir>/.lock`` for the run's life.

The lock is ``flock`` on an open file, so the kernel drops it when the process ends, however it ends (SIGKILL,
a crash, the OOM killer): a killed run never leaves a stale lock behind. The descriptor is close-on-exec, so a
process the run starts (W&B's service) cannot keep it alive. The file holds the holder's host, pid and start
time, which a second launch names in its one-line refusal; it stays after the run, since deleting a lock file
would let two processes lock two different files of one name.

Where the filesystem has no locks (NFS mounted ``nolock``, Lustre without ``flock``) the run says so once and
goes on unlocked. Under torchrun only rank 0 locks: the other ranks write nothing outside their checkpoint
shards, in a folder rank 0 makes. Locks are re-entrant within a process: train.py's Hydra edge locks a single
run's directory before Hydra writes into it, and ``build_run`` locks it again before its first write (so the
Python API and every multirun job lock their own directory there).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
from pathlib import Path

from data.atomic import space_for
from training.config import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs go unlocked
    fcntl = None

log = logging.getLogger("train")
LOCK_FILE = ".lock"
_held: dict[str, list] = {}  # real path of a run directory → [descriptor or None when unlockable, holds]


class RunInUse(ConfigError):
    """Another live process holds the run directory's lock."""


def holder_of(run_dir: Path) -> str:
    """Who holds (or last held) the lock, as ``host h, pid p, since t``, from the lock file."""
    try:
        info = json.loads((run_dir / LOCK_FILE).read_text())
        return f"host {info['host']}, pid {info['pid']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def acquire(run_dir: Path, setting: str = "hydra.run.dir") -> None:
    """Lock ``run_dir`` (made if missing) for this process, or raise ``RunInUse`` naming the holder and ``setting``,
    what sets the directory (a sweep's job: ``hydra.sweep.dir``)."""
    key = os.path.realpath(run_dir)
    if key in _held:
        _held[key][1] += 1
        return
    if fcntl is None:
        _held[key] = [None, 1]
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunInUse(
            f"the run directory {run_dir} is in use by another run ({holder_of(run_dir)}); wait for it to end or "
            f"stop it, or give this run another {setting}"
        ) from None
    except OSError as e:
        os.close(fd)
        log.warning(
            "the run directory %s cannot be locked on this filesystem (%s): nothing stops a second launch "
            "on it from writing beside this run",
            run_dir,
            e.strerror,
        )
        _held[key] = [None, 1]
        return
    since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": since}) + "\n"
    try:
        with space_for(run_dir / LOCK_FILE, len(record)):
            os.ftruncate(fd, 0)
            os.pwrite(fd, record.encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    _held[key] = [fd, 1]


def in_use(run_dir: Path) -> bool:
    """Whether another live process holds ``run_dir``'s lock (this process's own, or no lock file: False)."""
    path = run_dir / LOCK_FILE
    if fcntl is None or os.path.realpath(run_dir) in _held or not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a filesystem without locks: nothing to tell
        return False
    finally:
        os.close(fd)  # drops the shared lock, if taken
    return False


def release(run_dir: Path) -> None:
    """Undo one ``acquire``; the last one closes the descriptor, which drops the lock."""
    key = os.path.realpath(run_dir)
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[key]
        if entry[0] is not None:
            os.close(entry[0])
