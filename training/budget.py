"""T, the number of optimizer updates, from ``trainer.max_steps``, ``trainer.max_tokens`` or ``trainer.max_time``.

T is fixed once, before update 0, and saved with the run (``budget.json`` and every checkpoint), so the schedule
stays an exact function of the update index and a resumed run keeps the same T. For a wall-clock budget T comes
from a short measurement of the real update (the code the loop runs, on the real model and batches, with a
throwaway optimizer at lr 0 so that no weight and no generator changes), of an evaluation and of sampling, and
from the checkpoint's size and the time an empty one takes to write:

    T = ⌊(max_time − elapsed − 2·eval − checkpoint − sample − teardown)
          / (1.05·update + log + eval/eval_every + checkpoint/ckpt_every)⌋

where ``elapsed`` counts from the job's start (imports, data, model, the measurement itself).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from data.atomic import begin
from training import checkpoint, distributed
from training.config import ConfigError, budget_key

STEP_MARGIN = 1.05  # the measured update × this: other processes competing for the machine
# Set aside per update outside the measured update (metrics.jsonl and the console), and once at the end (plots,
# closing the files, the process's exit; the CUDA context). Each plugged sink adds its own (training.loggers.Sink).
LOG_SECONDS = 0.0005
TEARDOWN_SECONDS, CUDA_TEARDOWN_SECONDS = 1.5, 1.0
CHECKPOINT_BYTES_PER_SECOND = 200e6  # a conservative disk
clock = time.perf_counter  # what measurements read; tests put a fake clock here


@dataclass
class TimePlan:
    """How a wall-clock budget was divided, as measured before update 0 (seconds)."""

    max_time: float
    total_steps: int
    elapsed_at_plan: float
    step_seconds: float
    eval_seconds: float
    checkpoint_seconds: float
    sample_seconds: float
    teardown_seconds: float
    log_seconds: float = LOG_SECONDS

    def as_dict(self) -> dict[str, Any]:
        """Its values for budget.json and the checkpoints, unrounded: the end's planned seconds, computed again
        from them, must be the plan's own."""
        return asdict(self)

    def planned_end(self, eval_every: int, ckpt_every: int) -> float:
        """Seconds from the job's start to the end of the run that this plan expects."""
        T = self.total_steps
        evaluations = evaluation_count(T, eval_every)
        checkpoints = ((T - 1) // ckpt_every if ckpt_every else 0) + 1  # every ckpt_every before T, and at T
        return (
            self.elapsed_at_plan
            + T * (self.step_seconds * STEP_MARGIN + self.log_seconds)
            + evaluations * self.eval_seconds
            + checkpoints * self.checkpoint_seconds
            + self.sample_seconds
            + self.teardown_seconds
        )


def evaluation_count(T: int, eval_every: int) -> int:
    """The evaluations of a run of T updates: at 0 and every eval_every before T (train.py's fit), and at T."""
    return (math.ceil(T / eval_every) if eval_every else 0) + 1


def plan_time(
    max_time: float,
    elapsed: float,
    step_seconds: float,
    eval_seconds: float,
    checkpoint_seconds: float,
    sample_seconds: float,
    teardown_seconds: float,
    eval_every: int,
    ckpt_every: int,
    log_seconds: float = LOG_SECONDS,
) -> TimePlan:
    """The largest T whose updates, evaluations (at 0, every ``eval_every`` and at T) and checkpoints (every
    ``ckpt_every`` and at T) fit in what is left of ``max_time``."""
    evaluations = 2 if eval_every else 1  # at 0 (with eval_every) and at T
    fixed = elapsed + evaluations * eval_seconds + checkpoint_seconds + sample_seconds + teardown_seconds
    per_update = step_seconds * STEP_MARGIN + log_seconds
    if eval_every:
        per_update += eval_seconds / eval_every
    if ckpt_every:
        per_update += checkpoint_seconds / ckpt_every
    steps = math.floor((max_time - fixed) / per_update)
    if steps < 1:
        ends = "evaluations (at 0 and at T)" if eval_every else "the evaluation at T"
        ends += ", a checkpoint" + (", the sample" if sample_seconds else "") + " and the end"
        raise ConfigError(
            f"trainer.max_time={max_time:g}: too short for one update — start-up took {elapsed:.1f} s, an update "
            f"takes {step_seconds:.2f} s, {ends} {fixed - elapsed:.1f} s; one update needs trainer.max_time ≥ "
            f"{math.ceil(fixed + per_update)}"
        )
    return TimePlan(
        max_time,
        steps,
        elapsed,
        step_seconds,
        eval_seconds,
        checkpoint_seconds,
        sample_seconds,
        teardown_seconds,
        log_seconds,
    )


def steps_from_tokens(max_tokens: int, tokens_per_update: int) -> int:
    """T = ⌊max_tokens / tokens per update⌋; at least one update must fit."""
    if max_tokens < tokens_per_update:
        raise ConfigError("trainer.max_tokens", f"≥ the tokens of one update ({tokens_per_update:,})", max_tokens)
    return max_tokens // tokens_per_update


def total_steps(
    trainer: Mapping[str, Any],
    tokens_per_update: int,
    saved: Mapping[str, Any] | None,
    measure: Callable[[], TimePlan],
) -> tuple[int, dict[str, Any]]:
    """T and the record of how it was set (``budget.json``, every checkpoint); a time budget calls ``measure``
    once. ``max_steps`` and ``max_tokens`` give T as they do at a start (a change is then the schedule check's to
    refuse or allow), ``max_tokens`` after updates of another size the updates taken plus the tokens left at this
    run's size; a resumed run keeps the T its time budget planned (``saved``: the checkpoint's state), and
    a time budget other than the one that planned it is refused: T is planned once, before update 0."""
    key = budget_key(trainer)
    if key == "max_steps":
        return trainer["max_steps"], {"max_steps": trainer["max_steps"], "total_steps": trainer["max_steps"]}
    if key == "max_tokens":
        T = steps_from_tokens(trainer["max_tokens"], tokens_per_update)
        if saved is not None and saved["tokens"] != saved["step"] * tokens_per_update:
            # updates of another size before (another batch, more ranks): the tokens left, at this run's size
            T = saved["step"] + max(0, trainer["max_tokens"] - saved["tokens"]) // tokens_per_update
        return T, {"max_tokens": trainer["max_tokens"], "total_steps": T}
    if saved is not None:
        before = saved["budget"]
        if before.get("max_time") != trainer["max_time"]:
            k = next((k for k in ("max_time", "max_tokens", "max_steps") if k in before), None)
            how = f"trainer.{k}={before[k]:g}" if k else "another budget"
            raise ConfigError(
                f"trainer.max_time: the checkpoint's T = {saved['total_steps']} came from {how}, and a time budget "
                "is planned once, before update 0; resume with that budget, or set T with trainer.max_steps=N "
                "(and trainer.allow_schedule_change=true)"
            )
        return saved["total_steps"], before
    plan = measure()
    return plan.total_steps, plan.as_dict()


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = clock()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock() - t0


def measurement_seconds(max_time: float) -> float:
    """How long to time updates for a budget of ``max_time`` seconds: 4 % of it, between 1 and 30 seconds (a
    longer window averages over more of a shared machine's drift)."""
    return min(max(0.04 * max_time, 1.0), 30.0)


def median_seconds(
    update: Callable[[int], float],
    seconds: float,
    warmup: int = 2,
    repeats: int = 5,
    max_repeats: int = 500,
    agree: Callable[[bool], bool] = lambda more: more,
) -> float:
    """The median of ``update(i)`` (seconds), after ``warmup`` calls and a quarter of ``seconds`` uncounted (the
    compiler, the allocator, the optimizer's first state); timed until ``repeats`` calls and ``seconds`` passed.
    ``agree`` makes each "one more?" every rank's answer: an update holds collectives, so all must call it as
    often (``distributed.any_rank``: one more while any rank's clock asks for it)."""
    i, spent = 0, 0.0
    while agree(i < warmup or spent < seconds / 4):
        spent += update(i)
        i += 1
    times: list[float] = []
    while agree(len(times) < max_repeats and (len(times) < repeats or sum(times) < seconds)):
        times.append(update(i))
        i += 1
    return statistics.median(times)


def eval_seconds(evaluate: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one evaluation (every evaluation of the run), timed after an untimed first one: a compiled
    model compiles on its first call, once for the whole run."""
    evaluate()
    return timed(evaluate, device)


def measure_update(
    step, throwaway: torch.optim.Optimizer, micro_batches: Callable[[int], list], seconds: float
) -> float:
    """Median seconds of one real update — fetching its batches, forward, backward, clip, the host sync and an
    optimizer step — by ``step`` (a ``training.engine.TrainStep``) with the ``throwaway`` optimizer at lr 0:
    weights, the run's optimizer and the generators stay as they were."""
    for group in throwaway.param_groups:
        group["lr"] = 0.0
    measured = step.with_optimizer(throwaway, torch.optim.lr_scheduler.LambdaLR(throwaway, lambda t: 0.0))
    device = step.model.how.device
    update = lambda i: timed(lambda: measured(micro_batches(i)), device)  # noqa: E731
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        return median_seconds(update, seconds, agree=distributed.any_rank)


def sample_seconds(
    sample: Callable[[int], Any], n_tokens: int, device: torch.device, *, cached: int, window: Callable[[], Any]
) -> float:
    """Seconds to sample ``n_tokens``: a fixed and a per-token cost from two short samples (4 and 12 tokens,
    after an untimed one that loads the kernels). Past the first ``cached`` tokens (what the KV cache holds)
    every token recomputes the whole context: one ``window`` call (a full-context forward) more each."""
    sample(1)
    short, longer = timed(lambda: sample(4), device), timed(lambda: sample(12), device)
    per_token = max(0.0, (longer - short) / 8)
    seconds = max(0.0, short - 4 * per_token) + per_token * n_tokens
    if n_tokens > cached:
        window()
        seconds += (n_tokens - cached) * timed(window, device)
    return seconds


def checkpoint_seconds(n_params: int, overhead: float = 0.0) -> float:
    """Seconds to write a checkpoint: the weights and AdamW's two moments in fp32, and ``overhead``."""
    return overhead + n_params * 4 * 3 / CHECKPOINT_BYTES_PER_SECOND


def checkpoint_overhead(run_dir: Path | None, repeats: int = 3) -> float:
    """Seconds a checkpoint costs besides its bytes (each file's fsync, the folder's commit, ``latest``, the
    pruning), timed by saving ``repeats`` empty checkpoints under ``run_dir``'s checkpoints folder, on its
    filesystem, then removed; the median counts. None: 0 (not measured)."""
    if run_dir is None:
        return 0.0
    made = [p for p in (run_dir, run_dir / "checkpoints") if not p.exists()]  # a refused plan leaves neither
    kept = None if made else (run_dir / "checkpoints").stat()  # nor a changed time: it reads as written to
    probe = begin(run_dir / "checkpoints", "budget-probe")
    try:
        times = []
        for step in range(repeats):
            t0 = clock()
            checkpoint.save(probe, step, {"step": step}, {"config.yaml": ""}, keep=1)
            times.append(clock() - t0)
        return statistics.median(times)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if kept is not None:
            with contextlib.suppress(OSError):
                os.utime(run_dir / "checkpoints", ns=(kept.st_atime_ns, kept.st_mtime_ns))


def measure_time_plan(
    max_time: float,
    elapsed: Callable[[], float],
    *,
    update: Callable[[], float],
    evaluation: Callable[[], float],
    sample: Callable[[], float],
    n_params: int,
    eval_every: int,
    ckpt_every: int,
    sinks: list[type],
    cuda: bool,
    checkpoint_overhead: float = 0.0,
) -> TimePlan:
    """Measure the parts of a run (each callable returns seconds) and fit T into ``max_time``; ``sinks``: the
    classes of the plugged metric sinks, whose costs are set aside too; ``checkpoint_overhead``: a checkpoint's
    seconds besides its bytes."""
    step, evaluation_s, sample_s = update(), evaluation(), sample()
    if sample_s > 0:
        sample_s += sum(getattr(s, "SAMPLE_SECONDS", 0.0) for s in sinks)
    teardown = TEARDOWN_SECONDS + sum(getattr(s, "TEARDOWN_SECONDS", 0.0) for s in sinks)
    teardown += CUDA_TEARDOWN_SECONDS if cuda else 0.0
    log = LOG_SECONDS + sum(getattr(s, "LOG_SECONDS", 0.0) for s in sinks)
    return plan_time(
        max_time,
        elapsed(),
        step,
        evaluation_s,
        checkpoint_seconds(n_params, checkpoint_overhead),
        sample_s,
        teardown,
        eval_every,
        ckpt_every,
        log,
    )


def seconds_since_process_start() -> float:
    """Wall-clock seconds since this process started (from /proc on Linux; else 0)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5), counted after the command name
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def measure_plan(
    trainer,
    started: float,
    *,
    step,
    optimizer: Callable[[], torch.optim.Optimizer],
    micro_batches: Callable[[int], list],
    evaluate: Callable[[], Any],
    sample: Callable[[int], Any] | None,
    window: Callable[[], Any],
    cached: int,
    n_params: int,
    sinks: list[type],
    run_dir: Path | None = None,
) -> TimePlan:
    """A time budget's plan for ``trainer`` (``cfg.trainer``) from the run's own parts, measured now: its update
    (``step``, a ``training.engine.TrainStep``, with a throwaway ``optimizer()``), its evaluations, its sample
    (None: this rank samples nothing; ``cached`` tokens fit the KV cache, past them ``window`` runs a full-context
    forward), its checkpoints' fixed cost (``run_dir``: where they go; None on a rank that writes none) and its
    sinks' costs; ``started``: ``time.perf_counter()`` at the job's start."""
    device = step.model.how.device
    return measure_time_plan(
        trainer.max_time,
        lambda: time.perf_counter() - started,
        update=lambda: measure_update(step, optimizer(), micro_batches, measurement_seconds(trainer.max_time)),
        evaluation=lambda: eval_seconds(evaluate, device),
        sample=lambda: (
            sample_seconds(sample, trainer.sample_tokens, device, cached=cached, window=window)
            if sample is not None
            else 0.0
        ),
        n_params=n_params,
        eval_every=trainer.eval_every,
        ckpt_every=trainer.ckpt_every,
        sinks=sinks,
        cuda=device.type == "cuda",
        checkpoint_overhead=checkpoint_overhead(run_dir),
    )
