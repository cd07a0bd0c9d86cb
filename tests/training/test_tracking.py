"""TensorBoard and MLflow, read back with their own readers: every step once across a crash and a resume, the
config, the status, sweeps grouped, secrets redacted, a tracking server that never answers or dies mid-run, and a
missing package refused in one line before anything is written."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, read_metrics, run_train
from tests.training.fork_parts import SEEN, Crash
from training.config import ConfigError, check_config
from training.signals import Stopped

pytest.importorskip("tensorboard", reason="the tensorboard extra (the dev extra installs it)")
pytest.importorskip("mlflow", reason="the mlflow extra (the dev extra installs it)")

from mlflow import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

T = 10
ARGS = [f"trainer.max_steps={T}", "trainer.eval_every=5", "trainer.ckpt_every=4"]
CRASH = ["+logger.sinks.crash._target_=tests.training.fork_parts.CrashAt", "+logger.sinks.crash.step=6"]
SECRET = "trackerSECRETvalue98765"


def by_step(run_dir: Path, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in read_metrics(run_dir) if key in r}


def crash_then_resume(tiny_train, run_dir: Path, args: list[str]) -> None:
    """A run that crashes after logging update 6 (its last checkpoint at update 4), then the same command again:
    updates 4-6 are logged twice by the two processes."""
    with pytest.raises(Crash):
        tiny_train(run_dir, [*ARGS, *args, *CRASH])
    assert max(by_step(run_dir, "train/loss")) == 6
    tiny_train(run_dir, [*ARGS, *args])


def scalars(log_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_tensorboard_holds_every_step_once_across_a_crash_and_a_resume_with_the_config(tmp_path, tiny_train):
    run = tmp_path / "run"
    crash_then_resume(tiny_train, run, ["logger=tensorboard"])
    events = scalars(run / "tensorboard")
    for key in ("train/loss", "train/lr", "val/loss", "val/bpb", "tokens"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        expected = by_step(run, key)
        assert [s for s, _ in logged] == sorted(expected), key  # once each, the crashed process's 4-6 purged
        assert all(v == pytest.approx(expected[s], rel=1e-6) for s, v in logged), key
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one directory, both processes
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "max_steps: 10" in config and "n_embd: 32" in config
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    ).session_start_info
    assert start.hparams["trainer.max_steps"].number_value == T and start.hparams["model.name"].string_value == "nano"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        events.SummaryMetadata("_hparams_/experiment").plugin_data.content
    ).experiment
    assert sorted(m.name.tag for m in experiment.metric_infos) == ["val/bpb", "val/loss"]


def test_tensorboard_shows_a_run_started_again_from_scratch_once_and_a_branch_with_its_config(tmp_path):
    """Started again where one died before its first checkpoint (update 0 again, the same folder), and a branch
    (a resume into a new run directory, from update 5)."""
    from training.loggers import RunInfo
    from training.tensorboard_logger import TensorBoardSink

    for base in (10.0, 20.0):
        sink = TensorBoardSink(RunInfo(tmp_path / "again", {"a": base}, {}, 10, start=0))
        for t in range(3):
            sink.log(t, {"train/loss": base + t})
        sink.finish("failed", {})
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator as AsServed

    events = AsServed(str(tmp_path / "again" / "tensorboard"), size_guidance={"tensors": 0})  # as the UI reads it
    events.Reload()
    assert [(e.step, e.tensor_proto.float_val[0]) for e in events.Tensors("train/loss")] == [(0, 20), (1, 21), (2, 22)]
    [config] = events.Tensors("config/text_summary")
    assert "a: 20.0" in config.tensor_proto.string_val[0].decode()
    branch = TensorBoardSink(RunInfo(tmp_path / "branch", {"a": 1}, {}, 10, start=5))
    branch.log(5, {"train/loss": 1.0})
    branch.finish("ok", {})
    [config] = scalars(tmp_path / "branch" / "tensorboard").Tensors("config/text_summary")
    assert "a: 1" in config.tensor_proto.string_val[0].decode()


def mlflow_run(uri: str, project: str = "hydra-gpt-template"):
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(project).experiment_id])
    return client, runs


def assert_every_step_once(client: MlflowClient, run_id: str, run_dir: Path) -> None:
    for key in ("train/loss", "train/lr", "val/loss"):
        history = client.get_metric_history(run_id, key)
        expected = by_step(run_dir, key)
        assert sorted(m.step for m in history) == sorted(expected), key
        assert all(m.value == pytest.approx(expected[m.step], rel=1e-6) for m in history), key


def test_mlflow_continues_its_run_across_a_crash_and_a_resume_with_params_tags_and_status(
    tmp_path, tiny_train, monkeypatch
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # wins over logger.tracking_uri
    run = tmp_path / "run"
    args = ["logger=mlflow", "logger.tracking_uri=http://unused.invalid", "logger.tags=[baseline]"]
    with pytest.raises(Crash):
        tiny_train(run, [*ARGS, *args, *CRASH])
    client, runs = mlflow_run(uri)
    assert [r.info.status for r in runs] == ["FAILED"]
    with pytest.raises(Stopped):
        tiny_train(run, [*ARGS, *args, "trainer.stop_at=8"])
    assert client.get_run(runs[0].info.run_id).info.status == "KILLED"  # preempted: a resume continues it
    tiny_train(run, [*ARGS, *args])
    client, runs = mlflow_run(uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert_every_step_once(client, runs[0].info.run_id, run)
    params, tags = runs[0].data.params, runs[0].data.tags
    assert params["trainer.max_steps"] == str(T) and params["model.n_embd"] == "32"
    assert params["optim.betas"] == "[0.9, 0.98]"
    assert tags["baseline"] == "true" and tags["mlflow.source.name"] == "train.py"
    assert len(tags.get("mlflow.source.git.commit", "0" * 40)) == 40


def test_a_new_mlflow_store_is_made_without_mlflows_own_lines(tmp_path, tiny_train, capfd):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tiny_train(tmp_path / "run", ["trainer.max_steps=2", "logger=mlflow", f"logger.tracking_uri={uri}"])
    assert mlflow_run(uri)[1]  # the store was made and holds the run
    out, err = capfd.readouterr()
    assert "mlflow.store" not in out + err and "database tables" not in out + err


def test_mlflow_keeps_each_steps_first_value_across_a_rollback_and_a_resume(tmp_path):
    from training.loggers import RunInfo
    from training.mlflow_logger import MlflowSink

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    info = RunInfo(tmp_path, {}, {"project": "p", "tracking_uri": uri, "init_timeout": 10}, total_steps=T)
    sink = MlflowSink(info)
    for t in range(6):
        sink.log(t, {"train/loss": float(t)})
    for t in range(3, 6):  # trainer.on_spike=rollback went back to update 3
        sink.log(t, {"train/loss": 100.0 + t})
    sink.log(6, {"val/loss": 1.5})  # the evaluation before update 6, then the process died
    state = sink.state()
    sink.finish("failed", {})
    resumed = MlflowSink(RunInfo(tmp_path, {}, info.settings, total_steps=T, start=4, state=state))
    for t in (4, 5):
        resumed.log(t, {"train/loss": 200.0 + t})
    resumed.log(6, {"val/loss": 2.5})
    resumed.log(6, {"train/loss": 206.0})
    resumed.finish("ok", {})
    client = MlflowClient(tracking_uri=uri)
    points = {
        k: sorted((m.step, m.value) for m in client.get_metric_history(state["run_id"], k))
        for k in ("train/loss", "val/loss")
    }
    assert points == {"train/loss": [(t, float(t)) for t in range(6)] + [(6, 206.0)], "val/loss": [(6, 1.5)]}


def test_a_resumed_mlflow_run_gets_the_points_a_killed_process_never_sent(tmp_path):
    """metrics.jsonl holds updates 0–7 (written as they happened); MLflow got 0–3 before the process was killed
    (its queue lost): the resumed run sends 4–7 from metrics.jsonl, then goes on."""
    import json

    from training.loggers import RunInfo
    from training.mlflow_logger import MlflowSink

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    info = RunInfo(tmp_path, {}, {"project": "p", "tracking_uri": uri, "init_timeout": 10}, total_steps=T)
    sink = MlflowSink(info)
    for t in range(4):
        sink.log(t, {"train/loss": float(t)})
    state = sink.state()
    sink.finish("failed", {})
    records = [{"step": t, "train/loss": float(t)} for t in range(8)] + [{"step": 8, "val/loss": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    resumed = MlflowSink(RunInfo(tmp_path, {}, info.settings, total_steps=T, start=8, state=state))
    resumed.log(8, {"train/loss": 8.0})
    resumed.finish("ok", {})
    history = MlflowClient(tracking_uri=uri).get_metric_history(state["run_id"], "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(t, float(t)) for t in range(9)]
    assert MlflowClient(tracking_uri=uri).get_metric_history(state["run_id"], "val/loss") == []  # from step 8 on


def test_mlflow_sends_the_records_queued_behind_each_other_in_one_call(tmp_path):
    """A call per update falls behind a fast run (a local store takes milliseconds a call): the records that queue
    up while one call runs go in the next, up to MLflow's 1000 metrics a call, in order, each point once."""
    import threading

    from training.loggers import RunInfo
    from training.mlflow_logger import MlflowSink

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sink = MlflowSink(RunInfo(tmp_path, {}, {"project": "p", "tracking_uri": uri, "init_timeout": 10}, total_steps=T))
    send, busy, calls = sink.client.log_batch, threading.Event(), []

    def slow_store(run_id, metrics=(), **kwargs):  # the first call holds the worker until every record is queued
        calls.append(len(metrics))
        busy.wait(10)
        return send(run_id, metrics=metrics, **kwargs)

    sink.client.log_batch = slow_store
    records = 1200
    for t in range(records):
        sink.log(t, {"train/loss": float(t), "train/lr": 1e-3})
    busy.set()
    sink.finish("ok", {})
    assert sum(calls) == 2 * records and all(n <= 1000 for n in calls)
    assert len(calls) <= 4  # 2400 metrics in calls of ≤ 1000 (whole records), not 1200 calls
    history = MlflowClient(tracking_uri=uri).get_metric_history(sink.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(t, float(t)) for t in range(records)]


def test_mlflow_logs_the_summary_at_the_last_update_adding_no_point_to_a_series(tmp_path):
    """The summary's counters (train/rollbacks) are series the run logs too: their history stays as logged. The
    best/* of a resumed run's end is the run's latest value."""
    from training.loggers import RunInfo
    from training.mlflow_logger import MlflowSink

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    info = RunInfo(tmp_path, {}, {"project": "p", "tracking_uri": uri, "init_timeout": 10}, total_steps=T)
    sink = MlflowSink(info)
    rollbacks = [0, 0, 1, 1, 1]
    for t, n in enumerate(rollbacks):
        sink.log(t, {"train/loss": 1.0, "train/rollbacks": n})
    sink.log(5, {"val/loss": 2.0})  # an evaluation after the last update: the highest step logged
    state = sink.state()
    sink.finish("preempted", {"train/rollbacks": 1, "best/val_loss": 2.0})
    resumed = MlflowSink(RunInfo(tmp_path, {}, info.settings, total_steps=T, start=5, state=state))
    resumed.log(5, {"train/loss": 1.0, "train/rollbacks": 1})
    resumed.log(6, {"val/loss": 1.5})
    resumed.finish("ok", {"train/rollbacks": 1, "best/val_loss": 1.5})
    client = MlflowClient(tracking_uri=uri)
    history = sorted((m.step, m.value) for m in client.get_metric_history(state["run_id"], "train/rollbacks"))
    assert history == [(t, float(n)) for t, n in enumerate([*rollbacks, 1])]
    assert client.get_run(state["run_id"]).data.metrics["best/val_loss"] == 1.5


def test_a_metric_name_mlflow_refuses_is_logged_under_one_it_takes_and_the_sink_goes_on(tmp_path, caplog):
    """A fork's evaluation names its own metrics: one with an @ made MLflow refuse the call and the sink stop."""
    from training.loggers import RunInfo
    from training.mlflow_logger import MlflowSink

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sink = MlflowSink(RunInfo(tmp_path, {}, {"project": "p", "tracking_uri": uri, "init_timeout": 10}, total_steps=T))
    with caplog.at_level("WARNING", logger="train"):
        for t in range(3):
            sink.log(t, {"train/loss": 1.0 + t, "eval/code/pass@1": 0.5})
        sink.finish("ok", {})
    client = MlflowClient(tracking_uri=uri)
    assert [m.step for m in client.get_metric_history(sink.run_id, "train/loss")] == [0, 1, 2]
    assert [m.step for m in client.get_metric_history(sink.run_id, "eval/code/pass_1")] == [0, 1, 2]
    assert client.get_run(sink.run_id).info.status == "FINISHED"
    assert [r.getMessage() for r in caplog.records if r.name == "train"] == [
        "MLflow: the metric 'eval/code/pass@1' is logged as 'eval/code/pass_1' (MLflow refuses its name)"
    ]


def test_a_sink_that_failed_mid_run_still_ends_its_run_with_the_runs_status(tmp_path):
    from training.loggers import RunInfo
    from training.mlflow_logger import MlflowSink

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sink = MlflowSink(RunInfo(tmp_path, {}, {"project": "p", "tracking_uri": uri, "init_timeout": 10}, total_steps=T))
    send, failures = sink.client.log_batch, []

    def once_refused(*args, **kwargs):  # the server went away for a call, and came back
        if not failures:
            failures.append(1)
            raise ConnectionError("the server went away")
        return send(*args, **kwargs)

    sink.client.log_batch = once_refused
    sink.log(0, {"train/loss": 1.0})
    sink.finish("preempted", {})
    assert MlflowClient(tracking_uri=uri).get_run(sink.run_id).info.status == "KILLED"  # not left RUNNING


def test_a_local_store_another_process_holds_locked_falls_back_as_a_silent_server_does(tmp_path, tiny_train, caplog):
    """A sweep's jobs starting at once on one SQLite file: one finding it locked goes on in its own store."""
    import sqlite3

    db = tmp_path / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # the store made
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level("WARNING", logger="train"):
            run = tiny_train(
                tmp_path / "run", ["trainer.max_steps=2", "logger=mlflow", f"logger.tracking_uri=sqlite:///{db}"]
            )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "database is locked" in caplog.text and "logging to" in caplog.text
    assert (run / "mlflow" / "fallback.db").is_file()


def test_mlflow_resumed_against_a_store_without_its_run_starts_a_new_one_there_and_says_so(tmp_path, caplog):
    """A relative tracking URI (the default, ``sqlite:///mlflow.db``) names another store when the resume runs
    from another directory: the resumed run's metrics still reach MLflow."""
    from training.loggers import RunInfo
    from training.mlflow_logger import MlflowSink

    caplog.set_level("INFO")
    first, other = (f"sqlite:///{tmp_path / name}" for name in ("first.db", "other.db"))
    settings = {"project": "p", "tracking_uri": first, "init_timeout": 10}
    sink = MlflowSink(RunInfo(tmp_path, {}, settings, total_steps=T))
    sink.log(0, {"train/loss": 1.0})
    state = sink.state()
    sink.finish("preempted", {})
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "train/loss": 1.0}\n')  # as the run wrote it
    resumed = MlflowSink(
        RunInfo(tmp_path, {}, {**settings, "tracking_uri": other}, total_steps=T, start=1, state=state)
    )
    resumed.log(1, {"train/loss": 0.5})
    resumed.finish("ok", {})
    client, runs = mlflow_run(other, "p")
    assert [  # the new run holds the run's earlier points too
        sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "train/loss")) for r in runs
    ] == [[(0, 1.0), (1, 0.5)]]
    assert f"MLflow's run {state['run_id']} is not in {other}" in caplog.text
    run_id = runs[0].info.run_id  # the end of the run says where it went, and how to see a local store
    assert f"MLflow logged run {run_id} to {other}; see it with: mlflow ui --backend-store-uri {other}" in caplog.text


def test_a_token_like_override_reaches_neither_tensorboard_nor_mlflow(tmp_path, tiny_train, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MY_SERVICE_TOKEN", SECRET)
    run = tmp_path / "run"
    args = [
        "trainer.max_steps=3",
        "logger=[tensorboard,mlflow]",
        f"logger.tracking_uri={uri}",
        "logger.notes=${oc.env:MY_SERVICE_TOKEN}",  # an environment secret pulled into the config
        f"logger.run_name=job-{SECRET}",
    ]
    tiny_train(run, args)
    stores = [*run.rglob("*"), tmp_path / "mlflow.db"]
    assert any(p.name.startswith("events.out.tfevents") for p in stores)
    for path in stores:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"the secret leaked into {path}"
    client, runs = mlflow_run(uri)
    assert runs[0].data.tags["mlflow.note.content"] == "<redacted>"


def test_mlflow_connects_to_the_tracking_uri_as_given_though_it_holds_a_secret(tmp_path, monkeypatch):
    """A URI can carry a password (``http://me:${oc.env:MLFLOW_PASSWORD}@host``): the sink connects with it,
    and what it saves in the checkpoint is redacted."""
    from training.loggers import RunInfo
    from training.mlflow_logger import MlflowSink

    monkeypatch.setenv("MY_STORE_PASSWORD", SECRET)
    uri = f"sqlite:///{tmp_path / SECRET}.db"
    sink = MlflowSink(RunInfo(tmp_path, {}, {"project": "p", "tracking_uri": uri, "init_timeout": 10}, total_steps=T))
    sink.log(0, {"train/loss": 1.0})
    state = sink.state()
    sink.finish("ok", {})
    client, runs = mlflow_run(uri, "p")
    assert [r.info.run_id for r in runs] == [state["run_id"]]
    assert SECRET not in str(state) and not list(tmp_path.glob("*redacted*"))


def silent_server() -> tuple[socket.socket, str]:
    """A tracking server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server, f"http://127.0.0.1:{server.getsockname()[1]}"


def test_a_tracking_server_that_never_answers_falls_back_to_a_local_store_within_init_timeout(
    tmp_path, tiny_train, caplog, capsys
):
    server, url = silent_server()
    run = tmp_path / "run"
    started = time.perf_counter()
    with server, caplog.at_level("INFO", logger="train"):
        tiny_train(run, ["trainer.max_steps=6", "logger=mlflow", f"logger.tracking_uri={url}", "logger.init_timeout=1"])
    assert time.perf_counter() - started < 60
    said = [r.getMessage() for r in caplog.records if "MLflow at" in r.getMessage()]
    upload = f"python -m training.mlflow_logger upload {run}"
    assert len(said) == 1 and "did not start within logger.init_timeout=1 s" in said[0]
    assert str(run / "mlflow" / "fallback.db") in said[0] and upload in said[0]
    assert f"MLflow logged to {run / 'mlflow' / 'fallback.db'}; to upload the run: {upload}" in caplog.text

    from training.mlflow_logger import main

    target = f"sqlite:///{tmp_path / 'server.db'}"
    assert main(["upload", str(run), "--to", target]) == 0
    client, runs = mlflow_run(target)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert_every_step_once(client, runs[0].info.run_id, run)
    assert runs[0].data.params["trainer.max_steps"] == "6"
    capsys.readouterr()
    assert main(["upload", str(run), "--to", target]) == 2  # once only
    assert (
        capsys.readouterr().err
        == f"error: {run / 'mlflow' / 'fallback.db'}: its run is at {target} already, as run {runs[0].info.run_id}\n"
    )
    client.set_tag(runs[0].info.run_id, "upload_complete", "false")  # as an upload cut short (or stale) leaves it
    assert main(["upload", str(run), "--to", target]) == 0
    client, again = mlflow_run(target)
    assert len(again) == 1 and again[0].info.run_id != runs[0].info.run_id  # the partial one deleted
    assert_every_step_once(client, again[0].info.run_id, run)
    assert main(["upload", str(run), "--to", "bogus://x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MLflow at bogus://x: ") and err.count("\n") == 1


def test_a_refused_tracking_server_is_one_warning_not_a_retry_line_each(tmp_path, tiny_train, caplog):
    """A port nobody listens on: urllib3 would warn at each of MLflow's retries before the sink's own line."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: connections to it are refused
    with caplog.at_level("WARNING"):
        tiny_train(tmp_path / "run", ["trainer.max_steps=2", "logger=mlflow", f"logger.tracking_uri={url}"])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [w for w in warnings if "MLflow at" in w or "Retrying" in w] == [
        next(w for w in warnings if w.startswith(f"MLflow at {url} failed to start"))
    ]


def test_a_run_that_fell_back_resumes_in_its_own_store_after_its_directory_moved(tmp_path, tiny_train):
    """The fallback store is the run directory's: a resume where the directory is now goes on there, whatever
    the server does, and the upload command the end names holds every update."""
    server, url = silent_server()
    first, moved = tmp_path / "first", tmp_path / "moved"
    args = ["trainer.max_steps=8", "trainer.ckpt_every=4", "logger=mlflow", f"logger.tracking_uri={url}"]
    with server:
        with pytest.raises(Stopped):
            tiny_train(first, [*args, "logger.init_timeout=1", "trainer.stop_at=4"])
        first.rename(moved)
        tiny_train(moved, [*args, "logger.init_timeout=0.001"])  # too short for any store to start within it
    assert not first.exists()
    client, runs = mlflow_run(f"sqlite:///{moved / 'mlflow' / 'fallback.db'}")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert_every_step_once(client, runs[0].info.run_id, moved)


def test_a_start_given_up_on_undoes_what_it_made_when_it_answers_late():
    """A server that answers after the fallback: the run it made would stay RUNNING there for ever."""
    import threading

    from training.mlflow_logger import within

    undone, answered = [], threading.Event()
    with pytest.raises(TimeoutError, match="no answer within 0.1 s"):
        within(0.1, lambda: (answered.wait(5), "run-1")[1], undone.append)
    answered.set()
    for _ in range(100):
        if undone:
            break
        time.sleep(0.05)
    assert undone == ["run-1"]
    assert within(5, lambda: "run-2", undone.append) == "run-2" and undone == ["run-1"]  # in time: kept


def test_a_resume_whose_server_answers_after_the_fallback_leaves_its_run_killed_not_deleted(tmp_path, monkeypatch):
    """The server's run is the user's history: a late answer to the resume's start sets it back as it was found."""
    import threading

    import mlflow

    from training.loggers import RunInfo
    from training.mlflow_logger import MlflowSink

    calls, done, real = [], threading.Event(), mlflow.MlflowClient

    class SlowServer:
        def __init__(self, tracking_uri):
            self.real = None if tracking_uri.startswith("http") else real(tracking_uri=tracking_uri)

        def __getattr__(self, name):
            if self.real is not None:
                return getattr(self.real, name)

            def call(*args, **kwargs):
                calls.append((name, args, kwargs))
                if name == "get_run":
                    time.sleep(1.0)  # past init_timeout
                    return type(
                        "Run", (), {"data": type("Data", (), {"to_proto": lambda: type("P", (), {"metrics": []})})}
                    )
                if name in ("set_terminated", "delete_run"):
                    done.set()

            return call

    monkeypatch.setattr(mlflow, "MlflowClient", SlowServer)
    state = {"run_id": "SERVER-RUN", "tracking_uri": "http://127.0.0.1:9", "fallback": False}
    settings = {"project": "p", "init_timeout": 0.3, "tracking_uri": "http://127.0.0.1:9"}
    sink = MlflowSink(RunInfo(tmp_path, {}, settings, total_steps=10, start=4, state=state))
    assert sink.fell_back and done.wait(10)
    assert [c[0] for c in calls] == ["get_run", "update_run", "set_terminated"]
    assert calls[-1][1:] == (("SERVER-RUN",), {"status": "KILLED"})
    sink.finish("ok", {})


def test_mlflow_http_limits_follow_each_run_and_never_the_users_own(monkeypatch):
    from training.mlflow_logger import http_limits

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    http_limits(5)
    http_limits(60)  # a sweep's next job, with another logger.init_timeout
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60" and os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7"


def test_an_upload_to_a_uri_saved_without_its_password_asks_for_it(tmp_path, capsys):
    from training.mlflow_logger import main

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("logger:\n  tracking_uri: http://me:<redacted>@host:5000\n")
    assert main(["upload", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "keeps logger.tracking_uri without its password" in err and "--to" in err


@pytest.mark.parametrize(
    "uri, why",
    [
        ("bogus://x", "no tracking store has the scheme 'bogus'"),  # no server to wait for, no store to fall back on
        ("{tmp}/mlruns", "MLflow 3 takes no new run in a folder store"),  # a local store: the user's to fix
        ("sqlite:///", "an in-memory database keeps no run"),  # its first call failed: no table
        ("sqlite:///{tmp}/file/x.db", "{tmp}/file is a file, not a folder"),  # after the others' files were written
    ],
)
def test_a_tracking_uri_mlflow_cannot_use_is_one_line_not_a_dropped_tracker(tmp_path, tiny_train, uri, why):
    uri, why = uri.format(tmp=tmp_path), why.format(tmp=tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=f"^logger.tracking_uri: MLflow cannot use {uri} \\({why}") as info:
        tiny_train(tmp_path / "run", ["trainer.max_steps=2", "logger=[wandb,mlflow]", f"logger.tracking_uri={uri}"])
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()  # before any work: W&B never started


def test_the_uri_check_writes_nothing_and_takes_a_folder_store_mlflow_is_told_to_allow(tmp_path, monkeypatch):
    from training.mlflow_logger import unusable

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert unusable(str(tmp_path / "store")) is None and unusable(f"sqlite:///{tmp_path / 'a.db'}") is None
    assert list(tmp_path.iterdir()) == []


def test_a_missing_tracker_package_is_one_line_naming_its_extra(monkeypatch):
    from tests.conftest import compose_config

    for logger, package in (("tensorboard", "tensorboard"), ("mlflow", "mlflow")):
        monkeypatch.setitem(sys.modules, package, None)  # import fails as it does where the package is absent
        with pytest.raises(ConfigError) as e:
            check_config(compose_config([f"logger={logger}"]))
        assert str(e.value) == f'logger={logger} needs the {package} package: pip install -e ".[{package}]"'


def blocked_packages(tmp_path: Path) -> dict[str, str]:
    """An environment in which neither tracker package imports, as where neither extra is installed."""
    site = tmp_path / "blocked"
    for package in ("tensorboard", "mlflow"):
        (site / package).mkdir(parents=True)
        (site / package / "__init__.py").write_text(f"raise ImportError('{package} is not installed')\n")
    return {"PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}


@pytest.mark.slow
def test_without_the_extra_the_logger_is_refused_before_anything_is_written_and_others_never_import_it(
    tmp_path, data_cache
):
    env = blocked_packages(tmp_path)
    run = tmp_path / "run"
    proc = run_train([*TINY, "logger=mlflow"], run, data_cache, env=env, check=False)
    assert proc.returncode == 2 and not run.exists()
    said = 'error: logger=mlflow needs the mlflow package: pip install -e ".[mlflow]"'
    assert proc.stderr.strip().splitlines() == [said]
    # a run that chooses neither never imports them (the blocked packages would raise)
    run_train([*TINY, "logger=csv", "trainer.max_steps=2"], run, data_cache, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on a free localhost port with a SQLite backend; yields its URL and process."""
    port = free_port()
    cmd = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)),
        *("--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--workers", "1"),
        *("--default-artifact-root", str(tmp_path / "artifacts")),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start within 120 s")
    yield url, proc
    if proc.poll() is None:
        os.killpg(proc.pid, 9)
        proc.wait()


@pytest.mark.slow
def test_a_real_mlflow_server_over_http_then_its_death_mid_run_leaves_training_and_tensorboard_going(
    tmp_path, tiny_train, mlflow_server, caplog, monkeypatch
):
    url, server = mlflow_server
    run = tmp_path / "run"
    tiny_train(run, [*ARGS, "logger=mlflow", f"logger.tracking_uri={url}", "logger.project=over-http"])
    client, runs = mlflow_run(url, "over-http")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert_every_step_once(client, runs[0].info.run_id, run)

    SEEN["call_at"] = lambda: (os.killpg(server.pid, 9), server.wait())  # the server dies at update 3
    killed = tmp_path / "killed"
    args = [*ARGS, "logger=[mlflow,tensorboard]", f"logger.tracking_uri={url}", "logger.init_timeout=5"]
    calls = ["+logger.sinks.call._target_=tests.training.fork_parts.CallAt", "+logger.sinks.call.step=3"]
    with caplog.at_level("WARNING", logger="train"):
        tiny_train(killed, [*args, *calls])
    failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("MLflow failed")]
    assert len(failures) == 1 and "training goes on without it" in failures[0]
    assert sorted(by_step(killed, "train/loss")) == list(range(T))  # metrics.jsonl complete
    steps = [e.step for e in scalars(killed / "tensorboard").Scalars("train/loss")]
    assert steps == list(range(T))  # the other sink got every record


@pytest.mark.slow
def test_a_sweeps_jobs_are_side_by_side_in_tensorboard_and_share_a_group_in_mlflow(tmp_path, data_cache):
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    sweep = tmp_path / "sweep"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["-m", *TINY, "logger=[tensorboard,mlflow]", f"logger.tracking_uri={uri}", "trainer.max_steps=3"]
    proc = subprocess.run(
        [sys.executable, "train.py", *args, "schedule=cosine,linear", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT,
        env={**os.environ, "GPT_DATA_CACHE": str(data_cache)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    board = EventMultiplexer().AddRunsFromDirectory(str(sweep))
    board.Reload()
    assert sorted(board.Runs()) == ["0/tensorboard", "1/tensorboard"]
    client, runs = mlflow_run(uri)
    assert sorted(r.info.run_name for r in runs) == ["schedule=cosine", "schedule=linear"]
    assert len({r.data.tags["group"] for r in runs}) == 1 and runs[0].data.tags["group"] == str(sweep)
