"""Runs that survive: bit-exact resume, preemption signals, a kill during a checkpoint save, a checkpoint damaged
after it was saved, non-finite losses."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from data.atomic import size_text
from model import GPT, GPTConfig
from scheduling import Schedule, build_scheduler
from tests.conftest import ROOT, TINY, read_metrics, run_train, train_records
from training import checkpoint
from training.config import ConfigError
from training.engine import NONFINITE, train_update
from training.signals import EXIT_RESUMABLE, Stopped
from training.watchdog import EXIT_HUNG

T, W = 12, 4
# Dropout makes the run depend on the torch RNG, which the checkpoint must carry over too.
ARGS = [f"trainer.max_steps={T}", f"schedule.warmup_steps={W}", "trainer.eval_every=4", "model.dropout=0.1"]


@pytest.fixture
def uninterrupted(tmp_path, tiny_train):
    return read_metrics(tiny_train(tmp_path / "uninterrupted", ARGS))


@pytest.mark.parametrize("k", [1, 9], ids=["start", "decay"])
def test_a_stopped_and_resumed_run_equals_the_uninterrupted_run_bit_for_bit(k, tmp_path, tiny_train, uninterrupted):
    run = tmp_path / "run"
    taken = "update 0" if k == 1 else f"updates 0–{k - 1}"
    with pytest.raises(Stopped, match=rf"^stopped after {taken} \(trainer.stop_at\); .* resume at update {k}$"):
        tiny_train(run, ARGS + [f"trainer.stop_at={k}"])
    assert checkpoint.latest(run / "checkpoints").name == f"step-{k:08d}"
    ended = json.loads((run / "summary.json").read_text())  # what a job script reads: not to be requeued
    assert (ended["status"], ended["stopped_by"]) == ("preempted", "trainer.stop_at")
    tiny_train(run, ARGS + [f"trainer.stop_at={k}"])  # the same command again: resumes from update k, on to T
    assert "stopped_by" not in json.loads((run / "summary.json").read_text())  # the first start's alone
    resumed = read_metrics(run)
    assert [r for r in resumed if "train/loss" in r] and len(resumed) == len(uninterrupted)
    for a, b in zip(uninterrupted, resumed, strict=True):
        assert a["step"] == b["step"]
        for key in ("train/loss", "train/lr", "train/grad_norm", "val/loss", "val/bpb"):
            assert a.get(key) == b.get(key), (k, a["step"], key, a.get(key), b.get(key))


def test_a_run_started_again_where_one_died_before_its_first_checkpoint_logs_one_run(tmp_path, tiny_train):
    keys = ("step", "train/loss", "train/lr", "val/loss")
    run = tiny_train(tmp_path / "run", ARGS)
    first = [[r.get(k) for k in keys] for r in read_metrics(run)]
    for folder in (run / "checkpoints").iterdir():  # as if it had died before its first save
        shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
    assert [[r.get(k) for k in keys] for r in read_metrics(tiny_train(run, ARGS))] == first


def test_a_resumed_run_with_document_masking_equals_the_uninterrupted_run_bit_for_bit(tmp_path, tiny_train):
    """The masked path (a boolean mask, rotary positions restarting at each document, dropout) resumes exactly."""
    args = ARGS + ["model=llama-nano", "data.document_mask=true", "model.reset_positions=true"]
    uninterrupted = read_metrics(tiny_train(tmp_path / "uninterrupted", args))
    with pytest.raises(Stopped):
        tiny_train(tmp_path / "run", args + ["trainer.stop_at=5"])
    resumed = read_metrics(tiny_train(tmp_path / "run", args))
    keys = ("step", "train/loss", "train/grad_norm", "val/loss", "val/bpb")
    assert [[r.get(k) for k in keys] for r in resumed] == [[r.get(k) for k in keys] for r in uninterrupted]


def test_a_resume_may_turn_activation_checkpointing_on_and_continues_bit_for_bit(tmp_path, tiny_train, uninterrupted):
    """It recomputes the blocks (dropout's masks included) and changes no weight: the run goes on as it was."""
    with pytest.raises(Stopped):
        tiny_train(tmp_path / "run", ARGS + ["trainer.stop_at=5"])
    resumed = read_metrics(tiny_train(tmp_path / "run", ARGS + ["model.activation_checkpointing=true"]))
    keys = ("step", "train/loss", "train/grad_norm", "val/loss")
    assert [[r.get(k) for k in keys] for r in resumed] == [[r.get(k) for k in keys] for r in uninterrupted]


def test_a_resume_may_change_the_dropout_but_not_the_shape_and_names_the_change(
    tmp_path, tiny_train, uninterrupted, caplog
):
    with pytest.raises(Stopped):
        tiny_train(tmp_path / "run", ARGS + ["trainer.stop_at=5"])
    with pytest.raises(ConfigError, match=r"another shape or vocab .*n_embd"):
        tiny_train(tmp_path / "run", ARGS + ["model.n_embd=48"])
    without_dropout = [a for a in ARGS if not a.startswith("model.dropout")] + ["model.dropout=0.0"]
    with caplog.at_level("INFO", logger="train"):
        resumed = read_metrics(tiny_train(tmp_path / "run", without_dropout))
    assert "from update 5, the model's model.dropout 0.1 → 0.0" in caplog.text
    losses = {r["step"]: r["train/loss"] for r in resumed if "train/loss" in r}
    before = {r["step"]: r["train/loss"] for r in uninterrupted if "train/loss" in r}
    assert [losses[t] for t in range(5)] == [before[t] for t in range(5)]  # the updates before the stop, as logged
    assert losses[T - 1] != before[T - 1]  # after it, without dropout's noise


def test_a_resume_may_change_the_optimizers_settings_and_they_apply_from_there(
    tmp_path, tiny_train, uninterrupted, caplog
):
    with pytest.raises(Stopped):
        tiny_train(tmp_path / "run", ARGS + ["trainer.stop_at=5"])
    caplog.set_level("INFO", logger="train")
    resumed = read_metrics(tiny_train(tmp_path / "run", ARGS + ["optim.weight_decay=0.5", "optim.betas=[0.8,0.9]"]))
    assert (
        "from update 5, the optimizer's optim.weight_decay 0.1 → 0.5, optim.betas [0.9, 0.98] → [0.8, 0.9]"
        in caplog.text
    )
    groups = torch.load(checkpoint.latest(tmp_path / "run" / "checkpoints") / "state.pt", weights_only=False)
    assert [(g["weight_decay"], list(g["betas"])) for g in groups["optimizer"]["param_groups"]] == [
        (0.5, [0.8, 0.9]),
        (0.0, [0.8, 0.9]),  # the group without decay keeps none
    ]
    losses = {r["step"]: r["train/loss"] for r in resumed if "train/loss" in r}
    before = {r["step"]: r["train/loss"] for r in uninterrupted if "train/loss" in r}
    assert [losses[t] for t in range(6)] == [before[t] for t in range(6)]  # update 5's loss precedes its step
    assert losses[6] != before[6]


def test_the_summarys_best_validation_counts_every_start(tmp_path, tiny_train):
    """A resume that makes the run worse (a far higher lr from update 3) keeps the best from before it."""
    run, args = tmp_path / "run", ARGS + ["trainer.eval_every=2"]
    with pytest.raises(Stopped):
        tiny_train(run, args + ["trainer.stop_at=3"])
    tiny_train(run, args + ["optim.lr=1.0", "trainer.allow_schedule_change=true"])
    vals = {r["step"]: r["val/loss"] for r in read_metrics(run) if "val/loss" in r}
    best = min(vals, key=vals.get)
    summary = json.loads((run / "summary.json").read_text())
    assert best < 3 and (summary["best/step"], summary["best/val_loss"]) == (best, vals[best])


def test_a_resume_with_other_data_settings_or_seed_names_them(tmp_path, tiny_train, caplog):
    """A resume on other data (a cooldown's recipe) or another seed goes on, naming each changed key; the same
    config resumes without a word of it."""
    with pytest.raises(Stopped):
        tiny_train(tmp_path / "run", ARGS + ["trainer.stop_at=3"])
    with caplog.at_level("WARNING", logger="train"), pytest.raises(Stopped):
        tiny_train(tmp_path / "run", ARGS + ["trainer.stop_at=6"])
    assert "other data settings" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="train"):
        tiny_train(tmp_path / "run", ARGS + ["trainer.seed=7", "data.on_decode_error=replace"])
    assert (
        "the checkpoint's run drew its batches with other data settings (data.on_decode_error 'skip' → 'replace', "
        "trainer.seed 1337 → 7): from update 6 on they are this config's" in caplog.text
    )


def test_a_resume_on_changed_files_under_the_same_settings_names_them(tmp_path, tiny_train, caplog):
    """A corpus whose files changed between the stop and the resume, the tokenizer fixed (so the resume is
    allowed): the settings are the same, the batches are not."""
    from tests.data.corpora import DOCS, write_texts

    files = write_texts(tmp_path / "corpus", DOCS * 4)
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text(
        (checkpoint.latest(tiny_train(tmp_path / "builtin", ARGS) / "checkpoints") / "tokenizer.json").read_text()
    )
    data = ["data=text_files", f"data.path={files[0].parent}", f"data.tokenizer={tokenizer}", "data.max_bytes=null"]
    with pytest.raises(Stopped):
        tiny_train(tmp_path / "run", ARGS + data + ["trainer.stop_at=3"])
    files[-1].unlink()
    with caplog.at_level("WARNING", logger="train"):
        tiny_train(tmp_path / "run", ARGS + data)
    assert "other data settings (the corpus's files changed): from update 3 on" in caplog.text


def test_a_resume_on_a_mixture_with_a_source_added_or_removed_names_it(caplog):
    """A cooldown that adds a high-quality source (its tokenizer fixed, so the resume is allowed) is the recipe the
    warning exists for: a source added or removed is named as a weight changed is."""
    from omegaconf import OmegaConf

    from tests.conftest import compose_config
    from training.build import warn_of_other_data

    mixture = ["data=mixture", "data.tokenizer=/fixed/tokenizer.json"]
    saved = {"config": OmegaConf.to_yaml(compose_config(mixture)), "step": 5}
    weight = compose_config(mixture).data.sources.docs.weight
    web = "+data.sources.web={source: hub, name: owner/web, weight: 1}"
    kept = compose_config(mixture).data.sources.stdlib
    stdlib = f"+data.sources.stdlib={{source: builtin, weight: {kept.weight}, exclude: [{','.join(kept.exclude)}]}}"
    for change, said in [
        ([web], "data.sources.web added"),
        (["~data.sources.docs"], "data.sources.docs removed"),
        (["data.sources.docs.weight=0.25"], f"data.sources.docs.weight {weight!r} → 0.25"),
        # the same sources and settings, declared in another order: each batch's source is drawn by its index
        (["~data.sources.stdlib", stdlib], "data.sources in the order stdlib, docs → docs, stdlib"),
    ]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="train"):
            warn_of_other_data(saved, compose_config([*mixture, *change]))
        assert f"other data settings ({said})" in caplog.text, (change, caplog.text)
    caplog.clear()
    with caplog.at_level("WARNING", logger="train"):
        warn_of_other_data({**saved, "source_fingerprint": {"stdlib": "a", "docs": "b"}}, compose_config(mixture))
        assert "other data settings" not in caplog.text  # a checkpoint's record, no cache's to hold it to
        warn_of_other_data(
            {**saved, "source_fingerprint": {"stdlib": "a", "docs": "b"}},
            compose_config(mixture),
            {"stdlib": "a", "docs": "c"},
        )
    assert "other data settings (data.sources.docs's files changed)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="train"):
        warn_of_other_data(saved, compose_config(mixture))
    assert "other data settings" not in caplog.text


def test_a_resume_with_another_batch_says_so(tmp_path, tiny_train, caplog):
    """Another world size, batch size or accumulation: the run goes on with the new batch, and says so."""
    with pytest.raises(Stopped):
        tiny_train(tmp_path / "run", ARGS + ["trainer.stop_at=3"])
    with caplog.at_level("WARNING", logger="train"):
        tiny_train(tmp_path / "run", ARGS + ["trainer.batch_size=8"])
    assert "the checkpoint's updates took 128 tokens each, this run's take 256 (the number of ranks" in caplog.text
    assert "validation scores 16 windows from here on, the checkpoint's 8 (" in caplog.text


def test_a_checkpoint_from_before_val_windows_were_recorded_is_read_from_its_config_and_ranks(
    tmp_path, tiny_train, caplog
):
    """Such a run on two ranks scored eval_batches × batch_size windows on each: twice what one process scores now."""
    with pytest.raises(Stopped):
        tiny_train(tmp_path / "run", ARGS + ["trainer.stop_at=3"])
    folder = checkpoint.latest(tmp_path / "run" / "checkpoints")
    state = torch.load(folder / "state.pt", weights_only=True)
    del state["val_windows"]
    state["rng"] = state["rng"] * 2  # as two ranks saved it
    torch.save(state, folder / "state.pt")
    checkpoint.write_checksums(folder)
    with caplog.at_level("WARNING", logger="train"):
        tiny_train(tmp_path / "run", ARGS)
    assert "validation scores 8 windows from here on, the checkpoint's 16 (" in caplog.text


def test_a_branch_run_again_after_its_source_checkpoint_is_gone_continues_from_its_own(
    tmp_path, tiny_train, uninterrupted
):
    """A requeued branch (the same command again) whose source run has since pruned or moved that checkpoint."""
    source, branch = tmp_path / "source", tmp_path / "branch"
    tiny_train(source, ARGS + ["trainer.ckpt_every=4", "trainer.keep_checkpoints=3"])  # keeps 4, 8, 12
    named = source / "checkpoints" / "step-00000004"
    with pytest.raises(ConfigError, match=rf"^trainer.resume: '{source}/metrics.jsonl' is a file, not a checkpoint"):
        checkpoint.find_resume(str(source / "metrics.jsonl"), branch)  # it named the source's run, unsaid
    with pytest.raises(ConfigError, match=r"^trainer.resume: '/no/such/run' does not exist$"):
        checkpoint.find_resume("/no/such/run", branch)  # a run directory without checkpoints of its own yet
    args = ARGS + [f"trainer.resume={named}", "trainer.ckpt_every=4"]
    with pytest.raises(Stopped):
        tiny_train(branch, [*args, "trainer.stop_at=8"])
    shutil.rmtree(source)
    resumed = read_metrics(tiny_train(branch, args))
    keys = ("step", "train/loss", "val/loss")
    assert [[r.get(k) for k in keys] for r in resumed] == [[r.get(k) for k in keys] for r in uninterrupted][
        -len(resumed) :
    ]
    assert resumed[0]["step"] == 4 and checkpoint.latest(branch / "checkpoints").name == f"step-{T:08d}"


def test_a_run_sent_back_to_its_own_older_checkpoint_continues_from_its_latest_when_run_again(
    tmp_path, tiny_train, uninterrupted
):
    """trainer.resume naming the run's own step-4, stopped at 6 and requeued: on from 6, even with step-4 gone."""
    run = tmp_path / "run"
    keep = ["trainer.ckpt_every=4", "trainer.keep_checkpoints=3"]
    with pytest.raises(Stopped):
        tiny_train(run, ARGS + [*keep, "trainer.stop_at=9"])  # keeps 4, 8, 9
    back = ARGS + [*keep, f"trainer.resume={run / 'checkpoints' / 'step-00000004'}", "trainer.stop_at=6"]
    with pytest.raises(Stopped):
        tiny_train(run, back)  # the named checkpoint: from 4 to 6
    shutil.rmtree(run / "checkpoints" / "step-00000004")
    tiny_train(run, back)  # the same command again: from 6 (where it went on to), to T
    keys = ("step", "train/loss", "val/loss")
    assert [[r.get(k) for k in keys] for r in read_metrics(run)] == [[r.get(k) for k in keys] for r in uninterrupted]


def test_a_resume_with_another_tokenizer_size_is_refused_before_the_data_is_prepared(tmp_path, tiny_train, data_cache):
    """A tokenizer of another size would be trained and its token cache written, only to be refused."""
    with pytest.raises(Stopped):
        tiny_train(tmp_path / "run", ARGS + ["trainer.stop_at=2"])
    caches = sorted(data_cache.iterdir())
    with pytest.raises(ConfigError, match=r"another tokenizer than data builds now \(data.vocab_size 384 → 320\)"):
        tiny_train(tmp_path / "run", ARGS + ["data.vocab_size=320"])
    assert sorted(data_cache.iterdir()) == caches


def test_a_resume_whose_data_trains_another_tokenizer_is_refused_naming_the_settings_that_changed(tmp_path, tiny_train):
    with pytest.raises(Stopped):
        tiny_train(tmp_path / "run", ARGS + ["trainer.stop_at=2"])
    with pytest.raises(ConfigError, match=r"another tokenizer than data builds now \(data.max_bytes 200000 → 150000\)"):
        tiny_train(tmp_path / "run", ARGS + ["data.max_bytes=150000"])


def test_a_checkpoint_from_before_a_model_setting_existed_fits_a_config_with_its_default(tmp_path):
    config = GPTConfig(vocab_size=64, n_layer=1, n_head=2, n_embd=8, block_size=8).to_dict()
    older = {k: v for k, v in config.items() if k not in ("reset_positions", "document_separator")}
    checkpoint.check_fits({"model_config": older}, config, "hash", tmp_path)
    reset = {**config, "reset_positions": True}
    with pytest.raises(ConfigError, match=r"another shape or vocab .*reset_positions False → True"):
        checkpoint.check_fits({"model_config": older}, reset, "hash", tmp_path)


def test_a_resume_may_turn_document_masking_on_as_it_may_change_other_data_settings(tmp_path, tiny_train, caplog):
    with pytest.raises(Stopped):
        tiny_train(tmp_path / "run", ARGS + ["trainer.stop_at=4"])
    with caplog.at_level("WARNING"):
        tiny_train(tmp_path / "run", ARGS + ["data.document_mask=true"])
    assert "data.document_mask" in caplog.text  # the data settings' warning names it
    assert [r["step"] for r in read_metrics(tmp_path / "run") if "train/loss" in r] == list(range(T))


def _start(args: list[str], run, cache) -> subprocess.Popen:
    env = {**os.environ, "GPT_DATA_CACHE": str(cache), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "train.py", *TINY, *args, f"hydra.run.dir={run}"]
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


def test_sigterm_finishes_the_update_checkpoints_and_exits_resumable(tmp_path, data_cache):
    run = tmp_path / "run"
    proc = _start(["trainer.max_steps=100000", "trainer.eval_every=0"], run, data_cache)
    _wait_for(lambda: (run / "metrics.jsonl").exists() and len(read_metrics(run)) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_RESUMABLE, out[-3000:]
    records = train_records(run)
    updates = max(records) + 1
    # The update running when the signal came was finished and is the checkpoint's step; the message agrees.
    assert checkpoint.latest(run / "checkpoints").name == f"step-{updates:08d}"
    assert sorted(records) == list(range(updates))
    assert f"stopped after updates 0–{updates - 1} (SIGTERM)" in out and "Traceback" not in out


def test_a_stop_in_a_run_directory_hydra_named_by_the_time_says_which_to_resume_in(tmp_path, data_cache):
    """Hydra's default outputs/<date>/<time>: the same command alone would start a new run elsewhere."""
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "WANDB_MODE": "offline"}
    cmd = [sys.executable, str(ROOT / "train.py"), *TINY, "trainer.max_steps=4", "trainer.stop_at=2", "logger=none"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_RESUMABLE, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    said = re.search(r"re-run the same command with hydra\.run\.dir=(\S+) to resume at update 2$", out, re.M)
    assert said, out[-2000:]
    assert checkpoint.latest(tmp_path / said.group(1) / "checkpoints").name == "step-00000002"


def test_a_signal_while_the_run_ends_lets_the_trackers_finish(tmp_path, data_cache):
    """SIGTERM after the last update, while the sinks send their last records: they finish, the run is complete."""
    run = tmp_path / "run"
    sink = ["+logger.sinks.late._target_=tests.training.fork_parts.SignalAtFinish"]
    proc = run_train([*TINY, *sink, "trainer.max_steps=3", "trainer.eval_every=0"], run, data_cache, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "finished.txt").read_text() == "ok"
    assert "SIGTERM came while the run was ending; it ended first" in proc.stdout + proc.stderr


def test_a_signal_while_the_run_starts_stops_it_at_once_resumable_with_its_trackers_ended(tmp_path, data_cache):
    """SIGTERM while the run starts (its trackers begun, before the first update): exit 75 at once, in one line, the
    trackers' runs ended as preempted, no checkpoint; the same command without the stop then trains."""
    run = tmp_path / "run"
    sinks = ["logger=none", "+logger.sinks.first._target_=tests.training.fork_parts.EndStatus"]
    stop = "+logger.sinks.stop._target_=tests.training.fork_parts.SignalAtStart"
    args = [*TINY, *sinks, "trainer.max_steps=3", "trainer.eval_every=0"]
    proc = run_train([*args, stop], run, data_cache, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_RESUMABLE, out[-2000:]
    assert "stopped as the run started (SIGTERM), before its first update; re-run the same command to go on" in out
    assert "Traceback" not in out and "failed to start" not in out
    assert (run / "sink.status").read_text() == "preempted"
    assert not (run / "checkpoints").exists()
    ended = json.loads((run / "summary.json").read_text())  # what a job script reads: to be requeued
    assert (ended["status"], ended["stopped_by"]) == ("preempted", "SIGTERM")
    proc = run_train(args, run, data_cache, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(train_records(run)) == [0, 1, 2] and (run / "sink.status").read_text() == "ok"


def test_ctrl_c_while_the_data_is_prepared_stops_the_run_resumable(tmp_path, tiny_train, monkeypatch):
    """Preparing a corpus can take hours: Ctrl-C (or SIGTERM) then stops at once, as a Stopped, not a traceback."""
    from training import build

    def interrupted(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        raise AssertionError("the signal did not stop the run")

    monkeypatch.setattr(build, "prepare", interrupted)
    with pytest.raises(Stopped, match=r"^stopped as the run started \(SIGINT\), before its first update"):
        tiny_train(tmp_path / "run", ["trainer.max_steps=3"])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are Python's again


def test_sigint_is_a_graceful_stop_too(tmp_path, tiny_train, monkeypatch):
    """The signal arrives in this process, during an update; the run stops after it, as after SIGTERM."""
    from training import engine

    update, calls = engine.train_update, []

    def interrupted_at_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)
        return update(*args, **kwargs)

    monkeypatch.setattr(engine, "train_update", interrupted_at_the_third)
    with pytest.raises(Stopped, match=r"stopped after updates 0–2 \(SIGINT\)"):
        tiny_train(tmp_path / "run", ["trainer.max_steps=50", "trainer.eval_every=0"])
    assert checkpoint.latest(tmp_path / "run" / "checkpoints").name == "step-00000003"


def test_a_stalled_update_writes_every_threads_stack_and_exits_124_to_be_resumed(tmp_path, data_cache):
    """A read that never returns at update 5 (checkpoints every 2): past trainer.hang_timeout the process says which
    update stalled, writes where every thread was, and exits; the same command again resumes from update 4."""
    run = tmp_path / "run"
    stall = ["+logger.sinks.stall._target_=tests.training.fork_parts.StallAt", "+logger.sinks.stall.step=5"]
    args = [*TINY, "trainer.max_steps=8", "trainer.ckpt_every=2", "trainer.eval_every=0", "trainer.hang_timeout=2"]
    started = time.monotonic()
    proc = run_train([*args, *stall], run, data_cache, check=False)
    assert proc.returncode == EXIT_HUNG, proc.stderr[-3000:]
    assert time.monotonic() - started < 60
    line = "update 5 did not finish within trainer.hang_timeout=2 s; the stack of every thread follows; exiting with"
    assert f"error: {line} {EXIT_HUNG}" in proc.stderr
    for text in (proc.stderr, (run / "train.log").read_text()):
        assert f"{line} {EXIT_HUNG}" in text
        assert text.count("(most recent call first):") >= 2  # the main thread and the watchdog's at least
        assert 'fork_parts.py", line' in text and " in log\n" in text  # where the main thread stalled
    assert "Traceback" not in proc.stderr
    assert checkpoint.latest(run / "checkpoints").name == "step-00000004"
    resumed = run_train(args, run, data_cache)
    assert f"resuming from {run / 'checkpoints' / 'step-00000004'} at update 4" in resumed.stdout + resumed.stderr
    assert sorted(train_records(run)) == list(range(8))


def test_a_stall_in_the_log_file_itself_still_ends_the_process(tmp_path, data_cache):
    """The stuck thread holds train.log's handler (a hung network filesystem): the report goes to stderr, the log
    file is waited for a few seconds at most, and the process exits 124 all the same."""
    stall = ["+logger.sinks.stall._target_=tests.training.fork_parts.StallAt", "+logger.sinks.stall.step=3"]
    args = [*TINY, "trainer.max_steps=8", "trainer.eval_every=0", "trainer.hang_timeout=1", *stall]
    started = time.monotonic()
    proc = run_train(
        [*args, "+logger.sinks.stall.in_log_file=true"], tmp_path / "run", data_cache, check=False, timeout=90
    )
    assert proc.returncode == EXIT_HUNG, proc.stderr[-3000:]
    assert time.monotonic() - started < 60
    assert "error: update 3 did not finish within trainer.hang_timeout=1 s" in proc.stderr
    assert "(most recent call first):" in proc.stderr


def test_a_stall_in_a_checkpoint_save_is_named_as_the_save(tmp_path, data_cache):
    """A save that never returns (its sink's state, on a hung filesystem) is named as the save, not as an update."""
    stall = ["+logger.sinks.stall._target_=tests.training.fork_parts.StallAt", "+logger.sinks.stall.step=3"]
    args = [*TINY, "trainer.max_steps=8", "trainer.ckpt_every=4", "trainer.eval_every=0", "trainer.hang_timeout=2"]
    proc = run_train([*args, *stall, "+logger.sinks.stall.in_save=true"], tmp_path / "run", data_cache, check=False)
    assert proc.returncode == EXIT_HUNG, proc.stderr[-3000:]
    assert "error: the checkpoint at update 4 did not finish within trainer.hang_timeout=2 s" in proc.stderr
    assert checkpoint.latest(tmp_path / "run" / "checkpoints") is None


def test_a_stall_in_the_end_of_run_reports_ends_the_process_too(tmp_path, data_cache):
    """summary.json never written (a hung filesystem under the run directory): past hang_timeout, exit 124."""
    run = tmp_path / "run"
    args = [*TINY, "trainer.max_steps=3", "trainer.eval_every=0", "trainer.hang_timeout=2", f"hydra.run.dir={run}"]
    code = (
        "import runpy, sys, time\n"
        "from training import summary\n"
        "summary.report = lambda *a, **k: time.sleep(120)\n"
        f"sys.argv = ['train.py', *{args!r}]\n"
        "runpy.run_path('train.py', run_name='__main__')\n"
    )
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=100)
    assert proc.returncode == EXIT_HUNG, proc.stderr[-3000:]
    assert "error: the end-of-run reports (summary.json, the plots) did not finish within" in proc.stderr
    assert checkpoint.latest(run / "checkpoints").name == "step-00000003"  # the run itself is whole


def test_a_watchdog_that_cannot_write_the_stacks_still_ends_the_process():
    """No scratch file for the stacks (too many open files): the report says so, and the process exits 124."""
    code = (
        "import errno, time\n"
        "from training import watchdog\n"
        "def no_file():\n"
        "    raise OSError(errno.EMFILE, 'Too many open files')\n"
        "watchdog.all_stacks = no_file\n"
        "with watchdog.Watchdog(0.3, 7):\n"
        "    time.sleep(20)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_HUNG, proc.stderr
    assert "error: update 7 did not finish within trainer.hang_timeout=0.3 s" in proc.stderr
    assert "(the stacks could not be written: [Errno 24] Too many open files)" in proc.stderr


def test_a_console_nobody_reads_still_lets_a_stalled_run_end(tmp_path, data_cache):
    """stdout and stderr are a pipe whose reader stopped (``… 2>&1 | tee`` on a hung terminal): once it is full the
    main thread blocks writing the progress line, and past hang_timeout the process ends 124 all the same (it hung
    in its own report), the report in train.log."""
    run = tmp_path / "run"
    args = ["trainer.max_steps=1000000", "trainer.log_every=1", "trainer.eval_every=0", "trainer.hang_timeout=3"]
    proc = _start(args, run, data_cache)  # its output is read by no one
    try:
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == EXIT_HUNG
    assert "did not finish within trainer.hang_timeout=3 s" in (run / "train.log").read_text()


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_save_keeps_the_previous_one_and_resume_uses_it(tmp_path, data_cache):
    """SIGKILL a real process while it writes a checkpoint (a .tmp- folder exists), then resume."""
    args = [  # a bigger model makes each save take long enough to be caught in the middle
        "model.n_embd=256",
        "model.n_layer=4",
        "model.n_head=4",
        "trainer.max_steps=400",
        "trainer.ckpt_every=2",
        "trainer.keep_checkpoints=3",
        "trainer.eval_every=0",
        "trainer.batch_size=2",
        "trainer.sample_tokens=0",
    ]
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
    resume = ["trainer.ckpt_every=0", f"trainer.max_steps={state['step'] + 2}", "trainer.allow_schedule_change=true"]
    proc = run_train(TINY + args[:-6] + resume + args[-3:-1], run, data_cache)
    assert f"resuming from {before} at update {state['step']}" in proc.stdout + proc.stderr
    assert not any(p.name.startswith(".tmp-") for p in ckpts.iterdir())  # the leftover was cleaned up


def damage_in_place(file: Path, n: int = 64) -> None:
    """Invert ``n`` bytes in the middle of ``file``, keeping its size: a bad sector, a flipped copy."""
    data = bytearray(file.read_bytes())
    mid = len(data) // 2
    data[mid : mid + n] = bytes(255 - b for b in data[mid : mid + n])
    file.write_bytes(bytes(data))


def test_a_damaged_latest_checkpoint_is_refused_and_the_run_resumes_bit_for_bit_from_the_one_before(
    tmp_path, tiny_train, uninterrupted, caplog
):
    run, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    with pytest.raises(Stopped):
        tiny_train(run, ARGS + ["trainer.ckpt_every=4", "trainer.stop_at=8"])  # keeps step 4 and step 8
    state = ckpts / "step-00000008" / checkpoint.STATE_FILE
    damage_in_place(state)
    refused = f"checkpoint {state}: damaged since it was saved (bytes 0–{state.stat().st_size:,} differ, crc32)"
    with caplog.at_level("WARNING"):
        tiny_train(run, ARGS + ["trainer.ckpt_every=4"])
    assert f"{refused}; resuming from the previous complete checkpoint, {ckpts / 'step-00000004'}" in caplog.text
    keys = ("step", "train/loss", "train/lr", "train/grad_norm", "val/loss", "val/bpb")
    assert [[r.get(k) for k in keys] for r in read_metrics(run)] == [[r.get(k) for k in keys] for r in uninterrupted]
    checkpoint.verify(ckpts / "step-00000008")  # written again by the resumed run


def test_a_latest_pointer_that_names_no_checkpoint_is_said_as_the_highest_step_is_taken(tmp_path, tiny_train, caplog):
    run, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    with pytest.raises(Stopped):
        tiny_train(run, ARGS + ["trainer.ckpt_every=4", "trainer.stop_at=6"])
    (ckpts / checkpoint.LATEST).write_text("garbage\n")
    with caplog.at_level("WARNING"), pytest.raises(Stopped):
        tiny_train(run, ARGS + ["trainer.ckpt_every=4", "trainer.stop_at=7"])
    assert f"{ckpts / 'latest'} names no checkpoint ('garbage'); taking the highest step, step-00000006" in caplog.text


def test_a_file_the_checksums_record_leaves_out_is_refused_not_read_unchecked(tmp_path):
    folder = saved_checkpoint(tmp_path, 3, GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=1, n_embd=8)))
    (folder / "config.yaml").write_text("trainer: {seed: 1}\n")
    checkpoint.write_checksums(folder)
    checkpoint.verify(folder)
    record = json.loads((folder / checkpoint.CHECKSUMS).read_text())
    del record["files"]["config.yaml"]  # its entry dropped, then the file edited: nothing would compare it
    (folder / checkpoint.CHECKSUMS).write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=rf"^checkpoint {folder}/config.yaml: not in its checksums.json \(added"):
        checkpoint.verify(folder)
    checkpoint.write_checksums(folder)
    (folder / ".nfs000001").write_bytes(b"x")  # a hidden file a file system leaves: none of the checkpoint's
    checkpoint.verify(folder)


def test_a_damaged_checkpoint_the_resume_passed_over_is_not_kept_over_the_intact_one_before_it(tmp_path, tiny_train):
    run, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    keep = ["trainer.ckpt_every=4", "trainer.keep_checkpoints=2"]
    with pytest.raises(Stopped):
        tiny_train(run, ARGS + keep + ["trainer.stop_at=6"])  # keeps step 4 and step 6
    damage_in_place(ckpts / "step-00000006" / checkpoint.STATE_FILE)
    with pytest.raises(Stopped):
        tiny_train(run, ARGS + keep + ["trainer.stop_at=7"])  # from step 4; 6 damaged would count as one of two
    assert checkpoint.saved_steps(ckpts) == [4, 7]


def test_a_checkpoint_of_the_line_a_run_went_back_from_counts_for_none_of_those_kept(tmp_path, tiny_train):
    run, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    keep = ["trainer.ckpt_every=2", "trainer.keep_checkpoints=3"]
    with pytest.raises(Stopped):
        tiny_train(run, ARGS + keep + ["trainer.stop_at=7"])  # 2, 4, 6 and the stop's 7: keeps 4, 6, 7
    back = [f"trainer.resume={ckpts / 'step-00000006'}", "trainer.seed=7"]  # another line from 6, in the same folder
    with pytest.raises(Stopped):
        tiny_train(run, ARGS + keep + back + ["trainer.stop_at=9"])
    assert checkpoint.saved_steps(ckpts) == [6, 8, 9]  # not the other line's 7 over this line's 6


def saved_checkpoint(root: Path, step: int, model: torch.nn.Module) -> Path:
    """A checkpoint folder as a run writes one: state.pt, then its checksums.json."""
    folder = root / checkpoint.step_dir_name(step)
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "step": step, "model_config": model.config.to_dict()}, folder / "state.pt")
    checkpoint.write_checksums(folder)
    return folder


@pytest.mark.parametrize(
    "edit",
    [
        lambda r: {**r, "chunk_bytes": 0},
        lambda r: {**r, "files": []},
        lambda r: {**r, "files": {}},
        lambda r: {**r, "files": {"state.pt": 5}},
        lambda r: {**r, "files": {"state.pt": {"bytes": r["files"]["state.pt"]["bytes"]}}},
        lambda r: {**r, "files": {"state.pt": {**r["files"]["state.pt"], "crc32": []}}},
        lambda r: [r],
        lambda r: "[" * 100_000 + "]" * 100_000,  # JSON nested deeper than the parser recurses
    ],
)
def test_a_checksums_record_that_is_not_one_is_refused_in_one_line_naming_it(tmp_path, edit):
    folder = saved_checkpoint(tmp_path, 3, GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=1, n_embd=8)))
    record = folder / checkpoint.CHECKSUMS
    edited = edit(json.loads(record.read_text()))
    record.write_text(edited if isinstance(edited, str) else json.dumps(edited))
    with pytest.raises(
        ConfigError, match=f"^checkpoint {record}: cannot be read \\(.+\\), so its files cannot"
    ) as info:
        checkpoint.verify(folder)
    assert "\n" not in str(info.value)


def test_a_garbled_latest_pointer_falls_back_to_the_highest_step(tmp_path):
    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=1, n_embd=8))
    saved_checkpoint(tmp_path, 2, model)
    newest = saved_checkpoint(tmp_path, 5, model)
    (tmp_path / checkpoint.LATEST).write_bytes(b"step-0000\xff0002\n")
    assert checkpoint.latest(tmp_path) == newest == checkpoint.newest_intact(tmp_path)


@pytest.mark.parametrize("damage", ["deleted", "cut"])
def test_a_sharded_state_with_a_shard_missing_or_cut_is_one_line_naming_the_file(tmp_path, damage):
    """Unchecked (written before checksums, or its record deleted): torch raises a BaseException for it."""
    import warnings

    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "dcp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one process, no process group: what a test may do
        dcp.save({"model": {"w": torch.arange(64.0)}}, checkpoint_id=str(folder))
    (shard,) = folder.glob("*.distcp")
    if damage == "deleted":
        shard.unlink()
    else:
        shard.write_bytes(shard.read_bytes()[:16])
    with pytest.raises(ConfigError, match=rf"^checkpoint {folder}: its sharded state cannot be read \(\w+Error") as e:
        checkpoint.load_sharded(folder, {"model": {"w": torch.zeros(64)}})
    assert "\n" not in str(e.value)


def test_ctrl_c_while_a_sharded_state_loads_is_no_damage(tmp_path, monkeypatch):
    """torch wraps whatever stops a shard's read, Ctrl-C too, as that shard's failure."""
    import warnings

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader

    folder = tmp_path / "dcp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": {"w": torch.arange(64.0)}}, checkpoint_id=str(folder))

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(FileSystemReader, "read_data", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.load_sharded(folder, {"model": {"w": torch.zeros(64)}})


def test_a_checkpoint_whose_checksums_were_deleted_is_passed_over_where_an_earlier_one_has_them(tmp_path, caplog):
    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=1, n_embd=8))
    earlier = saved_checkpoint(tmp_path, 2, model)
    newest = saved_checkpoint(tmp_path, 5, model)
    (newest / checkpoint.CHECKSUMS).unlink()
    damage_in_place(newest / checkpoint.STATE_FILE)
    with caplog.at_level("WARNING"):
        assert checkpoint.newest_intact(tmp_path) == earlier
    assert (
        f"checkpoint {newest / checkpoint.CHECKSUMS}: missing (the run's earlier checkpoints have theirs)"
        in caplog.text
    )
    (earlier / checkpoint.CHECKSUMS).unlink()  # a run from before checksums: read as it was, and said so
    assert checkpoint.newest_intact(tmp_path) == newest
    caplog.clear()
    with caplog.at_level("WARNING"):
        checkpoint.load(earlier)
    assert caplog.messages == [
        f"checkpoint {earlier}: no checksums.json (saved before checksums were kept, or lost since): loaded unchecked"
    ]


class Foreign:  # a pickle of an object: a weights-only load does not build it
    pass


def test_a_file_torch_load_refuses_is_named_in_words_not_torchs_paragraph(tmp_path):
    folder = tmp_path / "step-00000001"
    folder.mkdir()
    torch.save({"model": Foreign(), "step": 1}, folder / checkpoint.STATE_FILE)
    with pytest.raises(ConfigError) as e:
        checkpoint.load(folder, verify_files=False)
    assert str(e.value) == (
        f"checkpoint {folder / checkpoint.STATE_FILE}: not a checkpoint of this template (it pickles "
        f"{__name__}.Foreign, an object a weights-only load does not build)"
    )
    (folder / checkpoint.STATE_FILE).write_text("step: 1\nmodel: weights\n")  # a text file
    with pytest.raises(ConfigError) as e:
        checkpoint.load(folder, verify_files=False)
    assert str(e.value).endswith("cannot be read, it is truncated or corrupt (not the zip archive torch.save writes)")


def test_the_latest_checkpoint_without_its_state_file_is_named_as_it_is_passed_over(tmp_path, caplog):
    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=1, n_embd=8))
    earlier = saved_checkpoint(tmp_path, 2, model)
    newest = saved_checkpoint(tmp_path, 5, model)
    (tmp_path / checkpoint.LATEST).write_text(newest.name)
    (newest / checkpoint.STATE_FILE).unlink()
    with caplog.at_level("WARNING"):
        assert checkpoint.newest_intact(tmp_path) == earlier
    assert f"checkpoint {newest}: its state.pt is missing; passing over it" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert checkpoint.latest(tmp_path) == earlier  # as the next save asks: said once, at the resume
    assert caplog.text == ""


def test_the_only_checkpoint_without_its_state_file_is_said_once(tmp_path, caplog):
    """sample.py and export.py: the one line that no checkpoint is there; a resume: a fresh start, said so."""
    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=1, n_embd=8))
    only = saved_checkpoint(tmp_path / "checkpoints", 5, model)
    (tmp_path / "checkpoints" / checkpoint.LATEST).write_text(only.name)
    (only / checkpoint.STATE_FILE).unlink()
    with caplog.at_level("WARNING"), pytest.raises(ConfigError, match=r"^checkpoint: .* holds no checkpoint"):
        checkpoint.resolve(tmp_path, key="checkpoint")
    assert caplog.text == ""
    with caplog.at_level("WARNING"):
        assert checkpoint.find_resume("auto", tmp_path) is None
    assert f"checkpoint {only}: its state.pt is missing, and no other is kept: starting afresh" in caplog.text


def test_weights_that_do_not_fit_the_model_are_refused_with_torchs_reason(tmp_path):
    folder = saved_checkpoint(tmp_path, 1, GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=1, n_embd=16)))
    other = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=1, n_embd=32))
    with pytest.raises(
        ConfigError, match=r"do not fit its model_config \(Error\(s\) in .* GPT: size mismatch for "
    ) as info:
        checkpoint.load_weights(folder, checkpoint.load(folder), other)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_a_damaged_checkpoint_with_none_before_it_stops_train_sample_and_export_in_one_line(
    tmp_path, tiny_train, data_cache
):
    run = tmp_path / "run"
    with pytest.raises(Stopped):
        tiny_train(run, ARGS + ["trainer.stop_at=5"])  # one checkpoint, step 5
    state = checkpoint.latest(run / "checkpoints") / checkpoint.STATE_FILE
    size = state.stat().st_size
    state.write_bytes(state.read_bytes()[: size // 2])  # truncated by a copy that did not finish
    saved = {p: p.read_bytes() for p in (run / "checkpoints").rglob("*") if p.is_file()}
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "WANDB_MODE": "offline"}
    commands = {
        "train.py": [*TINY, *ARGS, f"hydra.run.dir={run}"],
        "sample.py": [f"checkpoint={run}"],
        "export.py": [f"checkpoint={run}", f"out={tmp_path / 'exported'}"],
    }
    truncated = f"error: checkpoint {state}: damaged since it was saved (it holds {size_text(size // 2)}, "
    for script, args in commands.items():
        proc = subprocess.run(
            [sys.executable, script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 2, (script, proc.stderr[-2000:])
        assert proc.stderr.startswith(truncated) and proc.stderr.count("\n") == 1, (script, proc.stderr)
        assert "Traceback" not in proc.stdout
    assert {p: p.read_bytes() for p in (run / "checkpoints").rglob("*") if p.is_file()} == saved
    assert not (tmp_path / "exported").exists()


BLOW_UP = ["schedule.warmup_steps=0", "optim.lr=1e6", "trainer.grad_clip=0", "trainer.eval_every=0"]


def test_a_nonfinite_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, tiny_train):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"^update \d+: the loss .* is not finite") as err:
        tiny_train(run, BLOW_UP + ["trainer.max_steps=60", "trainer.ckpt_every=1", "trainer.keep_checkpoints=2"])
    bad_update = int(str(err.value).split()[1].rstrip(":"))
    last = checkpoint.latest(run / "checkpoints")
    assert checkpoint.load(last)["step"] == bad_update  # the state before the bad update, nothing after it
    assert max(train_records(run)) == bad_update - 1


def test_a_run_that_fails_midway_keeps_its_line_in_train_log_and_summary_json_until_a_resume_ends_well(
    tmp_path, data_cache
):
    """The console's one line stays with the run: in train.log and as summary.json's "error" (what a sweep's
    report shows), gone from summary.json once a later start of the run ends well."""
    run, args = tmp_path / "run", TINY + BLOW_UP + ["trainer.max_steps=30", "trainer.sample_tokens=0"]
    proc = run_train(args, run, data_cache, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    [line] = proc.stderr.splitlines()
    assert re.match(r"^error: update \d+: the loss .* is not finite", line), line
    assert re.search(
        r"\[ERROR\].* " + re.escape(line.removeprefix("error: ")) + "$", (run / "train.log").read_text(), re.M
    )
    failed = json.loads((run / "summary.json").read_text())
    assert (failed["status"], "error: " + failed["error"]) == ("failed", line)
    run_train(args + ["trainer.nonfinite=skip"], run, data_cache)  # the same run, resumed, skipping the bad batches
    ended = json.loads((run / "summary.json").read_text())
    assert ended["status"] == "ok" and "error" not in ended, ended


def test_a_run_that_skips_nonfinite_batches_writes_strict_json_and_plots_what_is_finite(tmp_path, tiny_train, caplog):
    with caplog.at_level("INFO"):
        run = tiny_train(
            tmp_path / "run", BLOW_UP + ["trainer.max_steps=40", "trainer.nonfinite=skip", "trainer.sample_tokens=0"]
        )
    assert "no validation loss was finite; " in caplog.text  # the end-of-run line
    assert " update(s) skipped as non-finite (trainer.nonfinite=skip)" in caplog.text

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    records = [json.loads(line, parse_constant=refuse) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 40 and None in losses  # every update logged; the skipped ones' loss is null
    assert isinstance(losses[0], float)  # the first update's loss was finite
    assert (run / "plots" / "loss.png").stat().st_size > 0


def test_a_nonfinite_update_takes_neither_an_optimizer_nor_a_schedule_step():
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
    assert sched.last_epoch == 0 and not opt.state
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) or torch.isnan(before[k]).any() for k in before)


def test_a_finished_runs_command_again_trains_nothing_and_says_so(tmp_path, tiny_train, caplog):
    run = tiny_train(tmp_path / "run", ["trainer.max_steps=4", "trainer.eval_every=0"])
    before = read_metrics(run)
    with caplog.at_level("INFO"):
        tiny_train(run, ["trainer.max_steps=4", "trainer.eval_every=0"])
    said = "the run has taken all 4 updates: only its final evaluation runs again (raise T to go on)"
    assert said in [r.getMessage() for r in caplog.records]
    assert [r for r in read_metrics(run) if "train/loss" in r] == [r for r in before if "train/loss" in r]
    segments = json.loads((run / "schedule.json").read_text())["segments"]
    assert [s["from_update"] for s in segments] == [0]  # a start that took no update is no schedule segment


def test_a_kill_between_the_two_renames_of_a_checkpoints_replacement_loses_nothing(tmp_path, tiny_train, caplog):
    """Its only checkpoint, set aside as .old-step-…-<pid> while a new copy replaced it: put back, not a new run."""
    run = tiny_train(tmp_path / "run", ["trainer.max_steps=4", "trainer.eval_every=0"])
    before = read_metrics(run)
    final = run / "checkpoints" / "step-00000004"
    gone = subprocess.Popen(["true"])  # the process that was replacing it, dead since
    gone.wait()
    final.rename(final.with_name(f".old-step-00000004-{gone.pid}"))
    with caplog.at_level("INFO"):
        tiny_train(run, ["trainer.max_steps=4", "trainer.eval_every=0"])
    said = [r.getMessage() for r in caplog.records]
    assert f"{final} was being replaced when its run stopped: the copy set aside is back in its place" in said
    assert "the run has taken all 4 updates: only its final evaluation runs again (raise T to go on)" in said
    assert [r for r in read_metrics(run) if "train/loss" in r] == [r for r in before if "train/loss" in r]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-00000004"]


def test_a_signal_during_a_periodic_save_stops_there_without_another_update(tmp_path, tiny_train, monkeypatch):
    """The checkpoint just written is the stop's: an update more (and an evaluation) would eat the grace period."""
    from training.build import Run

    save, sent = Run.save, []

    def save_and_signal(self, t):
        if t == 6 and not sent:
            sent.append(t)
            os.kill(os.getpid(), signal.SIGTERM)  # a preemption while the checkpoint is written
        return save(self, t)

    monkeypatch.setattr(Run, "save", save_and_signal)
    run = tmp_path / "run"
    with pytest.raises(Stopped) as stopped:
        tiny_train(run, [*ARGS, "trainer.ckpt_every=3"])
    assert stopped.value.updates == 6 and checkpoint.saved_steps(run / "checkpoints")[-1] == 6
