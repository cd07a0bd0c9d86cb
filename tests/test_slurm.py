"""The SLURM scripts, run by bash with stand-ins for srun and scontrol on the PATH (and for torchrun, except in the
last test, which runs the real torchrun and train.py).

Near the time limit SLURM sends USR1 to the script (``--signal=B:USR1@…``), which must send SIGTERM to the training
processes alone: torchrun's children, not torchrun (which kills its workers 30 s after a signal of its own), nor
srun (which turns SIGTERM into SIGKILL for its tasks). The stand-in torchrun records its arguments and environment
and runs one stand-in worker, which trains until SIGTERM, then writes the run's summary.json as train.py would and
exits 75; torchrun exits 1 for a worker's non-zero code, as the real one does.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY, train_records

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["slurm/train.sbatch", "slurm/single_node.sbatch"]
JOB = str(os.getpid())  # names the pid file train.sbatch keeps in /tmp: one per test process

STAND_INS = {
    "scontrol": """#!/bin/bash
if [ "$1" = show ]; then echo node1; echo node2; exit 0; fi
echo "scontrol $*" >> "$LOG"
""",
    # srun's own options come first; the task it starts replaces it, here on the one node there is
    "srun": """#!/bin/bash
while [[ "$1" == --* ]]; do shift; done
exec "$@"
""",
    "torchrun": """#!/bin/bash
trap 'echo "torchrun got TERM" >> "$LOG"' TERM
for a in "$@"; do case $a in hydra.run.dir=*) run_dir=${a#hydra.run.dir=};; esac; done
echo "torchrun $* cpus=${SRUN_CPUS_PER_TASK-unset}" >> "$LOG"
while (( SECONDS < ${WORKER_DELAY:-0} )); do :; done  # the rendezvous before the workers start (no child yet)
worker "$run_dir" &
w=$!
wait $w; code=$?
while [ $code -gt 128 ] && kill -0 $w 2>/dev/null; do wait $w; code=$?; done
[ $code -eq 0 ]
""",
    # the summary.json train.py writes as it ends ($ENDING: none when it was killed or crashed)
    "worker": """#!/bin/bash
end() {
    mkdir -p "$1"
    [ "$ENDING" = none ] && return
    printf '{"status": "%s", "stopped_by": "%s"}' "${ENDING%%:*}" "${ENDING#*:}" > "$1/summary.json"
}
trap 'echo "worker got TERM" >> "$LOG"; end "$1"; exit 75' TERM
echo "worker started" >> "$LOG"
if [ -n "$FINISH" ]; then end "$1"; exit $FINISH; fi
while :; do sleep 0.05; done
""",
}


@pytest.fixture(autouse=True)
def no_pid_file_left():
    """train.sbatch keeps each node's torchrun pid in /tmp: a test stopped early leaves it there."""
    yield
    for left in Path("/tmp").glob(f"torchrun-{JOB}-*.pid"):
        left.unlink(missing_ok=True)


def stand_ins(tmp_path, names=tuple(STAND_INS)) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        (bin_dir / name).write_text(STAND_INS[name])
        (bin_dir / name).chmod(0o755)
    return bin_dir


def start(tmp_path, script, args=("model=gpt2",), stand_in=tuple(STAND_INS), cwd=None, **env):
    log = tmp_path / "log"
    log.touch()
    full_env = {
        **os.environ,
        "PATH": f"{stand_ins(tmp_path, stand_in)}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "LOG": str(log),
        "SLURM_JOB_NAME": "gpt",
        "SLURM_JOB_ID": JOB,
        "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_NNODES": "2",
        "SLURM_CPUS_PER_TASK": "64",
        "ENDING": "preempted:SIGTERM",
        **env,
    }
    if "RUN_DIR" not in env:
        full_env.pop("RUN_DIR", None)
    process = subprocess.Popen(
        ["bash", str(ROOT / script), *args], cwd=cwd or tmp_path, env=full_env, stdout=subprocess.PIPE, text=True
    )
    return process, log


def wait_for(log, text, timeout=20):
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} never reached the log: {log.read_text()!r}"
        time.sleep(0.02)


def time_limit_signal(process) -> None:
    """What SLURM does at --signal=B:USR1@…: USR1 to the batch script."""
    process.send_signal(signal.SIGUSR1)


@pytest.mark.parametrize("script", SCRIPTS)
def test_run_directory_is_the_jobs_own_and_overrides_pass_through(tmp_path, script):
    process, log = start(tmp_path, script, FINISH="0", ENDING="ok:")
    assert process.wait(timeout=20) == 0
    line = log.read_text()
    # A requeued job keeps its id, so it finds its checkpoint; another submission of the same name does not.
    assert f"hydra.run.dir=outputs/slurm/gpt-{JOB} model=gpt2" in line
    assert "scontrol requeue" not in line

    process, log = start(tmp_path, script, FINISH="0", ENDING="ok:", RUN_DIR="outputs/slurm/gpt-17")
    assert process.wait(timeout=20) == 0
    assert "hydra.run.dir=outputs/slurm/gpt-17 model=gpt2" in log.read_text()


def test_srun_gets_the_cpus_per_task(tmp_path):
    # Since Slurm 22.05 srun does not inherit --cpus-per-task; the multi-node script passes it on.
    process, log = start(tmp_path, "slurm/train.sbatch", FINISH="0", ENDING="ok:")
    assert process.wait(timeout=20) == 0
    assert "cpus=64" in log.read_text()


@pytest.mark.parametrize("script", SCRIPTS)
def test_time_limit_signal_stops_the_workers_alone_then_requeues(tmp_path, script):
    process, log = start(tmp_path, script)
    wait_for(log, "worker started")
    time_limit_signal(process)
    assert process.wait(timeout=20) == 0
    text = log.read_text()
    assert text.index("worker got TERM") < text.index(f"scontrol requeue {JOB}")
    assert "torchrun got TERM" not in text  # it would kill its workers 30 s later
    assert f"requeueing job {JOB}" in process.stdout.read()


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_time_limit_signal_before_the_workers_start_reaches_them_once_they_do(tmp_path, script):
    process, log = start(tmp_path, script, WORKER_DELAY="2")
    wait_for(log, "torchrun ")
    time_limit_signal(process)  # SLURM sends it once
    assert process.wait(timeout=30) == 0
    assert "worker got TERM" in log.read_text() and f"scontrol requeue {JOB}" in log.read_text()


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(
    "ending, code",
    [("ok:", 0), ("preempted:trainer.stop_at", 1), ("failed:", 1), ("none", 1)],
    ids=["finished", "stop_at", "failed", "crashed"],
)
def test_a_run_that_finished_failed_or_stopped_at_stop_at_is_not_requeued(tmp_path, script, ending, code):
    process, log = start(tmp_path, script, FINISH=str(code), ENDING=ending)
    assert process.wait(timeout=20) == code
    assert "scontrol requeue" not in log.read_text()


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_summary_left_by_an_earlier_job_does_not_requeue_one_that_crashed(tmp_path, script):
    """The earlier job was stopped by the time limit; this one crashed before its run wrote a summary."""
    run_dir = tmp_path / "outputs" / "slurm" / f"gpt-{JOB}"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"status": "preempted", "stopped_by": "SIGTERM"}))
    process, log = start(tmp_path, script, FINISH="1", ENDING="none")
    assert process.wait(timeout=20) == 1
    assert "scontrol requeue" not in log.read_text()


@pytest.mark.slow
def test_the_real_torchrun_signalled_as_slurm_does_checkpoints_requeues_and_the_requeued_job_finishes(
    tmp_path, data_cache
):
    """single_node.sbatch with the real torchrun and train.py (two gloo ranks): USR1 to the script, as SLURM sends
    it, reaches the workers, which checkpoint; the script requeues; the requeued job (same id, same command)
    resumes there and finishes, and is not requeued."""
    run_dir = tmp_path / "run"
    args = [*TINY, "trainer.max_steps=60", "trainer.global_batch_tokens=256", "trainer.eval_every=0"]
    env = {
        "SLURM_GPUS_ON_NODE": "2",
        "RUN_DIR": str(run_dir),
        "GPT_DATA_CACHE": str(data_cache),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
    }
    process, log = start(tmp_path, "slurm/single_node.sbatch", args, ("srun", "scontrol"), cwd=ROOT, **env)
    deadline = time.monotonic() + 300
    while not (run_dir / "metrics.jsonl").is_file() or len(train_records(run_dir)) < 3:
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.1)
    time_limit_signal(process)
    assert process.wait(timeout=300) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["stopped_by"]) == ("preempted", "SIGTERM")
    stopped_at = len(train_records(run_dir))
    assert stopped_at < 60 and (run_dir / "checkpoints" / f"step-{stopped_at:08d}").is_dir()
    assert f"scontrol requeue {JOB}" in log.read_text()

    process, log = start(tmp_path, "slurm/single_node.sbatch", args, ("srun", "scontrol"), cwd=ROOT, **env)
    assert process.wait(timeout=300) == 0
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "ok"
    assert sorted(train_records(run_dir)) == list(range(60))
    assert log.read_text().count("scontrol requeue") == 1
