"""The same train.py under torchrun on CPU with gloo: DDP equals one process, FSDP trains, one run directory,
checkpoints move between world sizes, and bad input stops every rank. torchrun launches real processes, as a
user runs it; the one-process side of each comparison runs in this process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, compose_config, read_metrics, train_records
from training import checkpoint
from training.signals import EXIT_RESUMABLE

T = 20
# 256 tokens per update: 2 ranks × 1 micro-batch × 4 × 32, or 1 rank × 2 micro-batches × 4 × 32.
ARGS = [f"trainer.max_steps={T}", "trainer.global_batch_tokens=256", "trainer.eval_every=10", "schedule.warmup_steps=4"]

pytestmark = pytest.mark.slow


def torchrun(args: list[str], cwd: Path, cache: Path, run_dir: Path | None = None, check: bool = True):
    env = {**os.environ, "GPT_DATA_CACHE": str(cache), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "train.py"),
        *TINY,
        *args,
    ]
    if run_dir is not None:
        cmd.append(f"hydra.run.dir={run_dir}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, data_cache):
    """The train records of the same run in one process (2 micro-batches per update)."""
    from train import train

    run = tmp_path_factory.mktemp("one") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT_DATA_CACHE", str(data_cache))
        train(compose_config(TINY + ARGS), run)
    return train_records(run)


def assert_same_losses(a: dict, b: dict, steps) -> None:
    for t in steps:
        la, lb = a[t]["train/loss"], b[t]["train/loss"]
        assert abs(la - lb) <= 1e-5 * abs(la), (t, la, lb)
        assert a[t]["train/lr"] == b[t]["train/lr"], t


def test_two_process_ddp_equals_one_process_and_writes_one_run_directory(tmp_path, data_cache, one_process):
    proc = torchrun(ARGS, tmp_path, data_cache)  # no hydra.run.dir: Hydra's timestamped default
    run_dirs = [p.parent for p in tmp_path.rglob(".hydra")]
    assert len(run_dirs) == 1, run_dirs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"], "nothing else in the working directory"
    two = train_records(run_dirs[0])
    assert sorted(two) == list(range(T))
    assert_same_losses(one_process, two, range(T))
    assert "2 rank(s) × 1 micro-batch(es)" in proc.stdout + proc.stderr


def test_a_two_process_checkpoint_resumes_on_one_process(tmp_path, data_cache, one_process, tiny_train):
    run = tmp_path / "run"
    stopped = torchrun(ARGS + ["trainer.stop_at=10"], tmp_path, data_cache, run, check=False)
    out = stopped.stdout + stopped.stderr
    # Every rank exits EXIT_RESUMABLE; torchrun reports any non-zero worker exit as its own exit code 1.
    assert stopped.returncode != 0 and f"exitcode  : {EXIT_RESUMABLE}" in out, out[-3000:]
    assert "stopped after updates 0–9 (trainer.stop_at); re-run the same command to resume at update 10" in out
    assert checkpoint.latest(run / "checkpoints").name == "step-00000010"
    tiny_train(run, ARGS)  # one process, the same global batch: 2 micro-batches per update
    resumed = train_records(run)
    assert sorted(resumed) == list(range(T))
    assert_same_losses(one_process, resumed, range(T))


def test_two_process_fsdp_trains_and_its_sharded_checkpoint_resumes_on_one_process(tmp_path, data_cache, tiny_train):
    run = tmp_path / "run"
    proc = torchrun(ARGS + ["trainer.strategy=fsdp"], tmp_path, data_cache, run)
    assert "fsdp" in proc.stdout + proc.stderr
    records = train_records(run)
    first = sum(records[t]["train/loss"] for t in range(3)) / 3
    last = sum(records[t]["train/loss"] for t in range(T - 3, T)) / 3
    assert last < first - 0.3, (first, last)
    final = checkpoint.latest(run / "checkpoints")
    assert (final / "dcp" / ".metadata").is_file()
    evals = [r for r in read_metrics(run) if "val/loss" in r]
    # One process continues from the sharded checkpoint for 4 more updates.
    tiny_train(run, ARGS + [f"trainer.max_steps={T + 4}", "trainer.allow_schedule_change=true"])
    assert sorted(train_records(run)) == list(range(T + 4))
    assert [r for r in read_metrics(run) if "val/loss" in r][-1]["val/loss"] < evals[0]["val/loss"]


def test_a_data_error_on_rank_zero_stops_every_rank_with_one_line(tmp_path, data_cache):
    proc = torchrun(
        ["data=text_files", f"data.path={tmp_path}/missing/*.txt"], tmp_path, data_cache, tmp_path / "run", check=False
    )
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error: ")]
    assert errors and all("no file matches" in line for line in errors), proc.stderr[-2000:]


def test_two_process_ddp_with_muon_equals_one_process(tmp_path, data_cache, tiny_train):
    muon = ["optim=muon", "optim.muon.lr=0.02"]
    one = train_records(tiny_train(tmp_path / "one", ARGS + muon))
    torchrun(ARGS + muon, tmp_path, data_cache, run_dir=tmp_path / "two")
    two = train_records(tmp_path / "two")
    assert_same_losses(one, two, range(T))
    assert all(one[t]["train/lr_muon"] == two[t]["train/lr_muon"] for t in range(T))
