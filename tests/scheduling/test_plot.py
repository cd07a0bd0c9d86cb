"""``python -m scheduling.plot``: the chart and key-step table of the configured schedule(s), sweeps overlaid in one
PNG, and one ``error:`` line with exit code 2 for a bad override or value."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from scheduling import plot

ROOT = Path(__file__).resolve().parents[2]
T, W, PEAK, FLOOR = 100_000, 10_000, 3e-4, 3e-5
SETTINGS = [f"trainer.max_steps={T}", f"schedule.warmup_steps={W}", f"optim.lr={PEAK}", f"schedule.min_lr={FLOOR}"]


def cosine_lr(t: int) -> float:
    """A linear warmup to the peak over W, half a cosine down to the floor at T, then the floor."""
    if t < W:
        return PEAK * t / W
    return FLOOR + (PEAK - FLOOR) * 0.5 * (1 + math.cos(math.pi * min(1.0, (t - W) / (T - W))))


def test_plot_cli_writes_a_png_and_prints_the_lr_at_key_steps(tmp_path):
    out = tmp_path / "cosine.png"
    proc = subprocess.run(
        [sys.executable, "-m", "scheduling.plot", "schedule=cosine", *SETTINGS, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr  # a fresh process: plot registers the resolver conf/ uses itself
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {tuple(line.split()[-2:]) for line in proc.stdout.splitlines()[1:-1]}
    for step in (0, W, (W + T) // 2, T, T + T // 10):
        assert (str(step), f"{cosine_lr(step):.4e}") in rows, (step, proc.stdout)


def test_plot_overlays_a_sweep_in_one_png(tmp_path, capsys):
    out = tmp_path / "sweep.png"
    assert plot.main(["-m", "schedule=cosine,linear,wsd", *SETTINGS, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert out.is_file() and list(tmp_path.iterdir()) == [out]
    assert [line.split()[0] for line in table.splitlines()[1:-1:5]] == ["cosine", "linear", "wsd"]


def test_a_sweep_with_long_labels_keeps_its_whole_legend_inside_the_picture(tmp_path):
    import matplotlib.image as mpimg

    out = tmp_path / "sweep.png"
    sweep = [
        "schedule=wsd,linear",
        "schedule.warmup_steps=100,2000",
        "optim.lr=1e-3,3e-3",
        "schedule.min_lr_ratio=0.1,0.2",
    ]
    assert plot.main(["-m", *sweep, "trainer.max_steps=20000", "--out", str(out)]) == 0
    img = mpimg.imread(out)[:, :, :3]
    for edge in (img[:, 0], img[:, -1], img[0], img[-1]):  # nothing drawn reaches an edge: nothing was cut off
        assert (edge > 0.99).all()


def test_sweeps_expand_in_the_order_train_py_multirun_runs_them():
    assert plot.expand_sweeps(["schedule=cosine,wsd", "optim.lr=0.001,0.002", "trainer.max_steps=50"]) == [
        ["schedule=cosine", "optim.lr=0.001", "trainer.max_steps=50"],
        ["schedule=cosine", "optim.lr=0.002", "trainer.max_steps=50"],
        ["schedule=wsd", "optim.lr=0.001", "trainer.max_steps=50"],
        ["schedule=wsd", "optim.lr=0.002", "trainer.max_steps=50"],
    ]


def test_a_sweep_the_config_sets_is_drawn_as_train_py_runs_it_the_command_line_winning():
    grid = [(c.schedule.name, c.peak_lr) for c in plot.build_curves(["experiment=lr_schedule_sweep"])]
    assert grid == [(name, lr) for lr in (1e-3, 3e-3, 1e-2) for name in ("cosine", "wsd")]  # train.py's 6 jobs
    given = plot.build_curves(["experiment=lr_schedule_sweep", "optim.lr=5e-4"])
    assert [(c.schedule.name, c.peak_lr) for c in given] == [("cosine", 5e-4), ("wsd", 5e-4)]


@pytest.mark.parametrize(
    "args,message",
    [
        (["schedule=wsd", "schedule.decay_fraction=1.5"], "error: schedule.decay_fraction must be"),
        (["experiment=cpu_budget"], "error: trainer.max_time: a budget fixes T when the run starts"),
        (["trainer.max_tokens=100000"], "error: trainer.max_tokens: a budget fixes T when the run starts"),
        (["schedule=glob(nothing*)"], "error: override 'schedule=glob(nothing*)' selects nothing"),
        (["schedule=exponential"], "error: In 'config': Could not find 'schedule/exponential'"),
        (["schedule.warmup_steps"], "error: Error parsing override 'schedule.warmup_steps'"),
        (["schedule.power=2"], "error: schedule.power: the config has no such key to plot with"),
    ],
)
def test_plot_bad_overrides_give_one_error_line_and_exit_2(args, message, tmp_path, capsys):
    assert plot.main([*args, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "out,message",
    [
        ("lr.jpeg2", "error: --out {tmp}/lr.jpeg2: an image file (.avif, .eps"),
        ("afile/x.png", "error: --out {tmp}/afile/x.png: cannot be written"),
    ],
)
def test_an_out_path_that_cannot_hold_the_picture_is_one_error_line(out, message, tmp_path, capsys):
    (tmp_path / "afile").write_text("a file, not a folder")
    assert plot.main(["trainer.max_steps=100", "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(tmp=tmp_path)) and err.count("\n") == 1, err


def test_an_out_path_without_a_suffix_gets_png_and_says_so(tmp_path, capsys):
    assert plot.main(["trainer.max_steps=100", "++schedule.min_lr=1e-4", "--out", str(tmp_path / "lr")]) == 0
    assert f"wrote {tmp_path / 'lr.png'}" in capsys.readouterr().out
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
