"""Cooldown branches (experiment=cooldowns): decays branched from one stable run's checkpoint, each in its own run
directory, audited by ``python -m scheduling.audit``, with the sweep's report at the end of the multirun."""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
from pathlib import Path

import pytest

import scheduling.lr_scheduler
from scheduling.audit import main as audit
from tests.conftest import TINY, compose_config, train_records
from tests.training import written_out
from training import launch

PEAK, FLOOR, W = 2e-3, 2e-4, 2
STABLE_T, BRANCH_POINT = 12, 4
BRANCHES = (3, 8, 10)  # T = 3 decays from update 2: its lr at update 3 is not the one the stable run used
COOLDOWNS = [
    "experiment=cooldowns",
    f"schedule.warmup_steps={W}",
    "schedule.decay_fraction=0.25",
    f"optim.lr={PEAK}",
    f"schedule.min_lr={FLOOR}",
    "trainer.eval_every=4",
    "trainer.ckpt_every=4",
    "trainer.sample_tokens=0",
]


def wsd_lr(t: int, total: int) -> float:
    """The cooldowns' WSD: linear warmup over W, the peak, then 1-sqrt over the last 25 % of T to the floor."""
    return written_out.wsd_lr(t, total, peak=PEAK, floor=FLOOR, warmup=W, decay_fraction=0.25)


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def stable(tmp_path_factory, data_cache) -> Path:
    """The stable run: WSD to T = 12 (decay from update 9), a checkpoint every 4 updates."""
    from train import train

    run = tmp_path_factory.mktemp("cooldowns") / "stable"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT_DATA_CACHE", str(data_cache))
        train(compose_config(TINY + COOLDOWNS + [f"trainer.max_steps={STABLE_T}"]), run)
    return run


@pytest.fixture(scope="module")
def branches(stable, data_cache) -> tuple[Path, dict[str, bytes]]:
    """``python train.py -m experiment=cooldowns trainer.resume=<stable>/checkpoints/step-00000004
    trainer.max_steps=4,8,16``, run by Hydra in this process; returns the sweep directory and the stable run's
    files as they were before."""
    import train

    before = snapshot(stable)
    sweep = stable.parent / "branches"
    argv = [
        "train.py",
        "-m",
        *TINY,
        *COOLDOWNS,
        f"trainer.resume={stable}/checkpoints/step-{BRANCH_POINT:08d}",
        f"trainer.max_steps={','.join(map(str, BRANCHES))}",
        f"hydra.sweep.dir={sweep}",
    ]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # Hydra configures logging for each job: put it back after
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT_DATA_CACHE", str(data_cache))
        mp.setattr(sys, "argv", argv)
        mp.setattr(root, "handlers", handlers)
        mp.setattr(root, "level", level)
        mp.setattr(launch, "jobs", [])
        mp.setattr(train.main.__wrapped__, "__module__", "__main__")  # conf/ beside train.py, as when run as a script
        train.main()
        assert launch.sweep_summary() == ("error: 1 of 3 sweep jobs failed (job 0), each above", 2)
    return sweep, before


def test_each_branch_is_a_run_directory_of_its_own_and_the_stable_run_is_untouched(branches, stable):
    sweep, before = branches
    assert snapshot(stable) == before
    for job, T in ((1, 8), (2, 10)):
        assert sorted(train_records(sweep / str(job))) == list(range(BRANCH_POINT, T))


def test_a_branch_follows_wsd_for_its_own_T_at_every_update(branches, capsys):
    sweep, _ = branches
    for job, T in ((1, 8), (2, 10)):
        for t, r in train_records(sweep / str(job)).items():
            assert math.isclose(r["train/lr"], wsd_lr(t, T), rel_tol=1e-12), (T, t)
        assert audit([str(sweep / str(job))]) == 0, capsys.readouterr().out
    assert audit([str(sweep.parent / "stable")]) == 0


def test_the_shared_prefix_equals_the_stable_run_bit_for_bit(branches, stable):
    sweep, _ = branches
    original = train_records(stable)
    for job, shared in ((1, range(4, 6)), (2, range(4, 8))):  # up to the earlier of the two decay starts
        records = train_records(sweep / str(job))
        for t in shared:
            assert (records[t]["train/lr"], records[t]["train/loss"]) == (
                original[t]["train/lr"],
                original[t]["train/loss"],
            ), (job, t)


def test_a_branch_point_past_the_branch_decay_start_is_refused_in_one_line(branches):
    sweep, _ = branches
    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert summary["status"] == "failed" and "\n" not in summary["error"]
    assert summary["error"].startswith("trainer.resume: the checkpoint is at update 4, past where this schedule parts")
    assert "decay starts at update 2" in summary["error"] and "at or before update 3" in summary["error"]
    assert not (sweep / "0" / "metrics.jsonl").exists()


def test_the_sweep_report_lists_every_job_best_first_and_the_failed_one_as_failed(branches):
    sweep, _ = branches
    with open(sweep / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[-1]["trainer.max_steps"] == "3" and rows[-1]["status"] == "failed"
    finished = rows[:-1]
    assert {r["trainer.max_steps"] for r in finished} == {"8", "10"} and {r["status"] for r in finished} == {"ok"}
    finals = [float(r["final val/bpb"]) for r in finished]
    assert finals == sorted(finals)
    for r in finished:
        records = [json.loads(line) for line in (sweep / r["job"] / "metrics.jsonl").read_text().splitlines()]
        vals = [x["val/bpb"] for x in records if "val/bpb" in x]
        assert (float(r["final val/bpb"]), float(r["best val/bpb"])) == (vals[-1], min(vals))
        assert int(r["T"]) == int(r["trainer.max_steps"]) and int(r["tokens"]) == records[-2]["tokens"]
    table = (sweep / "report.md").read_text()
    assert "| job | trainer.max_steps | final val/bpb | best val/bpb | T | tokens | seconds | status |" in table
    assert "- job 0: trainer.resume: the checkpoint is at update 4" in table
    for png in ("report.png", "frontier.png"):
        assert (sweep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_command_writes_the_report_again_and_refuses_what_is_not_a_sweep(branches, tmp_path, capsys):
    from training.report import main as report

    sweep, _ = branches
    (sweep / "report.md").unlink()
    assert report([str(sweep)]) == 0
    assert (sweep / "report.md").read_text().splitlines()[2].startswith("| job | trainer.max_steps |")
    assert report([str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: not a sweep directory (no job folder with a .hydra record)\n"


def test_the_audit_traces_a_schedule_index_that_jumped_back_to_the_resume(
    stable, tmp_path, tiny_train, monkeypatch, capsys
):
    restore = scheduling.lr_scheduler.restore_scheduler

    def jumped(scheduler, state, *args):
        restore(scheduler, {**state, "last_epoch": state["last_epoch"] + 1}, *args)

    monkeypatch.setattr(scheduling.lr_scheduler, "restore_scheduler", jumped)
    resume = f"trainer.resume={stable}/checkpoints/step-{BRANCH_POINT:08d}"
    branch = tiny_train(tmp_path / "branch", COOLDOWNS + ["trainer.max_steps=8", resume])
    assert audit([str(branch)]) == 1
    out = capsys.readouterr().out
    assert "a resume that jumped: from the resume at update 4 on" in out and "t +1" in out


def test_a_branch_run_again_continues_from_its_own_checkpoint_not_the_stable_one(
    branches, stable, tmp_path, tiny_train
):
    """A requeued branch (the same command again) keeps what it did: its run directory's checkpoints win over the
    checkpoint trainer.resume names, and the branch ends as the uninterrupted one did."""
    from training.signals import Stopped

    command = COOLDOWNS + ["trainer.max_steps=10", f"trainer.resume={stable}/checkpoints/step-{BRANCH_POINT:08d}"]
    with pytest.raises(Stopped):
        tiny_train(tmp_path / "branch", command + ["trainer.stop_at=8"])  # after its own checkpoint at 8
    branch = tiny_train(tmp_path / "branch", command + ["trainer.stop_at=8"])
    last = json.loads((branch / "schedule.json").read_text())["segments"][-1]
    assert (last["from_update"], Path(last["resumed_from"])) == (8, branch / "checkpoints" / "step-00000008")
    resumed = train_records(branch)
    uninterrupted = train_records(branches[0] / "2")
    keys = ("train/loss", "train/lr")
    assert {t: [r[k] for k in keys] for t, r in resumed.items()} == {
        t: [r[k] for k in keys] for t, r in uninterrupted.items()
    }
