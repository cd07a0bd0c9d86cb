"""Shared helpers: compose configs with Hydra's API, run ``train`` in-process on tiny settings, and run
``train.py`` as a subprocess where the process itself is the subject (exit codes, signals, torchrun, multirun)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A model and corpus small enough for a CPU test: a 2-layer GPT on ~200 KB of the built-in corpus.
TINY = [
    "model=nano",
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=32",
    "trainer.batch_size=4",
    "trainer.eval_batches=2",
    "trainer.sample_tokens=8",
    "data.max_bytes=200000",
    "data.vocab_size=384",
    "logger=none",
]


def pytest_configure(config) -> None:
    """Under pytest-xdist (``-n N``) each worker takes its share of the cores, for torch here and for the
    processes its tests start, so that N workers never run more threads than the machine has cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``cuda`` skip, with the reason, where torch sees no CUDA GPU; ``pytest -m cuda`` runs them all."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def compose_config(overrides: list[str] | None = None, return_hydra_config: bool = False):
    from training.config import compose

    return compose(overrides, return_hydra_config=return_hydra_config)


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One token cache directory for the whole session, so the tiny corpus is tokenized once."""
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture
def tiny_train(data_cache, monkeypatch) -> Callable[..., Path]:
    """``tiny_train(run_dir, args)``: ``train(cfg, run_dir)`` in this process on TINY settings plus the override
    ``args``; returns the run directory. Errors and ``Stopped`` propagate as they would to ``main``."""
    from train import train

    monkeypatch.setenv("GPT_DATA_CACHE", str(data_cache))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")

    def run(run_dir: Path, args: list[str] | None = None, **kwargs) -> Path:
        cfg = compose_config(TINY + list(args or []))
        train(cfg, run_dir, **kwargs)
        return run_dir

    return run


def run_train(
    args: list[str],
    run_dir: Path,
    cache: Path,
    *,
    script: str = "train.py",
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """``python train.py <args>`` in a subprocess, as a user runs it, writing into ``run_dir``."""
    full_env = {**os.environ, "GPT_DATA_CACHE": str(cache), "WANDB_MODE": "offline", "PYTHONHASHSEED": "0"}
    full_env.update(env or {})
    cmd = [sys.executable, script, *args, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def train_records(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run_dir) if "train/loss" in r}
