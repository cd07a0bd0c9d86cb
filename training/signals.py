"""Graceful stops: SIGTERM (SLURM preemption, ``kill``) and SIGINT (Ctrl-C) finish the current update, then
train.py writes a checkpoint and exits with ``EXIT_RESUMABLE``. A second SIGINT interrupts at once; while the run
starts, either stops it at once, with the same exit code."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

# sysexits.h EX_TEMPFAIL: "temporary failure, the user is invited to retry" — the run stopped early with a
# checkpoint to resume from. A SLURM script can requeue on it (see slurm/).
EXIT_RESUMABLE = 75


# The signal that last asked this process to stop: where a peer's loss ends the run before the stop could (the
# same SIGTERM stopped another rank first), the run ended as stopped all the same.
received: str | None = None


def stop_received() -> str | None:
    """The signal that last asked this process to stop (SIGTERM, SIGINT), if any."""
    return received


held: str | None = None  # a stop asked for between two jobs of a sweep run in this process, for the next job
before_sweep: dict[int, object] = {}  # the handlers hold_between_jobs replaced


def hold_between_jobs() -> None:
    """A sweep whose jobs run in this process: SIGTERM or SIGINT between two jobs, where no job's handler is set,
    is held for the next job, which stops as it starts (``take_held``) — the sweep then ends as after a stop
    during a job, with its report and exit code 75, not killed by the signal. A second SIGINT interrupts at once."""

    def hold(signum: int, frame: FrameType | None) -> None:
        global held, received
        if signum == signal.SIGINT and held is not None:
            raise KeyboardInterrupt
        held = received = signal.Signals(signum).name

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            before_sweep.setdefault(sig, signal.signal(sig, hold))


def release_between_jobs() -> None:
    """The sweep has ended: the handlers it found back in place, and no stop held."""
    global held
    for sig, handler in before_sweep.items():
        signal.signal(sig, handler)
    before_sweep.clear()
    held = None


def take_held() -> None:
    """A stop held between jobs, raised where the next job starts (inside ``StopAtOnce``: it stops there)."""
    global held
    if held is not None:
        why, held = held, None
        raise Interrupted(why)


class StopSignals:
    """While active, SIGTERM and SIGINT set ``requested`` instead of killing the process."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        global received
        if signum == signal.SIGINT and self.requested is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.requested = received = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def keep_ignoring(self, sig: int) -> None:
        """Once the block ends, ignore ``sig`` for the rest of the process instead of restoring its handler."""
        if sig in self._previous:
            self._previous[sig] = signal.SIG_IGN

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class Interrupted(BaseException):
    """A signal while the run starts: a BaseException, as KeyboardInterrupt is, so that no ``except Exception`` on
    its way (a logger that failed to start, a fallback) takes it for a failure."""


class StopAtOnce(StopSignals):
    """While active (the run's start: data preparation, model, trackers), SIGTERM and SIGINT stop the run at once,
    leaving the block as ``Stopped``: before the first update there is nothing to checkpoint, and preparing the
    data can take hours."""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        global received
        received = signal.Signals(signum).name
        raise Interrupted(received)

    def __exit__(self, kind, error, tb) -> None:
        super().__exit__()
        if isinstance(error, Interrupted):
            raise Stopped(None, error.args[0]) from None


class Stopped(Exception):
    """Raised by the loop once a stop was requested and the checkpoint written (``updates``: those taken), or as
    the run starts (``updates`` None); train.py exits EXIT_RESUMABLE."""

    def __init__(self, updates: int | None, why: str):
        super().__init__(updates, why)
        self.updates, self.why = updates, why
        self.again = "the same command"  # how to resume: train.py names the run directory when Hydra chose it

    def __str__(self) -> str:
        if self.updates is None:
            return f"stopped as the run started ({self.why}), before its first update; re-run {self.again} to go on"
        taken = "update 0" if self.updates == 1 else f"updates 0–{self.updates - 1}"
        return f"stopped after {taken} ({self.why}); re-run {self.again} to resume at update {self.updates}"


@contextlib.contextmanager
def stop_even_while_blocked(what: str) -> Iterator[None]:
    """While active, SIGTERM or SIGINT ends the process at once with ``EXIT_RESUMABLE``, saying it stopped while
    ``what``, even while the main thread waits in native code (joining the process group, up to
    trainer.collective_timeout) where Python's handler runs only once that returns: a thread reads the signal
    from the wakeup file descriptor. torchrun's SIGTERM to a rank whose rank 0 refused to start would otherwise
    wait for that, then for torchrun's SIGKILL. Active only under a Python handler (``StopAtOnce``)."""
    handled = signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
    if threading.current_thread() is not threading.main_thread() or not handled:
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def watch() -> None:
        while data := os.read(read_end, 64):
            if stop := next((n for n in data if n in (signal.SIGTERM, signal.SIGINT)), None):
                name = signal.Signals(stop).name
                print(
                    f"stopped while {what} ({name}), before the first update; re-run the same command to go on",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(EXIT_RESUMABLE)

    watcher = threading.Thread(target=watch, name="stop-watcher", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        os.close(write_end)  # the watcher reads the end of the pipe and returns
        watcher.join()
        os.close(read_end)
