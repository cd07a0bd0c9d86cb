"""The benchmark scripts refuse bad input before any work, as the entry points do: one ``error:`` line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

# (script, arguments, what its one line says); {tmp} is an empty folder
BAD_ARGUMENTS = [
    ("throughput.py", ["--device", "cpu", "--against", "a='b"], 'error: --against "a=\'b": No closing quotation'),
    ("throughput.py", ["--device", "cpu", "--against", "bogus.key=1"], "error: --against 'bogus.key=1': bogus.key"),
    ("throughput.py", ["--device", "cpu", "--compare-ref", "{tmp}"], "error: --compare-ref: '{tmp}' holds no tree"),
    ("cache_check.py", ["--gb", "nan"], "error: cache_check.py: argument --gb: must be a number of GB in [0.125,"),
    ("cache_check.py", ["data=text_files", "data.path={tmp}/none"], "error: data.path: '{tmp}/none' does not exist"),
    ("prose_corpus.py", ["--out", "{tmp}/out", "--max-bytes", "-5"], "error: prose_corpus.py: argument --max-bytes"),
    ("val_noise.py", ["{tmp}"], "error: {tmp}: no checkpoint"),
]


@pytest.mark.parametrize("script,args,line", BAD_ARGUMENTS, ids=[f"{s} {' '.join(a)}" for s, a, _ in BAD_ARGUMENTS])
def test_a_bad_argument_of_a_benchmark_is_one_error_line_before_any_work(script, args, line, tmp_path):
    args, line = [a.format(tmp=tmp_path) for a in args], line.format(tmp=tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith(line), proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_checkpoint_is_one_line_for_the_validation_noise(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints" / "step-00000002"
    checkpoints.mkdir(parents=True)
    (checkpoints / "state.pt").write_bytes(b"not a checkpoint" * 64)
    (checkpoints.parent / "latest").write_text("step-00000002\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "val_noise.py"), str(tmp_path / "run")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: checkpoint {checkpoints}/state.pt: cannot be read")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what the GPU script says where there is no CUDA")
def test_the_gpu_check_stops_in_one_line_where_there_is_no_cuda(tmp_path):
    """With this interpreter first on PATH: the script runs `python`, as the GPU machine's would."""
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh")],
        env={
            **os.environ,
            "OUT": str(tmp_path / "out"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stdout.startswith("== no CUDA GPU here"), proc.stdout + proc.stderr
    assert proc.stdout.count("\n") == 1 and "Traceback" not in proc.stderr
