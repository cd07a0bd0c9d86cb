"""The schedule inside a run: what the loop logs under gradient accumulation, and resuming with a changed schedule."""

from __future__ import annotations

import math
import shutil

import pytest

from scheduling import ScheduleError
from tests.conftest import train_records
from tests.training import written_out

PEAK, FLOOR, W, N = 2e-3, 2e-4, 2, 8
# WSD with a 20% decay and 4 micro-batches per update.
WSD = [
    "schedule=wsd",
    "schedule.decay_fraction=0.2",
    f"schedule.warmup_steps={W}",
    f"optim.lr={PEAK}",
    f"schedule.min_lr={FLOOR}",
    "trainer.grad_accum_steps=4",
    "trainer.eval_every=0",
    "trainer.sample_tokens=0",
]


def wsd_lr(t: int, total: int) -> float:
    """WSD with warmup W, then a 1-sqrt decay over D = 20% of T to the floor."""
    return written_out.wsd_lr(t, total, peak=PEAK, floor=FLOOR, warmup=W, decay_fraction=0.2)


def cosine_lr(t: int, total: int) -> float:
    if t < W:
        return PEAK * t / W
    c = 0.5 * (1 + math.cos(math.pi * min(1.0, (t - W) / (total - W))))
    return FLOOR + (PEAK - FLOOR) * c


@pytest.fixture(scope="module")
def wsd_run(tmp_path_factory, data_cache):
    """A finished N-update WSD run with gradient accumulation 4."""
    from tests.conftest import TINY, compose_config
    from train import train

    run = tmp_path_factory.mktemp("wsd") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT_DATA_CACHE", str(data_cache))
        train(compose_config(TINY + WSD + [f"trainer.max_steps={N}"]), run)
    return run


def test_the_logged_lr_under_gradient_accumulation_is_the_formula_at_update_indices(wsd_run):
    records = train_records(wsd_run)
    assert sorted(records) == list(range(N))
    for t, r in records.items():  # stepped per micro-batch, update t would log the lr of 4t
        assert math.isclose(r["train/lr"], wsd_lr(t, N), rel_tol=1e-12), (t, r["train/lr"])


def test_a_resume_with_a_larger_max_steps_is_refused_naming_what_changed(wsd_run, tmp_path, tiny_train):
    run = shutil.copytree(wsd_run, tmp_path / "run")
    with pytest.raises(ScheduleError) as err:
        tiny_train(run, WSD + [f"trainer.max_steps={N + 4}"])
    assert f"trainer.max_steps {N} → {N + 4}" in str(err.value) and "trainer.allow_schedule_change=true" in str(
        err.value
    )
    assert sorted(train_records(run)) == list(range(N))  # nothing was trained or logged


def test_a_resume_with_another_schedule_when_allowed_follows_it_from_the_saved_update(wsd_run, tmp_path, tiny_train):
    run = shutil.copytree(wsd_run, tmp_path / "run")
    total = N + 4
    args = [a for a in WSD if not a.startswith(("schedule=", "schedule.decay"))]
    tiny_train(run, args + ["schedule=cosine", f"trainer.max_steps={total}", "trainer.allow_schedule_change=true"])
    records = train_records(run)
    assert sorted(records) == list(range(total))
    for t in range(N):  # the first run's records are kept
        assert math.isclose(records[t]["train/lr"], wsd_lr(t, N), rel_tol=1e-12), t
    for t in range(N, total):  # then the new schedule, at the saved update index
        assert math.isclose(records[t]["train/lr"], cosine_lr(t, total), rel_tol=1e-12), t
