"""The SLURM scripts' own logic, run by bash with stand-ins for srun, torchrun and scontrol on the PATH.

The stand-in torchrun (its SIGTERM trap set before it logs its start, which the tests wait for) records its arguments
and environment, then trains until SIGTERM and exits with the code the test chose: 1 is what torchrun reports for
workers that checkpointed and exited 75, 0 a run that finished.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["slurm/train.sbatch", "slurm/single_node.sbatch"]

STAND_INS = {
    "scontrol": """#!/bin/bash
if [ "$1" = show ]; then echo node1; echo node2; exit 0; fi
echo "scontrol $*" >> "$LOG"
""",
    # srun's own options come first; the task it starts replaces it, as the signals srun forwards reach it.
    "srun": """#!/bin/bash
while [[ "$1" == --* ]]; do shift; done
exec "$@"
""",
    "torchrun": """#!/bin/bash
trap 'echo "torchrun got TERM" >> "$LOG"; exit $EXIT_ON_TERM' TERM
echo "torchrun $* cpus=${SRUN_CPUS_PER_TASK-unset}" >> "$LOG"
if [ -n "$FINISH" ]; then exit 0; fi
while :; do sleep 0.05; done
""",
}


def start(tmp_path, script, **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in STAND_INS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "log"
    log.touch()
    full_env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LOG": str(log),
        "SLURM_JOB_NAME": "gpt",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_NNODES": "2",
        "SLURM_CPUS_PER_TASK": "64",
        "EXIT_ON_TERM": "1",
        **env,
    }
    if "RUN_DIR" not in env:
        full_env.pop("RUN_DIR", None)
    process = subprocess.Popen(
        ["bash", str(ROOT / script), "model=gpt2"], cwd=tmp_path, env=full_env, stdout=subprocess.PIPE, text=True
    )
    return process, log


def wait_for(log, text):
    deadline = time.monotonic() + 20
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} never reached the log: {log.read_text()!r}"
        time.sleep(0.02)


@pytest.mark.parametrize("script", SCRIPTS)
def test_run_directory_is_the_jobs_own_and_overrides_pass_through(tmp_path, script):
    process, log = start(tmp_path, script, FINISH="1")
    assert process.wait(timeout=20) == 0
    line = log.read_text()
    # A requeued job keeps its id, so it finds its checkpoint; another submission of the same name does not.
    assert "hydra.run.dir=outputs/slurm/gpt-4242 model=gpt2" in line
    assert "scontrol requeue" not in line

    process, log = start(tmp_path, script, FINISH="1", RUN_DIR="outputs/slurm/gpt-17")
    assert process.wait(timeout=20) == 0
    assert "hydra.run.dir=outputs/slurm/gpt-17 model=gpt2" in log.read_text()


def test_srun_gets_the_cpus_per_task(tmp_path):
    # Since Slurm 22.05 srun does not inherit --cpus-per-task; the multi-node script passes it on.
    process, log = start(tmp_path, "slurm/train.sbatch", FINISH="1")
    assert process.wait(timeout=20) == 0
    assert "cpus=64" in log.read_text()


@pytest.mark.parametrize("script", SCRIPTS)
def test_time_limit_signal_checkpoints_then_requeues(tmp_path, script):
    process, log = start(tmp_path, script)
    wait_for(log, "torchrun")
    process.send_signal(signal.SIGUSR1)
    assert process.wait(timeout=20) == 0
    text = log.read_text()
    assert "torchrun got TERM" in text
    assert text.index("torchrun got TERM") < text.index("scontrol requeue 4242")


@pytest.mark.parametrize("script", SCRIPTS)
def test_run_that_finishes_at_the_signal_is_not_requeued(tmp_path, script):
    process, log = start(tmp_path, script, EXIT_ON_TERM="0")
    wait_for(log, "torchrun")
    process.send_signal(signal.SIGUSR1)
    assert process.wait(timeout=20) == 0
    assert "torchrun got TERM" in log.read_text()
    assert "scontrol requeue" not in log.read_text()
    assert "not requeueing" in process.stdout.read()
