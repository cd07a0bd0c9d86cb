"""``python -m scheduling.audit``: the lr a run logged, update by update, against the schedule it was given.

The faulty runs are made by the stepping mistakes themselves — a real LambdaLR stepped per micro-batch, once
before the first update, restored at the wrong index, transformers' cosine used past its T — logged as a run
directory (metrics.jsonl and Hydra's overrides.yaml) or as Hugging Face's trainer_state.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from scheduling import build_scheduler, restore_scheduler, schedule_from_config
from scheduling.audit import main

PEAK, W, T = 1e-3, 4, 24
OVERRIDES = [
    "schedule=wsd",
    f"schedule.warmup_steps={W}",
    "schedule.decay_fraction=0.25",
    f"optim.lr={PEAK}",
    "schedule.min_lr_ratio=0.1",
    f"trainer.max_steps={T}",
]


def the_schedule(compose_config):
    cfg = compose_config(OVERRIDES)
    return schedule_from_config(dict(cfg.schedule), T, PEAK)


def stepped_lrs(
    schedule, updates: int, per_update: int = 1, early: int = 0, jump_at: int | None = None, jump: int = 0
) -> dict[int, float]:
    """The lr each update used in a loop that steps the scheduler ``per_update`` times per update, ``early`` times
    before the first, and resumes at ``jump_at`` with the schedule index ``jump`` off."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=PEAK)
    scheduler = build_scheduler(optimizer, schedule)
    for _ in range(early):
        optimizer.step()
        scheduler.step()
    lrs = {}
    for t in range(updates):
        if t == jump_at:
            state = scheduler.state_dict()
            state["last_epoch"] += jump
            scheduler = build_scheduler(optimizer, schedule)
            restore_scheduler(scheduler, state)
        lrs[t] = optimizer.param_groups[0]["lr"]
        for _ in range(per_update):
            optimizer.step()
            scheduler.step()
    return lrs


def run_dir(path: Path, lrs: dict[int, float], overrides: list[str] = OVERRIDES) -> Path:
    """A run directory as train.py leaves it without schedule.json: metrics.jsonl and Hydra's overrides.yaml."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    rows = [{"step": t, "train/loss": 3.0, "train/lr": lr} for t, lr in sorted(lrs.items())]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def audited(argv: list[str]) -> tuple[int, str]:
    lines: list[str] = []
    return main(argv, out=lines.append), "\n".join(lines)


def test_a_loop_that_steps_once_per_update_passes(tmp_path, compose_config):
    code, text = audited([str(run_dir(tmp_path / "run", stepped_lrs(the_schedule(compose_config), T + 3)))])
    assert code == 0, text
    assert f"{T + 3} logged lrs (updates 0–{T + 2})" in text and "wsd (peak 0.001, warmup 4, T = 24)" in text


def test_a_step_per_micro_batch_is_caught_and_named(tmp_path, compose_config):
    lrs = stepped_lrs(the_schedule(compose_config), T, per_update=4)
    code, text = audited([str(run_dir(tmp_path / "run", lrs))])
    assert code == 1
    assert "first deviating update 1:" in text  # update 0 is right by accident: λ(4·0) = λ(0)
    assert "stepped 4 times per update" in text


def test_a_warmup_off_by_one_is_caught_and_named(tmp_path, compose_config):
    lrs = stepped_lrs(the_schedule(compose_config), T, early=1)
    code, text = audited([str(run_dir(tmp_path / "run", lrs))])
    assert code == 1
    assert "first deviating update 0: logged lr 0.00025, the schedule gives 0" in text
    assert "the warmup is off by one" in text and "t +1" in text


def test_a_schedule_index_that_jumped_is_caught_and_named(tmp_path, compose_config):
    """In WSD's stable phase a jump changes nothing visible; it shows where the decay starts early. (A run that
    records its resumes in schedule.json has the jump traced back to the resume: tests/training/test_cooldowns.)"""
    lrs = stepped_lrs(the_schedule(compose_config), T, jump_at=10, jump=3)
    code, text = audited([str(run_dir(tmp_path / "run", lrs))])
    assert code == 1
    assert "first deviating update 16:" in text  # the decay starts at 18 = T − 6: update 15 logs λ(18) = 1
    assert "update t logged the schedule's lr of update t +3" in text


def test_a_run_directory_that_skipped_updates_is_caught(tmp_path, compose_config):
    lrs = stepped_lrs(the_schedule(compose_config), T)
    for t in (7, 8):
        del lrs[t]
    code, text = audited([str(run_dir(tmp_path / "run", lrs))])
    assert code == 1 and "updates 7–8 were never logged" in text


def test_transformers_cosine_past_its_end_climbs_back_and_is_caught_in_trainer_state_json(tmp_path):
    """A Trainer whose scheduler was built for 20 updates but trained 30, logging every 2: trainer_state.json
    logs at global step s the lr of update s − 1."""
    total, trained = 20, 30
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=PEAK)
    scheduler = transformers.get_cosine_schedule_with_warmup(optimizer, W, total)
    history = []
    for s in range(1, trained + 1):
        used = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        if s % 2 == 0:
            history.append({"epoch": s / trained, "learning_rate": used, "loss": 2.0, "step": s})
    state = tmp_path / "checkpoint-30" / "trainer_state.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"global_step": trained, "max_steps": trained, "log_history": history}))
    schedule = ["schedule=cosine", f"schedule.warmup_steps={W}", "schedule.min_lr_ratio=0", f"optim.lr={PEAK}"]

    code, text = audited([str(state.parent), *schedule, f"trainer.max_steps={total}"])
    assert code == 1
    assert f"first deviating update {total + 1}:" in text  # s = 22 logs update 21's lr; update 19's is exact
    assert f"past T = {total} the lr left the floor 0 and climbed back" in text
    code, text = audited([str(state), *schedule])  # T from its max_steps: the whole run is one cosine
    assert code == 1 and "first deviating update 5:" in text  # the first logged past the warmup
    code, text = audited([str(state), *schedule, f"trainer.max_steps={total}", "--tolerance", "1"])
    assert code == 0, text


@pytest.mark.parametrize(
    "argv, line",
    [
        (["missing-dir"], "error: missing-dir does not exist"),
        (["{tmp}/empty"], "{tmp}/empty: not a run directory (metrics.jsonl)"),
        (["{tmp}/trainer_state.json", "schedule=cosine"], "does not record the peak lr; give it as optim.lr=…"),
        (["{tmp}/trainer_state.json", "optim.lr=1e-3", "schedule=cosin"], "error: In 'config': Could not find"),
        (["{tmp}/cut"], "{tmp}/cut/schedule.json: cannot be read as JSON"),
        (["{tmp}/other"], "{tmp}/other/schedule.json: not a schedule record train.py writes (KeyError: 'peak_lr')"),
        (["{tmp}/budget"], "{tmp}/budget/budget.json: cannot be read as JSON"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_code_2(argv, line, tmp_path, capsys):
    (tmp_path / "trainer_state.json").write_text(json.dumps({"max_steps": 10, "log_history": []}))
    (tmp_path / "empty").mkdir()
    segment = {"from_update": 0, "total_steps": 10, "schedule": {"name": "cosine", "warmup_steps": 2}}
    for name, file, text in [
        ("cut", "schedule.json", '{"segments": [{"from_'),  # a damaged record
        ("other", "schedule.json", json.dumps({"segments": [segment]})),  # a segment without its peak lr
        ("budget", "budget.json", "{"),  # no schedule.json: T from budget.json
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text('{"train/lr": 1e-3}\n5\n{"step": 0, "train/lr": 1e-3}\n')
        (tmp_path / name / file).write_text(text)
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and line.format(tmp=tmp_path) in err and err.count("\n") == 1, err
