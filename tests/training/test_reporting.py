"""What a run reports: W&B (offline, read back from its own run file), the CSV logger, Hydra multirun sweeps,
local plots and progress lines."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import ROOT, TINY, compose_config, read_metrics, train_records
from tests.training.wandb_file import exit_code, history, records, run_files, run_info, summary
from training import plots
from training.launch import swept_overrides
from training.signals import Stopped

PNG = b"\x89PNG\r\n\x1a\n"
WANDB = ["logger=wandb", "logger.mode=offline"]
SAME = ("train/loss", "train/lr", "train/grad_norm", "tokens")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def captured_logs() -> Iterator[list[str]]:
    """The log lines emitted inside the block (caplog for a module-scoped fixture, which cannot use caplog)."""
    root, handler = logging.getLogger(), _Lines()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory, data_cache):
    """A finished 12-update run logging to W&B offline, with its log lines and what it wrote to stderr (not a
    terminal, as in CI or a SLURM log)."""
    from train import train

    run = tmp_path_factory.mktemp("wandb") / "run"
    stderr = io.StringIO()
    cfg = compose_config(
        TINY
        + WANDB
        + [
            "trainer.max_steps=12",
            "trainer.eval_every=5",
            "trainer.log_every=5",
            "logger.tags=[tiny,test]",
            "logger.job_type=pretrain-test",
        ]
    )
    with pytest.MonkeyPatch.context() as mp, captured_logs() as lines, contextlib.redirect_stderr(stderr):
        mp.setenv("GPT_DATA_CACHE", str(data_cache))
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        train(cfg, run)
    return SimpleNamespace(dir=run, log="\n".join(lines), stderr=stderr.getvalue())


def test_wandb_records_the_same_metrics_as_metrics_jsonl_at_the_update_index(wandb_run):
    (path,) = run_files(wandb_run.dir)
    logged = {}
    for row in history(path):
        logged.setdefault(row["_step"], {}).update(row)
    local = read_metrics(wandb_run.dir)
    assert local
    for record in local:
        row = logged[record["step"]]
        assert row["step"] == record["step"]  # the W&B step is the optimizer update index
        for key, value in record.items():
            if key != "step":
                assert row[key] == pytest.approx(value, rel=1e-12, abs=0), (record["step"], key)
    info = run_info(path)
    assert info.job_type == "pretrain-test" and list(info.tags) == ["tiny", "test"]  # logger.* reach W&B
    config = {item.key: json.loads(item.value_json) for item in info.config.update}
    assert config["trainer"]["max_steps"] == 12 and config["model"]["n_embd"] == 32  # the resolved Hydra config
    assert exit_code(path) == 0


def test_wandb_summary_holds_the_last_val_loss_and_the_best_as_the_runs_summary_does(wandb_run):
    """One notion of best, the run's (best/*, kept across resumes), beside W&B's default of the last value."""
    (path,) = run_files(wandb_run.dir)
    val = [r for r in read_metrics(wandb_run.dir) if "val/loss" in r]
    best = min(val, key=lambda r: r["val/loss"])
    got = summary(path)
    assert got["val/loss"] == pytest.approx(val[-1]["val/loss"], rel=1e-12)
    assert (got["best/val_loss"], got["best/step"]) == (pytest.approx(best["val/loss"], rel=1e-12), best["step"])


def test_the_lr_audit_reads_the_history_and_config_of_a_wandb_offline_run(wandb_run, capsys):
    from scheduling.audit import main as audit

    [run_file] = run_files(wandb_run.dir)
    assert audit([str(run_file.parent)]) == 0  # the schedule from the run's own config: cosine, T = 12
    assert "12 logged lrs (updates 0–11) against cosine" in capsys.readouterr().out
    assert audit([str(run_file.parent), "schedule=linear", "trainer.max_steps=12", "optim.lr=1e-3"]) == 1


def test_the_end_of_run_sample_is_a_wandb_table(wandb_run):
    (path,) = run_files(wandb_run.dir)
    tables = [row for row in history(path) if row.get("sample/_type") == "table-file"]
    assert len(tables) == 1 and tables[0]["sample/nrows"] == 1


def test_an_offline_run_logs_the_command_that_uploads_it(wandb_run):
    (path,) = run_files(wandb_run.dir)
    lines = [line for line in wandb_run.log.splitlines() if "upload the run with" in line]
    commands = [line.split("wandb sync ", 1)[1] for line in lines]
    assert commands == [str(path.parent)]


def test_without_a_terminal_progress_is_a_plain_line_every_log_every_updates(wandb_run):
    lines = [line for line in wandb_run.log.splitlines() if "| loss " in line]
    assert [line.split("step")[1].split("/")[0].strip() for line in lines] == ["0", "5", "10", "11"]
    assert "\r" not in wandb_run.stderr  # no progress bar redraws
    assert "tokens per update" in wandb_run.log and "run dir" in wandb_run.log  # the start summary
    assert "best val loss" in wandb_run.log and "checkpoint" in wandb_run.log  # the end summary


def test_every_run_writes_loss_and_lr_plots(wandb_run):
    for name in ("loss.png", "lr.png"):
        data = (wandb_run.dir / "plots" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name


def test_logger_none_writes_no_wandb_files(tmp_path, tiny_train):
    run = tiny_train(tmp_path / "run", ["trainer.max_steps=3", "trainer.eval_every=0"])
    assert not (run / "wandb").exists() and not run_files(run)
    assert (run / "metrics.jsonl").is_file()


def test_wandb_disabled_writes_no_wandb_folder_and_the_summary_names_none(tmp_path, tiny_train):
    with captured_logs() as lines:
        run = tiny_train(tmp_path / "run", ["logger=wandb", "logger.mode=disabled", "trainer.max_steps=3"])
    assert not (run / "wandb").exists()
    listed = [line for line in "\n".join(lines).splitlines() if line.strip().startswith("metrics")]
    assert listed and all("metrics.jsonl" in line and "wandb" not in line for line in listed)


def test_a_mixture_reports_each_sources_bpb_in_metrics_jsonl_wandb_and_the_console(tmp_path, tiny_train):
    mixture = ["data=mixture", f"data.sources.docs.path={ROOT / 'docs'}", "trainer.max_steps=4", "trainer.eval_every=2"]
    with captured_logs() as lines:
        run = tiny_train(tmp_path / "run", mixture + WANDB)
    evaluations = [r for r in read_metrics(run) if "val/loss" in r]
    assert [r["step"] for r in evaluations] == [0, 2, 4]
    for r in evaluations:
        assert {"val/bpb", "val/stdlib/bpb", "val/docs/bpb", "val/stdlib/loss", "val/docs/loss"} <= set(r)
        line = next(x for x in lines if re.search(rf"step +{r['step']}/4 \| val loss", x))
        assert f"stdlib bpb {r['val/stdlib/bpb']:.4f}" in line and f"docs bpb {r['val/docs/bpb']:.4f}" in line
    (path,) = run_files(run)
    logged = {row["_step"]: row for row in history(path) if "val/docs/bpb" in row}
    assert {step: row["val/docs/bpb"] for step, row in logged.items()} == {
        r["step"]: r["val/docs/bpb"] for r in evaluations
    }


def test_logger_csv_holds_the_same_records_as_metrics_jsonl(tmp_path, tiny_train):
    run = tiny_train(tmp_path / "run", ["logger=csv", "trainer.max_steps=4", "trainer.eval_every=2"])
    with open(run / "metrics.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        header, rows = reader.fieldnames, list(reader)
    records = read_metrics(run)
    assert header[0] == "step" and len(rows) == len(records)
    assert any("val/bpb" in r for r in records) and any("train/loss" in r for r in records)
    for row, record in zip(rows, records, strict=True):
        assert {k for k, v in row.items() if v != ""} == set(record)  # a column per metric, the same names
        assert all(float(row[k]) == v for k, v in record.items()), record["step"]


def test_plots_cli_overlays_several_runs(wandb_run, tmp_path, tiny_train):
    other = tiny_train(tmp_path / "other", ["trainer.max_steps=6", "schedule=linear", "trainer.eval_every=3"])
    out = tmp_path / "compare.png"
    assert plots.main([str(wandb_run.dir), str(tmp_path), "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(PNG) and len(data) > 20_000
    assert plots.find_runs([wandb_run.dir, tmp_path]) == [wandb_run.dir, other]
    assert plots.main([str(tmp_path / "nothing-here")]) == 2


def test_a_resumed_run_continues_the_same_wandb_run_with_every_step(tmp_path, tiny_train, caplog):
    run = tmp_path / "run"
    args = WANDB + ["trainer.max_steps=8", "trainer.eval_every=0", "trainer.ckpt_every=2"]
    with pytest.raises(Stopped):
        tiny_train(run, args + ["trainer.stop_at=4"])
    # as if the process had died after update 3 with its last checkpoint at 2: updates 2 and 3 are taken again
    shutil.rmtree(run / "checkpoints" / "step-00000004")
    (run / "checkpoints" / "latest").write_text("step-00000002\n")
    with caplog.at_level("INFO"):
        tiny_train(run, args)
    first, second = run_files(run)  # offline-run-<start time>-<id>[-n]: in the order they started
    # W&B writes one offline file per wandb.init; `wandb sync` of both uploads them as one run
    assert run_info(first).run_id == run_info(second).run_id
    assert f"wandb sync {first.parent} {second.parent}" in caplog.text
    assert any(r.WhichOneof("record_type") == "preempting" for r in records(first))  # shown as preempted
    assert exit_code(second) == 0
    rows = [{row["step"]: row for row in history(part) if "train/loss" in row} for part in (first, second)]
    assert [sorted(r) for r in rows] == [[0, 1, 2, 3], [2, 3, 4, 5, 6, 7]]  # the second from its checkpoint's update
    for t in (2, 3):  # taken again, exactly: the same values in both files
        assert {k: rows[1][t][k] for k in SAME} == {k: rows[0][t][k] for k in SAME}, t
    assert sorted(train_records(run)) == list(range(8))


def test_wandb_prints_nothing_of_its_own_unless_asked(tmp_path, tiny_train, monkeypatch, capfd):
    """The run's end-of-run summary says what W&B's banner and history block would repeat."""
    args = WANDB + ["trainer.max_steps=2", "trainer.eval_every=0", "trainer.sample_tokens=0"]
    monkeypatch.delenv("WANDB_SILENT", raising=False)
    tiny_train(tmp_path / "quiet", args)
    out, err = capfd.readouterr()
    assert "wandb:" not in out + err
    monkeypatch.setenv("WANDB_SILENT", "false")
    tiny_train(tmp_path / "loud", args)
    out, err = capfd.readouterr()
    assert "wandb:" in out + err


def test_a_wandb_run_of_a_sweep_is_named_after_the_values_the_sweep_varies():
    job = ["schedule=linear", "optim.lr=0.002", "trainer.max_steps=10", "logger=wandb"]
    argv = ["-m", "schedule=cosine,linear", "optim.lr=2e-3,1e6", "trainer.max_steps=10", "logger=wandb"]
    assert swept_overrides(job, argv, None) == ["schedule=linear", "optim.lr=0.002"]
    # a sweep given in hydra.sweeper.params counts too, though the command line sets the key once
    assert swept_overrides(job, ["-m", "logger=wandb"], {"trainer.max_steps": "10,20"}) == ["trainer.max_steps=10"]


def test_a_sweep_job_refused_before_it_starts_replaces_an_earlier_summary_of_its_directory(tmp_path, data_cache):
    """A sweep run again in the same directory: a job that now fails on a bad value does not keep the earlier
    run's results beside its failure (the report would show them)."""
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / "summary.json").write_text(json.dumps({"status": "ok", "best/val_loss": 1.5, "total_steps": 9}))
    (sweep / "0" / "metrics.jsonl").write_text('{"step": 9, "tokens": 900, "val/loss": 1.5, "val/bpb": 2.25}\n')
    for name in ("summary.json", "metrics.jsonl"):
        os.utime(sweep / "0" / name, (1e9, 1e9))  # written long before this sweep
    (sweep / "frontier.png").write_bytes(b"an earlier grid's")
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache)}
    args = [*TINY, "optim.lr=-1,1e-3", "trainer.max_steps=2", "trainer.eval_every=0", "trainer.sample_tokens=0"]
    cmd = [sys.executable, "train.py", "-m", *args, f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert summary.pop("started") > 1e9
    assert summary == {"status": "failed", "error": "optim.lr must be a number > 0, got -1"}
    report = (sweep / "report.csv").read_text()
    assert "2.25" not in report and "900" not in report  # the earlier run's results, not this failed job's
    assert not (sweep / "frontier.png").exists()  # nor its figure


@pytest.mark.slow
def test_a_two_by_two_multirun_gives_four_runs_in_one_wandb_group_and_survives_a_failed_job(tmp_path, data_cache):
    """lr 1e6 makes the loss non-finite: those jobs fail (and are marked failed), their siblings still run."""
    sweep, n = tmp_path / "sweep", 6
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "WANDB_MODE": "offline"}
    args = (
        TINY
        + WANDB
        + [
            f"trainer.max_steps={n}",
            "trainer.eval_every=0",
            "trainer.sample_tokens=0",
            "schedule.warmup_steps=0",
            "trainer.grad_clip=0",
        ]
    )
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "schedule=cosine,linear",
        "optim.lr=2e-3,1e6",
        *args,
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    files = [run_files(job) for job in jobs]
    assert all(len(f) == 1 for f in files)
    infos = [run_info(f[0]) for f in files]
    assert len({i.run_id for i in infos}) == 4
    assert {i.run_group for i in infos} == {str(sweep)}
    # Each W&B run is named after the values the sweep varies (Hydra writes the job's floats normalised).
    assert sorted(i.display_name for i in infos) == sorted(
        f"schedule={s},optim.lr={lr}" for s in ("cosine", "linear") for lr in ("0.002", "1000000.0")
    )
    failed = []
    for job, f, info in zip(jobs, files, infos, strict=True):
        ok = "0.002" in info.display_name
        assert exit_code(f[0]) == (0 if ok else 1), info.display_name
        assert (sorted(train_records(job)) == list(range(n))) == ok
        if not ok:
            failed.append(job.name)
            assert f"error: job {job.name} ({info.display_name}): update " in proc.stdout + proc.stderr
    summary = f"error: 2 of 4 sweep jobs failed (job {', '.join(failed)}), each above"
    assert proc.stderr.strip().splitlines()[-1] == summary  # the sweep's last word, before exit code 2
    assert "Traceback" not in proc.stdout + proc.stderr
    # Hydra's own lines read like the run's: "[HH:MM:SS] message"
    assert re.search(r"^\[\d\d:\d\d:\d\d\] Launching 4 jobs locally$", proc.stdout, flags=re.M), proc.stdout[:500]


def test_a_cpu_peak_on_record_that_the_run_outpaces_is_measured_again_once(tmp_path, tiny_train, monkeypatch, caplog):
    """A peak measured while other work slowed the machine is cached: MFU over 100 % shows it is low."""
    from model import flops

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    rates = iter([1e3])  # a busy machine's first measurement, then an idle one's
    monkeypatch.setattr(flops, "measure_matmul_flops", lambda *a, **k: next(rates, 1e15))
    args = ["trainer.max_steps=5", "trainer.eval_every=0", "trainer.sample_tokens=0", "trainer.precision=fp32"]
    with caplog.at_level("WARNING"):
        run = tiny_train(tmp_path / "run", args)
    assert caplog.text.count("peak FLOP/s on record is too low; measuring it again") == 1
    mfus = [r["train/mfu"] for r in train_records(run).values()]
    assert len(mfus) == 5 and all(0 < m < 1e-3 for m in mfus), mfus
    stored = json.loads((tmp_path / "xdg" / "hydra-gpt-template" / "cpu_peak_flops.json").read_text())
    assert set(stored.values()) == {1e15}


def test_the_start_summary_names_grouped_query_attentions_key_value_heads(tmp_path, tiny_train, caplog):
    args = ["trainer.max_steps=1", "trainer.eval_every=0", "trainer.sample_tokens=0"]
    with caplog.at_level("INFO", logger="train"):
        tiny_train(tmp_path / "mha", args)
        tiny_train(tmp_path / "gqa", [*args, "model.n_kv_head=1"])
    lines = [r.getMessage() for r in caplog.records if "(n_layer 2, n_head 2" in r.getMessage()]
    assert len(lines) == 2 and "n_head 2, n_embd 32" in lines[0] and "n_head 2, n_kv_head 1, n_embd 32" in lines[1]


CRASHING_OPTIMIZER = """
import torch


def sgd(model, device, *, lr, **_):
    class Step(torch.optim.SGD):
        def step(self, closure=None):
            if lr > 1e-2:
                raise RuntimeError("planted crash in the optimizer step")
            return super().step(closure)

    return Step(model.parameters(), lr=lr)
"""


def test_a_sweep_job_that_crashes_is_reported_with_its_traceback_and_the_sweep_goes_on(tmp_path, data_cache):
    """A crash (not bad input: a fork's optimizer raising) ends its job, not the sweep: the traceback goes to the
    console and the job's train.log, the report marks the job crashed, and the sweep exits 1, as a crash does."""
    (tmp_path / "crashy.py").write_text(CRASHING_OPTIMIZER)
    sweep = tmp_path / "sweep"
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "PYTHONPATH": str(tmp_path)}
    args = ["trainer.max_steps=3", "trainer.eval_every=0", "trainer.sample_tokens=0", "optim._target_=crashy.sgd"]
    cmd = [sys.executable, "train.py", "-m", *TINY, *args, "optim.lr=0.1,0.001", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "error: 1 of 2 sweep jobs failed (job 0), each above"
    for log_text in (proc.stdout + proc.stderr, (sweep / "0" / "train.log").read_text()):
        assert "job 0 (optim.lr=0.1) crashed" in log_text
        assert 'crashy.py", line' in log_text and "RuntimeError: planted crash in the optimizer step" in log_text
    assert sorted(train_records(sweep / "1")) == [0, 1, 2]  # the job after the crash ran
    job0 = json.loads((sweep / "0" / "summary.json").read_text())
    assert (job0["status"], job0["error"]) == ("failed", "crashed: RuntimeError: planted crash in the optimizer step")
    report = (sweep / "report.md").read_text()
    assert "- job 0: crashed: RuntimeError: planted crash in the optimizer step" in report


def test_a_single_run_that_crashes_keeps_its_traceback_in_train_log_and_its_line_in_summary_json(tmp_path, data_cache):
    (tmp_path / "crashy.py").write_text(CRASHING_OPTIMIZER)
    run = tmp_path / "run"
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "PYTHONPATH": str(tmp_path)}
    args = ["trainer.max_steps=3", "trainer.eval_every=0", "trainer.sample_tokens=0", "optim._target_=crashy.sgd"]
    cmd = [sys.executable, "train.py", *TINY, *args, "optim.lr=0.1", f"hydra.run.dir={run}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "RuntimeError: planted crash" in proc.stderr, proc.stderr[-3000:]
    log_text = (run / "train.log").read_text()
    assert 'crashy.py", line' in log_text and "RuntimeError: planted crash in the optimizer step" in log_text
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["error"]) == (
        "failed",
        "crashed: RuntimeError: planted crash in the optimizer step",
    )


def report_statuses(sweep) -> dict[str, str]:
    with open(sweep / "report.csv", newline="") as f:
        return {row["job"]: row["status"] for row in csv.DictReader(f)}


def test_a_sweep_run_again_with_a_bad_value_leaves_the_earlier_run_of_the_refused_job_as_it_was(tmp_path, data_cache):
    """Hydra rewrites a job's .hydra/ before the job can refuse its config: once the report has the refusal, the
    finished run in that folder gets its record, log and summary back (not a summary saying it failed)."""
    sweep = tmp_path / "sweep"
    assert run_sweep(sweep, data_cache, [], "optim.lr=1e-3,2e-3").returncode == 0
    files = lambda: {p: p.read_bytes() for p in (sweep / "1").rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    proc = run_sweep(sweep, data_cache, [], "optim.lr=1e-3,-1")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: 1 of 2 sweep jobs failed")
    # named before job 0 starts, not only once job 0 has trained
    warning = "warning: job 1 (optim.lr=-1) will be refused: optim.lr must be a number > 0, got -1\n"
    assert proc.stderr.startswith(warning)
    assert report_statuses(sweep) == {"0": "ok", "1": "failed"}  # the report of this launch
    assert files() == before
    again = run_sweep(sweep, data_cache, [], "optim.lr=1e-3,2e-3")  # the earlier command: both runs whole
    assert again.returncode == 0 and report_statuses(sweep) == {"0": "ok", "1": "ok"}, again.stderr[-2000:]


def test_a_job_that_crashes_in_a_sweep_run_again_keeps_its_crash_not_the_earlier_run(tmp_path, data_cache):
    """Only bad input puts the earlier run back: a crash's traceback, in the job's train.log, is what to read."""
    (tmp_path / "crashy_build.py").write_text(
        "def sgd(model, device, *, lr, **_):\n    raise RuntimeError('planted crash as the optimizer is built')\n"
    )
    sweep = tmp_path / "sweep"
    assert run_sweep(sweep, data_cache, [], "optim.lr=1e-3,2e-3").returncode == 0
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "PYTHONPATH": str(tmp_path)}
    args = [*TINY, "trainer.eval_every=0", "trainer.sample_tokens=0", "trainer.max_steps=2"]
    cmd = [sys.executable, "train.py", "-m", *args, "optim._target_=crashy_build.sgd", "optim.lr=1e-3"]
    proc = subprocess.run([*cmd, f"hydra.sweep.dir={sweep}"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith("crashed: RuntimeError: planted crash")
    assert "RuntimeError: planted crash as the optimizer is built" in (sweep / "0" / "train.log").read_text()


def test_stop_at_stops_each_sweep_job_there_and_the_same_command_resumes_them_all(tmp_path, data_cache):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache)}
    args = [*TINY, "trainer.eval_every=0", "trainer.sample_tokens=0", "trainer.stop_at=3"]
    cmd = [sys.executable, "train.py", "-m", *args, "trainer.max_steps=4,6", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 75, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "2 of 2 sweep jobs stopped at trainer.stop_at (job 0, 1); re-run the same command to resume them"
    assert [sorted(train_records(sweep / job)) for job in "01"] == [[0, 1, 2], [0, 1, 2]]
    assert report_statuses(sweep) == {"0": "preempted", "1": "preempted"}

    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [sorted(train_records(sweep / job)) for job in "01"] == [list(range(4)), list(range(6))]
    assert report_statuses(sweep) == {"0": "ok", "1": "ok"}


def run_sweep(sweep: Path, data_cache: Path, extra: list[str], swept: str) -> subprocess.CompletedProcess:
    """``python train.py -m`` over ``swept`` on TINY settings of 2 updates, without evaluations or samples, plus
    ``extra``, into ``sweep``."""
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache)}
    args = [*TINY, "trainer.eval_every=0", "trainer.sample_tokens=0", "trainer.max_steps=2", *extra]
    cmd = [sys.executable, "train.py", "-m", *args, swept, f"hydra.sweep.dir={sweep}"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_a_signal_while_a_sweep_job_ends_ends_the_sweep_after_that_job(tmp_path, data_cache):
    """The job's ending finishes (its trackers' last records), then no next job starts: exit 75, the report."""
    sweep = tmp_path / "sweep"
    late = "+logger.sinks.late._target_=tests.training.fork_parts.SignalAtFinish"
    proc = run_sweep(sweep, data_cache, [late], "optim.lr=1e-3,2e-3,3e-3")
    assert proc.returncode == 75, proc.stderr[-3000:]
    assert (sweep / "0" / "finished.txt").read_text() == "ok" and not (sweep / "1").exists()
    assert report_statuses(sweep) == {"0": "ok"}
    said = "SIGTERM came while job 0 ended: the sweep stops after it; re-run the same command to go on"
    assert said in proc.stdout + proc.stderr


def test_a_signal_between_two_sweep_jobs_stops_the_next_as_it_starts_with_the_report(tmp_path, data_cache):
    """Between two jobs no job's handler is set: the signal is held, and the next job stops as it starts (not a
    death by SIGTERM, exit 143 and no report)."""
    sweep = tmp_path / "sweep"
    between = "+hydra.callbacks.between._target_=tests.training.fork_parts.SignalBetweenJobs"
    proc = run_sweep(sweep, data_cache, [between], "optim.lr=1e-3,2e-3,3e-3")
    assert proc.returncode == 75, proc.stderr[-3000:]
    assert report_statuses(sweep) == {"0": "ok", "1": "preempted"} and not (sweep / "2").exists()
    assert "stopped as the run started (SIGTERM), before its first update" in proc.stdout + proc.stderr
    assert "metrics.jsonl is missing" not in (sweep / "report.md").read_text()  # it had none to lose


def test_the_sweeps_hold_on_signals_ends_with_it():
    """A signal held after the last job is dropped, and the handlers the sweep found are back (a process that goes
    on after a sweep, as a test's, keeps its own)."""
    import signal

    from training import signals

    found = signal.getsignal(signal.SIGTERM)
    signals.hold_between_jobs()
    signal.raise_signal(signal.SIGTERM)
    assert signals.held == "SIGTERM"
    signals.release_between_jobs()
    assert signals.held is None and signal.getsignal(signal.SIGTERM) is found


def test_a_signal_during_a_sweep_jobs_final_evaluation_ends_the_sweep_after_that_job(tmp_path, data_cache):
    """The job saves its last checkpoint and ends ok; no next job starts (the signal was lost: the sweep ran on)."""
    sweep = tmp_path / "sweep"
    late = ["+logger.sinks.late._target_=tests.training.fork_parts.SignalAtEvaluation", "+logger.sinks.late.step=2"]
    proc = run_sweep(sweep, data_cache, late, "optim.lr=1e-3,2e-3")
    assert proc.returncode == 75, proc.stderr[-3000:]
    assert (sweep / "0" / "checkpoints" / "step-00000002").is_dir() and not (sweep / "1").exists()
    assert report_statuses(sweep) == {"0": "ok"}
    assert "SIGTERM came while job 0 ended: the sweep stops after it" in proc.stdout + proc.stderr


def test_a_signal_midway_through_a_sweep_job_after_a_refused_one_ends_with_the_refusals_code(tmp_path, data_cache):
    """Job 0 refused (bad input), job 1 stopped by SIGTERM as it starts: the sweep's code is the refusal's, 2 (a
    scheduler must not requeue it as merely preempted), with its line."""
    sweep = tmp_path / "sweep"
    stop = "+logger.sinks.stop._target_=tests.training.fork_parts.SignalAtStart"
    proc = run_sweep(sweep, data_cache, [stop], "optim.lr=-1,1e-3")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "error: 1 of 2 sweep jobs failed (job 0), each above"
    assert report_statuses(sweep) == {"0": "failed", "1": "preempted"}


def test_a_signal_while_a_failed_sweep_job_ends_ends_the_sweep_with_the_failures_code(tmp_path, data_cache):
    (tmp_path / "crashy.py").write_text(CRASHING_OPTIMIZER)
    sweep = tmp_path / "sweep"
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "PYTHONPATH": str(tmp_path)}
    late = "+logger.sinks.late._target_=tests.training.fork_parts.SignalAtFinish"
    args = [*TINY, "trainer.eval_every=0", "trainer.sample_tokens=0", "trainer.max_steps=2", late]
    cmd = [sys.executable, "train.py", "-m", *args, "optim._target_=crashy.sgd", "optim.lr=0.1,0.001"]
    proc = subprocess.run([*cmd, f"hydra.sweep.dir={sweep}"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the crash's code; no next job
    assert proc.stderr.strip().splitlines()[-1] == "error: 1 of 1 sweep jobs failed (job 0), each above"
    assert (sweep / "0" / "finished.txt").read_text() == "failed" and not (sweep / "1").exists()


def test_a_sweep_report_that_cannot_be_written_is_the_last_line_and_exit_code_2(tmp_path, data_cache):
    sweep = tmp_path / "sweep"
    (sweep / "report.md").mkdir(parents=True)  # in the way of the report
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache)}
    args = [*TINY, "trainer.eval_every=0", "trainer.sample_tokens=0", "trainer.max_steps=2", "optim.lr=1e-3"]
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", *args, f"hydra.sweep.dir={sweep}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the sweep report: {sweep / 'report.md'}: cannot be written"), last
    assert "Traceback" not in proc.stderr and json.loads((sweep / "0" / "summary.json").read_text())["status"] == "ok"
    assert not (sweep / "report.csv").exists()


def test_a_sweep_directory_used_again_reports_the_new_sweeps_jobs_alone(tmp_path, data_cache):
    """A second, smaller grid in the same hydra.sweep.dir: the first grid's other job folders stay, unreported."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache)}
    args = [*TINY, "trainer.eval_every=0", "trainer.sample_tokens=0", f"hydra.sweep.dir={sweep}"]
    for grid in ("trainer.max_steps=2,3,4", "trainer.max_steps=2"):  # job 0 again, finished: its evaluation alone
        proc = subprocess.run(
            [sys.executable, "train.py", "-m", *args, grid], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]
    with open(sweep / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["T"]) for r in rows] == [("0", "2")]


def start_long_sweep(sweep, data_cache) -> tuple[list[str], dict, subprocess.Popen]:
    """A sweep whose job 0 runs until stopped (job 1 would take 4 updates), once job 0 has logged 2 updates: its
    command, environment and process."""
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache)}
    args = [*TINY, "trainer.eval_every=0", "trainer.sample_tokens=0", "trainer.max_steps=100000,4"]
    cmd = [sys.executable, "train.py", "-m", *args, f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics, deadline = sweep / "0" / "metrics.jsonl", time.monotonic() + 120
    while not (metrics.is_file() and len(train_records(sweep / "0")) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.01)
    return cmd, env, proc


def test_a_signal_ends_the_sweep_with_the_report_of_its_jobs_so_far(tmp_path, data_cache):
    sweep = tmp_path / "sweep"
    _, _, proc = start_long_sweep(sweep, data_cache)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out[-3000:]
    assert report_statuses(sweep) == {"0": "preempted"}  # job 1 never started
    assert not (sweep / "1").exists()
    assert re.search(r"stopped after updates 0–\d+ \(SIGTERM\); re-run the same command to resume", out)


def test_a_second_launch_on_a_sweep_directory_with_a_job_running_changes_nothing_there(tmp_path, data_cache):
    """Hydra writes a job's .hydra/ and train.log before the job locks its directory: the sweep is refused first."""
    sweep = tmp_path / "sweep"
    cmd, env, first = start_long_sweep(sweep, data_cache)
    try:
        hydra_files = {p: p.stat().st_mtime_ns for p in (sweep / "0" / ".hydra").iterdir()}
        second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-2000:]
        line = f"error: hydra.sweep.dir: {sweep} has a job running (0: host "
        assert second.stderr.startswith(line) and second.stderr.count("\n") == 1, second.stderr
        assert {p: p.stat().st_mtime_ns for p in (sweep / "0" / ".hydra").iterdir()} == hydra_files
        assert "in use by another run" not in (sweep / "0" / "train.log").read_text()
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)


@pytest.mark.slow
def test_the_submitit_launcher_runs_each_sweep_job_in_its_own_process(tmp_path, data_cache):
    """hydra/launcher=submitit_local: the job function is pickled and run elsewhere, as on SLURM."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "WANDB_MODE": "offline"}
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "hydra/launcher=submitit_local",
        "trainer.max_steps=4,6",
        *TINY,
        "trainer.eval_every=0",
        "trainer.sample_tokens=0",
        f"hydra.sweep.dir={sweep}",
        "hydra.launcher.timeout_min=10",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(train_records(sweep / "0")) == list(range(4))
    assert sorted(train_records(sweep / "1")) == list(range(6))
    # Each job ran in a process of its own, which left submitit its pickled result.
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2
    # the launching process wrote the sweep's report, whichever launcher ran the jobs
    rows = (sweep / "report.csv").read_text().splitlines()
    assert len(rows) == 3 and all(r.endswith(",ok,") for r in rows[1:]), rows

    # A job that fails: the others run, the report names it, and the sweep ends in one line with its exit code
    # (the launcher's results raised a traceback before the report)
    cmd[cmd.index("trainer.max_steps=4,6")] = "optim.lr=1e-3,abc"
    cmd[-2] = f"hydra.sweep.dir={tmp_path / 'failing'}"
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "error: 1 of 2 sweep jobs failed (1), each in its train.log"
    with open(tmp_path / "failing" / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["optim.lr"], r["status"]) for r in rows] == [("0.001", "ok"), ("abc", "failed")], rows

    # Jobs that stop (trainer.stop_at, as a preemption's signal does): the report marks them, the sweep exits 75
    # with the line that resumes them (the launcher's results raised a traceback, no report)
    cmd[cmd.index("optim.lr=1e-3,abc")] = "optim.lr=1e-3,2e-3"
    cmd[-2] = f"hydra.sweep.dir={tmp_path / 'stopping'}"
    cmd += ["trainer.max_steps=4", "trainer.stop_at=2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 75 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("2 of 2 sweep jobs stopped (0, 1); re-run the same command")
    assert report_statuses(tmp_path / "stopping") == {"0": "preempted", "1": "preempted"}


def test_a_branch_resumed_from_its_own_checkpoint_still_names_the_run_it_branched_from(tmp_path):
    from training.report import Job, branched_from

    stable, branch = tmp_path / "stable", tmp_path / "branch"
    for run in (stable, branch):
        run.mkdir()
        (run / "metrics.jsonl").write_text("")
    segments = [{"resumed_from": str(stable / "checkpoints" / "step-00000060")}]
    own = {"resumed_from": str(branch / "checkpoints" / "step-00000080")}  # preempted, then resumed in place
    job = Job(branch, {}, "ok", None, None, None, None, None)
    for kept in (segments, [*segments, own]):
        (branch / "schedule.json").write_text(json.dumps({"segments": kept}))
        assert branched_from(job) == stable


def test_evaluations_are_placed_at_the_tokens_seen_also_after_a_batch_change_on_resume():
    from training.report import val_against_tokens

    # 128 tokens per update up to update 49, then 256 (a max_tokens run resumed with a larger batch); training
    # rows logged every 5 updates; evaluations before updates 0, 50 and 75, and at T = 80.
    tokens = {t: 128 * (t + 1) if t < 50 else 128 * 50 + 256 * (t - 49) for t in range(80)}
    rows = [{"step": t, "tokens": tokens[t], "train/loss": 1.0} for t in range(4, 80, 5)]
    rows += [{"step": s, "val/bpb": 2.0 - s / 100} for s in (0, 50, 75, 80)]
    xs, ys = val_against_tokens(sorted(rows, key=lambda r: r["step"]))
    assert xs == [0, tokens[49], tokens[74], tokens[79]] and ys == [2.0, 1.5, 1.25, 1.2]


def test_a_branch_given_a_relative_path_names_its_source_to_a_report_run_from_another_folder(tmp_path, monkeypatch):
    from training.build import schedule_history
    from training.report import Job, branched_from

    stable, branch = tmp_path / "runs" / "stable", tmp_path / "runs" / "branch"
    for run in (stable, branch):
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text("")
    monkeypatch.chdir(tmp_path / "runs")  # the branch: trainer.resume=stable/checkpoints/step-00000060
    segments = schedule_history(None, 60, 100, compose_config(), Path("stable/checkpoints/step-00000060"))
    (branch / "schedule.json").write_text(json.dumps({"segments": segments}))
    monkeypatch.chdir(tmp_path)  # python -m training.report runs/…
    assert branched_from(Job(branch, {}, "ok", None, None, None, None, None)) == stable


def test_the_sweep_report_reads_past_damaged_files_and_a_final_evaluation_that_was_not_finite(tmp_path, capsys):
    from training.report import main

    def job(name: str, vals: list[float | None], summary: str | None = '{"status": "ok", "total_steps": 10}'):
        run = tmp_path / name
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- optim.lr={name}e-3\n")
        rows = [{"step": 5 * i, "tokens": 100 * i, "train/lr": 1e-3, "val/bpb": v} for i, v in enumerate(vals)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if summary is not None:
            (run / "summary.json").write_text(summary)
        return run

    job("1", [3.0, 2.5, None])  # the last evaluation not finite (metrics.jsonl writes it as null)
    job("2", [3.0, 2.6, 2.4])
    job("3", [3.0, 2.0], summary='{"status": "ok", "tot')  # cut short
    damaged = job("4", [3.0, 2.1])
    (damaged / ".hydra" / "hydra.yaml").write_text("")
    (damaged / ".hydra" / "config.yaml").write_text("optim: {lr: 4e-3}\n")
    (damaged / "schedule.json").write_text('{"segments": [')
    with open(damaged / "metrics.jsonl", "ab") as fh:
        fh.write(b"\xff\n")
    (job("5", [3.0]) / "metrics.jsonl").unlink()  # finished, its metrics since removed
    assert main([str(tmp_path)]) == 0
    with open(tmp_path / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["optim.lr"] for r in rows] == ["4e-3", "2e-3", "1e-3", "5e-3", "3e-3"]  # by final val/bpb, then failed
    by_lr = {r["optim.lr"]: r for r in rows}
    assert by_lr["1e-3"]["final val/bpb"] == "" and float(by_lr["1e-3"]["best val/bpb"]) == 2.5
    assert by_lr["3e-3"]["status"] == "failed" and f"{tmp_path / '3' / 'summary.json'}: cannot be read" in str(rows)
    assert by_lr["5e-3"]["status"] == "ok" and by_lr["5e-3"]["error"] == "metrics.jsonl is missing"


def sweep_job(sweep, name: str, summary: dict | None = None, *records: dict):
    """A finished job of a sweep over optim.lr: three evaluations of val/bpb and an accuracy, then ``records``."""
    run = sweep / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(f"- optim.lr={name}e-3\n")
    rows = [
        {"step": 5 * i, "tokens": 100 * (i + 1), "train/lr": 1e-3, "val/bpb": 3 - i / 10, "eval/mc/acc": 0.5}
        for i in range(3)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows, *records]))
    ending = {"status": "ok", "total_steps": 10, "tokens": 300, "seconds": 1.5}
    (run / "summary.json").write_text(json.dumps({**ending, **(summary or {})}))
    return run


def report_rows(sweep) -> dict[str, dict[str, str]]:
    with open(sweep / "report.csv", newline="") as fh:
        return {row["job"]: row for row in csv.DictReader(fh)}


def test_a_value_of_another_type_reads_as_missing_or_names_the_summary_json_as_damaged(tmp_path, capsys):
    """A logged value that is not a finite number reads as missing, as one metrics.jsonl writes null does; a
    summary.json value the run would not write names the file as damaged, as one that cannot be parsed does."""
    from training.report import main

    sweep_job(tmp_path, "1", {"seconds": "12.5"})
    sweep_job(tmp_path, "2", {"tokens": "x", "status": "ok"})
    sweep_job(tmp_path, "3", None, {"step": 15, "eval/mc/acc": "high", "tokens": "x", "train/lr": "x", "val/bpb": [1]})
    sweep_job(tmp_path, "4", {"status": ["ok"]})
    first = sweep_job(tmp_path, "5") / "metrics.jsonl"  # its first tokens, which tell the tokens per update
    first.write_text(json.dumps({"step": 0, "tokens": "x", "train/lr": "x"}) + "\n" + first.read_text())
    assert main([str(tmp_path)]) == 0
    rows = report_rows(tmp_path)
    assert {job: rows[job]["status"] for job in rows} == {
        "3": "ok",
        "5": "ok",
        "1": "failed",
        "2": "failed",
        "4": "failed",
    }
    assert rows["1"]["error"] == f"{tmp_path / '1' / 'summary.json'}: seconds is not a number, got '12.5'"
    assert rows["2"]["error"] == f"{tmp_path / '2' / 'summary.json'}: tokens is not a whole number, got 'x'"
    assert rows["4"]["error"] == f"{tmp_path / '4' / 'summary.json'}: status is not a string, got ['ok']"
    assert rows["1"]["seconds"] == "" and rows["1"]["tokens"] == "300"  # the tokens metrics.jsonl logged
    job3 = rows["3"]
    assert (job3["final val/bpb"], job3["best val/bpb"], job3["final eval/mc/acc"]) == ("", "2.8", "")
    report = (tmp_path / "report.md").read_text()
    assert f"- job 1: {rows['1']['error']}" in report and (tmp_path / "report.png").read_bytes().startswith(PNG)
    assert "Traceback" not in capsys.readouterr().err


def test_a_job_whose_metrics_jsonl_cannot_be_read_is_reported_naming_it(tmp_path, monkeypatch):
    from pathlib import Path

    from training.report import main

    sweep_job(tmp_path, "1")
    unreadable = sweep_job(tmp_path, "2") / "metrics.jsonl"
    read_bytes = Path.read_bytes

    def refused(path):
        if path == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", refused)
    assert main([str(tmp_path)]) == 0
    rows = report_rows(tmp_path)
    said = f"{unreadable}: cannot be read (Permission denied)"
    assert (rows["2"]["status"], rows["2"]["final val/bpb"], rows["2"]["error"]) == ("ok", "", said)
    assert rows["1"]["final val/bpb"] == "2.8" and f"- job 2: {said}" in (tmp_path / "report.md").read_text()


def test_a_report_that_cannot_be_written_is_one_error_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from training import plots
    from training.report import main

    sweep_job(tmp_path, "1")
    sweep_job(tmp_path, "2", {"total_steps": 20, "tokens": 600})  # ends at another T: frontier.png too
    (tmp_path / "report.csv").write_text("an earlier report")
    (tmp_path / "report.md").mkdir()
    assert main([str(tmp_path)]) == 2
    said = capsys.readouterr()
    assert said.err == f"error: {tmp_path / 'report.md'}: cannot be written (is a directory)\n" and said.out == ""
    (tmp_path / "report.md").rmdir()
    before = sorted(tmp_path.iterdir())

    def disk_full(path, data):
        if path.name.startswith(".frontier.png"):  # the report's last file: the others are written by then
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write_file(path, data)

    write_file = plots.write_file
    monkeypatch.setattr(plots, "write_file", disk_full)
    assert main([str(tmp_path)]) == 2
    said = capsys.readouterr().err
    assert (
        said.startswith(f"error: no space left to write {tmp_path / 'frontier.png'}: it needs ")
        and said.count("\n") == 1
    ), said
    assert sorted(tmp_path.iterdir()) == before and (tmp_path / "report.csv").read_text() == "an earlier report"


def test_a_run_started_again_writes_its_own_ending_in_summary_json(tmp_path, tiny_train):
    from training.summary import write_summary

    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text('{"status": "failed", "error": "out of disk space (an earlier start)"')
    write_summary(run, {"status": "preempted"})  # a damaged one is replaced, not a crash at the run's end
    assert json.loads((run / "summary.json").read_text()) == {"status": "preempted"}
    (run / "summary.json").write_text(json.dumps({"status": "failed", "error": "out of disk space (an earlier start)"}))
    tiny_train(run, ["trainer.max_steps=3"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok" and "error" not in summary


def test_a_swept_value_with_a_bar_or_a_line_break_stays_in_its_cell_of_report_md():
    from training.report import Job, markdown

    values = {"logger.notes": "p|q\nr", "optim.lr": "0.001"}
    job = Job(Path("0"), values, "ok", 1.5, 1.4, 10, 1000, 2.0)
    header, _, row = markdown([job]).splitlines()[:3]
    cells = lambda text: re.split(r"(?<!\\)\|", text)[1:-1]  # noqa: E731
    assert len(cells(row)) == len(cells(header)) and cells(row)[1].strip() == "p\\|q r"
