"""Runs that survive: bit-exact resume, preemption signals, a kill during a checkpoint save, non-finite losses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT, TINY, read_metrics, run_train, train_records
from training import checkpoint
from training.signals import EXIT_RESUMABLE

T, W = 12, 4
# Dropout makes the run depend on the torch RNG, which the checkpoint must carry over too.
ARGS = TINY + [f"trainer.max_steps={T}", f"schedule.warmup_steps={W}", "trainer.eval_every=4", "model.dropout=0.1"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_cache):
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    run_train(ARGS, run, data_cache)
    return read_metrics(run)


@pytest.mark.parametrize("k", [1, 3, 9], ids=["start", "warmup", "decay"])
def test_stopped_and_resumed_run_equals_the_uninterrupted_run_bit_for_bit(k, tmp_path, data_cache, uninterrupted):
    run = tmp_path / "run"
    stopped = run_train(ARGS + [f"trainer.stop_at={k}"], run, data_cache, check=False)
    assert stopped.returncode == EXIT_RESUMABLE, stopped.stderr[-2000:]
    assert checkpoint.latest(run / "checkpoints").name == f"step-{k:08d}"
    run_train(ARGS, run, data_cache)  # the same command again: resumes from update k
    resumed = read_metrics(run)
    assert [r for r in resumed if "train/loss" in r] and len(resumed) == len(uninterrupted)
    for a, b in zip(uninterrupted, resumed, strict=True):
        assert a["step"] == b["step"]
        for key in ("train/loss", "train/lr", "train/grad_norm", "val/loss", "val/bpb"):
            assert a.get(key) == b.get(key), (k, a["step"], key, a.get(key), b.get(key))


def _start(args: list[str], run, cache) -> subprocess.Popen:
    env = {**os.environ, "GPT_DATA_CACHE": str(cache), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "train.py", *args, f"hydra.run.dir={run}"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120, poll: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"train.py ended early ({proc.returncode}):\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(poll)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_finishes_the_update_checkpoints_and_exits_resumable(sig, tmp_path, data_cache):
    run = tmp_path / "run"
    proc = _start(ARGS[:-4] + ["trainer.max_steps=100000", "trainer.eval_every=0"], run, data_cache)
    _wait_for(lambda: (run / "metrics.jsonl").exists() and len(read_metrics(run)) >= 3, proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_RESUMABLE, out[-3000:]
    records = train_records(run)
    last = max(records)
    # The update running when the signal came was finished and is the checkpoint's step.
    assert checkpoint.latest(run / "checkpoints").name == f"step-{last + 1:08d}"
    assert sorted(records) == list(range(last + 1))
    assert signal.Signals(sig).name in out and "Traceback" not in out


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_save_keeps_the_previous_one_and_resume_uses_it(tmp_path, data_cache):
    """SIGKILL a real process while it writes a checkpoint (a .tmp- folder exists), then resume."""
    args = TINY[:-6] + [  # a bigger model makes each save take long enough to be caught in the middle
        "model.n_embd=256", "model.n_layer=4", "model.n_head=4", "trainer.max_steps=400", "trainer.ckpt_every=2",
        "trainer.keep_checkpoints=3", "trainer.eval_every=0", "trainer.batch_size=2", "trainer.sample_tokens=0",
    ]  # fmt: skip
    for attempt in range(10):
        run = tmp_path / f"run{attempt}"
        ckpts = run / "checkpoints"
        proc = _start(args, run, data_cache)
        _wait_for(lambda: checkpoint.saved_steps(ckpts), proc)  # noqa: B023 — at least one complete checkpoint

        def saving() -> bool:
            return any(p.name.startswith(".tmp-") for p in ckpts.iterdir())  # noqa: B023

        _wait_for(saving, proc, poll=0.0005)
        proc.kill()
        proc.wait()
        if any(p.name.startswith(".tmp-") for p in ckpts.iterdir()):
            break  # killed mid-save
    else:
        pytest.fail("could not kill the process while it was saving")
    before = checkpoint.latest(ckpts)
    state = checkpoint.load(before)  # the previous checkpoint is complete and loadable
    assert state["step"] == int(before.name.split("-")[1])
    resume = ["trainer.ckpt_every=0", "trainer.eval_every=0", "trainer.sample_tokens=0"]
    resume += [f"trainer.max_steps={state['step'] + 2}", "trainer.allow_schedule_change=true"]
    proc = run_train(args[:-6] + resume, run, data_cache)
    assert f"resuming from {before} at update {state['step']}" in proc.stdout + proc.stderr
    assert not any(p.name.startswith(".tmp-") for p in ckpts.iterdir())  # the leftover was cleaned up


def test_a_nonfinite_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, data_cache):
    run = tmp_path / "run"
    args = TINY + ["trainer.max_steps=60", "schedule.warmup_steps=0", "optim.lr=1e6", "trainer.grad_clip=0",
                   "trainer.ckpt_every=1", "trainer.keep_checkpoints=2", "trainer.eval_every=0"]  # fmt: skip
    proc = run_train(args, run, data_cache, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: update ") and "not finite" in lines[0]
    bad_update = int(lines[0].split()[2].rstrip(":"))
    last = checkpoint.latest(run / "checkpoints")
    assert checkpoint.load(last)["step"] == bad_update  # the state before the bad update, nothing after it
    assert max(train_records(run)) == bad_update - 1


def test_a_run_that_skips_nonfinite_batches_writes_strict_json_and_plots_what_is_finite(tmp_path, data_cache):
    import json

    run = tmp_path / "run"
    args = TINY + ["trainer.max_steps=40", "schedule.warmup_steps=0", "optim.lr=1e6", "trainer.grad_clip=0",
                   "trainer.nonfinite=skip", "trainer.eval_every=0", "trainer.sample_tokens=0"]  # fmt: skip
    proc = run_train(args, run, data_cache)
    assert "no validation loss was finite; " in proc.stdout + proc.stderr  # the end-of-run line, no traceback
    assert " update(s) skipped as non-finite (trainer.nonfinite=skip)" in proc.stdout + proc.stderr

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=refuse) for line in lines]  # as strict as any JSON reader
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 40 and None in losses  # every update logged; the skipped ones' loss is null
    assert isinstance(losses[0], float)  # the first update's loss was finite
    assert (run / "plots" / "loss.png").stat().st_size > 0


def test_skip_nonfinite_counts_and_continues(tmp_path, data_cache):
    from model import GPT, GPTConfig
    from scheduling import Schedule, build_scheduler
    from training.engine import NONFINITE, train_update

    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=1, n_embd=8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = build_scheduler(opt, Schedule("cosine", total_steps=10))
    with torch.no_grad():
        model.blocks[0].attn.c_attn.weight[0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randint(0, 64, (2, 8))
    update = train_update(
        model, opt, sched, [(x, x)], device=torch.device("cpu"), autocast=torch.autocast("cpu", enabled=False)
    )
    assert update.status == NONFINITE
    assert sched.last_epoch == 0 and not opt.state  # no optimizer step and no schedule step were taken
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) or torch.isnan(before[k]).any() for k in before)
