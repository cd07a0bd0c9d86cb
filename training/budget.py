"""Budgets: the number of updates T from ``trainer.max_steps``, ``trainer.max_tokens`` or ``trainer.max_time``.

T is fixed once, before update 0, and is saved with the run (``budget.json`` and every checkpoint), so the
schedule stays an exact function of the update index and a resumed run keeps the same T.

For a wall-clock budget T comes from a short measurement of the real training step (the code the loop runs,
on the real model and batches, with a throwaway zero-lr optimizer so no weight changes and no generator state
is consumed), of an evaluation and of sampling, with the checkpoint's size; then

    T = ⌊(budget − elapsed − 2·eval − ckpt − sample − teardown)
          / (1.05·step + log + eval/eval_every + ckpt/ckpt_every)⌋

where ``elapsed`` is everything since the process started (imports, data, model, this measurement).
"""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch

from training.errors import ConfigError

BUDGET_KEYS = ("max_steps", "max_tokens", "max_time")
STEP_MARGIN = 1.05  # the measured update × this: the W&B writer competing for the CPU, the host's drift
# What the plan sets aside beyond what it measures, from what timed runs spent (budget.json's "spent", timed
# from outside by bench/budget_spread.py) on a 2-core CPU: per update, outside the measured update, metrics.jsonl
# and the progress line took 0.3 ms, 1.5-1.7 ms with W&B's log call. The teardown — the loggers' start after
# the plan, the plots, closing the loggers and the process's exit — took 3.5-4.4 s with W&B (its start alone
# 1.3-2.6 s); without W&B the plots took 0.3 s, and 1.5 s is kept for them and the exit. On an H200 the exit
# took about 1 s longer than on the CPU (the CUDA context, the compiler's workers).
LOG_SECONDS = 0.0005
WANDB_LOG_SECONDS = 0.0015
TEARDOWN_SECONDS = 1.5
WANDB_SECONDS = 3.5
CUDA_TEARDOWN_SECONDS = 1.0
# The sample's W&B table: its log call took 0.63 s offline on the 2-core CPU (the sample phase ran 0.1-0.8 s
# over its plan with W&B, 0.1 s under without).
WANDB_TABLE_SECONDS = 0.6


def budget_key(t: Mapping[str, Any]) -> str:
    """Which of ``trainer.max_steps | max_tokens | max_time`` sets T; exactly one may be set."""
    given = [k for k in BUDGET_KEYS if t.get(k) is not None]
    if len(given) != 1:
        got = ", ".join(f"trainer.{k}={t.get(k)}" for k in given) or "none"
        raise ConfigError(f"trainer.max_steps, trainer.max_tokens, trainer.max_time: set exactly one, got {got}")
    key = given[0]
    value = t[key]
    if key == "max_time":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError("trainer.max_time", "a number of seconds > 0", value)
    elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"trainer.{key}", "an integer > 0", value)
    return key


def steps_from_tokens(max_tokens: int, tokens_per_update: int) -> int:
    """T = ⌊max_tokens / tokens per update⌋; at least one update must fit."""
    if max_tokens < tokens_per_update:
        raise ConfigError("trainer.max_tokens", f"≥ the tokens of one update ({tokens_per_update:,})", max_tokens)
    return max_tokens // tokens_per_update


@dataclass
class TimePlan:
    """What a wall-clock budget was spent on, as measured before update 0."""

    max_time: float
    total_steps: int
    elapsed_at_plan: float  # seconds since the process started, measurement included
    step_seconds: float
    eval_seconds: float
    checkpoint_seconds: float
    sample_seconds: float
    teardown_seconds: float
    log_seconds: float = LOG_SECONDS  # per update, outside the measured update: the metric sinks

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def phases(self, eval_every: int, ckpt_every: int) -> dict[str, float]:
        """The seconds this plan gives each phase of the run (``teardown``: the loggers' start and close, the
        plots and the process's exit)."""
        T = self.total_steps
        evaluations = (math.ceil(T / eval_every) if eval_every else 0) + 1  # at 0, every eval_every, and at T
        checkpoints = ((T - 1) // ckpt_every if ckpt_every else 0) + 1  # every ckpt_every before T, and at T
        return {
            "updates": T * (self.step_seconds * STEP_MARGIN + self.log_seconds),
            "evaluation": evaluations * self.eval_seconds,
            "checkpoint": checkpoints * self.checkpoint_seconds,
            "sample": self.sample_seconds,
            "teardown": self.teardown_seconds,
        }


class PhaseClock:
    """Wall-clock seconds a run spends in each phase, summed over its calls: what a budget went on, to set
    against the plan's :meth:`TimePlan.phases` at the end."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0


def spent_record(
    plan: TimePlan, spent: Mapping[str, float], at_end: float, eval_every: int, ckpt_every: int
) -> dict[str, Any]:
    """A timed run's ``budget.json`` at its end: the plan, the seconds it gave each phase, and those spent."""
    phases = plan.phases(eval_every, ckpt_every)
    return {
        **plan.as_dict(),
        "phases": {k: round(v, 4) for k, v in phases.items()},
        "spent": {**{k: round(v, 4) for k, v in spent.items()}, "at_end": round(at_end, 4)},
    }


def spent_report(record: Mapping[str, Any]) -> str:
    """One line from :func:`spent_record`: where the budget went, each phase against what the plan gave it."""
    spent, planned = record["spent"], record["phases"]
    parts = [f"{name} {spent.get(name, 0.0):.1f} s (planned {planned[name]:.1f})"
             for name in ("updates", "evaluation", "checkpoint", "sample")]  # fmt: skip
    own = spent.get("loggers", 0.0) + spent.get("plots", 0.0)
    return (
        f"budget: {spent['at_end']:.1f} of {record['max_time']:g} s before closing the loggers — start-up "
        f"{record['elapsed_at_plan']:.1f} s, {', '.join(parts)}, loggers and plots {own:.1f} s (teardown planned "
        f"{planned['teardown']:.1f}, closing and exit included)"
    )


def projected_end(
    plan: TimePlan, now: float, t: int, updates_seconds: float, spent_loggers: float, eval_every: int, ckpt_every: int
) -> float:
    """Where a timed run will end (seconds since its job started) if its updates keep the pace they have had.

    ``now`` is the moment before update ``t`` (after its evaluation, where one falls at t), ``updates_seconds``
    what updates 0 to t − 1 took. Left: updates t to T − 1 at their mean so far; at the plan's seconds, the
    evaluations after now (every ``eval_every``, and at T), the checkpoints after now (every ``ckpt_every``, and
    at T), the sample, and the teardown less the loggers' start (``spent_loggers``, behind the run already)."""
    T = plan.total_steps
    evaluations = (len(range((t // eval_every + 1) * eval_every, T, eval_every)) if eval_every else 0) + 1
    checkpoints = (len(range((t // ckpt_every + 1) * ckpt_every, T, ckpt_every)) if ckpt_every else 0) + 1
    return (
        now
        + (T - t) * updates_seconds / t
        + evaluations * plan.eval_seconds
        + checkpoints * plan.checkpoint_seconds
        + plan.sample_seconds
        + max(plan.teardown_seconds - spent_loggers, 0.0)
    )


def projection_report(plan: TimePlan, t: int, now: float, end: float, updates_seconds: float) -> str:
    """One line from :func:`projected_end`, for the log at the first update of each tenth of a timed run."""
    pace = updates_seconds / t / (plan.step_seconds * STEP_MARGIN + plan.log_seconds)
    return (
        f"budget: {now:.1f} s at update {t} of {plan.total_steps}; at this pace the run ends near {end:.1f} of "
        f"{plan.max_time:g} s (updates at {pace:.2f}× the plan's)"
    )


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
    fixed = elapsed + 2 * eval_seconds + checkpoint_seconds + sample_seconds + teardown_seconds
    per_update = step_seconds * STEP_MARGIN + log_seconds  # the update includes the sync and the optimizer
    if eval_every:
        per_update += eval_seconds / eval_every
    if ckpt_every:
        per_update += checkpoint_seconds / ckpt_every
    steps = math.floor((max_time - fixed) / per_update)
    if steps < 1:
        raise ConfigError(
            f"trainer.max_time={max_time:g}: too short for one update — start-up took {elapsed:.1f} s, an update "
            f"takes {step_seconds:.2f} s, the final evaluation, checkpoint and sample {fixed - elapsed:.1f} s"
        )
    return TimePlan(
        max_time, steps, elapsed, step_seconds, eval_seconds, checkpoint_seconds, sample_seconds, teardown_seconds,
        log_seconds,
    )  # fmt: skip


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def measure_update_seconds(
    model: torch.nn.Module,
    raw_model: torch.nn.Module,
    optim_cfg: Mapping[str, Any],
    micro_batches: Callable[[int], list],
    *,
    device: torch.device,
    autocast,
    precision: str,
    grad_clip: float,
    seconds: float = 2.0,
    warmup: int = 2,
    repeats: int = 5,
    max_repeats: int = 500,
) -> float:
    """Seconds of one real training update (fetching its batches, forward, backward, clip, the one host sync
    and an AdamW step), measured with a throwaway optimizer at lr 0: the weights, the real optimizer and the
    generators are left exactly as they were.

    Warm-up updates (compilation, the allocator, the first optimizer state) run for ``warmup`` updates and a
    quarter of ``seconds``, uncounted; then updates are timed until ``repeats`` of them and ``seconds`` have
    passed (at most ``max_repeats``), and the median is returned. A fixed handful of updates is not enough: on
    a CPU the first seconds of a process run measurably slower than the minutes after them."""
    from torch.optim.lr_scheduler import LambdaLR

    from training.engine import train_update
    from training.optim import build_optimizer

    throwaway = build_optimizer(raw_model, {**optim_cfg, "lr": 0.0}, device)
    schedule = LambdaLR(throwaway, lambda t: 0.0)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def update(i: int) -> float:  # as the loop times it: fetching the batches, then the update
        return timed(lambda: train_update(
            model, throwaway, schedule, micro_batches(i),
            device=device, autocast=autocast, scaler=scaler, grad_clip=grad_clip,
        ), device)  # fmt: skip

    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        i, spent = 0, 0.0
        while i < warmup or spent < seconds / 4:
            spent += update(i)
            i += 1
        times: list[float] = []
        while len(times) < max_repeats and (len(times) < repeats or sum(times) < seconds):
            times.append(update(i))
            i += 1
    return statistics.median(times)


def measurement_seconds(max_time: float) -> float:
    """How long to time updates for a budget of ``max_time`` seconds: 4 % of it, between 1 and 30 seconds.

    Longer windows average over more of the host's drift: on a shared 2-core host, 2.4 s of a run's updates
    strayed from the whole run's mean by about ±10 %, 6 s of them by about ±7 %."""
    return min(max(0.04 * max_time, 1.0), 30.0)


def eval_seconds(evaluate: Callable[[list], Any], batches: list, n_batches: int, device: torch.device) -> float:
    """Seconds of an evaluation over ``n_batches``, timed on ``batches`` (a few of them) and scaled.

    One batch goes through first, untimed: a compiled model compiles its evaluation graph on the first call,
    which the run's own evaluations then reuse, so timing that call would count the compilation once per
    evaluation (on an H200 it put 60 of a 120 s budget aside for nothing)."""
    evaluate(batches[:1])
    return timed(lambda: evaluate(batches), device) * n_batches / len(batches)


def sample_seconds(
    sample: Callable[[int], Any],
    n_tokens: int,
    device: torch.device,
    *,
    cached: int | None = None,
    window: Callable[[], Any] | None = None,
) -> float:
    """Seconds to sample ``n_tokens``: the per-token cost from two short runs (4 and 12 tokens), plus the fixed
    cost, so the measurement doesn't itself take as long as the sample.

    A one-token sample goes first, untimed: the first call loads kernels and allocates (on an H100 it took
    0.25 s, 60 tokens' worth), which timed in the 4-token run hid the per-token cost (200 tokens and their W&B
    table were planned at 0.2 s and took 1.8 s).

    Past the first ``cached`` tokens (those the KV cache holds: the context less the prompt) every token
    recomputes the whole context; each of those costs one ``window`` call more (a forward of one full context,
    timed after one untimed call)."""
    sample(1)
    short, longer = timed(lambda: sample(4), device), timed(lambda: sample(12), device)
    per_token = max(0.0, (longer - short) / 8)
    seconds = max(0.0, short - 4 * per_token) + per_token * n_tokens
    if cached is not None and window is not None and n_tokens > cached:
        window()
        seconds += (n_tokens - cached) * timed(window, device)
    return seconds


def checkpoint_seconds(n_params: int) -> float:
    """Seconds to write a checkpoint (weights and AdamW's two moments in fp32) at a conservative 200 MB/s."""
    return n_params * 4 * 3 / 200e6


def measure_time_plan(
    max_time: float,
    elapsed: Callable[[], float],
    measure_update: Callable[[], float],
    measure_eval: Callable[[], float],
    measure_sample: Callable[[], float],
    *,
    n_params: int,
    eval_every: int,
    ckpt_every: int,
    wandb: bool,
    cuda: bool = False,
) -> TimePlan:
    """Measure the pieces of a run (each callable returns seconds) and fit T into ``max_time``."""
    step = measure_update()
    evaluation = measure_eval()
    sample = measure_sample()
    if wandb and sample > 0:
        sample += WANDB_TABLE_SECONDS
    teardown = TEARDOWN_SECONDS + (WANDB_SECONDS if wandb else 0.0) + (CUDA_TEARDOWN_SECONDS if cuda else 0.0)
    log_seconds = LOG_SECONDS + (WANDB_LOG_SECONDS if wandb else 0.0)
    return plan_time(
        max_time, elapsed(), step, evaluation, checkpoint_seconds(n_params), sample, teardown, eval_every, ckpt_every,
        log_seconds,
    )  # fmt: skip


_IMPORTED = time.perf_counter()


def seconds_since_process_start() -> float:
    """Wall-clock seconds since this process started (from /proc on Linux; else since this module loaded)."""
    import os
    from pathlib import Path

    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5), counted after the command name
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED
