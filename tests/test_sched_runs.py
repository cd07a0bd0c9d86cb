"""Schedules end to end: what train.py logs under gradient accumulation, resuming with a changed schedule, config
errors from the command line, and the plot CLI."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import pytest

from scheduling import plot
from tests.conftest import ROOT, TINY, run_train, train_records

PEAK, FLOOR, W, N = 2e-3, 2e-4, 2, 8
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # a model this small gains nothing from more; spares a shared machine
# The README's example on tiny settings — WSD with a 20% decay — with 4 micro-batches per update.
WSD_RUN = TINY + ["schedule=wsd", "schedule.decay_fraction=0.2", f"schedule.warmup_steps={W}", f"optim.lr={PEAK}",
                  f"schedule.min_lr={FLOOR}", "trainer.grad_accum_steps=4", "trainer.eval_every=0",
                  "trainer.sample_tokens=0"]  # fmt: skip


def wsd_lr(t: int, total: int) -> float:
    """WSD written out: linear warmup over W, the peak, then a 1-sqrt decay over D = 20% of T to the floor."""
    decay = round(0.2 * total)
    if t < W:
        return PEAK * t / W
    if t < total - decay:
        return PEAK
    q = min(1.0, (t - total + decay) / decay)
    return FLOOR + (PEAK - FLOOR) * (1 - math.sqrt(q))


def cosine_lr(t: int, total: int) -> float:
    if t < W:
        return PEAK * t / W
    c = 0.5 * (1 + math.cos(math.pi * min(1.0, (t - W) / (total - W))))
    return FLOOR + (PEAK - FLOOR) * c


@pytest.fixture(scope="module")
def wsd_run(tmp_path_factory, data_cache):
    """A finished N-update WSD run with gradient accumulation 4."""
    run = tmp_path_factory.mktemp("wsd") / "run"
    run_train(WSD_RUN + [f"trainer.max_steps={N}"], run, data_cache, env=ONE_THREAD)
    return run


def copy_of(run, tmp_path):
    return shutil.copytree(run, tmp_path / "run")


def test_logged_lr_under_gradient_accumulation_is_the_formula_at_update_indices(wsd_run):
    records = train_records(wsd_run)
    assert sorted(records) == list(range(N))
    for t, r in records.items():  # stepped per micro-batch, update t would log the lr of 4t
        assert math.isclose(r["train/lr"], wsd_lr(t, N), rel_tol=1e-12), (t, r["train/lr"])


def test_resume_with_a_larger_max_steps_is_refused_in_one_line(wsd_run, tmp_path, data_cache):
    run = copy_of(wsd_run, tmp_path)
    proc = run_train(WSD_RUN + [f"trainer.max_steps={N + 4}"], run, data_cache, env=ONE_THREAD, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert f"trainer.max_steps {N} → {N + 4}" in lines[0] and "trainer.allow_schedule_change=true" in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert sorted(train_records(run)) == list(range(N))  # nothing was trained or logged


def test_resume_with_another_schedule_when_allowed_follows_it_from_the_saved_update(wsd_run, tmp_path, data_cache):
    run = copy_of(wsd_run, tmp_path)
    total = N + 4
    args = [a for a in WSD_RUN if not a.startswith(("schedule=", "schedule.decay"))]
    run_train(args + ["schedule=cosine", f"trainer.max_steps={total}", "trainer.allow_schedule_change=true"],
              run, data_cache, env=ONE_THREAD)  # fmt: skip
    records = train_records(run)
    assert sorted(records) == list(range(total))
    for t in range(N):  # the first run's records are kept
        assert math.isclose(records[t]["train/lr"], wsd_lr(t, N), rel_tol=1e-12), t
    for t in range(N, total):  # then the new schedule, at the saved update index
        assert math.isclose(records[t]["train/lr"], cosine_lr(t, total), rel_tol=1e-12), t


@pytest.mark.parametrize(
    "args,message",
    [
        (["schedule=wsd", "schedule.decay_fraction=1.5"], "error: schedule.decay_fraction must be a fraction of"),
        (["schedule.name=cosine_annealing"], "error: schedule.name must be one of constant, cosine, cosine_restarts"),
    ],
)
def test_bad_schedule_settings_stop_train_py_with_one_line(args, message, tmp_path, data_cache):
    run = tmp_path / "run"
    proc = run_train(TINY + args, run, data_cache, env=ONE_THREAD, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(message) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and not run.exists()


# ---- the plot CLI -------------------------------------------------------------------------------------------

BRIEF = ["trainer.max_steps=100000", "schedule.warmup_steps=10000", "optim.lr=3e-4", "schedule.min_lr=3e-5"]


def test_plot_cli_writes_the_brief_chart_and_prints_key_steps(tmp_path):
    out = tmp_path / "cosine.png"
    proc = subprocess.run([sys.executable, "-m", "scheduling.plot", "schedule=cosine", *BRIEF, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {tuple(line.split()[-2:]) for line in proc.stdout.splitlines()[1:-1]}
    for step, lr in [(0, 0.0), (10_000, 3e-4), (55_000, 1.65e-4), (100_000, 3e-5), (110_000, 3e-5)]:
        assert (str(step), f"{lr:.4e}") in rows, (step, proc.stdout)


def test_plot_overlays_a_sweep_in_one_png(tmp_path, capsys):
    out = tmp_path / "sweep.png"
    assert plot.main(["-m", "schedule=cosine,linear,wsd", *BRIEF, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert out.is_file() and list(tmp_path.iterdir()) == [out]
    assert [line.split()[0] for line in table.splitlines()[1:-1:5]] == ["cosine", "linear", "wsd"]
    assert plot.expand_sweeps(["schedule=cosine,wsd", "optim.lr=0.001,0.002", "trainer.max_steps=50"]) == [
        ["schedule=cosine", "optim.lr=0.001", "trainer.max_steps=50"],
        ["schedule=cosine", "optim.lr=0.002", "trainer.max_steps=50"],
        ["schedule=wsd", "optim.lr=0.001", "trainer.max_steps=50"],
        ["schedule=wsd", "optim.lr=0.002", "trainer.max_steps=50"],
    ]


@pytest.mark.parametrize(
    "args,message",
    [
        (["schedule=wsd", "schedule.decay_fraction=1.5"], "error: schedule.decay_fraction must be"),
        (["schedule=exponential"], "error: In 'config': Could not find 'schedule/exponential'"),
        (["schedule.warmup_steps"], "error: Error parsing override 'schedule.warmup_steps'"),
        (["schedule.power=2"], "error: Could not override 'schedule.power'"),
    ],
)
def test_plot_bad_overrides_give_one_error_line_and_exit_2(args, message, tmp_path, capsys):
    assert plot.main([*args, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "x.png").exists()
