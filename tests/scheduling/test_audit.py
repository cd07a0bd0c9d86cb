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
        (["{tmp}/unrecorded"], "{tmp}/unrecorded: neither schedule.json nor .hydra/overrides.yaml records the run's"),
        (["{tmp}/none"], "{tmp}/none/schedule.json: not a schedule record train.py writes (ValueError: no segment)"),
        (["{tmp}/unordered"], "{tmp}/unordered/schedule.json: not a schedule record train.py writes (ValueError: from"),
        (["{tmp}/quoted"], "{tmp}/quoted/schedule.json: optim.lr must be a number > 0, got '3e-4'"),
        (["{tmp}/mapping"], "{tmp}/mapping/.hydra/overrides.yaml: not Hydra's list of overrides"),
        (["{tmp}/garbled"], "{tmp}/garbled/.hydra/overrides.yaml: cannot be read as YAML"),
        (["{tmp}/text"], "{tmp}/text/metrics.jsonl: step 1: train/lr is not a number, got 'abc'"),
        (["{tmp}/shape/trainer_state.json"], "trainer_state.json: not a Hugging Face trainer_state.json"),
        (["{tmp}/no_T/trainer_state.json", "optim.lr=1e-3"], "does not record max_steps; give T as trainer.max_steps"),
        (["{tmp}/unrecorded", "--tolerance", "-1"], "error: --tolerance must be a relative deviation ≥ 0, got -1"),
        (["{tmp}/unrecorded", "--tolerance", "nan"], "error: --tolerance must be a relative deviation ≥ 0, got nan"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_code_2(argv, line, tmp_path, capsys):
    (tmp_path / "trainer_state.json").write_text(json.dumps({"max_steps": 10, "log_history": []}))
    (tmp_path / "empty").mkdir()
    segment = {"from_update": 0, "total_steps": 10, "schedule": {"name": "cosine", "warmup_steps": 2}}
    later = {**segment, "from_update": 0, "peak_lr": 1e-3}
    for name, file, text in [
        ("cut", "schedule.json", '{"segments": [{"from_'),  # a damaged record
        ("other", "schedule.json", json.dumps({"segments": [segment]})),  # a segment without its peak lr
        ("budget", "budget.json", "{"),  # no schedule.json: T from budget.json
        ("unrecorded", "nothing.txt", ""),  # neither record: conf/'s defaults are not the run's schedule
        ("none", "schedule.json", json.dumps({"segments": []})),
        ("unordered", "schedule.json", json.dumps({"segments": [later, later]})),
        ("quoted", "schedule.json", json.dumps({"segments": [{**later, "peak_lr": "3e-4"}]})),
        ("mapping", ".hydra/overrides.yaml", "a: 1\n"),
        ("garbled", ".hydra/overrides.yaml", "- optim.lr=0.001\n  - : [\n"),
        ("text", "schedule.json", json.dumps({"segments": [later]})),
        ("shape", "trainer_state.json", json.dumps({"max_steps": 10, "log_history": {"step": 1}})),
        ("no_T", "trainer_state.json", json.dumps({"log_history": [{"step": 1, "learning_rate": 0.0}]})),
    ]:
        (tmp_path / name / file).parent.mkdir(parents=True, exist_ok=True)
        lr = '"abc"' if name == "text" else "1e-3"
        (tmp_path / name / "metrics.jsonl").write_text(
            f'{{"train/lr": 1e-3}}\n5\n{{"step": 0, "train/lr": 1e-3}}\n{{"step": 1, "train/lr": {lr}}}\n'
        )
        (tmp_path / name / file).write_text(text)
    (tmp_path / "budget" / ".hydra").mkdir()
    (tmp_path / "budget" / ".hydra" / "overrides.yaml").write_text("[]\n")  # a run with conf/'s defaults
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and line.format(tmp=tmp_path) in err and err.count("\n") == 1, err


def test_a_deviation_that_does_not_last_is_named_as_such(tmp_path, compose_config):
    lrs = stepped_lrs(the_schedule(compose_config), T)
    lrs[9] *= 1.5  # one update's lr set by other code
    code, text = audited([str(run_dir(tmp_path / "run", lrs))])
    assert code == 1 and "first deviating update 9:" in text
    assert (
        "1 of the 15 updates logged from 9 on deviate (9) and the lr follows the schedule again after update 9" in text
    )


def test_a_wandb_run_with_a_token_budget_is_audited_on_its_own_t_and_a_cut_file_up_to_the_cut(tmp_path, tiny_train):
    """A budget leaves trainer.max_steps null in the run's config: T comes from its summary (budget/total_steps);
    a run file cut short (a killed process) is read up to the cut, T then given alone beside the run's config."""
    import wandb

    tokens_per_update = 4 * 32  # TINY's batch × block
    args = ["logger=wandb", "logger.mode=offline", f"trainer.max_tokens={12 * tokens_per_update}", "optim.lr=1e-3"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        run = tiny_train(tmp_path / "run", [*args, "schedule.warmup_steps=3"])
        wandb.teardown()  # the run file complete
    (run_file,) = sorted(run.rglob("run-*.wandb"))
    code, text = audited([str(run_file)])
    assert code == 0 and "12 logged lrs (updates 0–11)" in text and "T = 12)" in text, text
    cut = tmp_path / "cut" / run_file.name
    cut.parent.mkdir()
    cut.write_bytes(run_file.read_bytes()[: run_file.stat().st_size // 2])
    code, text = audited([str(cut), "trainer.max_steps=12"])
    logged = int(text.split(" logged lrs")[0].rsplit(" ", 1)[1])
    assert code == 0 and 0 < logged < 12 and "warmup 3, T = 12)" in text, text


def test_a_non_finite_logged_value_reads_as_not_logged_as_metrics_jsonl_writes_it(tmp_path):
    """JSON's NaN and Infinity (another writer's, or W&B's history) are what metrics.jsonl writes as null."""
    from scheduling.audit import read_run_dir

    rows = ['{"step": 0, "train/lr": 0.5, "train/loss": 3.0}', '{"step": 1, "train/lr": NaN, "train/loss": Infinity}']
    (tmp_path / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    logged = read_run_dir(tmp_path, ["schedule=constant"], schedule_required=False)
    assert logged.lrs == {0: 0.5} and logged.losses["train"] == {0: 3.0}


def wandb_run(path: Path, history: list[dict[str, str]], config: dict[str, str] | None = None) -> Path:
    """A W&B run file written record by record: the 7-byte header (``:W&B``, 0xBEE1, version), then each Record
    as one full log record (crc, length, type 1), its items' value_json as given (a damaged file's too)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    records = []
    if config is not None:
        record = wandb_internal_pb2.Record()
        for key, value in config.items():
            record.run.config.update.add(key=key, value_json=value)
        records.append(record)
    for row in history:
        record = wandb_internal_pb2.Record()
        for key, value in row.items():
            record.history.item.add(key=key, value_json=value)
        records.append(record)
    data = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
    for record in records:
        payload = record.SerializeToString()
        data += struct.pack("<IHB", 0, len(payload), 1) + payload
    assert len(data) < 32 * 1024  # one block: no padding to write
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


CONSTANT = ["schedule=constant", "schedule.warmup_steps=0", "optim.lr=0.001", "trainer.max_steps=5"]


def test_a_wandb_run_file_written_record_by_record_is_audited(tmp_path):
    """The writer below the damaged files is right: its undamaged file passes."""
    run = wandb_run(tmp_path / "run-x.wandb", [{"_step": str(t), "train/lr": "0.001"} for t in range(5)])
    code, text = audited([str(run), *CONSTANT])
    assert code == 0 and "5 logged lrs (updates 0–4)" in text, text


@pytest.mark.parametrize(
    "history, config, says",
    [
        ({"train/lr": "{not json"}, None, "a history record's 'train/lr' is not JSON (Expecting property name"),
        ({"_step": "Infinity"}, None, "a history record's _step inf is not an update index (0, 1, …)"),
        ({"_step": "NaN"}, None, "a history record's _step nan is not an update index (0, 1, …)"),
        ({"_step": "1e400"}, None, "a history record's _step inf is not an update index (0, 1, …)"),
        ({"_step": "-1"}, None, "a history record's _step -1 is not an update index (0, 1, …)"),
        ({"_step": "2.5"}, None, "a history record's _step 2.5 is not an update index (0, 1, …)"),
        ({}, {"optim": "{not json"}, "the config's 'optim' is not JSON (Expecting property name"),
    ],
)
def test_a_damaged_wandb_run_file_is_one_error_line_naming_it(history, config, says, tmp_path, capsys):
    rows = [{"_step": str(t), "train/lr": "0.001"} for t in range(5)]
    rows[2] |= history
    run = wandb_run(tmp_path / "run-x.wandb", rows, config)
    assert main([str(run), *CONSTANT]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run}: {says}") and err.count("\n") == 1, err


def test_an_int_past_float_s_range_reads_as_not_logged_as_an_infinite_value_does(tmp_path):
    """JSON holds an integer of any size; one past float's range is as infinite as 1e400 (it overflowed)."""
    from scheduling.audit import read_run_dir

    huge = "1" + "0" * 400
    rows = ['{"step": 0, "train/lr": 0.5}', f'{{"step": 1, "train/lr": {huge}, "train/loss": {huge}}}']
    (tmp_path / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    logged = read_run_dir(tmp_path, ["schedule=constant"], schedule_required=False)
    assert logged.lrs == {0: 0.5} and logged.losses["train"] == {}
