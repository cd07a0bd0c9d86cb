"""trainer.on_spike=rollback: a poisoned batch planted in a run sends it back to its newest periodic checkpoint
past that batch, once; batches stay a function of the update index and the skips kept in checkpoints, so resume
is exact."""

from __future__ import annotations

import json
import math
import os
import re
import signal

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from data.batches import TrainBatches
from tests.conftest import read_metrics, train_records
from training import checkpoint
from training.config import ConfigError
from training.signals import Stopped
from training.spikes import Skips

T, POISONED = 40, 29  # batch 29 is poisoned; checkpoints every 4 updates: the rollback goes back to update 28
ARGS = [
    f"trainer.max_steps={T}",
    "optim.lr=0.01",  # trained enough by update 29 that the poisoned targets' loss stands out
    "trainer.eval_every=0",
    "trainer.ckpt_every=4",
    "trainer.keep_checkpoints=2",
    "trainer.spike_window=5",
    "trainer.spike_factor=1.5",
    "model.dropout=0.1",  # the generators must come back with the checkpoint too
]
ROLLBACK = ["trainer.on_spike=rollback"]


def plant(monkeypatch, poison: str) -> None:
    """Batch ``POISONED`` gets poisoned targets: ``rare``, all of them the token the corpus has least often (a
    finite spike); ``ignored``, none counted (the loss is 0/0, not finite); ``inf_norm``, its own targets but an
    infinite gradient norm (with a finite loss)."""
    clean, clip = TrainBatches.micro_batches, torch.nn.utils.clip_grad_norm_
    poisoned = []

    def micro_batches(self, batch: int):
        batches = clean(self, batch)
        if batch != POISONED:
            return batches
        if poison == "inf_norm":
            poisoned.append(batch)
            return batches
        if poison == "rare":
            token = int(np.bincount(self.tokens, minlength=self.vocab_size).argmin())
            return [(x, torch.full_like(y, token)) for x, y in batches]
        return [(x, torch.full_like(y, -100)) for x, y in batches]

    def clip_grad_norm_(parameters, max_norm, *args, **kwargs):
        norm = clip(parameters, max_norm, *args, **kwargs)
        return norm * math.inf if poisoned and poisoned.pop() else norm

    monkeypatch.setattr(TrainBatches, "micro_batches", micro_batches)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_grad_norm_)


def test_without_the_option_a_poisoned_batch_stops_the_run_or_is_trained_on(tmp_path, tiny_train, monkeypatch):
    plant(monkeypatch, "ignored")
    with pytest.raises(ConfigError, match=rf"^update {POISONED}: the loss \(nan\) or gradient norm .* is not finite"):
        tiny_train(tmp_path / "ignored", ARGS)
    plant(monkeypatch, "rare")
    losses = [r["train/loss"] for _, r in sorted(train_records(tiny_train(tmp_path / "rare", ARGS)).items())]
    assert losses[POISONED] > 1.5 * float(np.median(losses[POISONED - 5 : POISONED]))  # the spike, trained on


@pytest.mark.parametrize(
    "poison,spike",
    [
        ("rare", r"the training loss \S+ is \S+× the median \S+ of the 5 updates before"),
        ("ignored", r"the loss \(nan\) or gradient norm \(\S+\) is not finite"),
        ("inf_norm", r"the loss \(\d.*\) or gradient norm \(inf\) is not finite"),
    ],
)
def test_a_poisoned_batch_is_rolled_back_once_and_skipped_and_the_run_ends_finite(
    poison, spike, tmp_path, tiny_train, monkeypatch, caplog
):
    plant(monkeypatch, poison)
    run = tmp_path / "run"
    with caplog.at_level("WARNING"):
        tiny_train(run, ARGS + ROLLBACK)
    back_to = run / "checkpoints" / "step-00000028"
    assert re.search(f"update {POISONED}: {spike} \\(trainer.on_spike=rollback\\)", caplog.text), caplog.text
    assert f"(trainer.on_spike=rollback); back to {back_to}, skipping batches 28–{POISONED} (rollback 1)" in caplog.text
    records = train_records(run)
    assert sorted(records) == list(range(T))  # every update once: the rolled-back ones were cut and taken again
    assert all(math.isfinite(r["train/loss"]) for r in records.values())
    assert [records[t]["train/rollbacks"] for t in range(T)] == [0] * 28 + [1] * (T - 28)
    final = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    assert final["skips"]["skipped"] == [[28, POISONED]] and final["skips"]["rollbacks"] == 1
    assert Skips(state=final["skips"]).batch(28) == POISONED + 1  # update 28 took the batch after the poisoned one


def test_a_run_stopped_after_a_rollback_resumes_bit_for_bit(tmp_path, tiny_train, monkeypatch):
    plant(monkeypatch, "rare")
    uninterrupted = read_metrics(tiny_train(tmp_path / "uninterrupted", ARGS + ROLLBACK))
    run = tmp_path / "run"
    with pytest.raises(Stopped):
        tiny_train(run, ARGS + ROLLBACK + ["trainer.stop_at=33"])  # after the rollback; its checkpoint holds the skip
    tiny_train(run, ARGS)  # resumed with the option off: the skips stay
    keys = ("step", "train/loss", "train/lr", "train/grad_norm")
    assert [[r.get(k) for k in keys] for r in read_metrics(run)] == [[r.get(k) for k in keys] for r in uninterrupted]


def test_a_signal_during_the_spike_stops_at_the_rollbacks_update_and_the_resume_is_exact(
    tmp_path, tiny_train, monkeypatch
):
    plant(monkeypatch, "rare")
    uninterrupted = read_metrics(tiny_train(tmp_path / "uninterrupted", ARGS + ROLLBACK))
    poisoned = TrainBatches.micro_batches

    def and_signal(self, batch: int):
        if batch == POISONED:
            os.kill(os.getpid(), signal.SIGTERM)  # a preemption while the spike's update runs
        return poisoned(self, batch)

    monkeypatch.setattr(TrainBatches, "micro_batches", and_signal)
    run = tmp_path / "run"
    with pytest.raises(Stopped) as stopped:
        tiny_train(run, ARGS + ROLLBACK)
    assert stopped.value.updates == 28  # stopped where the rollback went, not one update later
    assert checkpoint.load(checkpoint.latest(run / "checkpoints"))["skips"]["skipped"] == [[28, POISONED]]
    monkeypatch.setattr(TrainBatches, "micro_batches", poisoned)
    tiny_train(run, ARGS + ROLLBACK)
    keys = ("step", "train/loss", "train/lr", "train/grad_norm", "train/rollbacks")
    assert [[r.get(k) for k in keys] for r in read_metrics(run)] == [[r.get(k) for k in keys] for r in uninterrupted]


def test_a_rollback_to_a_checkpoint_of_another_optimizer_starts_the_new_ones_state_afresh(
    tmp_path, tiny_train, monkeypatch
):
    run = tmp_path / "run"
    with pytest.raises(Stopped):
        tiny_train(run, ARGS + ROLLBACK + ["trainer.stop_at=28"])  # AdamW up to update 28, checkpointed there
    plant(monkeypatch, "rare")
    restore, kept = checkpoint.Checkpointer.restore, []

    def restore_and_count(self, *args, **kwargs):
        restore(self, *args, **kwargs)
        kept.append(sum(len(o.state) for o in self.optimizers))

    monkeypatch.setattr(checkpoint.Checkpointer, "restore", restore_and_count)
    tiny_train(run, ARGS + ROLLBACK + ["optim=muon", "trainer.allow_schedule_change=true"])
    # the resume, then the rollback from update 29, each to AdamW's checkpoint: Muon keeps nothing of updates 28–29
    assert kept == [0, 0]


def test_a_rollback_past_a_resume_with_another_peak_records_the_new_schedule_from_the_checkpoint(
    tmp_path, tiny_train, monkeypatch, capsys
):
    """Resumed at the poisoned update with another peak lr, the run goes back to 28: the new peak runs from there,
    and schedule.json says so, as the lr audit reads it."""
    from scheduling.audit import main as audit

    run = tmp_path / "run"
    with pytest.raises(Stopped):
        tiny_train(run, ARGS + ROLLBACK + [f"trainer.stop_at={POISONED}"])
    plant(monkeypatch, "rare")
    tiny_train(run, ARGS + ROLLBACK + ["optim.lr=0.005", "trainer.allow_schedule_change=true"])
    segments = json.loads((run / "schedule.json").read_text())["segments"]
    assert [(s["from_update"], s["peak_lr"]) for s in segments] == [(0, 0.01), (POISONED - 1, 0.005)]
    assert audit([str(run)]) == 0, capsys.readouterr().out


def test_a_run_stopped_between_checkpoints_rolls_back_where_the_uninterrupted_run_does(
    tmp_path, tiny_train, monkeypatch
):
    """A stop (a preemption) at update 29 writes a checkpoint the uninterrupted run has not: the spike at 29 still
    goes back to 28, the newest periodic checkpoint, and the resumed run equals the uninterrupted one. The same
    command again goes on to T: reaching update 29 a second time, after the rollback, is no new stop."""
    plant(monkeypatch, "rare")
    uninterrupted = read_metrics(tiny_train(tmp_path / "uninterrupted", ARGS + ROLLBACK))
    run = tmp_path / "run"
    with pytest.raises(Stopped):
        tiny_train(run, ARGS + ROLLBACK + [f"trainer.stop_at={POISONED}"])
    tiny_train(run, ARGS + ROLLBACK + [f"trainer.stop_at={POISONED}"])
    keys = ("step", "train/loss", "train/lr", "train/grad_norm", "train/rollbacks")
    assert [[r.get(k) for k in keys] for r in read_metrics(run)] == [[r.get(k) for k in keys] for r in uninterrupted]


def test_a_rollback_removes_the_checkpoints_of_the_line_it_left(tmp_path, tiny_train, monkeypatch):
    """A stop's checkpoint at 29 (before the poisoned batch) is on the line the rollback from update 29 leaves: it
    goes, so that pruning keeps the periodic 28 a later spike goes back to, and no resume takes batch 29 again."""
    plant(monkeypatch, "rare")
    run = tmp_path / "run"
    with pytest.raises(Stopped):
        tiny_train(run, ARGS + ROLLBACK + [f"trainer.stop_at={POISONED}"])
    assert checkpoint.saved_steps(run / "checkpoints") == [28, 29]
    with pytest.raises(Stopped):
        tiny_train(run, ARGS + ROLLBACK + [f"trainer.stop_at={POISONED + 1}"])  # back to 28, then 28, 29: stop at 30
    assert checkpoint.saved_steps(run / "checkpoints") == [28, 30]
    assert checkpoint.latest(run / "checkpoints").name == checkpoint.step_dir_name(30)


def test_after_a_rollback_spikes_are_measured_against_the_checkpoints_window():
    skips = Skips(window=3, state={"recent": [[7, 2.0], [8, 2.1], [9, 2.2]]})
    skips.roll_back(8, 9, recent=[[5, 3.0], [6, 3.1], [7, 3.2]])  # what the checkpoint at update 8 saved
    assert [v for _, v in skips.recent] == [3.0, 3.1, 3.2]
    assert skips.spike(8, 9.9, factor=3.0) == 3.1  # a full window: a spike is seen at once


def test_pruning_keeps_the_newest_up_to_the_one_written_and_the_newest_periodic_one(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (4, 8, 9, 10, 12):
        (root / checkpoint.step_dir_name(step)).mkdir(parents=True)
        (root / checkpoint.step_dir_name(step) / checkpoint.STATE_FILE).write_bytes(b"")
    checkpoint.prune(root, keep=2, current=10, keep_every=4)  # stops at 9 and 10 after the periodic 8
    assert checkpoint.saved_steps(root) == [8, 9, 10, 12]  # 12: past the one written, a line the run went back from
    checkpoint.prune(root, keep=2, current=10)
    assert checkpoint.saved_steps(root) == [9, 10, 12]


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), max_size=6))
def test_updates_take_ever_later_batches_and_never_a_skipped_one_even_after_rolling_back_further(rollbacks):
    skips = Skips()
    for to, spike in rollbacks:  # a later rollback may go back before an earlier one's checkpoint
        _, spiked = skips.roll_back(min(to, spike), max(to, spike))
        assert skips.batch(min(to, spike)) > spiked  # the update gone back to takes a batch after the spike's
    taken = [skips.batch(t) for t in range(200)]
    assert all(a < b for a, b in zip(taken, taken[1:], strict=False))
    skipped = {b for first, last in skips.skipped for b in range(first, last + 1)}
    assert not skipped & set(taken)
    assert sorted(skipped | set(taken))[: len(taken)] == list(range(len(taken)))  # no batch left out but skipped ones


def test_metrics_csv_and_tensorboard_hold_each_update_once_across_a_rollback(tmp_path, tiny_train, monkeypatch):
    import csv

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    plant(monkeypatch, "rare")
    run = tiny_train(tmp_path / "run", ARGS + ROLLBACK + ["logger=[csv,tensorboard]"])
    losses = {t: r["train/loss"] for t, r in train_records(run).items()}
    with open(run / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["train/loss"]]
    assert [int(r["step"]) for r in rows] == list(range(T))
    assert all(float(r["train/loss"]) == pytest.approx(losses[int(r["step"])]) for r in rows)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in logged] == list(range(T))  # the spiked update's first value purged
    assert all(v == pytest.approx(losses[s], rel=1e-6) for s, v in logged)
