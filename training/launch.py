"""What train.py's Hydra edge does around a run: its place in a sweep, the ranks' command lines under torchrun,
the run directory's lock before Hydra writes into it, a run directory that never started, and a sweep's failed
jobs."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from data.atomic import DiskFull, replace_file
from training import run_lock
from training.budget import seconds_since_process_start
from training.build import Sweep
from training.config import USER_ERRORS, split_flags
from training.distributed import env_world
from training.secrets import redact, redact_text, register_overrides, scrub_hydra_files
from training.signals import EXIT_RESUMABLE, Stopped, hold_between_jobs, release_between_jobs
from training.summary import write_summary
from training.watchdog import failure_line

log = logging.getLogger("train")
IN_PROCESS_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
jobs: list[tuple[int, str | None]] = []  # (job number, its error) of every sweep job run in this process
stopped: list[tuple[int, Stopped]] = []  # (job number, its stop) of those trainer.stop_at stopped
ran: set[Path] = set()  # the run directories of the sweep jobs run in this process (their report's rows)
report_error: str | None = None  # why the sweep's report could not be written, for the last line and exit code
failed_elsewhere: tuple[str, int] | None = None  # the line and exit code of jobs another launcher's processes failed
stopped_elsewhere: tuple[str, int] | None = None  # and of those they stopped (75)
signalled_at_end: str | None = None  # a signal that came while the latest job ended (train.py's train sets it)
job_wall_start = 0.0  # time.time() at the start of this process's latest job
sweep_wall_start = 0.0  # time.time() as the launching process started the sweep


def job_started() -> float:
    """``time.perf_counter()`` at this job's start, for a time budget: the process's start for the first job a
    process runs (its imports count), the job's own start for a later one in the same process (a sweep under
    Hydra's basic launcher, a reused joblib worker); a submitit job is the first of its own process. Records the
    wall-clock start too (``job_wall_start``): a file older than it is an earlier run's."""
    global job_wall_start
    job_wall_start = time.time()
    return time.perf_counter() - (0.0 if jobs else seconds_since_process_start())


def task_overrides(overrides) -> list[str]:
    """A job's overrides (``hydra.overrides.task``), their interpolations resolved (a secret given as
    ``${oc.env:…}`` is then known by its value, to redact it); as written where one cannot be (checked later)."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        return list(overrides)
    except OmegaConfBaseException:
        return OmegaConf.to_container(overrides, resolve=False)


def sweep_of(hc, argv: list[str]) -> Sweep | None:
    """A multirun job's group in the trackers (the sweep directory) and name (its swept values, as
    ``schedule=wsd``)."""
    from hydra.types import RunMode

    if hc.mode != RunMode.MULTIRUN:
        return None
    swept = swept_overrides(task_overrides(hc.overrides.task), argv, hc.sweeper.get("params"))
    return Sweep(group=str(hc.sweep.dir), name=redact_text(",".join(swept)) or f"job{hc.job.num}")


def swept_overrides(job_overrides: list[str], argv: list[str], sweeper_params: dict | None) -> list[str]:
    """The overrides of a sweep job that vary across the sweep (``optim.lr=0.001``), not the fixed ones: the keys
    given several values on the command line (``optim.lr=1e-3,3e-3``) or in ``hydra.sweeper.params``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:  # not Hydra overrides after all: fall back to all of the job's
        return list(job_overrides)
    swept = {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}
    swept |= set(sweeper_params or {})
    return [o for o in job_overrides if o.split("=", 1)[0].lstrip("+~") in swept]


def in_process(hc) -> bool:
    """Whether the job's siblings run in this process (Hydra's own launcher), not each in a process of its own."""
    return hc.launcher.get("_target_") == IN_PROCESS_LAUNCHER


def sweep_job_failed(hc, sweep: Sweep, error: Exception) -> None:
    """Report a sweep job's bad input in one line, or its crash with the traceback (in its train.log too), and
    mark it failed in its summary.json, for the report and ``sweep_summary``; the job then returns, so that the
    sweep goes on (another launcher's results would raise before the report)."""
    crashed = not isinstance(error, USER_ERRORS)
    if crashed:
        log.exception("job %s (%s) crashed", hc.job.num, sweep.name)
    else:
        log.error("error: job %s (%s): %s", hc.job.num, sweep.name, error)
    error_line = redact_text(failure_line(error))  # summary.json and the sweep's report show it
    jobs[-1] = (hc.job.num, error_line)
    if not isinstance(error, run_lock.RunInUse):  # else the directory and its summary are another process's
        scrub_hydra_files(Path(hc.runtime.output_dir))  # a job that never ran keeps no secret in .hydra/ either
        summary = Path(hc.runtime.output_dir) / "summary.json"
        if summary.is_file() and summary.stat().st_mtime < job_wall_start:  # an earlier run's: not this job's
            summary.unlink()
        # the report shows it, and from "started" which files this launch of the job wrote
        write_summary(summary.parent, {"status": "failed", "error": error_line, "started": job_wall_start})
    if crashed and in_process(hc):
        gc.collect()  # the crashed job's model and optimizer, before the next job builds its own


def sweep_job_stopped(hc, sweep: Sweep, stop: Stopped) -> bool:
    """``trainer.stop_at`` stops each job of a sweep run in this process there, and the sweep goes on to the
    next (True); ``sweep_summary`` closes it with exit code 75. Another launcher's job returns, marked preempted in
    its summary.json, which the launching process's report reads."""
    if not in_process(hc):
        return False
    log.info("job %s (%s): %s", hc.job.num, sweep.name, stop)
    stopped.append((hc.job.num, stop))
    return True


def same_command(hc, is_sweep: bool) -> str:
    """How to run the job's directory again: the same command, with the directory Hydra chose when it chose one."""
    key, where = ("hydra.sweep.dir", hc.sweep.dir) if is_sweep else ("hydra.run.dir", hc.runtime.output_dir)
    if any(arg.startswith(f"{key}=") for arg in sys.argv[1:]):
        return "the same command"
    return f"the same command with {key}={where}"  # Hydra's default: a new one each time


def sweep_summary() -> tuple[str, int] | None:
    """One line on a sweep run in this process whose jobs did not all finish, and its exit code: 1 when one
    crashed, 2 when one had bad input, else 75 when ``trainer.stop_at`` stopped some; None when every job ran."""
    failed = [num for num, error in jobs if error is not None]
    if failed:
        crashed = any(error.startswith("crashed: ") for _, error in jobs if error is not None)
        line = f"error: {len(failed)} of {len(jobs)} sweep jobs failed (job {', '.join(map(str, failed))}), each above"
        return line, 1 if crashed else 2
    if failed_elsewhere is not None:
        return failed_elsewhere
    if report_error is not None:
        return f"error: {report_error}", 2
    if stopped_elsewhere is not None:
        return stopped_elsewhere
    if stopped:
        nums = ", ".join(str(num) for num, _ in stopped)
        line = f"{len(stopped)} of {len(jobs)} sweep jobs stopped at trainer.stop_at (job {nums})"
        return f"{line}; re-run {stopped[-1][1].again} to resume them", EXIT_RESUMABLE
    return None


class LockRunDir(Callback):
    """Hydra callback (conf/config.yaml): a single run locks its directory before Hydra writes ``.hydra/`` and
    ``train.log`` into it, so a second launch on it changes nothing there; it stops with one line, exit code 2.
    (A multirun job locks its own directory before its first write, in ``build_run``.) A crashed job's overrides,
    which Hydra prints, are redacted."""

    def on_run_start(self, config, **kwargs) -> None:
        if env_world()[0] != 0:
            return
        run_dir = str(config.hydra.run.dir)
        if not run_dir.strip():  # Path("") is the current directory: the run's files would land in it
            print("error: hydra.run.dir must be a folder for the run's outputs, got ''", file=sys.stderr)
            sys.exit(2)
        global before
        try:
            before = Before.of(Path(run_dir))
            run_lock.acquire(Path(run_dir))
        except (run_lock.RunInUse, DiskFull) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except OSError as e:  # a file where the folder, or one above it, should be
            print(f"error: hydra.run.dir: {run_dir!r} cannot be a folder ({e.strerror or e})", file=sys.stderr)
            sys.exit(2)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        # Hydra prints a crashed job's overrides above its traceback: the console and a SLURM log keep no secret
        job_return.overrides = redact(list(job_return.overrides or []))

    def on_run_end(self, config, **kwargs) -> None:
        if env_world()[0] == 0:
            run_lock.release(Path(config.hydra.run.dir))

    def on_multirun_end(self, config, **kwargs) -> None:
        release_between_jobs()

    def on_multirun_start(self, config, **kwargs) -> None:
        sweep_dir = str(config.hydra.sweep.dir)
        if env_world()[2] > 1:  # every rank would run the jobs apart, and a job's ranks would not meet
            why = "a sweep (-m) cannot run under torchrun; run each job as its own torchrun command"
        elif not sweep_dir.strip():  # Path("") is the current directory: the jobs' folders would land in it
            why = "hydra.sweep.dir must be a folder for the sweep's jobs, got ''"
        elif file := next((p for p in (Path(sweep_dir), *Path(sweep_dir).parents) if p.is_file()), None):
            why = f"hydra.sweep.dir: {str(file)!r} is a file, not a folder"
        elif busy := [job for job in sorted(Path(sweep_dir).glob("*/")) if run_lock.in_use(job)]:
            # Hydra would write each job's .hydra/ and train.log before the job's own lock refuses it
            why = (
                f"hydra.sweep.dir: {sweep_dir} has a job running ({busy[0].name}: {run_lock.holder_of(busy[0])}); "
                "wait for it to end or stop it, or give this sweep another hydra.sweep.dir"
            )
        else:
            if in_process(config.hydra):
                hold_between_jobs()  # a signal between two jobs stops the sweep as one during a job does
            global sweep_wall_start
            sweep_wall_start = time.time()
            earlier_jobs.clear()  # what an earlier launch left in the job folders, for a job refused there
            earlier_jobs.update(
                {job: Before.of(job) for job in Path(sweep_dir).glob("*/") if (job / ".hydra").is_dir()}
            )
            return
        print(f"error: {why}", file=sys.stderr)
        sys.exit(2)


class SweepReport(Callback):
    """Hydra callback (conf/config.yaml): at the end of a multirun, whatever the launcher, the sweep's report —
    report.csv, report.md, report.png (and frontier.png) in the sweep directory (``training.report``); given a fit
    (``hydra.callbacks.sweep_report.forecast=fit.json``), each job's forecast beside its result. A fit that cannot
    be read stops the sweep before its first job: one line, exit code 2. Hydra's ``multirun.yaml`` there is
    scrubbed of secrets (by each job, and again here should no job have got that far)."""

    def __init__(self, forecast: str | None = None) -> None:
        self.forecast = Path(forecast) if forecast else None

    def on_multirun_start(self, config, **kwargs) -> None:
        if self.forecast is None:
            return
        from scheduling.forecast import ForecastError, load_fit

        try:
            load_fit(self.forecast)
        except ForecastError as e:
            print(f"error: hydra.callbacks.sweep_report.forecast: {e}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_end(self, config, **kwargs) -> None:
        write_sweep_report(config.hydra, self.forecast)
        put_back_refused_jobs()


def write_sweep_report(hydra_cfg, forecast: Path | None, every_job: bool = False) -> None:
    """The sweep's report: at its end, of the jobs run in this process (when it ran them: an earlier, larger grid's
    other folders are left out); when a requested stop ends it early (``every_job``), of every job folder."""
    from training.plots import WriteError
    from training.report import markdown, write_report

    sweep_dir = Path(hydra_cfg.sweep.dir)
    global report_error
    if in_process(hydra_cfg) and not ran and not every_job:  # optim.lr=range(0), a glob that matched nothing
        report_error = "the sweep has no jobs: each swept key needs one value at least"
        return
    if not sweep_dir.is_dir():
        return
    register_overrides(task_overrides(hydra_cfg.overrides.task))  # its jobs scrub it too, unless none did
    scrub_hydra_files(sweep_dir)
    try:
        jobs, files = write_report(sweep_dir, forecast, None if every_job else ran or None)  # another launcher's: all
    except (WriteError, DiskFull) as e:  # the jobs' own folders hold their results: one line, exit code 2
        report_error = f"the sweep report: {e}"
        return
    log.info("sweep report, best first (%s):\n%s", ", ".join(f.name for f in files), markdown(jobs).rstrip())
    if not ran:  # the jobs ran in processes of their own (submitit): their ends are read back from the report
        global failed_elsewhere, stopped_elsewhere
        failed = [j for j in jobs if j.status == "failed"]
        if failed:
            names = ", ".join(j.run_dir.name for j in failed)
            crashed = any((j.error or "").startswith("crashed: ") for j in failed)
            line = f"error: {len(failed)} of {len(jobs)} sweep jobs failed ({names}), each in its train.log"
            failed_elsewhere = (line, 1 if crashed else 2)
        if stopped := [j.run_dir.name for j in jobs if j.status == "preempted"]:
            line = f"{len(stopped)} of {len(jobs)} sweep jobs stopped ({', '.join(stopped)})"
            stopped_elsewhere = (f"{line}; re-run {same_command(hydra_cfg, True)} to resume them", EXIT_RESUMABLE)


def sweep_stopped(hc) -> None:
    """A requested stop ends a sweep run in this process (Hydra runs no more jobs, nor the report's callback):
    the report of the jobs so far, with the stopped one marked preempted — of every job folder there, as the jobs
    of this grid not reached are an earlier launch's."""
    if not in_process(hc):
        return  # the launching process writes it when its jobs are done
    callback = (hc.callbacks or {}).get("sweep_report")
    if callback is None:
        return
    forecast = callback.get("forecast")
    write_sweep_report(hc, Path(forecast) if forecast else None, every_job=True)
    put_back_refused_jobs()


def end_sweep_if_signalled(hc, again: str) -> None:
    """A signal that came while a sweep job run in this process ended (its trackers' last records) stops the sweep
    after that job: the report, the failed jobs' line if any, and their exit code, else 75."""
    global signalled_at_end
    why, signalled_at_end = signalled_at_end, None
    if why is None or not in_process(hc):
        return  # a job in a process of its own ends as a single run does
    sweep_stopped(hc)
    log.info("%s came while job %s ended: the sweep stops after it; re-run %s to go on", why, hc.job.num, again)
    exit_stopped_sweep()


def exit_stopped_sweep() -> None:
    """A sweep run in this process that a signal stopped ends with 75 (resumable) — unless a job failed: then with
    the failed jobs' line and code, which a requeue would not cure."""
    failed = sweep_summary()
    if failed is not None and failed[1] != EXIT_RESUMABLE:
        print(failed[0], file=sys.stderr)
        sys.exit(failed[1])
    sys.exit(EXIT_RESUMABLE)


HYDRA_WRITES = (".hydra", "train.log", run_lock.LOCK_FILE)  # what Hydra (and the lock) write before the run starts


@dataclass
class Before:
    """A single run's directory as this launch found it, so a run refused before it wrote anything of its own
    leaves the directory as it was: removed when it is new, else Hydra's record and log put back."""

    existed: bool
    entries: dict[str, tuple[int, int]]  # the run's own files and folders: name → (size, mtime_ns)
    record: dict[str, bytes] | None  # .hydra/'s files, None when there was no .hydra/
    log_size: int | None
    lock: bytes | None  # the lock file's record of its last holder
    summary: bytes | None = None  # summary.json, which a refused sweep job writes over

    @classmethod
    def of(cls, run_dir: Path) -> Before:
        hydra = run_dir / ".hydra"
        record = {p.name: p.read_bytes() for p in hydra.iterdir() if p.is_file()} if hydra.is_dir() else None
        log = run_dir / "train.log"
        return cls(
            run_dir.is_dir(),
            own_entries(run_dir),
            record,
            log.stat().st_size if log.is_file() else None,
            lock.read_bytes() if (lock := run_dir / run_lock.LOCK_FILE).is_file() else None,
            summary.read_bytes() if (summary := run_dir / "summary.json").is_file() else None,
        )

    def undo(self, run_dir: Path, refused_job: bool = False) -> bool:
        """Leave ``run_dir`` as it was (True), unless the run wrote into it (then what it wrote stays, with its
        record and log). ``refused_job``: a sweep job's refusal, whose summary.json is put back too."""
        entries = own_entries(run_dir)
        if refused_job:  # a folder an earlier launch wrote: all but its summary.json as this launch found it
            entries = {k: v for k, v in entries.items() if k != "summary.json"}
            if {k: v for k, v in self.entries.items() if k != "summary.json"} != entries:
                return False
            if self.summary is None:
                (run_dir / "summary.json").unlink(missing_ok=True)
            else:
                replace_file(run_dir / "summary.json", self.summary)
        elif entries != self.entries:
            return False
        if not self.existed:
            remove_unstarted(run_dir)
            return True
        hydra = run_dir / ".hydra"
        if self.record is None:
            shutil.rmtree(hydra, ignore_errors=True)
        else:
            hydra.mkdir(exist_ok=True)  # gone if this launch set hydra.output_subdir=null
            for p in hydra.iterdir():
                if p.name not in self.record:
                    p.unlink()
            for name, data in self.record.items():
                replace_file(hydra / name, data)
        log = run_dir / "train.log"
        if self.log_size is None:
            log.unlink(missing_ok=True)
        elif log.is_file():
            os.truncate(log, self.log_size)
        lock = run_dir / run_lock.LOCK_FILE
        if self.lock is None:  # a lock file this process made, and holds until it ends: no other holds it
            lock.unlink(missing_ok=True)
        else:
            lock.write_bytes(self.lock)
        return True


before: Before | None = None  # set by LockRunDir for a single run
earlier_jobs: dict[Path, Before] = {}  # set by LockRunDir for a sweep: its job folders an earlier launch wrote


def put_back_refused_jobs() -> None:
    """A sweep job refused before it wrote anything of its own, in a folder where an earlier launch's run is (a
    sweep run again with a bad value): once the report has its line, that run's .hydra/, train.log and
    summary.json as they were — Hydra had rewritten them before the job could refuse."""
    for job, found in earlier_jobs.items():
        try:
            summary = json.loads((job / "summary.json").read_text())
        except (OSError, ValueError):
            continue
        # bad input, not a crash: a crash's traceback in train.log is what the job leaves to read
        refused = isinstance(summary, dict) and summary.get("status") == "failed"
        refused = refused and not str(summary.get("error") or "").startswith("crashed: ")
        if refused and (summary.get("started") or 0) >= sweep_wall_start and found.undo(job, refused_job=True):
            log.info("job %s was refused; the run an earlier launch left in %s is as it was", job.name, job)
    earlier_jobs.clear()


def own_entries(run_dir: Path) -> dict[str, tuple[int, int]]:
    """The files and folders in ``run_dir`` besides what Hydra writes at start-up: name → (size, mtime_ns)."""
    if not run_dir.is_dir():
        return {}
    return {
        p.name: (st.st_size, st.st_mtime_ns)
        for p in run_dir.iterdir()
        if p.name not in HYDRA_WRITES and (st := p.lstat())
    }


def remove_unstarted(run_dir: Path) -> None:
    """Leave nothing behind for a run that never started: its directory, and the empty folders above it up to
    the working directory (Hydra's ``outputs/<date>/``)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in run_dir.resolve().parents:
        if not parent.is_relative_to(Path.cwd()) or parent == Path.cwd() or any(parent.iterdir()):
            break
        parent.rmdir()


def rank_argv(argv: list[str]) -> list[str]:
    """The command line Hydra parses: its flags first (argparse takes the overrides as one run after them, so
    ``train.py experiment=quick -m seed=1,2`` would print its usage). Under torchrun every rank runs Hydra; only
    rank 0 may create the run directory (the others receive its path), or each rank would make its own
    timestamped directory."""
    flags, overrides, bare = split_flags(argv[1:])
    rank, _, world = env_world()
    if world == 1 or rank == 0:
        return [argv[0], *flags, *overrides, *bare]
    ours = ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=disabled"]
    overrides = [o for o in overrides if not o.lstrip("+").startswith(tuple(x.split("=")[0] + "=" for x in ours))]
    return [argv[0], *flags, *ours, *overrides, *bare]
