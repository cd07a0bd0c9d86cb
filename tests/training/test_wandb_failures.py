"""W&B never stops training: one that cannot start online goes offline within ``logger.init_timeout`` and says so
once, printing the command that uploads it at the end; one that fails mid-run is logged once, and metrics.jsonl
stays complete. The W&B sink and metrics.jsonl under the run's fan-out (``Metrics``), without a model: a sink's
failure reaches the loop only as a raised error, and these show none is raised."""

from __future__ import annotations

import socket
import time

import pytest

from tests.conftest import read_metrics
from tests.training.wandb_file import history, run_files
from training.loggers import JsonlSink, Metrics, RunInfo
from training.wandb_logger import WandbSink

LOGGER = {"init_timeout": 1, "project": "p", "job_type": "train"}


def wandb_sink(run_dir, settings: dict, config: dict | None = None) -> WandbSink:
    return WandbSink(RunInfo(run_dir=run_dir, config=config or {}, settings=settings, total_steps=4))


RECORD = {"train/loss": 5.0, "train/lr": 1e-3}


@pytest.fixture
def refused_url() -> str:
    """The address of a local port that refuses connections: bound once to learn a free port, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "W&B" in r.getMessage()]


def test_a_wandb_server_that_refuses_connections_leaves_the_run_logging_offline(
    tmp_path, monkeypatch, refused_url, caplog
):
    monkeypatch.setenv("WANDB_BASE_URL", refused_url)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    caplog.set_level("INFO")
    started = time.perf_counter()
    sink = wandb_sink(tmp_path, {**LOGGER, "mode": "online"}, {"optim": {"lr": 1e-3}})
    assert time.perf_counter() - started < 20  # W&B's own default waits 90 s, then raises
    metrics = Metrics([JsonlSink(tmp_path / "metrics.jsonl")], {"wandb": sink})
    for step in range(3):
        metrics.log(step, RECORD)
    metrics.close("ok")
    (warning,) = warnings_of(caplog)
    assert warning.startswith("W&B could not start online within logger.init_timeout=1 s (") and "\n" not in warning
    assert f"logging offline to {tmp_path / 'wandb'} instead" in warning
    (path,) = [p for p in run_files(tmp_path) if p.parent.name.startswith("offline-run-")]
    assert f"W&B ran offline; upload the run with (after wandb login): wandb sync {path.parent}" in caplog.text
    assert [row["step"] for row in history(path)] == [0, 1, 2]


def test_a_wandb_failure_mid_run_is_logged_once_and_the_local_metrics_stay_complete(tmp_path, monkeypatch, caplog):
    from wandb.sdk.wandb_run import Run

    real_log, calls = Run.log, []

    def failing_log(self, data, *args, **kwargs):  # the W&B service is gone after the first record
        calls.append(data.get("step"))
        if len(calls) > 1:
            raise ConnectionResetError("the W&B service closed the connection")
        return real_log(self, data, *args, **kwargs)

    monkeypatch.setattr(Run, "log", failing_log)
    caplog.set_level("INFO")
    sink = wandb_sink(tmp_path, {**LOGGER, "mode": "offline"})
    metrics = Metrics([JsonlSink(tmp_path / "metrics.jsonl")], {"wandb": sink})
    for step in range(4):
        metrics.log(step, RECORD)
    metrics.close("ok")
    failed = "W&B failed at update 1 (ConnectionResetError: the W&B service closed the connection)"
    assert warnings_of(caplog) == [f"{failed}; training goes on without it, metrics.jsonl stays complete"]
    assert calls == [0, 1]  # after the failure the sink stays quiet
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1, 2, 3]


def test_a_run_whose_end_waits_past_logger_finish_timeout_ends_naming_what_uploads_the_rest(
    tmp_path, monkeypatch, caplog
):
    """A network that drops as the run ends: W&B gives up after logger.finish_timeout (told so by its settings) and
    the sink says where the rest is and how to upload it, instead of waiting for the job's time limit."""
    from wandb.sdk.wandb_run import Run

    sink = wandb_sink(tmp_path, {**LOGGER, "mode": "offline", "finish_timeout": 12.5})
    assert (sink.run.settings.finish_timeout, sink.run.settings.finish_timeout_raises) == (12.5, True)
    local = tmp_path.joinpath("wandb").glob("offline-run-*")
    real_finish = Run.finish

    def timing_out(self, *args, **kwargs):  # what wandb raises after finish_timeout with finish_timeout_raises
        real_finish(self, *args, **kwargs)
        raise TimeoutError("Timed out finishing run.")

    monkeypatch.setattr(Run, "finish", timing_out)
    caplog.set_level("INFO")
    sink.finish("ok", {})
    folder = next(local)
    assert warnings_of(caplog) == [
        f"W&B did not upload the rest of the run within logger.finish_timeout=12.5 s; it is kept in {folder}: "
        f"upload it with wandb sync {folder}"
    ]


@pytest.mark.parametrize(
    "netrc_host, online",
    [("api.forge.coreweave.com", True), ("api.wandb.ai", True), ("example.com", False), (None, False)],
)
def test_logger_mode_auto_goes_online_with_the_key_wandb_login_wrote(netrc_host, online, tmp_path, monkeypatch):
    """wandb login writes ~/.netrc for W&B's host, api.forge.coreweave.com since 0.31 (a key for api.wandb.ai, from
    an older login, is taken there too): auto found neither and stayed offline."""
    from training.wandb_logger import resolve_mode

    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    if netrc_host:
        (tmp_path / ".netrc").write_text(f"machine {netrc_host}\n  login user\n  password {'0' * 40}\n")
        (tmp_path / ".netrc").chmod(0o600)
    assert resolve_mode("auto") == ("online" if online else "offline")
