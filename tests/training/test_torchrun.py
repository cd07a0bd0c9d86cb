"""The same train.py under torchrun on CPU with gloo: DDP equals one process, FSDP trains, one run directory,
checkpoints move between world sizes, bad input stops every rank, and a rank that dies or hangs ends the others'
wait, after which the run resumes exactly. torchrun launches real processes, as a user runs it (and as srun
does, each rank its own process); the one-process side of each comparison runs in this process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, TINY, compose_config, read_metrics, train_records
from training import checkpoint
from training.config import USER_ERRORS
from training.signals import EXIT_RESUMABLE
from training.watchdog import EXIT_HUNG

T = 20
# 256 tokens per update: 2 ranks × 1 micro-batch × 4 × 32, or 1 rank × 2 micro-batches × 4 × 32.
# 30% of the corpus's files held out: enough validation documents for the next-line evaluation to ask about.
ARGS = [
    f"trainer.max_steps={T}",
    "trainer.global_batch_tokens=256",
    "trainer.eval_every=10",
    "schedule.warmup_steps=4",
    "data.val_fraction=0.3",
]

pytestmark = pytest.mark.slow


def torchrun_command(args: list[str], run_dir: Path | None = None, launcher: list[str] | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *(launcher or [])]
    cmd += [str(ROOT / "train.py"), *TINY, *args]
    return cmd + ([f"hydra.run.dir={run_dir}"] if run_dir is not None else [])


def torchrun(args: list[str], cwd: Path, cache: Path, run_dir: Path | None = None, check: bool = True):
    env = {**os.environ, "GPT_DATA_CACHE": str(cache), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    cmd = torchrun_command(args, run_dir)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, data_cache):
    """The run directory of the same run in one process (2 micro-batches per update)."""
    from train import train

    run = tmp_path_factory.mktemp("one") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT_DATA_CACHE", str(data_cache))
        train(compose_config(TINY + ARGS), run)
    return run


def assert_same_losses(a: dict, b: dict, steps) -> None:
    for t in steps:
        la, lb = a[t]["train/loss"], b[t]["train/loss"]
        assert abs(la - lb) <= 1e-5 * abs(la), (t, la, lb)
        assert a[t]["train/lr"] == b[t]["train/lr"], t


def test_two_process_ddp_equals_one_process_and_writes_one_run_directory(tmp_path, data_cache, one_process):
    proc = torchrun(ARGS, tmp_path, data_cache)  # no hydra.run.dir: Hydra's timestamped default
    run_dirs = [p.parent for p in tmp_path.rglob(".hydra")]
    assert len(run_dirs) == 1, run_dirs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"], "nothing else in the working directory"
    two = train_records(run_dirs[0])
    assert sorted(two) == list(range(T))
    assert_same_losses(train_records(one_process), two, range(T))
    # the evaluations split their work over the ranks and sum it: the next-line items are dealt to the two ranks
    evals = [{k: v for k, v in r.items() if k.startswith(("val/", "eval/"))} for r in read_metrics(run_dirs[0])]
    alone = [{k: v for k, v in r.items() if k.startswith(("val/", "eval/"))} for r in read_metrics(one_process)]
    evals, alone = [e for e in evals if e], [e for e in alone if e]
    assert len(evals) == len(alone) == 3 and all("eval/next_line/acc_norm" in e for e in evals)
    for e, a in zip(evals, alone, strict=True):
        assert e.keys() == a.keys()
        # the same validation windows, dealt to the ranks: the loss of the same weights, to rounding
        assert all(abs(e[k] - a[k]) <= 1e-5 * abs(a[k]) for k in a if k.startswith("val/")), (e, a)
        # the weights agree to rounding (as the losses do), so an item at a near-tie may flip: one item at most
        assert all(abs(e[k] - a[k]) <= 0.0101 for k in a if k.startswith("eval/")), (e, a)
    assert "2 rank(s) × 1 micro-batch(es)" in proc.stdout + proc.stderr


def test_a_two_process_checkpoint_resumes_on_one_process(tmp_path, data_cache, one_process, tiny_train):
    run = tmp_path / "run"
    stopped = torchrun(ARGS + ["trainer.stop_at=10"], tmp_path, data_cache, run, check=False)
    out = stopped.stdout + stopped.stderr
    # Every rank exits EXIT_RESUMABLE; torchrun reports any non-zero worker exit as its own exit code 1.
    # (both ranks: one leaving first must not have torchrun's SIGTERM turn the other's into -15)
    assert stopped.returncode != 0 and out.count(f"exitcode  : {EXIT_RESUMABLE}") == 2, out[-3000:]
    assert "stopped after updates 0–9 (trainer.stop_at); re-run the same command to resume at update 10" in out
    assert checkpoint.latest(run / "checkpoints").name == "step-00000010"
    tiny_train(run, ARGS)  # one process, the same global batch: 2 micro-batches per update
    resumed = train_records(run)
    assert sorted(resumed) == list(range(T))
    assert_same_losses(train_records(one_process), resumed, range(T))


def test_two_process_fsdp_trains_and_its_sharded_checkpoint_resumes_on_one_process(tmp_path, data_cache, tiny_train):
    run = tmp_path / "run"
    proc = torchrun(ARGS + ["trainer.strategy=fsdp"], tmp_path, data_cache, run)
    assert "fsdp" in proc.stdout + proc.stderr
    records = train_records(run)
    first = sum(records[t]["train/loss"] for t in range(3)) / 3
    last = sum(records[t]["train/loss"] for t in range(T - 3, T)) / 3
    assert last < first - 0.3, (first, last)
    final = checkpoint.latest(run / "checkpoints")
    assert (final / "dcp" / ".metadata").is_file()
    evals = [r for r in read_metrics(run) if "val/loss" in r]
    # One process continues from the sharded checkpoint for 4 more updates.
    tiny_train(run, ARGS + [f"trainer.max_steps={T + 4}", "trainer.allow_schedule_change=true"])
    assert sorted(train_records(run)) == list(range(T + 4))
    assert [r for r in read_metrics(run) if "val/loss" in r][-1]["val/loss"] < evals[0]["val/loss"]


def test_fsdp_under_a_time_budget_trains_every_parameter_and_checkpoints(tmp_path, data_cache):
    """The budget measures an evaluation before the optimizer is built: FSDP's root must be sharded again first,
    or the optimizer steps copies of the embeddings that each forward overwrites (and the final save fails)."""
    run = tmp_path / "run"
    args = ["trainer.max_steps=null", "trainer.max_time=20", "trainer.global_batch_tokens=256", "trainer.strategy=fsdp"]
    torchrun([*args, "trainer.eval_every=0", "trainer.sample_tokens=0"], tmp_path, data_cache, run)
    records = train_records(run)
    first = sum(records[t]["train/loss"] for t in range(3)) / 3
    last = sum(records[t]["train/loss"] for t in range(len(records) - 3, len(records))) / 3
    assert last < first - 1.0, (first, last, len(records))
    assert checkpoint.latest(run / "checkpoints").name == f"step-{len(records):08d}"  # saved at T


def test_a_refusal_only_rank_zero_can_make_is_one_line_on_every_rank(tmp_path, data_cache):
    """trainer.resume is looked up by rank 0 alone: the others get its one line, not gloo's "connection closed"."""
    missing = tmp_path / "no" / "such" / "run"
    proc = torchrun([f"trainer.resume={missing}"], tmp_path, data_cache, tmp_path / "run", check=False)
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    # (a rank may be stopped by torchrun, once the other has exited 2, before it prints)
    assert errors and len(set(errors)) == 1 and errors[0].startswith("error: trainer.resume: "), out[-3000:]
    assert "Connection closed" not in out and "RuntimeError" not in out, out[-3000:]


@pytest.mark.parametrize(
    "bad, line",
    [
        ("model.n_layer=0", "error: model.n_layer must be an integer > 0, got 0"),  # the config checks
        ("trainer.max_stepss=3", "error: trainer.max_stepss is not a key of trainer; did you mean"),  # composition
    ],
)
def test_a_config_refusal_every_rank_makes_alike_is_said_once(bad, line, tmp_path, data_cache):
    proc = torchrun([bad], tmp_path, data_cache, tmp_path / "run", check=False)
    out = proc.stdout + proc.stderr
    errors = [e for e in out.splitlines() if e.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(line), out[-3000:]
    assert "exitcode  : 2" in out and not (tmp_path / "run").exists()


def test_a_checkpoint_of_another_shape_is_refused_once_before_the_data(tmp_path, data_cache):
    run = tmp_path / "run"
    torchrun(["trainer.max_steps=2", "trainer.eval_every=0", "trainer.sample_tokens=0"], tmp_path, data_cache, run)
    proc = torchrun(["trainer.max_steps=2", "model.n_layer=1"], tmp_path, data_cache, run, check=False)
    out = proc.stdout + proc.stderr
    errors = [e for e in out.splitlines() if e.startswith("error: ")]
    assert len(errors) == 1 and "another shape or vocab than the config asks for (n_layer 2 → 1)" in errors[0], out


def test_a_data_error_on_rank_zero_stops_every_rank_with_one_line(tmp_path, data_cache):
    proc = torchrun(
        ["data=text_files", f"data.path={tmp_path}/missing/*.txt"], tmp_path, data_cache, tmp_path / "run", check=False
    )
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error: ")]
    assert errors and all("no file matches" in line for line in errors), proc.stderr[-2000:]


def test_two_process_ddp_with_muon_equals_one_process(tmp_path, data_cache, tiny_train):
    muon = ["optim=muon", "optim.muon.lr=0.02"]
    one = train_records(tiny_train(tmp_path / "one", ARGS + muon))
    torchrun(ARGS + muon, tmp_path, data_cache, run_dir=tmp_path / "two")
    two = train_records(tmp_path / "two")
    assert_same_losses(one, two, range(T))
    assert all(one[t]["train/lr_muon"] == two[t]["train/lr_muon"] for t in range(T))


# Long enough to catch mid-run: 300 updates, checkpoints every 20, a peer's silence noticed after 3 s.
FAULT_T = 300
FAULT_ARGS = [
    f"trainer.max_steps={FAULT_T}",
    "trainer.global_batch_tokens=256",
    "trainer.eval_every=100",
    "schedule.warmup_steps=4",
    "trainer.ckpt_every=20",
    "trainer.collective_timeout=3",
    "trainer.sample_tokens=0",
]
SAME = ("train/loss", "train/lr", "train/grad_norm", "val/loss", "val/bpb")


@pytest.fixture(scope="module")
def two_ranks_uninterrupted(tmp_path_factory, data_cache) -> list[dict]:
    run = tmp_path_factory.mktemp("two") / "run"
    torchrun(FAULT_ARGS, run.parent, data_cache, run)
    return read_metrics(run)


def assert_bit_for_bit(expected: list[dict], run: Path) -> None:
    got = read_metrics(run)
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    assert [[r.get(k) for k in SAME] for r in got] == [[r.get(k) for k in SAME] for r in expected]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_updates(run: Path, n: int, procs: list[subprocess.Popen], timeout: float = 300) -> None:
    """Until metrics.jsonl holds update ``n`` (or fail, when a process ends first or time runs out)."""
    deadline = time.monotonic() + timeout
    while n not in updates_written(run):
        assert all(p.poll() is None for p in procs), "a rank ended early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def updates_written(run: Path) -> set[int]:
    """The updates metrics.jsonl records so far; a line still being written is not read."""
    path = run / "metrics.jsonl"
    text = path.read_text() if path.is_file() else ""
    lines = text[: text.rfind("\n") + 1].splitlines()
    return {r["step"] for r in map(json.loads, lines) if "train/loss" in r}


def worker_pids(launcher_pid: int) -> dict[int, int]:
    """torchrun's workers, by RANK (each in a session of its own, so a signal to torchrun's group misses them)."""
    pids = {}
    for children in Path(f"/proc/{launcher_pid}/task").glob("*/children"):
        for child in children.read_text().split():
            with contextlib.suppress(OSError):  # a worker that just ended
                env = Path(f"/proc/{child}/environ").read_bytes().decode(errors="replace").split("\0")
                rank = next((v for k, _, v in (e.partition("=") for e in env) if k == "RANK"), None)
                if rank is not None:
                    pids[int(rank)] = int(child)
    return pids


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_when_a_rank_dies_or_hangs_the_other_exits_in_one_line_and_a_rerun_resumes_bit_for_bit(
    fault, tmp_path, data_cache, two_ranks_uninterrupted
):
    """Each rank its own process, as srun starts them; rank 1 is killed, or stopped (alive and silent)."""
    run = tmp_path / "run"
    env = {
        **os.environ,
        "GPT_DATA_CACHE": str(data_cache),
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": "2",
    }
    cmd = [sys.executable, str(ROOT / "train.py"), *TINY, *FAULT_ARGS, f"hydra.run.dir={run}"]
    outs = [open(tmp_path / f"rank{rank}.txt", "w+") for rank in (0, 1)]
    ranks = [
        subprocess.Popen(cmd, cwd=tmp_path, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=o, stderr=o)
        for r, o in enumerate(outs)
    ]
    try:
        wait_for_updates(run, 50, ranks)
        ranks[1].send_signal(fault)
        faulted = time.monotonic()
        assert ranks[0].wait(timeout=120) == EXIT_HUNG
        waited = time.monotonic() - faulted
    finally:
        for proc in ranks:
            proc.kill()
            proc.wait()
    outs[0].seek(0)
    out = outs[0].read()
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in out, out[-3000:]
    assert (
        errors[0].startswith("error: update ")
        and "another rank stopped answering (trainer.collective_timeout=3 s;" in errors[0]
    )
    assert waited < (5 if fault == signal.SIGKILL else 3 + 10), waited  # a closed connection is seen at once
    stopped_at = int(errors[0].split()[2].rstrip(":"))
    assert max(train_records(run)) == stopped_at - 1  # the update it waited in is the one it names
    torchrun(FAULT_ARGS, tmp_path, data_cache, run)  # the same command under torchrun
    assert_bit_for_bit(two_ranks_uninterrupted, run)


def test_a_rank_whose_peers_never_join_leaves_within_the_collective_timeout_in_one_line(tmp_path, data_cache):
    """As srun starts ranks: rank 0 refused to start (its directory in use, a bad value) and never hosts the
    group; rank 1 would otherwise wait for it the start's 30 minutes."""
    env = {
        **os.environ,
        "GPT_DATA_CACHE": str(data_cache),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        **{"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"},
    }
    cmd = [sys.executable, str(ROOT / "train.py"), *TINY, *FAULT_ARGS, f"hydra.run.dir={tmp_path / 'run'}"]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    waited = time.monotonic() - started
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == EXIT_HUNG and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(errors) == 1 and "the ranks did not all join (trainer.collective_timeout=3 s;" in errors[0], errors
    assert waited < 60, waited


def test_a_refusal_of_rank_zero_before_it_joins_stops_the_rank_waiting_to_join_at_torchruns_signal(
    tmp_path, data_cache
):
    """Rank 0 refuses a run directory in use before it joins the process group; rank 1 waits in the join (native
    code, where Python's signal handler cannot run): torchrun's SIGTERM stops it at once, not its SIGKILL later."""
    from training import run_lock

    run_dir = tmp_path / "run"
    run_lock.acquire(run_dir)  # another run holds it: this process
    try:
        proc = torchrun([*FAULT_ARGS], tmp_path, data_cache, run_dir=run_dir, check=False)
    finally:
        run_lock.release(run_dir)
    out = proc.stdout + proc.stderr
    assert "is in use by another run" in out and proc.returncode != 0, out[-3000:]
    assert "stopped while the ranks joined (SIGTERM), before the first update" in out, out[-3000:]
    assert "SIGKILL" not in out, out[-3000:]


def test_a_port_in_use_is_not_taken_for_a_rank_that_never_joined(tmp_path, data_cache):
    """Exit 124 asks for the same command again, which cannot help here: torch's own error, naming the port."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        env = {
            **os.environ,
            "GPT_DATA_CACHE": str(data_cache),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(held.getsockname()[1]),
            **{"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"},
        }
        cmd = [sys.executable, str(ROOT / "train.py"), *TINY, *FAULT_ARGS, f"hydra.run.dir={tmp_path / 'run'}"]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    said = proc.stderr.lower()
    assert proc.returncode not in (0, EXIT_HUNG) and "address already in use" in said, proc.stderr[-2000:]


def test_a_rank_lost_as_the_run_ends_ends_the_others_wait_in_one_line(tmp_path, data_cache):
    """Rank 0 alone samples and reports at the end, while the others wait for it at the last barrier: each rank its
    own process, rank 0 dies in its sink's finish."""
    env = {
        **os.environ,
        "GPT_DATA_CACHE": str(data_cache),
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": "2",
    }
    args = [*FAULT_ARGS, "trainer.max_steps=4", "+logger.sinks.dies._target_=tests.training.fork_parts.DiesAtFinish"]
    cmd = [sys.executable, str(ROOT / "train.py"), *TINY, *args, f"hydra.run.dir={tmp_path / 'run'}"]
    ranks = [
        subprocess.Popen(
            cmd, cwd=ROOT, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stderr=subprocess.PIPE, text=True
        )
        for r in (0, 1)
    ]
    try:
        outs = [proc.communicate(timeout=300)[1] for proc in ranks]
    finally:
        for proc in ranks:
            proc.kill()
    assert ranks[0].returncode == 1 and ranks[1].returncode == EXIT_HUNG, outs[1][-3000:]
    errors = [line for line in outs[1].splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in outs[1], outs[1][-3000:]
    assert errors[0].startswith("error: as the run ended: another rank stopped answering (")


def test_a_sigterm_to_torchrun_as_the_run_starts_stops_every_rank_as_resumable_in_one_line(tmp_path, data_cache):
    """torchrun passes SIGTERM to every rank; rank 0, still starting its trackers, stops at once, and a rank already
    waiting in update 0 sees it leave: that rank's line says it stopped too (75), not that a peer hung (124). The
    same command then trains."""
    run = tmp_path / "run"
    args = [*FAULT_ARGS, "trainer.max_steps=4"]
    stop = "+logger.sinks.stop._target_=tests.training.fork_parts.SignalLauncher"
    proc = torchrun([*args, stop], ROOT, data_cache, run, check=False)
    out = proc.stdout + proc.stderr
    assert "stopped as the run started (SIGTERM), before its first update" in out, out[-3000:]
    assert "another rank stopped answering" not in out and "exiting with 124" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert errors in (
        [],
        [
            "error: update 0: stopped (SIGTERM) as another rank left; exiting with 75: run the same "
            "command to resume from the latest checkpoint"
        ],
    ), errors
    torchrun(args, ROOT, data_cache, run)
    assert sorted(train_records(run)) == [0, 1, 2, 3]


def test_under_torchrun_max_restarts_a_hung_rank_restarts_the_group_from_latest_bit_for_bit(
    tmp_path, data_cache, two_ranks_uninterrupted
):
    run = tmp_path / "run"
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"  # each round its own store: the restarted group's ranks meet
    launcher = ["--max-restarts=1"]
    out = open(tmp_path / "torchrun.txt", "w+")
    proc = subprocess.Popen(
        torchrun_command(FAULT_ARGS, run, launcher), cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
    )
    try:
        wait_for_updates(run, 50, [proc])
        first = worker_pids(proc.pid)
        os.kill(first[1], signal.SIGSTOP)
        # The stopped rank ignores torchrun's SIGTERM, and torchrun sends SIGKILL 30 s later; the test sends it
        # as soon as the other rank has left, which is the same end without the wait.
        while first[0] in worker_pids(proc.pid).values():
            assert proc.poll() is None, "torchrun ended before the other rank left"
            time.sleep(0.05)
        os.kill(first[1], signal.SIGKILL)
        assert proc.wait(timeout=600) == 0
    finally:
        if proc.poll() is None:  # failed: no worker may outlive the test
            for pid in worker_pids(proc.pid).values():
                os.kill(pid, signal.SIGKILL)
            proc.kill()
        proc.wait()
    out.seek(0)
    text = out.read()
    assert "another rank stopped answering (trainer.collective_timeout=3 s;" in text, text[-3000:]
    assert "resuming from " in text
    assert_bit_for_bit(two_ranks_uninterrupted, run)


def test_the_other_ranks_command_line_takes_its_overrides_after_the_flags_in_one_run(monkeypatch):
    """argparse takes the overrides as one unbroken run: rank 1 failed on those it added after a flag's value, or
    between the flags and the user's overrides."""
    from hydra._internal.utils import get_args_parser

    from training.launch import rank_argv

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ours = ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=disabled"]
    for given in (
        ["model=nano", "hydra.run.dir=outputs/x", "--config-name", "config"],
        ["--config-name", "config", "model=nano", "hydra.run.dir=outputs/x"],
        ["-cn", "config", "model=nano", "--cfg", "job", "hydra.run.dir=outputs/x"],
    ):
        args = get_args_parser().parse_args(rank_argv(["train.py", *given])[1:])
        assert args.config_name == "config" and args.overrides == [*ours, "model=nano"], given

    monkeypatch.delenv("RANK")  # one process: a flag among the overrides (-m after one) parses as the user meant
    monkeypatch.delenv("WORLD_SIZE")
    args = get_args_parser().parse_args(rank_argv(["train.py", "model=nano", "-m", "trainer.seed=1,2"])[1:])
    assert args.multirun and args.overrides == ["model=nano", "trainer.seed=1,2"]
    for given, info in (
        (["model=nano", "--info"], "all"),
        (["--info", "model=nano"], "all"),
        (["-i", "plugins"], "plugins"),
    ):
        args = get_args_parser().parse_args(rank_argv(["train.py", *given])[1:])  # --info's value is optional
        assert args.info == info and args.overrides == [g for g in given if "=" in g], given


def prepare_in_turn(rank: int, store: str, out: str) -> None:
    """One of two gloo ranks whose collectives time out after 2 s: rank 0 prepares for 5 s, as it builds a cache."""
    import datetime

    import torch.distributed as dist

    from training import distributed

    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=2)
    )
    work = lambda: (time.sleep(5), "built")[1] if rank == 0 else "found"  # noqa: E731
    result = distributed.in_turn(work, distributed.Dist(rank=rank, local_rank=rank, world_size=2))
    Path(f"{out}.{rank}").write_text(result)
    dist.destroy_process_group()


def test_the_other_ranks_wait_for_rank_zeros_preparation_past_the_collective_timeout(tmp_path):
    import torch.multiprocessing

    torch.multiprocessing.spawn(prepare_in_turn, args=(str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2)
    assert [(tmp_path / f"out.{r}").read_text() for r in range(2)] == ["built", "found"]


@pytest.mark.parametrize("crash", [False, True], ids=["bad-input", "crash"])
def test_a_failure_on_one_rank_mid_run_stops_every_rank_with_its_line(tmp_path, data_cache, crash):
    """Rank 1 alone fails in the evaluation at update 4 (rank 0 then waits for it in a collective): rank 0 stops
    with rank 1's line and exit code, not as for a peer that stopped answering."""
    fork = ["+eval.evals.fork._target_=tests.training.fork_parts.RefusesOnRank", "+eval.evals.fork.rank=1"]
    fork += ["+eval.evals.fork.call=2", f"+eval.evals.fork.crash={str(crash).lower()}"]
    args = [*ARGS, "trainer.max_steps=8", "trainer.eval_every=4", "trainer.collective_timeout=120", *fork]
    started = time.monotonic()
    proc = torchrun(args, tmp_path, data_cache, run_dir=tmp_path / "run", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and time.monotonic() - started < 100, out[-3000:]
    line = f"{'rank 1 crashed: RuntimeError: ' if crash else ''}eval.evals.fork: planted failure on rank 1"
    assert out.count(f"error: {line}") == (1 if crash else 2), out[-3000:]  # a crash: rank 1's own traceback
    assert "stopped answering" not in out and "as another rank left" not in out, out[-3000:]
    assert f"exitcode  : {1 if crash else 2}" in out, out[-3000:]


def test_a_failure_of_rank_zeros_end_of_run_report_ends_every_rank_with_its_line(tmp_path, data_cache):
    """Rank 0 alone reports at the end while the others wait for it at the last barrier: when its report fails
    (summary.json cannot be written), they end with its line and exit code, not as a run that finished."""
    args = [*ARGS, "trainer.max_steps=4", "+logger.sinks.blocks._target_=tests.training.fork_parts.BlocksTheSummary"]
    proc = torchrun(args, tmp_path, data_cache, run_dir=tmp_path / "run", check=False)
    out = proc.stdout + proc.stderr
    line = f"error: {tmp_path / 'run' / 'summary.json'}: cannot be written"
    assert out.count(line) == 2, out[-3000:]  # rank 0's line, and rank 1's copy of it
    assert "stopped answering" not in out and "exitcode  : 2" in out, out[-3000:]
    assert "exitcode  : 0" not in out, out[-3000:]


def save_on_a_full_disk(rank: int, store: str, out: str) -> None:
    """One of two gloo ranks saving a checkpoint whose folder rank 0 cannot write (its disk is full)."""
    import datetime

    import torch.distributed as dist

    from data.atomic import DiskFull
    from training import distributed

    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60)
    )
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)
    run_dir = Path(out).parent

    def no_room(root, step, *args, **kwargs):
        raise DiskFull(root / checkpoint.step_dir_name(step), 10**9, hint="free space")

    if rank == 0:
        checkpoint.save = no_room
    saver = checkpoint.Checkpointer(
        run_dir, model, optimizer, scheduler, None, distributed.Dist(rank=rank, local_rank=rank, world_size=2), "ddp", 2
    )
    started = time.monotonic()
    try:
        saver.save(3, 0, {}, {})
        outcome = "saved"
    except USER_ERRORS as e:
        outcome = f"{type(e).__name__}: {e}"
    except Exception as e:  # the peer's departure, as gloo reports it
        outcome = f"crash {type(e).__name__}: {e}"
    Path(f"{out}.{rank}").write_text(f"{time.monotonic() - started:.1f}\n{outcome}")


def test_a_full_disk_on_rank_zero_during_a_save_stops_every_rank_with_its_one_line(tmp_path):
    import torch.multiprocessing

    torch.multiprocessing.spawn(save_on_a_full_disk, args=(str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2)
    (seconds0, said0), (seconds1, said1) = [(tmp_path / f"out.{r}").read_text().split("\n", 1) for r in range(2)]
    assert said0.startswith("DiskFull: no space left to write") and "\n" not in said0
    assert said1 == said0.replace("DiskFull", "ConfigError", 1), said1  # the same line, not a peer's departure
    assert float(seconds1) < 30, seconds1  # at once, not at the collective timeout
    assert not (tmp_path / "checkpoints" / checkpoint.step_dir_name(3)).exists()
