"""Budgets: T from a token budget exactly, from a wall-clock budget once (measured, saved, kept on resume)."""

from __future__ import annotations

import json
import math
import re

import pytest

from tests.conftest import TINY, compose_config, run_train, train_records
from training import checkpoint
from training.budget import LOG_SECONDS, STEP_MARGIN, plan_time, steps_from_tokens
from training.errors import ConfigError
from training.validate import check_config

TOKENS_PER_UPDATE = 4 * 32  # TINY: batch 4 × block 32, one micro-batch
PEAK, RATIO = 3e-3, 0.1  # the defaults of optim.lr and schedule.min_lr_ratio


def cosine_lr(t: int, W: int, T: int) -> float:
    if t < W:
        return PEAK * t / W
    c = 0.5 * (1 + math.cos(math.pi * (t - W) / max(1, T - W)))
    return PEAK * (c * (1 - RATIO) + RATIO)


def test_max_tokens_gives_t_exactly_rounded_down(tmp_path, data_cache):
    run = tmp_path / "run"
    max_tokens = 10 * TOKENS_PER_UPDATE + TOKENS_PER_UPDATE - 1  # 10.99 updates' worth → T = 10
    run_train(TINY + [f"trainer.max_tokens={max_tokens}", "trainer.eval_every=0"], run, data_cache)
    records = train_records(run)
    assert sorted(records) == list(range(10))
    assert records[9]["tokens"] == 10 * TOKENS_PER_UPDATE
    state = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    assert state["total_steps"] == 10 and state["scheduler"]["lr_lambdas"][0]["params"]["total_steps"] == 10
    for t, r in records.items():  # warmup 0.1 of T = 1 update
        assert r["train/lr"] == pytest.approx(cosine_lr(t, 1, 10), rel=1e-12)
    assert steps_from_tokens(10 * TOKENS_PER_UPDATE, TOKENS_PER_UPDATE) == 10


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory, data_cache):
    """A run given 20 s of wall clock; it stops once with stop_at and resumes."""
    run = tmp_path_factory.mktemp("timed") / "run"
    args = TINY + ["trainer.max_time=20", "trainer.eval_every=100", "trainer.stop_at=3"]
    first = run_train(args, run, data_cache, check=False)
    assert first.returncode == 75, first.stdout[-2000:] + first.stderr[-2000:]
    planned = json.loads((run / "budget.json").read_text())
    second = run_train(args[:-1], run, data_cache)
    return run, planned, first.stdout + first.stderr, second.stdout + second.stderr


def test_max_time_fixes_t_once_saves_it_and_the_schedule_ends_with_the_run(timed_run):
    run, planned, first_out, _ = timed_run
    T = planned["total_steps"]
    assert T > 3
    assert f"T = {T} updates" in first_out and "budget: 20s" in first_out
    for key in ("step_seconds", "eval_seconds", "checkpoint_seconds", "elapsed_at_plan"):
        assert planned[key] > 0
    records = train_records(run)
    assert sorted(records) == list(range(T))
    W = round(0.1 * T)
    for t, r in records.items():
        assert r["train/lr"] == pytest.approx(cosine_lr(t, W, T), rel=1e-12)
    state = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    assert state["step"] == T and state["total_steps"] == T and state["budget"]["total_steps"] == T
    schedule = state["scheduler"]["lr_lambdas"][0]
    assert schedule["params"]["total_steps"] == T  # λ(T) is the floor: the decay ends as the run does


def test_a_resumed_timed_run_keeps_its_t_without_measuring_again(timed_run):
    run, planned, _, second_out = timed_run
    assert "resuming from" in second_out and "budget: " not in second_out
    assert json.loads((run / "budget.json").read_text()) == planned


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["trainer.max_time=0"], "trainer.max_time must be a number of seconds > 0, got 0"),
        (["trainer.max_time=-5"], "trainer.max_time must be a number of seconds > 0, got -5"),
        (["trainer.max_tokens=0"], "trainer.max_tokens must be an integer > 0, got 0"),
        (["trainer.max_tokens=-100"], "trainer.max_tokens must be an integer > 0, got -100"),
        (["trainer.max_tokens=1000", "trainer.max_time=60"], "set exactly one, got trainer.max_tokens=1000, "),
        (["trainer.max_steps=100", "trainer.max_time=60"], "set exactly one, got trainer.max_steps=100, "),
        (["trainer.max_steps=null"], "set exactly one, got none"),
    ],
)
def test_invalid_budgets_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        check_config(compose_config(overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_budget_too_small_for_one_update_is_refused(tmp_path, data_cache):
    proc = run_train(TINY + ["trainer.max_tokens=100"], tmp_path / "run", data_cache, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: trainer.max_tokens must be ≥ the tokens of one update (128), got 100"
    proc = run_train(TINY + ["trainer.max_time=0.5"], tmp_path / "run", data_cache, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: trainer.max_time=0.5: too short for one update")
    assert not (tmp_path / "run").exists()


def test_the_time_plan_fits_updates_evaluations_and_checkpoints_in_the_budget():
    plan = plan_time(100, elapsed=10, step_seconds=0.5, eval_seconds=2, checkpoint_seconds=1, sample_seconds=1,
                     teardown_seconds=2, eval_every=20, ckpt_every=50)  # fmt: skip
    T = plan.total_steps
    per_update = 0.5 * STEP_MARGIN + LOG_SECONDS + 2 / 20 + 1 / 50
    spent = 10 + T * per_update + 2 * 2 + 1 + 1 + 2
    assert spent <= 100 < spent + per_update


@pytest.mark.parametrize("eval_every,ckpt_every", [(20, 50), (0, 0), (7, 3), (1, 1)])
def test_the_phases_of_a_plan_fit_in_its_budget_and_count_every_evaluation_and_checkpoint(eval_every, ckpt_every):
    plan = plan_time(100, elapsed=10, step_seconds=0.5, eval_seconds=2, checkpoint_seconds=1, sample_seconds=1,
                     teardown_seconds=2, eval_every=eval_every, ckpt_every=ckpt_every)  # fmt: skip
    T, phases = plan.total_steps, plan.phases(eval_every, ckpt_every)
    evals = [0, *range(eval_every, T, eval_every), T] if eval_every else [T]  # as the loop runs them
    ckpts = [*range(ckpt_every, T, ckpt_every), T] if ckpt_every else [T]
    assert phases["evaluation"] == pytest.approx(2 * len(evals))
    assert phases["checkpoint"] == pytest.approx(1 * len(ckpts))
    assert phases["updates"] == pytest.approx(T * (0.5 * STEP_MARGIN + LOG_SECONDS))
    assert 10 + sum(phases.values()) <= 100


@pytest.mark.parametrize("wandb", [False, True])
@pytest.mark.parametrize("sample", [0.0, 0.5])
def test_the_plan_sets_aside_what_wandb_and_cuda_cost_beyond_the_measurement(wandb, sample):
    from training import budget

    plan = budget.measure_time_plan(
        100, lambda: 10.0, lambda: 0.5, lambda: 2.0, lambda: sample,
        n_params=1000, eval_every=0, ckpt_every=0, wandb=wandb, cuda=True,
    )  # fmt: skip
    table = budget.WANDB_TABLE_SECONDS if wandb and sample else 0.0  # the sample's W&B table, only with a sample
    assert plan.sample_seconds == pytest.approx(sample + table)
    teardown = budget.TEARDOWN_SECONDS + budget.CUDA_TEARDOWN_SECONDS + (budget.WANDB_SECONDS if wandb else 0.0)
    assert plan.teardown_seconds == pytest.approx(teardown)
    assert plan.log_seconds == pytest.approx(budget.LOG_SECONDS + (budget.WANDB_LOG_SECONDS if wandb else 0.0))
    fixed = 10 + 2 * 2.0 + budget.checkpoint_seconds(1000) + sample + table + teardown
    assert plan.total_steps == math.floor((100 - fixed) / (0.5 * STEP_MARGIN + plan.log_seconds))


def test_a_timed_run_reports_where_its_budget_went(tmp_path, data_cache):
    run = tmp_path / "run"
    proc = run_train(TINY + ["trainer.max_time=12", "trainer.eval_every=5", "trainer.ckpt_every=5"], run, data_cache)
    record = json.loads((run / "budget.json").read_text())
    spent = record["spent"]
    assert set(spent) == {"loggers", "updates", "evaluation", "checkpoint", "sample", "plots", "at_end"}
    assert all(v > 0 for v in spent.values())
    assert record["elapsed_at_plan"] + sum(v for k, v in spent.items() if k != "at_end") <= spent["at_end"]
    out = proc.stdout + proc.stderr
    assert f"budget: {spent['at_end']:.1f} of 12 s before closing the loggers" in out
    assert f"updates {spent['updates']:.1f} s (planned " in out
    projections = re.findall(r"budget: [\d.]+ s at update (\d+) of (\d+); at this pace the run ends near", out)
    T = record["total_steps"]
    assert T >= 10 and [int(t) for t, _ in projections] == [-(-k * T // 10) for k in range(1, 10)]  # ⌈kT/10⌉
    state = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    assert "spent" not in state["budget"]  # the checkpoint keeps the plan; the run's record adds what it spent


def test_a_timed_run_projects_its_end_from_the_pace_its_updates_have_kept():
    from training.budget import projected_end, projection_report

    plan = plan_time(120, 10.0, 0.04, 0.5, 0.2, 1.0, 5.0, eval_every=100, ckpt_every=500)
    per_update = 0.04 * STEP_MARGIN + LOG_SECONDS
    loggers, t = 2.0, 1000
    # at the plan's own pace: start-up, the loggers' start, t updates, the evaluations at 0, 100, …, 1000 and the
    # checkpoints at 500 and 1000 are behind the run
    now = 10.0 + loggers + t * per_update + 11 * 0.5 + 2 * 0.2
    end = projected_end(plan, now, t, t * per_update, loggers, eval_every=100, ckpt_every=500)
    assert end == pytest.approx(10.0 + sum(plan.phases(100, 500).values()))  # where the plan itself ends
    assert 115 < end <= 120
    slower = projected_end(plan, now, t, 1.1 * t * per_update, loggers, eval_every=100, ckpt_every=500)
    assert slower - end == pytest.approx(0.1 * (plan.total_steps - t) * per_update)  # only the updates left
    line = projection_report(plan, t, now, slower, 1.1 * t * per_update)
    assert line == (f"budget: {now:.1f} s at update 1000 of {plan.total_steps}; at this pace the run ends near "
                    f"{slower:.1f} of 120 s (updates at 1.10× the plan's)")  # fmt: skip


def test_the_sample_estimate_counts_a_full_context_forward_per_token_past_the_cache():
    import time

    import torch

    from model import GPT, GPTConfig, full_context_forward
    from training.budget import sample_seconds

    windows: list[int] = []
    cpu = torch.device("cpu")
    sample = lambda n: time.sleep(0.002 * n)  # noqa: E731 — 2 ms a token while the KV cache holds the context
    window = lambda: windows.append(1) or time.sleep(0.02)  # noqa: E731 — a forward over the whole context

    within = sample_seconds(sample, 50, cpu, cached=60, window=window)
    assert windows == [] and 0.09 <= within < 0.3
    past = sample_seconds(sample, 50, cpu, cached=20, window=window)
    assert len(windows) == 2 and 0.09 + 30 * 0.02 <= past < 1.5  # 30 tokens past the cache, one untimed call

    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32))
    full_context_forward(model)
    assert model.training and all(p.grad is None for p in model.parameters())


def test_the_sample_is_timed_after_a_first_call_that_loads_kernels():
    import time

    import torch

    from training.budget import sample_seconds

    calls: list[int] = []

    def sample(n):  # the first call loads kernels and allocates, as a GPU's first sample does
        time.sleep(0.5 if not calls else 0.01 * n)
        calls.append(n)

    seconds = sample_seconds(sample, 100, torch.device("cpu"))
    assert calls == [1, 4, 12]  # one token untimed, then the two timed runs
    # 100 × 10 ms; timing the first call would hide the per-token cost behind it (0.5 s + 0 per token)
    assert 0.9 <= seconds < 1.4


def test_the_evaluation_is_timed_after_a_first_call_that_compiles():
    import time

    import torch

    from training.budget import eval_seconds

    calls: list[int] = []

    def evaluate(batches):  # the first call pays a compilation, as torch.compile's first evaluation does
        time.sleep(0.4 if not calls else 0.005 * len(batches))
        calls.append(len(batches))

    seconds = eval_seconds(evaluate, ["a", "b"], 8, torch.device("cpu"))
    assert calls == [1, 2]  # one batch untimed, then the two timed
    assert 0.04 <= seconds < 0.4  # 4 × the timed call; counting the compilation would give over 1.6 s


def test_the_update_measurement_leaves_the_run_untouched_and_times_long_enough():
    import contextlib

    import torch

    from model import GPT, GPTConfig
    from training.budget import measure_update_seconds

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    fetched: list[int] = []

    def micro_batches(i: int):
        fetched.append(i)
        x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(i))
        return [(x, x.roll(-1, dims=1))]

    optim = {"lr": 1e-2, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.1, "fused": False}
    seconds = 0.3
    update = measure_update_seconds(model, model, optim, micro_batches, device=torch.device("cpu"),
                                    autocast=contextlib.nullcontext(), precision="fp32", grad_clip=1.0,
                                    seconds=seconds, warmup=2, repeats=5)  # fmt: skip
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())  # lr 0: no weight moved
    assert torch.equal(torch.get_rng_state(), rng)  # dropout's draws and the like are forked away
    assert fetched == list(range(len(fetched)))  # batch after batch, as the run will take them
    # 2+ warm-up updates, then at least 5 timed ones and at least `seconds` of them; their median comes back.
    assert len(fetched) >= 7 and 0 < update < seconds
    assert update * (len(fetched) - 2) >= seconds / 2


def load_steadiness():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "steadiness.py"
    spec = importlib.util.spec_from_file_location("steadiness", path)
    steadiness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(steadiness)
    return steadiness


def test_the_steadiness_check_sets_each_measurement_window_against_the_updates_after_it():
    """bench/steadiness.py's verdict: a plan measured in one window, against the mean update that follows it."""
    from itertools import accumulate

    steadiness = load_steadiness()

    times = [0.010] * 1000 + [0.012] * 1750  # 10 s of 10 ms updates, then 21 s of 12 ms ones
    stamps = list(accumulate(times))
    ratios = dict(steadiness.plan_ratios(stamps, times, window=5.0, horizon=10.0))
    assert list(ratios) == [0.0, 5.0, 10.0, 15.0]  # every window with 10 s of updates after it
    assert 1.0 < ratios[0.0] < 1.2  # measured at 10 ms; after it, 5 s of 10 ms and 5 s of 12 ms updates
    assert ratios[5.0] == pytest.approx(1.2)  # measured at 10 ms, all 12 ms after it: the plan ran 20 % short
    assert ratios[10.0] == pytest.approx(1.0) and ratios[15.0] == pytest.approx(1.0)  # a steady stretch


def test_the_steadiness_reference_times_the_machine_in_the_same_windows(capsys):
    """``--reference`` runs the same windows and verdict over a fixed matmul instead of the template's update."""
    steadiness = load_steadiness()
    # a 10 s budget: 1 s windows, each against the 8 s after it
    assert steadiness.main(["--reference", "--budget", "10", "--seconds", "10"]) == 0
    printed = capsys.readouterr().out
    assert "reference: 20 fixed fp32 matmuls per timing, cpu" in printed
    assert "layers" not in printed  # no model was built
    windows = [line for line in printed.splitlines() if line.strip().endswith("%") or line.strip().endswith("ms")]
    assert len(windows) >= 9
    assert re.search(r"[12] windows\); [012] of [12] within 0\.96–1\.06", printed)  # those with 8 s after them
