"""One writer per run directory: a second launch on a directory another run holds stops before writing anything,
with one line naming the holder; the lock is the kernel's, so it goes when its holder goes."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY
from training import run_lock
from training.run_lock import LOCK_FILE, RunInUse


@pytest.fixture
def held(tmp_path):
    """A run directory whose lock this process holds, as a running ``train.py`` would."""
    run_dir = tmp_path / "run"
    run_lock.acquire(run_dir)
    yield run_dir
    run_lock.release(run_dir)


def locked_elsewhere(run_dir) -> int:
    """Lock ``run_dir`` through another open file, as another process's lock conflicts (flock locks belong to
    an open file, not a path); returns the descriptor that holds it."""
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_a_second_launch_stops_with_one_line_naming_the_holder_and_writes_nothing(held, data_cache):
    since = json.loads((held / LOCK_FILE).read_text())["since"]
    before = sorted(p.name for p in held.iterdir())
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "train.py", *TINY, "trainer.max_steps=2", f"hydra.run.dir={held}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    expected = (
        f"error: the run directory {held} is in use by another run (host {socket.gethostname()}, "
        f"pid {os.getpid()}, since {since}); "
    )
    assert proc.stderr.startswith(expected) and proc.stderr.count("\n") == 1, proc.stderr
    assert sorted(p.name for p in held.iterdir()) == before == [LOCK_FILE]  # not even Hydra's .hydra/ or train.log


@pytest.mark.parametrize("where", ["a file", "under a file", "empty"])
def test_a_run_directory_that_cannot_be_a_folder_is_one_line_and_writes_nothing(where, tmp_path, data_cache):
    (tmp_path / "afile").write_text("a file")
    run_dir = {"a file": tmp_path / "afile", "under a file": tmp_path / "afile" / "run", "empty": ""}[where]
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "WANDB_MODE": "offline"}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *TINY, "trainer.max_steps=2", f"hydra.run.dir={run_dir}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: hydra.run.dir") and proc.stderr.count("\n") == 1
    assert (tmp_path / "afile").read_text() == "a file" and list(cwd.iterdir()) == []  # the current folder untouched


def test_a_run_in_process_locks_its_own_directory_before_its_first_write(tmp_path, tiny_train):
    """What every multirun job does: the Python API refuses a directory another holder has, writing nothing."""
    run_dir = tmp_path / "job0"
    run_dir.mkdir()
    fd = locked_elsewhere(run_dir)
    try:
        with pytest.raises(RunInUse, match=r"^the run directory .*job0 is in use by another run \(holder unknown\)"):
            tiny_train(run_dir, ["trainer.max_steps=2"])
        from training.build import Sweep

        with pytest.raises(RunInUse, match=r"or give this run another hydra\.sweep\.dir$"):  # what sets a job's
            tiny_train(run_dir, ["trainer.max_steps=2"], sweep=Sweep(str(tmp_path), "job0"))
    finally:
        os.close(fd)
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]


def test_the_lock_is_reentrant_in_one_process_and_released_by_the_last_release(tmp_path):
    run_dir = tmp_path / "run"
    run_lock.acquire(run_dir)
    run_lock.acquire(run_dir)  # train.py's Hydra edge, then build_run
    record = json.loads((run_dir / LOCK_FILE).read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    run_lock.release(run_dir)
    with pytest.raises(BlockingIOError):
        locked_elsewhere(run_dir)
    run_lock.release(run_dir)
    os.close(locked_elsewhere(run_dir))


def test_a_refused_launch_puts_back_the_hydra_record_it_found_even_when_it_wrote_none(tmp_path):
    """A launch with hydra.output_subdir=null writes no .hydra/: undoing it restores the one the directory had."""
    import shutil

    from training.launch import Before

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("a: 1\n")
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    before = Before.of(run)
    shutil.rmtree(run / ".hydra")
    before.undo(run)
    assert (run / ".hydra" / "config.yaml").read_text() == "a: 1\n" and (run / "metrics.jsonl").is_file()
