"""What a run reports: W&B (offline, read back from its own run file), Hydra multirun sweeps, local plots and
progress lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, read_metrics, run_train, train_records
from tests.wandb_file import exit_code, history, run_info
from training import plots

PNG = b"\x89PNG\r\n\x1a\n"


def wandb_files(root: Path) -> list[Path]:
    return sorted(root.rglob("run-*.wandb"))


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory, data_cache):
    run = tmp_path_factory.mktemp("wandb") / "run"
    args = TINY[:-1] + ["logger=wandb", "logger.mode=offline", "trainer.max_steps=12", "trainer.eval_every=5",
                        "trainer.log_every=5", "logger.tags=[tiny,test]"]  # fmt: skip
    proc = run_train(args, run, data_cache)
    return run, proc


def test_wandb_records_the_same_lr_and_loss_as_metrics_jsonl(wandb_run):
    run, _ = wandb_run
    (path,) = wandb_files(run)
    logged = {}
    for row in history(path):
        logged.setdefault(row["_step"], {}).update(row)
    local = read_metrics(run)
    assert local
    for record in local:
        row = logged[record["step"]]
        assert row["step"] == record["step"]  # the W&B step is the optimizer update index
        for key, value in record.items():
            if key != "step":
                assert row[key] == pytest.approx(value, rel=1e-12, abs=0), (record["step"], key)
    info = run_info(path)
    assert info.job_type == "train" and list(info.tags) == ["tiny", "test"]
    config = {item.key: json.loads(item.value_json) for item in info.config.update}
    assert config["trainer"]["max_steps"] == 12 and config["model"]["n_embd"] == 32  # the resolved Hydra config
    assert exit_code(path) == 0


def test_the_end_of_run_sample_is_a_wandb_table(wandb_run):
    run, _ = wandb_run
    (path,) = wandb_files(run)
    tables = [row for row in history(path) if row.get("sample/_type") == "table-file"]
    assert len(tables) == 1 and tables[0]["sample/nrows"] == 1


def test_offline_runs_print_the_sync_command(wandb_run):
    _, proc = wandb_run
    assert "wandb sync " in proc.stdout + proc.stderr


def test_logger_none_writes_no_wandb_files(tmp_path, data_cache):
    run = tmp_path / "run"
    run_train(TINY + ["trainer.max_steps=3", "trainer.eval_every=0"], run, data_cache)
    assert not (run / "wandb").exists() and not wandb_files(run)
    assert (run / "metrics.jsonl").is_file()


def test_logger_csv_writes_a_column_per_metric(tmp_path, data_cache):
    run = tmp_path / "run"
    run_train(TINY[:-1] + ["logger=csv", "trainer.max_steps=4", "trainer.eval_every=2"], run, data_cache)
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    assert header.split(",")[:3] == ["step", "train/loss", "train/lr"] and "val/bpb" in header
    assert len(rows) == len(read_metrics(run))


def test_without_a_terminal_progress_is_a_plain_line_every_n_updates(wandb_run):
    _, proc = wandb_run
    out = proc.stdout + proc.stderr
    lines = [line for line in out.splitlines() if "| loss " in line]
    assert [line.split("step")[1].split("/")[0].strip() for line in lines] == ["0", "5", "10", "11"]
    assert "\r" not in out  # no progress bar redraws
    assert "tokens per update" in out and "run dir" in out  # the start summary
    assert "best val loss" in out and "checkpoint" in out  # the end summary


def test_every_run_writes_loss_and_lr_plots(wandb_run):
    run, _ = wandb_run
    for name in ("loss.png", "lr.png"):
        data = (run / "plots" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name


@pytest.mark.slow
def test_a_two_by_two_multirun_gives_four_runs_in_one_wandb_group_and_survives_a_failed_job(tmp_path, data_cache):
    """lr 1e6 makes the loss non-finite: those jobs fail (and are marked failed), their siblings still run."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "WANDB_MODE": "offline"}
    args = TINY[:-1] + ["logger=wandb", "logger.mode=offline", "trainer.max_steps=10", "trainer.eval_every=0",
                        "schedule.warmup_steps=0", "trainer.grad_clip=0"]  # fmt: skip
    cmd = [sys.executable, "train.py", "-m", "schedule=cosine,linear", "optim.lr=2e-3,1e6", *args,
           f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]  # Hydra reports the failed jobs at the end
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    files = [wandb_files(job) for job in jobs]
    assert all(len(f) == 1 for f in files)
    infos = [run_info(f[0]) for f in files]
    assert len({i.run_id for i in infos}) == 4
    assert {i.run_group for i in infos} == {str(sweep)}
    # Each W&B run is named after the values the sweep varies (Hydra writes the job's floats normalised).
    assert sorted(i.display_name for i in infos) == sorted(
        f"schedule={s},optim.lr={lr}" for s in ("cosine", "linear") for lr in ("0.002", "1000000.0")
    )
    for job, f, info in zip(jobs, files, infos, strict=True):
        ok = "0.002" in info.display_name
        assert exit_code(f[0]) == (0 if ok else 1), info.display_name
        assert (sorted(train_records(job)) == list(range(10))) == ok


def test_plots_cli_overlays_several_runs(wandb_run, tmp_path, data_cache):
    run, _ = wandb_run
    other = tmp_path / "other"
    run_train(TINY + ["trainer.max_steps=6", "schedule=linear", "trainer.eval_every=3"], other, data_cache)
    out = tmp_path / "compare.png"
    assert plots.main([str(run), str(tmp_path), "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(PNG) and len(data) > 20_000
    assert plots.find_runs([run, tmp_path]) == [run, other]
    assert plots.main([str(tmp_path / "nothing-here")]) == 2


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path, data_cache):
    run = tmp_path / "run"
    args = TINY[:-1] + ["logger=wandb", "logger.mode=offline", "trainer.max_steps=8", "trainer.eval_every=0"]
    first = run_train(args + ["trainer.stop_at=4"], run, data_cache, check=False)
    assert first.returncode == 75, first.stderr[-2000:]
    run_train(args, run, data_cache)
    files = wandb_files(run)
    assert len(files) == 2  # W&B writes one offline file per process; `wandb sync` merges them into one run
    assert run_info(files[0]).run_id == run_info(files[1]).run_id
    steps = [row["_step"] for row in history(files[1]) if "train/loss" in row]
    assert steps == [4, 5, 6, 7]


@pytest.mark.slow
def test_the_submitit_launcher_runs_each_sweep_job_in_its_own_process(tmp_path, data_cache):
    """hydra/launcher=submitit_local: the job function is pickled and run elsewhere, as on SLURM."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "train.py", "-m", "hydra/launcher=submitit_local", "trainer.max_steps=4,6", *TINY,
           "trainer.eval_every=0", "trainer.sample_tokens=0", f"hydra.sweep.dir={sweep}",
           "hydra.launcher.timeout_min=10"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(train_records(sweep / "0")) == list(range(4))
    assert sorted(train_records(sweep / "1")) == list(range(6))
    # Each job ran in a process of its own, which left submitit its pickled result.
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2
