"""train.py end to end on tiny settings: the run directory, the logged lr against the formula, errors."""

from __future__ import annotations

import math

from tests.conftest import TINY, read_metrics, run_train, train_records

PEAK, FLOOR, W, T = 2e-3, 2e-4, 5, 30


def brief_lr(t: int) -> float:
    """The brief's lr_lambda times the peak."""
    if t < W:
        return PEAK * t / W
    c = 0.5 * (1 + math.cos(math.pi * (t - W) / (T - W)))
    return PEAK * (c * (1 - FLOOR / PEAK) + FLOOR / PEAK)


def test_tiny_run_logs_the_formula_lr_and_its_loss_falls(tmp_path, data_cache):
    run = tmp_path / "run"
    args = TINY + [f"trainer.max_steps={T}", f"schedule.warmup_steps={W}", f"optim.lr={PEAK}",
                   f"schedule.min_lr={FLOOR}", "trainer.eval_every=10", "trainer.grad_accum_steps=2"]  # fmt: skip
    proc = run_train(args, run, data_cache)
    records = train_records(run)
    assert sorted(records) == list(range(T))
    for t, r in records.items():
        assert math.isclose(r["train/lr"], brief_lr(t), rel_tol=1e-12, abs_tol=1e-18), t
        for key in ("train/grad_norm", "train/tokens_per_sec", "train/step_time", "tokens"):
            assert key in r
    assert records[T - 1]["tokens"] == T * 2 * 4 * 32
    first = sum(records[t]["train/loss"] for t in range(3)) / 3
    last = sum(records[t]["train/loss"] for t in range(T - 3, T)) / 3
    assert last < first - 0.5, (first, last)
    evals = [r for r in read_metrics(run) if "val/loss" in r]
    assert [e["step"] for e in evals] == [0, 10, 20, 30]
    assert evals[-1]["val/loss"] < evals[0]["val/loss"]
    assert all(e["val/bpb"] > 0 for e in evals)
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "train.log").is_file()
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step-{T:08d}"
    assert "sample:" in proc.stdout + proc.stderr


def test_bad_value_exits_nonzero_with_one_line_and_leaves_nothing(tmp_path, data_cache):
    run = tmp_path / "run"
    proc = run_train(TINY + ["trainer.max_steps=0"], run, data_cache, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: trainer.max_steps must be an integer > 0, got 0"
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not run.exists()
