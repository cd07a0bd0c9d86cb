"""Runs that stop making progress end, so that a scheduler or torchrun restarts them from the latest checkpoint.

Two faults leave a process alive and silent. A stalled update (a read that never returns, a collective that never
completes): ``Watchdog`` waits ``trainer.hang_timeout`` seconds for the loop's next step forward, then writes every
thread's Python stack (``faulthandler``) to stderr and train.log and ends the process with ``EXIT_HUNG``. A peer
that stopped answering: after the first update a collective waits at most ``trainer.collective_timeout`` seconds
(``training.distributed``), and the backend's error becomes ``PeerLost``, which train.py reports in one line
before exiting with ``EXIT_HUNG`` too.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

from torch.distributed import get_rank

from scheduling.spec import first_line
from training.config import USER_ERRORS
from training.distributed import announce_failure, announced_failure, is_initialized, peer_failure
from training.signals import Stopped

log = logging.getLogger("train")

# timeout(1)'s code for "timed out": the run made no progress within the time allowed; the latest checkpoint is
# intact, and running the same command again (a requeue, torchrun --max-restarts) resumes from it.
EXIT_HUNG = 124
LOG_WAIT_S = 5.0  # how long a fault's report waits for stderr and the log file before the process exits anyway


class PeerLost(Exception):
    """Another rank stopped answering (or left) while this one waited for it in a collective, at ``where`` (an
    update, or a phrase: "as the run started"); or, with no ``where``, not every rank joined the process group.
    ``timeout``: trainer.collective_timeout when it bounded the wait."""

    def __init__(
        self, where: int | str | None, timeout: float | None, reason: str, failed: tuple[str, int] | None = None
    ):
        self.failed = failed  # what the rank that left failed with, when it said (its line, its exit code)
        self.at = None if where is None else f"update {where}" if isinstance(where, int) else where
        if self.at is None:
            what, hint = "the ranks did not all join", "once every rank can start (see each one's output)"
        else:
            what, hint = f"{self.at}: another rank stopped answering", "to resume from the latest checkpoint"
        limit = f"trainer.collective_timeout={timeout:g} s; " if timeout is not None else ""
        super().__init__(f"{what} ({limit}{reason}); exiting with {EXIT_HUNG}: run the same command again {hint}")


@contextlib.contextmanager
def peers_answering(where: Callable[[], int | str], timeout: float | None) -> Iterator[None]:
    """Turn a collective's failure because another rank stopped answering or left into ``PeerLost`` naming
    ``where()``, the update in progress (or the phase of the run)."""
    try:
        yield
    except RuntimeError as e:
        reason = peer_failure(e)
        if reason is None or not is_initialized():  # no group yet: the start's own error (a port in use), as it is
            raise
        raise PeerLost(where(), timeout, reason, announced_failure()) from None


@contextlib.contextmanager
def failing_together() -> Iterator[None]:
    """An error on this rank (bad input, a full disk, a crash: not another rank's departure, not a requested stop)
    is left for the other ranks as it propagates (``announce_failure``): they stop with its line and exit code."""
    try:
        yield
    except (PeerLost, Stopped):
        raise
    except Exception as e:
        if is_initialized():
            said = failure_line(e) if isinstance(e, USER_ERRORS) else f"rank {get_rank()} {failure_line(e)}"
            announce_failure(said, 2 if isinstance(e, USER_ERRORS) else 1)
        raise


def failure_line(error: Exception) -> str:
    """The one line a failed run is known by (summary.json, a sweep's report, the other ranks): bad input's or a
    lost peer's own line, else the crash's type and first line."""
    if isinstance(error, PeerLost) and error.failed is not None:
        return error.failed[0]
    if isinstance(error, (*USER_ERRORS, PeerLost)):
        return str(error)
    return f"crashed: {type(error).__name__}: {first_line(error)}"


def log_files() -> list[logging.FileHandler]:
    """The handlers that write the run's log file (train.log under Hydra)."""
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def to_log_files(message: str, error: BaseException | None = None) -> None:
    """``message`` (with ``error``'s traceback) in the log file alone: what stderr shows already, kept with the run."""
    info = (type(error), error, error.__traceback__) if error is not None else None
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, info)
    for handler in log_files():
        handler.handle(record)


def report(message: str, stacks: bool = False) -> None:
    """``error: message`` on stderr and in the log file, then with ``stacks`` every thread's Python stack in both.
    Each is written from a thread of its own, waited for at most ``LOG_WAIT_S`` in all: the stall may be in that
    very output (a full pipe on stderr, a hung network filesystem under the log file, a lock the stuck thread
    holds), and the process must still end."""
    where = ""
    if stacks:
        try:
            where = all_stacks()
        except OSError as e:  # no scratch file (too many open files, a full /tmp): the message alone
            where = f"(the stacks could not be written: {e})\n"

    def to_stderr() -> None:
        sys.stderr.write(f"error: {message}\n{where}")
        sys.stderr.flush()

    def to_log() -> None:
        to_log_files(message)
        for handler in log_files():
            handler.stream.write(where)
            handler.flush()

    writers = [threading.Thread(target=f, name=f"report-{f.__name__}", daemon=True) for f in (to_stderr, to_log)]
    deadline = time.monotonic() + LOG_WAIT_S
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(max(0.0, deadline - time.monotonic()))


def all_stacks() -> str:
    """Every thread's Python stack as faulthandler writes it, read back from a scratch file (faulthandler writes
    to a file descriptor holding the interpreter's lock: on a blocked pipe no other thread could run). In memory
    where the system allows (Linux), so that a hung filesystem under the temporary folder cannot stall it."""
    in_memory = hasattr(os, "memfd_create")
    with os.fdopen(os.memfd_create("stacks"), "w+") if in_memory else tempfile.TemporaryFile("w+") as scratch:
        faulthandler.dump_traceback(file=scratch, all_threads=True)
        scratch.seek(0)
        return scratch.read()


class Watchdog:
    """While active, a thread waits for ``progress(t)`` (update t is next) at most ``timeout`` seconds at a time
    (None: never); past that the process reports the stacks and exits with ``EXIT_HUNG``. A thread of its own, so
    that it fires whatever the main thread is stuck in, as long as that releases the GIL (I/O, a collective, a CUDA
    synchronisation)."""

    def __init__(self, timeout: float | None, update: int = 0):
        self.timeout, self.update, self.doing = timeout, update, None
        self.deadline = float("inf")
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def progress(self, update: int, doing: str | None = None) -> None:
        """Update ``update`` is the next to finish (or ``doing``, an evaluation or a save, is next); the clock
        starts again."""
        self.update, self.doing = update, doing
        if self.timeout is not None:
            self.deadline = time.monotonic() + self.timeout

    def __enter__(self) -> Watchdog:
        if self.timeout is not None:
            self.progress(self.update)
            self.thread = threading.Thread(target=self.watch, name="hang-watchdog", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()

    def watch(self) -> None:
        while not self.done.wait(max(0.0, self.deadline - time.monotonic())):
            if time.monotonic() >= self.deadline:
                doing = self.doing or f"update {self.update}"
                report(
                    f"{doing} did not finish within trainer.hang_timeout={self.timeout:g} s; the stack of every "
                    f"thread follows; exiting with {EXIT_HUNG}: run the same command again to resume from the latest "
                    "checkpoint",
                    stacks=True,
                )
                os._exit(EXIT_HUNG)
