"""Train a GPT with Hydra: ``python train.py [group=option ...] [key=value ...]``.

    python train.py                                   # the nano GPT on the built-in corpus (CPU or GPU)
    python train.py model=micro schedule=wsd optim.lr=1e-3 trainer.max_steps=500
    python train.py -m schedule=cosine,linear         # a sweep: one run directory per job
    torchrun --nproc_per_node=8 train.py model=gpt2   # data parallel over 8 GPUs

Reads top to bottom: ``main`` is Hydra's edge; ``train`` checks the config, builds the parts (training/build.py)
and runs ``fit``, the loop: one optimizer update per iteration, ``scheduler.step()`` once after each.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from data.atomic import space_for
from scheduling.spec import register_resolvers
from training import distributed, launch, run_lock
from training.build import Run, Sweep, build_run
from training.config import USER_ERRORS, check_config, check_overrides_or_exit, enough_memory
from training.engine import NONFINITE
from training.init_from import with_init_from
from training.secrets import register_overrides, scrub_hydra_files
from training.signals import EXIT_RESUMABLE, StopAtOnce, Stopped, StopSignals, stop_received, take_held
from training.summary import write_summary
from training.watchdog import (
    EXIT_HUNG,
    PeerLost,
    Watchdog,
    failing_together,
    failure_line,
    peers_answering,
    report,
    to_log_files,
)

log = logging.getLogger("train")
RUN_SIZES = "trainer.batch_size, grad_accum_steps, eval_batches, model.n_embd, n_layer, mlp_hidden"


def train(
    cfg: DictConfig,
    run_dir: Path,
    *,
    sweep: Sweep | None = None,
    overrides: list[str] | None = None,
    started: float | None = None,
) -> float:
    """Train as ``cfg`` says, writing into ``run_dir``; returns the final validation loss.

    ``sweep``: the group and name of a multirun job in the trackers; ``overrides``: the command line's (their
    secret-looking values are redacted everywhere, and none may contradict ``model.init_from``'s folder);
    ``started``: ``time.perf_counter()`` at the job's start, for a time budget.
    Raises a ``USER_ERRORS`` error for bad input, a directory another run holds, or a full disk (``DiskFull``);
    ``Stopped`` after a requested stop (checkpoint written); ``PeerLost`` when another rank stopped answering."""
    register_overrides(list(overrides or []))  # their secret-looking values never get written
    if distributed.env_world()[0] == 0:  # Hydra writes rank 0's files alone; the others run in "."
        scrub_hydra_files(run_dir, *([Path(sweep.group)] if sweep else []))  # first: a run stopped anywhere keeps none
    cfg = with_init_from(cfg, overrides)  # model.init_from: the shape and tokenizer of a transformers folder
    try:
        check_config(cfg)
    except USER_ERRORS as e:
        e.alike_on_every_rank = True  # the config's alone: under torchrun rank 0 says it, once
        raise
    with space_for(run_dir):  # a full disk wherever the run writes: DiskFull, one line naming the file
        # a rank lost while the data is prepared ends the others; a signal then stops the run at once; an error on
        # one rank is every rank's (failing_together): the others stop with its line, not as for a hang
        starting = peers_answering(lambda: "as the run started", None)
        try:
            with (
                failing_together(),
                space_for(run_dir),
                starting,
                StopAtOnce(),
                enough_memory("the run as configured", RUN_SIZES),
            ):
                take_held()  # a stop that came between this sweep job and the one before
                run = build_run(cfg, run_dir, sweep=sweep, started=started)
        except Stopped as e:  # what a job script reads to requeue it (slurm/), as after a stop in the loop
            if distributed.env_world()[0] == 0 and run_dir.is_dir():
                write_summary(run_dir, {"status": "preempted", "stopped_by": e.why})
            raise
        status, stopped_by, error = "failed", None, None
        try:
            with failing_together(), space_for(run_dir):  # told as the one line DiskFull makes of it
                final_val = fit(run)
            status = "ok"
            return final_val
        except Stopped as e:
            status, stopped_by = "preempted", e.why
            raise
        except Exception as e:
            error = failure_line(e)
            raise
        finally:
            # a signal now would cut the trackers' last records: the ending goes first; a rank lost now (rank 0
            # alone samples and reports) ends the others' wait at the last barrier
            with StopSignals() as late, peers_answering(lambda: "as the run ended", None):
                run.finish(status, stopped_by, error)
                if status == "preempted" and run.dist.distributed:
                    # saved and ended on every rank: torchrun's SIGTERM, sent once the first rank has exited 75,
                    # must not turn the others' exit code into -15
                    late.keep_ignoring(signal.SIGTERM)
            if late.requested:
                log.info("%s came while the run was ending; it ended first", late.requested)
                launch.signalled_at_end = late.requested  # a sweep run in this process stops after this job


def fit(run: Run) -> float:
    """The loop: update t uses lr = peak · λ(t); one scheduler.step() after each optimizer update. A stalled
    update ends the process (``Watchdog``); a collective that another rank stopped answering raises ``PeerLost``."""
    trainer, t, T = run.cfg.trainer, run.start, run.total_steps
    if t == T:  # a finished run's command again (a requeue): nothing to train
        log.info("the run has taken all %d updates: only its final evaluation runs again (raise T to go on)", T)
    watchdog = Watchdog(trainer.hang_timeout, t)
    with StopSignals() as signals, watchdog, peers_answering(lambda: t, trainer.collective_timeout):
        while t < T:
            if trainer.eval_every and t % trainer.eval_every == 0:
                watchdog.progress(t, f"the evaluation at update {t}")
                run.evaluate(t)
                watchdog.progress(t)  # an evaluation is progress too: hang_timeout bounds each stretch, not their sum
            t0 = time.perf_counter()
            lrs = run.learning_rates()  # what update t uses
            micro_batches = run.micro_batches(t)
            data_wait = time.perf_counter() - t0
            update, overflows = run.step(micro_batches)  # fp16: retried at a lower scale while it overflows
            if t == run.start:  # compiled, and every rank in step: from now on a peer's silence is a fault
                distributed.set_collective_timeout(trainer.collective_timeout)
            run.metrics.count("fp16_overflows", overflows)
            loss = update.loss if update.status != NONFINITE else math.nan  # a non-finite gradient norm too
            median = run.skips.spike(t, loss, trainer.spike_factor) if trainer.on_spike else None
            back = run.roll_back(t, update, median) if median is not None else None
            if back is not None:
                t = back  # trainer.on_spike=rollback: the newest periodic checkpoint again, past the batches since
            else:
                if update.status == NONFINITE:
                    run.skip_nonfinite(t, update)  # raises under trainer.nonfinite=stop
                run.log_update(t, update, lrs, time.perf_counter() - t0, data_wait)
                t += 1
            watchdog.progress(t)
            # stop_at stops when the run reaches it, once: the same command resumed there goes on to T (and
            # reaching it again after a rollback is no new stop)
            at_stop = t == trainer.stop_at and run.start < trainer.stop_at
            stop = signals.requested or ("trainer.stop_at" if at_stop else None)
            if distributed.any_rank(stop is not None):  # every rank stops at the same update
                watchdog.progress(t, f"the checkpoint at update {t}")
                run.save(t)
                raise Stopped(t, signals.requested or stop or "another rank")  # a signal during the save too
            if trainer.ckpt_every and t % trainer.ckpt_every == 0 and t < T and back is None:
                watchdog.progress(t, f"the checkpoint at update {t}")
                run.save(t)
                watchdog.progress(t)
                if distributed.any_rank(signals.requested is not None):  # came during the save: it is the stop's
                    raise Stopped(t, signals.requested or "another rank")
        distributed.set_collective_timeout(distributed.SETUP_TIMEOUT_S)  # rank 0 alone samples and reports
        watchdog.progress(T, "the final evaluation")
        final_val = run.evaluate(T)
        watchdog.progress(T, "the final checkpoint")
        run.save(T)
        watchdog.progress(T, "the end-of-run sample")
        run.end_sample()
        if signals.requested:  # during the final evaluation, save or sample: the run is whole, a sweep stops here
            log.info("%s came while the run was ending; it ended first", signals.requested)
            launch.signalled_at_end = signals.requested
    return final_val


def end_as_failed(failed: tuple[str, int] | None) -> None:
    """Where another rank failed and said so (its line and exit code): end this one with the same."""
    if failed is not None:
        report(failed[0])
        os._exit(failed[1])


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra's edge: run ``train`` on the job's plain values; bad input ends with one line and exit code 2, a
    requested stop with exit code 75 (resumable), a peer that stopped answering with one line and exit code 124."""
    register_resolvers()  # again here: a launcher's job process (submitit) does not run __main__
    hc = HydraConfig.get()
    started = launch.job_started()
    run_dir, sweep = Path(hc.runtime.output_dir), launch.sweep_of(hc, sys.argv[1:])
    if sweep is not None:
        launch.jobs.append((hc.job.num, None))
        launch.ran.add(run_dir.resolve())
    again = launch.same_command(hc, sweep is not None)
    launch.signalled_at_end = None
    try:
        result = train(
            cfg,
            run_dir,
            sweep=sweep,
            overrides=launch.task_overrides(hc.overrides.task),
            started=started,
        )
    except Stopped as e:
        end_as_failed(distributed.announced_failure())  # torchrun's SIGTERM after another rank failed
        e.again = again
        if sweep is not None and e.why == "trainer.stop_at" and launch.sweep_job_stopped(hc, sweep, e):
            launch.end_sweep_if_signalled(hc, again)
            return math.nan  # each job stops there; the sweep goes on to the next
        if sweep is not None:
            launch.sweep_stopped(hc)  # a signal ends the sweep: the report of the jobs so far, if they ran here
        log.info("%s", e)
        if sweep is not None and launch.in_process(hc):
            launch.exit_stopped_sweep()  # 75, or the code of a job that failed before
        if sweep is not None:  # a job in a process of its own (submitit): preempted in its summary.json, which the
            return math.nan  # launching process's report reads (an exit code would make the launcher raise)
        distributed.shutdown()  # stopped as the ranks joined: a live gloo group can abort the interpreter's exit
        sys.exit(EXIT_RESUMABLE)
    except PeerLost as e:
        end_as_failed(e.failed)  # the rank that left said why
        if (why := stop_received()) is not None and e.at is not None:  # the same stop ended another rank first
            report(
                f"{e.at}: stopped ({why}) as another rank left; exiting with {EXIT_RESUMABLE}: run "
                f"{again} to resume from the latest checkpoint"
            )
            os._exit(EXIT_RESUMABLE)
        report(str(e))
        os._exit(EXIT_HUNG)  # at once: a process group that lost a peer can abort the interpreter's exit
    except Exception as e:
        if sweep is not None:  # marked failed; the sweep goes on (a crash too: the next job may fit) to its report
            launch.sweep_job_failed(hc, sweep, e)
            launch.end_sweep_if_signalled(hc, again)
            return math.nan
        if not isinstance(e, USER_ERRORS) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            to_log_files("the run ended with this error:", e)  # the traceback Hydra prints, in train.log too
            raise  # a crash: Python's traceback, exit code 1
        if getattr(e, "alike_on_every_rank", False) and distributed.env_world()[0] != 0:
            distributed.shutdown()
            sys.exit(2)  # rank 0 prints the same line
        in_use = isinstance(e, run_lock.RunInUse)  # another process's directory, and its train.log
        restored = False
        if launch.before is not None and distributed.env_world()[0] == 0 and not in_use:
            restored = launch.before.undo(run_dir)  # refused before it wrote: the directory as it was found
        if in_use or restored:
            print(f"error: {e}", file=sys.stderr)
        else:
            report(str(e))  # a run stopped midway: the line in its train.log too
        distributed.shutdown()  # refused after the ranks joined: a live gloo group can abort the interpreter's exit
        sys.exit(2)
    if sweep is not None:
        launch.end_sweep_if_signalled(hc, again)
    return result


if __name__ == "__main__":
    register_resolvers()
    check_overrides_or_exit(sys.argv[1:])
    sys.argv = launch.rank_argv(sys.argv)
    main()
    if (failed := launch.sweep_summary()) is not None:
        print(failed[0], file=sys.stderr)
        sys.exit(failed[1])
