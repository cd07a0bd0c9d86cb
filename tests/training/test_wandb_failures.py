"""W&B never stops training: one that cannot start online goes offline within ``logger.init_timeout`` and says so
once, printing the command that uploads it at the end; one that fails mid-run is logged once, and metrics.jsonl
stays complete."""

from __future__ import annotations

import socket
import time

import pytest

from tests.conftest import read_metrics
from tests.training.wandb_file import history, run_files

FAST = ["logger=wandb", "trainer.max_steps=3", "trainer.eval_every=0", "trainer.sample_tokens=0"]


@pytest.fixture
def refused_url() -> str:
    """The address of a local port that refuses connections: bound once to learn a free port, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_a_wandb_server_that_refuses_connections_leaves_the_run_logging_offline(
    tmp_path, tiny_train, monkeypatch, refused_url, caplog
):
    monkeypatch.setenv("WANDB_BASE_URL", refused_url)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.delenv("WANDB_MODE")
    started = time.perf_counter()
    with caplog.at_level("INFO"):
        run = tiny_train(tmp_path / "run", FAST + ["logger.mode=online", "logger.init_timeout=1"])
    assert time.perf_counter() - started < 30  # W&B's own default waits 90 s, then raises
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "W&B" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith("W&B could not start online within logger.init_timeout=1 s (")
    assert f"logging offline to {run / 'wandb'} instead" in warnings[0]
    (path,) = [p for p in run_files(run) if p.parent.name.startswith("offline-run-")]
    assert "W&B ran offline; upload the run with: wandb sync " + str(path.parent) in caplog.text
    assert [row["step"] for row in history(path) if "train/loss" in row] == [0, 1, 2]


def test_a_wandb_failure_mid_run_is_logged_once_and_training_goes_on(tmp_path, tiny_train, monkeypatch, caplog):
    from wandb.sdk.wandb_run import Run

    real_log, calls = Run.log, []

    def failing_log(self, data, *args, **kwargs):  # the W&B service is gone after the first update's record
        calls.append(data.get("step"))
        if len(calls) > 1:
            raise ConnectionResetError("the W&B service closed the connection")
        return real_log(self, data, *args, **kwargs)

    monkeypatch.setattr(Run, "log", failing_log)
    with caplog.at_level("INFO"):
        run = tiny_train(tmp_path / "run", FAST + ["logger.mode=offline"])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "W&B" in r.getMessage()]
    assert warnings == ["W&B failed at update 1 (ConnectionResetError: the W&B service closed the connection); "
                        "training goes on without it, metrics.jsonl stays complete"]  # fmt: skip
    assert calls == [0, 1]  # after the failure the sink stays quiet
    assert [r["step"] for r in read_metrics(run) if "train/loss" in r] == [0, 1, 2]
