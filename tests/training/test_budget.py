"""Budgets: T from a token budget exactly, from a wall-clock budget once (measured, saved, kept on resume)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time

import pytest
import torch

from model import GPT, GPTConfig
from scheduling import ScheduleError
from tests.conftest import compose_config, train_records
from training import budget, checkpoint
from training.config import ConfigError, check_config
from training.optim import build_optimizer
from training.signals import Stopped

TOKENS_PER_UPDATE = 4 * 32  # TINY: batch 4 × block 32, one micro-batch
PEAK, RATIO = 3e-3, 0.1  # the defaults of optim.lr and schedule.min_lr_ratio


def cosine_lr(t: int, W: int, T: int) -> float:
    if t < W:
        return PEAK * t / W
    c = 0.5 * (1 + math.cos(math.pi * (t - W) / max(1, T - W)))
    return PEAK * (c * (1 - RATIO) + RATIO)


class FakeClock:
    """A clock that moves only when told: what a measured call costs is what the test says it costs."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(budget, "clock", fake)
    return fake


def test_max_tokens_gives_t_exactly_rounded_down(tmp_path, tiny_train):
    max_tokens = 10 * TOKENS_PER_UPDATE + TOKENS_PER_UPDATE - 1  # 10.99 updates' worth → T = 10
    run = tiny_train(tmp_path / "run", [f"trainer.max_tokens={max_tokens}", "trainer.eval_every=0"])
    records = train_records(run)
    assert sorted(records) == list(range(10))
    assert records[9]["tokens"] == 10 * TOKENS_PER_UPDATE
    state = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    assert state["total_steps"] == 10 and state["scheduler"]["lr_lambdas"][0]["params"]["total_steps"] == 10
    for t, r in records.items():  # warmup 0.1 of T = 1 update
        assert r["train/lr"] == pytest.approx(cosine_lr(t, 1, 10), rel=1e-12)


def test_max_time_fixes_t_once_saves_it_and_a_resume_keeps_it_without_measuring(
    tmp_path, tiny_train, monkeypatch, caplog
):
    run = tmp_path / "run"
    args = ["trainer.max_time=12", "trainer.eval_every=100"]
    # The session's token cache first: its one-off tokenization would count as start-up, and on a busy machine
    # leave 12 s no room for the updates.
    tiny_train(tmp_path / "warm", ["trainer.max_steps=1"])
    with caplog.at_level("INFO"), pytest.raises(Stopped):
        tiny_train(run, args + ["trainer.stop_at=3"])
    planned = json.loads((run / "budget.json").read_text())
    T = planned["total_steps"]
    assert T > 3 and f"budget: 12s → T = {T} updates" in caplog.text
    for key in ("step_seconds", "eval_seconds", "checkpoint_seconds", "elapsed_at_plan"):
        assert planned[key] > 0

    def no_second_measurement(*args, **kwargs):
        raise AssertionError("a resumed run measured its budget again")

    monkeypatch.setattr(budget, "measure_time_plan", no_second_measurement)
    caplog.clear()
    with caplog.at_level("INFO"):
        tiny_train(run, args)
    records = train_records(run)
    assert sorted(records) == list(range(T))
    for t, r in records.items():  # the schedule ends with the run: warmup 0.1 of T, the floor at T
        assert r["train/lr"] == pytest.approx(cosine_lr(t, round(0.1 * T), T), rel=1e-12)
    state = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    assert state["step"] == T and state["total_steps"] == T and state["budget"]["total_steps"] == T
    ended = json.loads((run / "budget.json").read_text())
    assert {k: ended[k] for k in planned} == planned  # the plan, plus what the run took
    assert ended["took_seconds"] > 0 and ended["planned_seconds"] > 0
    assert f"budget: planned {ended['planned_seconds']:.1f} s, took " in caplog.text
    summary = json.loads((run / "summary.json").read_text())
    assert summary["budget/planned_seconds"] == ended["planned_seconds"]
    assert summary["budget/took_seconds"] == ended["took_seconds"] == summary["seconds"]  # both starts, as planned


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["trainer.max_time=0"], "trainer.max_time must be a number of seconds > 0, at most 10**9 (31 years), got 0"),
        (["trainer.max_time=-5"], "trainer.max_time must be a number of seconds > 0, at most 10**9 (31 years), got -5"),
        (["trainer.max_tokens=0"], "trainer.max_tokens must be an integer > 0, got 0"),
        (["trainer.max_tokens=1000", "trainer.max_time=60"], "set exactly one, got trainer.max_tokens=1000, "),
        (["trainer.max_steps=100", "trainer.max_time=60"], "set exactly one, got trainer.max_steps=100, "),
        (["trainer.max_steps=null"], "set exactly one, got none"),
    ],
)
def test_invalid_budgets_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        check_config(compose_config(overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_budget_too_small_for_one_update_is_refused_before_anything_is_written(tmp_path, tiny_train):
    with pytest.raises(ConfigError, match=r"^trainer.max_tokens must be ≥ the tokens of one update \(128\), got 100$"):
        tiny_train(tmp_path / "a", ["trainer.max_tokens=100"])
    # start-up alone (here: said to have taken 100 s) already spent the budget
    with pytest.raises(ConfigError, match=r"^trainer.max_time=5: too short for one update — start-up took 1\d\d") as e:
        tiny_train(tmp_path / "b", ["trainer.max_time=5"], started=time.perf_counter() - 100)
    needed = int(str(e.value).rpartition("≥ ")[2])  # what it says would do: start-up and one update fit there
    assert 100 < needed < 200 and "evaluations (at 0 and at T), a checkpoint, the sample and the end" in str(e.value)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_stop_at_past_the_budget_s_t_names_that_t(tmp_path, tiny_train):
    with pytest.raises(ConfigError, match=r"^trainer.stop_at must be null or an integer in \[1, T of the budget = 4\)"):
        tiny_train(tmp_path / "run", [f"trainer.max_tokens={4 * TOKENS_PER_UPDATE}", "trainer.stop_at=4"])


def test_a_schedule_that_does_not_fit_the_budget_s_t_names_the_budget(tmp_path, tiny_train):
    budget_tokens = 4 * TOKENS_PER_UPDATE
    with pytest.raises(ScheduleError) as err:
        tiny_train(tmp_path / "run", [f"trainer.max_tokens={budget_tokens}", "schedule.warmup_steps=100"])
    assert str(err.value) == f"schedule.warmup_steps must be ≤ the T of trainer.max_tokens={budget_tokens} (4), got 100"


def test_a_resume_under_another_token_budget_takes_its_t_as_a_change_of_schedule(tmp_path, tiny_train):
    run, args = tmp_path / "run", ["trainer.eval_every=0"]
    with pytest.raises(Stopped):
        tiny_train(run, [*args, f"trainer.max_tokens={8 * TOKENS_PER_UPDATE}", "trainer.stop_at=3"])
    longer = [*args, f"trainer.max_tokens={12 * TOKENS_PER_UPDATE}"]
    with pytest.raises(ScheduleError, match=r"\(the T of trainer.max_tokens=\d+ 8 → 12\)"):  # checked as any T, named
        tiny_train(run, longer)
    tiny_train(run, [*longer, "trainer.allow_schedule_change=true"])
    assert sorted(train_records(run)) == list(range(12))


def test_a_resume_to_a_t_below_the_checkpoints_update_is_refused_and_leaves_the_run_as_it_was(tmp_path, tiny_train):
    """It finished "ok", with a model of 6 updates saved as update 4 and a scheduler that went on from 6."""
    run, args = tmp_path / "run", ["trainer.eval_every=0"]
    with pytest.raises(Stopped):
        tiny_train(run, [*args, "trainer.max_steps=8", "trainer.stop_at=6"])
    saved = {p: p.read_bytes() for p in (run / "checkpoints").rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"it is at update 6, past T = 4 \(trainer.max_steps\); a run cannot go back"):
        tiny_train(run, [*args, "trainer.max_steps=4", "trainer.allow_schedule_change=true"])
    assert {p: p.read_bytes() for p in (run / "checkpoints").rglob("*") if p.is_file()} == saved


def test_a_token_budget_resumed_with_another_batch_still_stops_at_its_tokens(tmp_path, tiny_train):
    """3 updates of 1× the tokens, then 2 of 2× (T = 3 + ⌊5 ÷ 2⌋): 7 of the 8 allowed; ⌊8 ÷ 2⌋ = 4 took 5."""
    run, budget_args = tmp_path / "run", ["trainer.eval_every=0", f"trainer.max_tokens={8 * TOKENS_PER_UPDATE}"]
    with pytest.raises(Stopped):
        tiny_train(run, [*budget_args, "trainer.stop_at=3"])
    tiny_train(run, [*budget_args, "trainer.batch_size=8", "trainer.allow_schedule_change=true"])
    assert sorted(train_records(run)) == list(range(5))
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["total_steps"], summary["tokens"]) == (5, 7 * TOKENS_PER_UPDATE)


def test_the_plan_read_back_from_its_record_ends_within_the_budget():
    """The end-of-run line recomputes the planned seconds from budget.json's record: they must be the plan's."""
    kwargs = dict(elapsed=1.3, eval_seconds=0.01234, checkpoint_seconds=0.00231, sample_seconds=0.1)
    plan = budget.plan_time(20, step_seconds=0.0027734928, teardown_seconds=0.5, eval_every=20, ckpt_every=10, **kwargs)
    again = budget.TimePlan(**json.loads(json.dumps(plan.as_dict())))
    assert again.planned_end(20, 10) == plan.planned_end(20, 10) <= 20


def test_a_time_budget_given_to_more_decimals_than_the_plan_rounds_to_resumes():
    plan = budget.plan_time(
        100.12345,
        elapsed=1,
        step_seconds=0.5,
        eval_seconds=2,
        checkpoint_seconds=1,
        sample_seconds=1,
        teardown_seconds=2,
        eval_every=0,
        ckpt_every=0,
    )
    saved = {"total_steps": plan.total_steps, "budget": plan.as_dict()}
    trainer = {"max_steps": None, "max_tokens": None, "max_time": 100.12345}
    assert budget.total_steps(trainer, TOKENS_PER_UPDATE, saved, None)[0] == plan.total_steps


def test_a_resume_under_another_time_budget_is_refused_in_one_line():
    def measure():
        raise AssertionError("a resumed run measured its budget again")

    saved = {"total_steps": 40, "budget": {"max_time": 60.0, "total_steps": 40}}
    trainer = {"max_steps": None, "max_tokens": None, "max_time": 120}
    with pytest.raises(ConfigError, match=r"^trainer.max_time: the checkpoint.s T = 40 came from trainer.max_time=60,"):
        budget.total_steps(trainer, TOKENS_PER_UPDATE, saved, measure)
    assert budget.total_steps({**trainer, "max_time": 60.0}, TOKENS_PER_UPDATE, saved, measure) == (40, saved["budget"])
    from_tokens = {"total_steps": 40, "budget": {"max_tokens": 5120, "total_steps": 40}}
    with pytest.raises(ConfigError, match=r"came from trainer.max_tokens=5120, and a time budget is planned once"):
        budget.total_steps(trainer, TOKENS_PER_UPDATE, from_tokens, measure)


@pytest.mark.parametrize("eval_every,ckpt_every", [(20, 50), (0, 0), (7, 3), (1, 1)])
def test_the_plan_fits_every_evaluation_and_checkpoint_the_loop_runs(eval_every, ckpt_every):
    plan = budget.plan_time(
        100,
        elapsed=10,
        step_seconds=0.5,
        eval_seconds=2,
        checkpoint_seconds=1,
        sample_seconds=1,
        teardown_seconds=2,
        eval_every=eval_every,
        ckpt_every=ckpt_every,
    )
    T = plan.total_steps
    evals = [0, *range(eval_every, T, eval_every), T] if eval_every else [T]  # as the loop runs them
    ckpts = [*range(ckpt_every, T, ckpt_every), T] if ckpt_every else [T]
    per_update = 0.5 * budget.STEP_MARGIN + budget.LOG_SECONDS
    expected_end = 10 + T * per_update + 2 * len(evals) + len(ckpts) + 1 + 2
    assert plan.planned_end(eval_every, ckpt_every) == pytest.approx(expected_end)
    assert expected_end <= 100
    amortized = per_update + (2 / eval_every if eval_every else 0) + (1 / ckpt_every if ckpt_every else 0)
    fixed_evals = 2 if eval_every else 1  # at 0 and T, or at T alone: what eval_every=0 runs
    assert 10 + fixed_evals * 2 + 1 + 1 + 2 + (T + 1) * amortized > 100  # the largest T that fits


class Slow:
    """A sink whose log call, sample and close cost time (as W&B's do)."""

    LOG_SECONDS, SAMPLE_SECONDS, TEARDOWN_SECONDS = 0.002, 0.7, 4.0


class Free:  # a sink that declares no costs: nothing set aside
    pass


@pytest.mark.parametrize("sinks", [[], [Free], [Slow], [Slow, Slow]], ids=["none", "free", "one", "two"])
@pytest.mark.parametrize("sample", [0.0, 0.5])
def test_the_plan_sets_aside_what_each_sink_and_cuda_cost_beyond_the_measurement(sinks, sample):
    plan = budget.measure_time_plan(
        100,
        lambda: 10.0,
        update=lambda: 0.5,
        evaluation=lambda: 2.0,
        sample=lambda: sample,
        n_params=1000,
        eval_every=0,
        ckpt_every=0,
        sinks=sinks,
        cuda=True,
    )
    slow = sum(s is Slow for s in sinks)
    table = slow * 0.7 if sample else 0.0  # a sink's sample costs only with a sample
    assert plan.sample_seconds == pytest.approx(sample + table)
    teardown = budget.TEARDOWN_SECONDS + budget.CUDA_TEARDOWN_SECONDS + slow * 4.0
    assert plan.teardown_seconds == pytest.approx(teardown)
    assert plan.log_seconds == pytest.approx(budget.LOG_SECONDS + slow * 0.002)
    fixed = 10 + 1 * 2.0 + budget.checkpoint_seconds(1000) + sample + table + teardown  # eval_every=0: one, at T
    assert plan.total_steps == math.floor((100 - fixed) / (0.5 * budget.STEP_MARGIN + plan.log_seconds))


def test_a_checkpoints_fixed_cost_is_timed_on_the_run_directorys_disk_and_leaves_nothing(tmp_path, clock, monkeypatch):
    from training import checkpoint

    real_save, costs = checkpoint.save, iter([0.03, 0.05, 0.04, 0.01])

    def save(*args, **kwargs):  # a disk whose fsyncs take 30–50 ms
        clock.advance(next(costs))
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", save)
    assert budget.checkpoint_overhead(tmp_path) == pytest.approx(0.04)  # the median
    assert list(tmp_path.rglob("*")) == []  # no checkpoint, no probe, no folder left
    assert budget.checkpoint_overhead(None) == 0.0  # a rank that writes no checkpoint
    (tmp_path / "checkpoints").mkdir()  # a run directory that has one: as it was, to its time
    os.utime(tmp_path / "checkpoints", ns=(1, 10**9))
    budget.checkpoint_overhead(tmp_path, repeats=1)
    assert (tmp_path / "checkpoints").stat().st_mtime_ns == 10**9 and not any((tmp_path / "checkpoints").iterdir())
    plan = budget.measure_time_plan(
        100,
        lambda: 10.0,
        update=lambda: 0.5,
        evaluation=lambda: 2.0,
        sample=lambda: 0.0,
        n_params=1000,
        eval_every=0,
        ckpt_every=10,
        sinks=[],
        cuda=False,
        checkpoint_overhead=0.04,
    )
    assert plan.checkpoint_seconds == pytest.approx(budget.checkpoint_seconds(1000) + 0.04)


def test_the_sample_is_timed_after_a_first_call_and_counts_a_full_context_forward_past_the_cache(clock):
    calls: list[int] = []

    def sample(n: int) -> None:  # the first call loads kernels (0.5 s); then 10 ms a token and 20 ms fixed
        clock.advance(0.5 if not calls else 0.02 + 0.01 * n)
        calls.append(n)

    windows: list[int] = []

    def window() -> None:  # a forward over the whole context: 30 ms
        windows.append(1)
        clock.advance(0.03)

    within = budget.sample_seconds(sample, 100, torch.device("cpu"), cached=200, window=window)
    assert calls == [1, 4, 12] and windows == []  # one token untimed, then two timed samples
    assert within == pytest.approx(0.02 + 100 * 0.01)
    past = budget.sample_seconds(sample, 100, torch.device("cpu"), cached=40, window=window)
    assert len(windows) == 2  # one untimed call, one timed
    assert past == pytest.approx(0.02 + 100 * 0.01 + 60 * 0.03)


def test_the_evaluation_is_timed_after_a_first_call(clock):
    calls: list[float] = []

    def evaluate() -> None:  # a compiled model compiles on its first call (0.4 s); then 40 ms
        calls.append(0.4 if not calls else 0.04)
        clock.advance(calls[-1])

    assert budget.eval_seconds(evaluate, torch.device("cpu")) == pytest.approx(0.04)
    assert calls == [0.4, 0.04]


def test_the_median_update_is_timed_after_a_warmup_for_at_least_the_asked_seconds(clock):
    costs = iter([5.0, 5.0] + [0.1, 0.3, 0.2] * 100)  # two slow first updates (compiling), then steady ones

    def update(i: int) -> float:
        seconds = next(costs)
        clock.advance(seconds)
        return seconds

    assert budget.median_seconds(update, seconds=3.0, warmup=2, repeats=5) == pytest.approx(0.2)
    assert 2 + 15 <= 302 - len(list(costs)) <= 2 + 16  # the warm-up, then 3 s of 0.2 s updates


def time_updates_on_a_rank(rank: int, store: str, out: str) -> None:
    """One of two gloo ranks timing updates that each hold an all-reduce; rank 1's clock runs 10× slower."""
    import datetime

    import torch.distributed as dist

    from training import distributed

    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=20)
    )
    calls = []

    def update(i: int) -> float:
        dist.all_reduce(torch.ones(1))  # as DDP's gradients and the loss are
        calls.append(i)
        return 0.01 * (10 if rank else 1)

    budget.median_seconds(update, seconds=0.5, agree=distributed.any_rank)
    with open(f"{out}.{rank}", "w") as f:
        f.write(str(len(calls)))
    dist.destroy_process_group()


def test_every_rank_times_as_many_updates_whatever_its_own_clock_says(tmp_path):
    import torch.multiprocessing

    torch.multiprocessing.spawn(time_updates_on_a_rank, args=(str(tmp_path / "store"), str(tmp_path / "n")), nprocs=2)
    counts = [int((tmp_path / f"n.{r}").read_text()) for r in range(2)]
    assert counts[0] == counts[1] >= 2 + 0.5 / 4 / 0.1 + 0.5 / 0.1  # as many as the slower clock asks for


def test_the_update_measurement_leaves_the_run_untouched():
    from training.engine import How, Model, TrainStep

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32, dropout=0.1))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    fetched: list[int] = []

    def micro_batches(i: int):
        fetched.append(i)
        x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(i))
        return [(x, x.roll(-1, dims=1))]

    optim = {
        "_target_": "training.optim.adamw",
        "lr": 1e-2,
        "betas": [0.9, 0.98],
        "eps": 1e-6,
        "weight_decay": 0.1,
        "fused": False,
    }
    cpu = torch.device("cpu")
    how = How(cpu, contextlib.nullcontext(), None, 1.0)
    run_optimizer = build_optimizer(model, optim, cpu)
    step = TrainStep(Model(model, model, how, "single", "fp32", False), run_optimizer, None)
    seconds = budget.measure_update(step, build_optimizer(model, optim, cpu), micro_batches, 0.05)
    assert seconds > 0
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())  # lr 0: no weight moved
    assert torch.equal(torch.get_rng_state(), rng)  # dropout's draws are forked away
    assert fetched == list(range(len(fetched))) and len(fetched) >= 7  # batch after batch, as the run takes them
    assert not run_optimizer.state  # the run's optimizer never stepped


def test_a_time_budget_counts_the_process_start_for_the_first_job_a_process_runs_only(monkeypatch):
    from training import launch

    monkeypatch.setattr(launch, "seconds_since_process_start", lambda: 12.5)  # imports and start-up so far
    monkeypatch.setattr(launch, "jobs", [])  # a single run, a sweep's first job, a submitit job's own process
    before = time.perf_counter()
    assert before - 12.5 <= launch.job_started() <= time.perf_counter() - 12.5
    monkeypatch.setattr(launch, "jobs", [(0, None)])  # a later sweep job in the same process: its own start
    assert before <= launch.job_started() <= time.perf_counter()


@pytest.mark.parametrize("T,every", [(15, 10), (20, 10), (7, 0)])
def test_the_evaluation_count_a_plan_and_the_bench_use_is_the_runs(T, every, tmp_path, tiny_train):
    from tests.conftest import read_metrics

    run = tiny_train(tmp_path / "run", [f"trainer.max_steps={T}", f"trainer.eval_every={every}"])
    evaluated = [r["step"] for r in read_metrics(run) if "val/loss" in r]
    assert len(evaluated) == budget.evaluation_count(T, every), evaluated
