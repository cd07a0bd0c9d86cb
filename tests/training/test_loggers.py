"""The logger group's plug point: several sinks at once, a sink's state across a resume (W&B's run id, also from
checkpoints written before sinks had state), a failing sink that never stops training, and bad sink settings
refused in one line before any work."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import compose_config, read_metrics
from tests.training.fork_parts import SEEN
from tests.training.wandb_file import history, run_files, run_info
from training import checkpoint
from training.config import ConfigError, check_config
from training.signals import Stopped

ARGS = ["trainer.max_steps=6", "trainer.eval_every=3"]


def sinks(**nodes: str) -> list[str]:
    return [f"+logger.sinks.{name}._target_=tests.training.fork_parts.{cls}" for name, cls in nodes.items()]


def test_several_sinks_at_once_each_get_every_record(tmp_path, tiny_train, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    SEEN.clear()
    run = tiny_train(tmp_path / "run", [*ARGS, "logger=[wandb,csv]", *sinks(counting="Counting")])
    records = read_metrics(run)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + len(records)  # a header, then every record
    assert [run_info(f).run_id for f in run_files(run / "wandb")]  # W&B's offline run is there
    assert SEEN["counting"] == [
        {
            "start": 0,
            "state": {},
            "group": None,
            "status": "ok",
            "count": len(records),
            "params": SEEN["counting"][0]["params"],
        }
    ]
    assert SEEN["counting"][0]["params"] > 0


def test_a_sink_carries_its_state_across_a_resume_but_not_into_a_branch(tmp_path, tiny_train):
    SEEN.clear()
    run = tmp_path / "run"
    with pytest.raises(Stopped):
        tiny_train(run, [*ARGS, *sinks(counting="Counting"), "trainer.stop_at=4"])
    state = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    first = SEEN["counting"][0]["count"]
    assert state["sinks"] == {"counting": {"count": first}} and first > 0
    tiny_train(run, [*ARGS, *sinks(counting="Counting")])
    assert SEEN["counting"][1]["state"] == {"count": first} and SEEN["counting"][1]["start"] == 4
    branch = tmp_path / "branch"
    tiny_train(branch, [*ARGS, *sinks(counting="Counting"), f"trainer.resume={run}/checkpoints/step-00000004"])
    assert SEEN["counting"][2]["state"] == {}  # a new run directory: a new run in every tracker


def test_a_failing_sink_is_named_once_and_dropped_and_training_goes_on(tmp_path, tiny_train, caplog):
    SEEN.clear()
    with caplog.at_level("WARNING", logger="train"):
        run = tiny_train(tmp_path / "run", [*ARGS, *sinks(failing="Failing")])
    warnings = [r.getMessage() for r in caplog.records if "failing" in r.getMessage()]
    assert warnings == [
        "logger failing failed at update 1 (ConnectionError: the server went away); training goes "
        "on without it, metrics.jsonl stays complete"
    ]
    assert SEEN["failing"] == 3  # never called again
    assert SEEN["failing finished"] == "ok"  # but finished at the end: a tracker's run is closed
    assert sorted(r["step"] for r in read_metrics(run) if "train/loss" in r) == list(range(6))
    assert json.loads((run / "summary.json").read_text())["status"] == "ok"


def test_a_sink_that_edits_its_metrics_leaves_the_other_sinks_and_the_summary_as_they_were(tmp_path, tiny_train):
    run = tiny_train(tmp_path / "run", [*ARGS, "logger=csv", *sinks(renaming="Renaming")])
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/loss" in header and "train.loss" not in header
    assert "best/val_loss" in json.loads((run / "summary.json").read_text())


@pytest.mark.parametrize(
    "part, says",
    [
        ("Misnamed", r"Misnamed overrides none of Sink's methods \(log, log_sample, state, finish, rewind\): it gets"),
        ("NoLog", r"NoLog has no log\(step, metrics\) method \(training.loggers.Sink's protocol\)$"),
        ("ShortSample", r"ShortSample.log_sample must take \(step, prompt, text\), as Sink.log_sample does$"),
    ],
)
def test_a_sink_off_the_protocol_is_one_line_as_the_run_starts(tmp_path, tiny_train, part, says):
    with pytest.raises(ConfigError, match="^logger.sinks.mine: tests.training.fork_parts." + says):
        tiny_train(tmp_path / "run", [*ARGS, *sinks(mine=part)])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_sink_that_fails_to_start_is_named_and_dropped_and_training_goes_on(tmp_path, tiny_train, caplog):
    with caplog.at_level("WARNING", logger="train"):
        run = tiny_train(tmp_path / "run", [*ARGS, *sinks(failing="Failing"), "+logger.sinks.failing.at_start=true"])
    warnings = [r.getMessage() for r in caplog.records if "failing" in r.getMessage()]
    assert warnings == [
        "logger failing failed to start (ConnectionError: no server); training goes on without it, metrics.jsonl "
        "stays complete"
    ]
    assert sorted(r["step"] for r in read_metrics(run) if "train/loss" in r) == list(range(6))


@pytest.mark.parametrize("unplain, why", [(False, "RuntimeError: no state to give"), (True, "TypeError: state() must")])
def test_a_sink_whose_state_fails_or_is_not_plain_is_dropped_and_the_checkpoint_stays_loadable(
    tmp_path, tiny_train, caplog, unplain, why
):
    SEEN.clear()
    run = tmp_path / "run"
    with caplog.at_level("WARNING", logger="train"), pytest.raises(Stopped):
        bad = [*sinks(bad="BadState"), f"+logger.sinks.bad.unplain={unplain}"]
        tiny_train(run, [*ARGS, *bad, *sinks(counting="Counting"), "trainer.stop_at=4"])
    warnings = [r.getMessage() for r in caplog.records if "logger bad" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(f"logger bad failed giving its state to the checkpoint ({why}")
    state = checkpoint.load(checkpoint.latest(run / "checkpoints"))  # torch.load with weights_only
    assert list(state["sinks"]) == ["counting"]
    tiny_train(run, [*ARGS, *sinks(counting="Counting")])
    assert max(r["step"] for r in read_metrics(run)) == 6


def test_a_wandb_run_resumes_from_a_checkpoint_written_before_sinks_had_state(tmp_path, tiny_train, monkeypatch):
    """Such a checkpoint kept W&B's run id as ``wandb_run_id`` beside the training state."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tmp_path / "run"
    with pytest.raises(Stopped):
        tiny_train(run, [*ARGS, "logger=wandb", "trainer.stop_at=3"])
    latest = checkpoint.latest(run / "checkpoints")
    state = checkpoint.load(latest)
    old_layout = {k: v for k, v in state.items() if k not in ("sinks", "seconds")}
    old_layout["wandb_run_id"] = state["sinks"]["wandb"]["run_id"]
    torch.save(old_layout, latest / checkpoint.STATE_FILE)
    (latest / checkpoint.CHECKSUMS).unlink()  # nor did such a checkpoint record checksums
    tiny_train(run, [*ARGS, "logger=wandb"])
    files = run_files(run / "wandb")
    assert len(files) == 2 and {run_info(f).run_id for f in files} == {state["sinks"]["wandb"]["run_id"]}


def test_a_wandb_run_killed_past_its_checkpoint_has_every_step_once_resumed(tmp_path, tiny_train, monkeypatch):
    """A SIGKILL can leave metrics.jsonl ahead of what W&B's own file received (its service writes later): the
    resumed run logs from the checkpoint's update, and the two offline files together hold every step."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tmp_path / "run"
    with pytest.raises(Stopped):
        tiny_train(run, [*ARGS, "logger=wandb", "trainer.stop_at=3"])
    rows = read_metrics(run)
    ahead = [{**rows[-1], "step": s} for s in (3, 4)]  # rows the killed process wrote that W&B never got
    with open(run / "metrics.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in ahead)
    tiny_train(run, [*ARGS, "logger=wandb"])
    steps = [sorted({row["step"] for row in history(f) if "train/loss" in row}) for f in run_files(run / "wandb")]
    assert len(steps) == 2 and set(steps[0]) | set(steps[1]) == set(range(6)), steps


def test_the_sinks_are_closed_failed_when_the_run_fails_before_its_first_update(tmp_path, tiny_train, monkeypatch):
    """A full disk as the run writes its schedule.json, once the trackers' runs started: they end failed."""
    import errno

    from data.atomic import DiskFull
    from training import build

    write = build.replace_file

    def full(path, data):
        if path.name == "schedule.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write(path, data)

    monkeypatch.setattr(build, "replace_file", full)
    with pytest.raises(DiskFull):
        tiny_train(tmp_path / "run", [*ARGS, *sinks(early="Counting"), "+logger.sinks.early.label=early"])
    assert SEEN["early"][-1]["status"] == "failed"


def test_a_signal_while_metrics_jsonl_opens_ends_the_runs_begun_as_preempted(tmp_path, tiny_train, monkeypatch):
    from training import build
    from training.signals import Interrupted, Stopped

    def interrupted(*args, **kwargs):  # SIGTERM, as the run starts (StopAtOnce raises it in the handler)
        raise Interrupted("SIGTERM")

    monkeypatch.setattr(build, "JsonlSink", interrupted)
    with pytest.raises(Stopped):
        tiny_train(tmp_path / "run", [*ARGS, *sinks(early="Counting"), "+logger.sinks.early.label=signalled"])
    assert SEEN["signalled"][-1]["status"] == "preempted"


def test_a_sink_refusing_its_settings_at_its_start_ends_the_runs_begun_before_it(tmp_path, tiny_train):
    from training.config import ConfigError

    args = [*ARGS, *sinks(early="Counting", refusing="RefusingAtStart"), "+logger.sinks.early.label=before"]
    with pytest.raises(ConfigError, match="^logger.sinks.refusing: no such store$"):
        tiny_train(tmp_path / "run", args)
    assert SEEN["before"][-1]["status"] == "failed"
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing of the run's own: train.py removes the folder


def test_wandb_is_sent_no_step_below_its_latest_after_a_rollback(tmp_path, monkeypatch):
    """trainer.on_spike=rollback takes updates 3–5 again: W&B keeps its first values for them (it would drop the
    new ones with a warning on the console each time), and gets every later step."""
    from omegaconf import OmegaConf

    from training.loggers import RunInfo
    from training.wandb_logger import WandbSink

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    settings = OmegaConf.to_container(compose_config(["logger=wandb"]).logger, resolve=True)
    sink = WandbSink(RunInfo(tmp_path, {}, settings, total_steps=10))
    sent, log = [], sink.run.log
    monkeypatch.setattr(sink.run, "log", lambda data, step: (sent.append(step), log(data, step=step)))
    for t in [*range(6), 3, 4, 5]:  # the rollback's updates again
        sink.log(t, {"train/loss": float(t)})
    sink.log(6, {"val/loss": 1.0})  # an evaluation and an update at the same step
    sink.log(6, {"train/loss": 6.0})
    sink.finish("ok", {})
    assert sent == [0, 1, 2, 3, 4, 5, 6, 6]


def test_metrics_csv_keeps_its_rows_when_a_new_column_is_written_and_that_fails(tmp_path, monkeypatch):
    """A metric first logged mid-run widens the header: the file is written again, and until the new one is
    whole the old one stays (a crash or a full disk in between lost every earlier row)."""
    import csv

    from training.loggers import CsvRecord, read_csv

    record = CsvRecord(tmp_path / "metrics.csv")
    for t in range(3):
        record.log(t, {"train/loss": float(t)})
    before = read_csv(tmp_path / "metrics.csv")

    def fails(self, rows):
        raise RuntimeError("the process died here")

    monkeypatch.setattr(csv.DictWriter, "writerows", fails)
    with pytest.raises(RuntimeError):
        record.log(3, {"train/loss": 3.0, "eval/fork/acc": 0.5})
    assert read_csv(tmp_path / "metrics.csv") == before and len(before[0]) == 3
    monkeypatch.undo()
    record = CsvRecord(tmp_path / "metrics.csv", resume_step=3)  # the resumed run goes on from it
    record.log(3, {"train/loss": 3.0, "eval/fork/acc": 0.5})
    rows, names = read_csv(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == ["0", "1", "2", "3"] and names[-1] == "eval/fork/acc"


@pytest.mark.parametrize("torn", ["1", "1,", "2,2.5", ",", "x,1.0\r\n"])
def test_metrics_csv_drops_a_row_cut_short_on_resume(tmp_path, torn):
    """A kill mid-write leaves a last row without its line end (or a step that is no number): on resume it goes,
    as metrics.jsonl's torn line does, so each update appears once."""
    from training.loggers import CsvRecord, read_csv

    record = CsvRecord(tmp_path / "metrics.csv")
    for t in range(3):
        record.log(t, {"train/loss": float(t)})
    record.close()
    with open(tmp_path / "metrics.csv", "a", newline="") as fh:
        fh.write(torn)
    record = CsvRecord(tmp_path / "metrics.csv", resume_step=3)
    record.log(3, {"train/loss": 3.0})
    record.close()
    rows, _ = read_csv(tmp_path / "metrics.csv")
    assert [(r["step"], r["train/loss"]) for r in rows] == [(str(t), str(float(t))) for t in range(4)]


def test_an_evaluation_knows_the_run_folder_and_the_update_it_runs_at_across_a_resume(tmp_path, tiny_train):
    run = tmp_path / "run"
    writes = ["+eval.evals.fork._target_=tests.training.fork_parts.WritesEachStep"]
    with pytest.raises(Stopped):
        tiny_train(run, [*ARGS, *writes, "trainer.stop_at=4"])
    assert sorted(p.name for p in (run / "fork").iterdir()) == ["0.txt", "3.txt"]
    tiny_train(run, [*ARGS, *writes])
    assert sorted(p.name for p in (run / "fork").iterdir()) == ["0.txt", "3.txt", "6.txt"]
    assert (run / "fork" / "6.txt").read_text() == "fork\n"
    logged = {r["step"]: r["val/fork_step"] for r in read_metrics(run) if "val/fork_step" in r}
    assert logged == {0: 0.0, 3: 3.0, 6: 6.0}
    SEEN.clear()
    with pytest.raises(Stopped):  # a time budget times the evaluations first: said to them
        tiny_train(tmp_path / "timed", ["trainer.max_time=30", "trainer.stop_at=1", *writes])
    assert SEEN["writes"] == [(0, True), (0, True), (0, False)]
    assert sorted(p.name for p in (tmp_path / "timed" / "fork").iterdir()) == ["0.txt"]


FORK_EVAL = ["+eval.evals.fork._target_=tests.training.fork_parts.Evaluation"]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["+eval.evals.fork.metric=text"], r"^eval.evals.fork: metric must be number, tensor or list, got 'text'$"),
        (["+eval.evals.fork.metric=unchecked"], r"^eval.evals.fork: KeyError: 'number'$"),
        (
            ["+eval.evals.fork.file=/nonexistent/items.jsonl"],
            r"^eval.evals.fork: tests.training.fork_parts.Evaluation refused its settings \(FileNotFoundError: .*"
            r"/nonexistent/items.jsonl",
        ),
        (["+eval.evals.fork.file=/data/items.bad"], r"^/data/items.bad:3: not an item$"),  # its own line, as is
        (  # a bug reads as a refusal: the line it was raised at tells them apart
            ["+eval.evals.fork.buggy=true"],
            r"^eval.evals.fork: .*Evaluation refused its settings \(TypeError: .*; raised at fork_parts.py:\d+\)$",
        ),
        (
            ["+eval.evals.fork.metric=tensor"],
            r"^eval.evals.fork: its metric val/fork is a Tensor, not a number \(its .item\(\)\)$",
        ),
        (["+eval.evals.fork.metric=list"], r"^eval.evals.fork returned a list, not a dict of metrics$"),
    ],
)
def test_a_forks_evaluation_that_fails_its_contract_is_one_line(tmp_path, tiny_train, overrides, message):
    from training.config import USER_ERRORS

    with pytest.raises(USER_ERRORS, match=message) as info:
        tiny_train(tmp_path / "run", [*FORK_EVAL, *overrides, "trainer.max_steps=2"])
    assert "\n" not in str(info.value)
    tiny_train(tmp_path / "ok", [*FORK_EVAL, "trainer.max_steps=2"])  # as it should be: its metric logged
    assert [r["val/fork"] for r in read_metrics(tmp_path / "ok") if "val/fork" in r] == [0.5, 0.5]


def test_a_forks_evaluation_may_return_numpy_scalars_logged_as_numbers(tmp_path, tiny_train):
    tiny_train(tmp_path / "run", [*FORK_EVAL, "+eval.evals.fork.metric=numpy", "trainer.max_steps=2"])
    assert [r["val/fork"] for r in read_metrics(tmp_path / "run") if "val/fork" in r] == [0.5, 0.5]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["+logger.sinks.mine._target_=nowhere.Sink"],
            r"^logger.sinks.mine._target_: 'nowhere.Sink' cannot be imported \(.*nowhere",
        ),
        (
            ["+logger.sinks.mine._target_=tests.training.fork_parts.Failing", "+logger.sinks.mine.path=x"],
            r"^logger.sinks.mine: tests.training.fork_parts.Failing does not take these settings \(.*path",
        ),
        (
            ["+eval.evals.mine._target_=tests.training.fork_parts.NOPE"],
            r"^eval.evals.mine._target_: 'tests.training.fork_parts.NOPE' cannot be imported "
            r"\(tests.training.fork_parts has no NOPE\)$",
        ),
        (  # the file was found: the class name is what is wrong
            ["+logger.sinks.mine._target_=tests.training.fork_parts.Countng"],
            r"\(tests.training.fork_parts has no Countng; did you mean tests.training.fork_parts.Counting\?\)$",
        ),
        (["optim._target_=torch.optim.NotAnOptimizer"], r"^optim._target_: 'torch.optim.NotAnOptimizer' cannot be"),
        (["logger.mode=sometimes"], r"^logger.mode must be one of auto, online, offline, disabled, got 'sometimes'$"),
        (["logger=mlflow", "logger.tags=baseline"], r"^logger.tags must be a list of names .*, got 'baseline'$"),
        (["logger=wandb", "logger.project=null"], r"^logger.project must be a name .*, got None$"),
        (["logger=mlflow", "logger.run_name=123"], r"^logger.run_name must be null or a string; .*=\"123\"', got 123$"),
        (["logger=mlflow", "logger.group=[a]"], r"^logger.group must be null or a string, got \['a'\]$"),
        (
            ["logger=wandb", "logger.project=2024"],
            r"^logger.project must be a name \(.*'logger.project=\"2024\"'\), got",
        ),
        (
            ["logger=tensorboard", "logger.sinks.tensorboard.subdir=../elsewhere"],
            r"^logger.sinks.tensorboard.subdir must be a folder name inside the run directory .*'../elsewhere'$",
        ),
        (["logger=tensorboard", "logger.sinks.tensorboard.subdir=/tmp/tb"], r"subdir must be a folder name .*/tmp/tb"),
        (["logger=tensorboard", "logger.sinks.tensorboard.subdir=null"], r"subdir must be a folder name .*, got None$"),
        (  # a folder where the run writes its metrics: a traceback after the start
            ["logger=tensorboard", "logger.sinks.tensorboard.subdir=metrics.jsonl"],
            r"subdir must be a folder of its own, not one of the run's \(metrics.jsonl\), got 'metrics.jsonl'$",
        ),
        (
            ["logger=tensorboard", "logger.sinks.tensorboard.subdir=checkpoints/tb"],
            r"not one of the run's \(checkpoints\)",
        ),
    ],
)
def test_what_a_plug_point_names_is_checked_in_one_line_before_any_work(overrides, message, caplog):
    with caplog.at_level("WARNING"), pytest.raises(ConfigError, match=message) as err:
        check_config(compose_config(overrides))
    assert "\n" not in str(err.value)
    assert not [r for r in caplog.records if r.name.startswith("hydra")]  # the one line alone: no log of Hydra's


def test_without_a_terminal_every_evaluation_gets_a_line_with_or_without_a_validation_loss(caplog):
    from training.loggers import ProgressSink

    progress = ProgressSink(105, every=10, bar=False)
    with caplog.at_level("INFO", logger="train"):
        for step in range(100, 105):
            progress.log(step, {"train/loss": 2.0, "train/lr": 1e-3})
        progress.log(105, {"eval/next_line/acc": 0.5, "eval/next_line/acc_norm": 0.25})
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and "105" in lines[-1] and "0.5" in lines[-1]  # updates 100 and 104, then the evaluation


def test_going_back_to_a_checkpoint_restores_the_summary_it_saved():
    from training.loggers import Metrics

    metrics = Metrics([])
    metrics.log(0, {"val/loss": 2.0, "val/bpb": 1.0})
    saved = dict(metrics.summary)  # what the checkpoint at update 2 holds
    metrics.log(4, {"val/loss": 1.0, "val/bpb": 0.5})
    metrics.rewind(2, saved)
    metrics.log(4, {"val/loss": 2.5, "val/bpb": 1.2})  # update 4 again, worse this time
    assert metrics.summary == {"best/val_loss": 2.0, "best/val_bpb": 1.0, "best/step": 0}


def test_a_line_torn_by_a_kill_is_dropped_when_metrics_jsonl_resumes(tmp_path):
    from training.loggers import JsonlSink

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "train/loss": 3.0}) + "\n" for s in range(3)) + '{"step": 3, "tr')
    sink = JsonlSink(path, resume_step=2)
    sink.log(2, {"train/loss": 2.5})
    sink.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 1, 2]  # every line JSON


def test_the_console_line_of_an_evaluation_shows_what_a_forks_evaluation_measured_too():
    from training.loggers import format_line

    built_in = {"val/loss": 2.5, "val/bpb": 1.1, "eval/next_line/acc": 0.3, "eval/next_line/acc_norm": 0.34}
    assert format_line(4, 10, built_in) == "step  4/10 | val loss 2.5000 | bpb 1.1000 | next_line acc 0.300"
    assert format_line(4, 10, {"val/accuracy": 0.625}) == "step  4/10 | val/accuracy 0.625"
    mixture = {
        "val/loss": 2.5,
        "val/bpb": 1.1,
        "val/docs/loss": 2.0,
        "val/docs/bpb": 0.9,
    }  # a source's loss: files only
    assert format_line(4, 10, mixture) == "step  4/10 | val loss 2.5000 | bpb 1.1000 | docs bpb 0.9000"


def test_a_fork_module_that_fails_its_own_import_is_named_by_that_failure(tmp_path, monkeypatch):
    from training.components import find

    (tmp_path / "forkpkg").mkdir()
    (tmp_path / "forkpkg" / "__init__.py").write_text("")
    (tmp_path / "forkpkg" / "broken.py").write_text("import no_such_dependency_here\n\nclass Sink: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"cannot be imported \(No module named 'no_such_dependency_here'\)$"):
        find({"_target_": "forkpkg.broken.Sink"}, "logger.sinks.mine")  # not "forkpkg has no broken"


def test_a_sink_whose_finish_fails_is_finished_once_and_one_with_methods_of_its_own_is_a_sink():
    from training.loggers import Metrics, Sink, check_sink

    class FailsAtFinish(Sink):
        calls = 0

        def finish(self, status, summary):
            FailsAtFinish.calls += 1
            raise ConnectionError("the server went away")

    Metrics([], {"bad": FailsAtFinish()}).close("ok")
    assert FailsAtFinish.calls == 1

    class SetInInit(Sink):  # its log set as the instance is made: it gets every record
        def __init__(self):
            self.log = lambda step, metrics: None

    check_sink(SetInInit(), "logger.sinks.mine")
