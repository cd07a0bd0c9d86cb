"""The schedules as pure functions: warmup then decay, their formulas and floors, validation, and properties."""

from __future__ import annotations

import inspect
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from scheduling import (
    SCHEDULES,
    WARMUP_SHAPES,
    Schedule,
    ScheduleError,
    resolve_steps,
    schedule_from_config,
    unless_budget,
    warmup,
)
from scheduling.schedules import DECAY_SHAPES

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"

# The standard warmup-cosine example: a linear warmup over W, then half a cosine down to the floor at T.
T, W, PEAK, FLOOR = 100_000, 10_000, 3e-4, 3e-5


def warmup_cosine_lr_lambda(t: int) -> float:
    if t < W:
        return t / W
    c = 0.5 * (1 + math.cos(math.pi * (t - W) / (T - W)))
    return c * (1 - FLOOR / PEAK) + FLOOR / PEAK


def decay(name: str, total_steps: int, floor: float) -> dict:
    """Parameters that end ``name``'s decay at ``floor`` at T (a tabulated schedule: through one knot halfway)."""
    if name == "constant":
        return {}
    if name == "tabulated":
        return {"total_steps": total_steps, "knots": ((total_steps // 2 + 1, 0.5 + floor / 2), (total_steps, floor))}
    return {"total_steps": total_steps, "min_lr_ratio": floor}


def config_schedule(name: str = "cosine", total_steps: int = 500, peak_lr: float = 3e-3, **changes) -> Schedule:
    """The schedule of conf/schedule/<name>.yaml with ``changes``, as train.py builds it (without Hydra: fast)."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "schedule" / f"{name}.yaml"))
    return schedule_from_config({**cfg, **changes}, total_steps, peak_lr)


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -c code`` in a fresh process, with no PYTHONPATH: its imports are what the install provides."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)


# ---- importing --------------------------------------------------------------------------------------------------


def test_importing_scheduling_loads_no_torch_and_nothing_of_training_and_registers_nothing():
    code = """
import sys
import scheduling, scheduling.schedules, scheduling.spec
assert "torch" not in sys.modules, "the pure schedules imported torch"
import scheduling.lr_scheduler, scheduling.plot, scheduling.audit, scheduling.forecast
from omegaconf import OmegaConf
assert not [m for m in sys.modules if m == "training" or m.startswith("training.")], "scheduling imported training"
assert not OmegaConf.has_resolver("unless_budget"), "importing scheduling registered a resolver"
"""
    proc = run_python(code, ROOT)
    assert proc.returncode == 0, proc.stderr


def test_the_installed_drop_in_imports_from_any_directory_without_the_template_s_other_packages(tmp_path):
    code = """
import importlib.util, pathlib, sys
from scheduling import get_scheduler
import scheduling
print(pathlib.Path(scheduling.__file__).resolve())
print([m for m in ("model", "data", "training") if importlib.util.find_spec(m) is not None])
"""
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr  # `pip install -e .` installs the scheduling package
    where, exposed = proc.stdout.splitlines()
    assert Path(where) == ROOT / "scheduling" / "__init__.py"
    assert exposed == "[]"  # generic top-level names stay out of site-packages


# ---- warmup, written once and composed with every decay -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("shape,start", [("linear", 0.0), ("cosine", 0.2), ("exponential", 0.05), ("1-sqrt", 0.1)])
def test_every_schedule_runs_the_warmup_before_W_and_its_decay_from_W(name, shape, start):
    n, w = 60, 12
    extra = {"wsd": {"decay_steps": 20}}.get(name, {})
    params = decay(name, n, 0.1)
    s = Schedule(name, warmup_steps=w, warmup_shape=shape, warmup_start_ratio=start, **params, **extra)
    cold = Schedule(name, warmup_steps=w, **params, **extra)  # the default warmup: linear from 0
    assert [s(t) for t in range(w)] == [warmup(t, w, start, shape) for t in range(w)]
    assert [s(t) for t in range(w, n + 10)] == [cold(t) for t in range(w, n + 10)]  # the warmup leaves no trace


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_takes_the_warmup_parameters_by_keyword(name):
    parameters = inspect.signature(SCHEDULES[name]).parameters
    for param in ("warmup_steps", "warmup_start_ratio", "warmup_shape"):
        assert parameters[param].kind is inspect.Parameter.KEYWORD_ONLY, param


def test_a_missing_or_unknown_argument_is_a_type_error_during_warmup_too():
    fn = SCHEDULES["cosine"]
    with pytest.raises(TypeError, match="total_steps"):
        fn(3, warmup_steps=10)
    with pytest.raises(TypeError, match="power"):
        fn(3, total_steps=100, warmup_steps=10, power=2.0)
    assert fn(3, total_steps=100, warmup_steps=10) == warmup(3, 10)


# ---- the config: T and the schedule group ----------------------------------------------------------------------


def test_every_schedule_has_a_config_file_that_builds(tmp_path):
    assert sorted(p.stem for p in (CONF / "schedule").glob("*.yaml")) == sorted(SCHEDULES)
    knots = tmp_path / "knots.csv"
    knots.write_text("update,lambda\n400,0.5\n500,0.1\n")
    for name in SCHEDULES:
        given = {"knots": str(knots)} if name == "tabulated" else {}
        assert config_schedule(name, **given).name == name


def test_max_steps_is_its_default_unless_a_token_or_time_budget_is_set():
    assert unless_budget(123, _parent_={"max_tokens": None, "max_time": None}) == 123
    assert unless_budget(123, _parent_={}) == 123
    assert unless_budget(123, _parent_={"max_tokens": 10_000}) is None
    assert unless_budget(123, _parent_={"max_time": 60}) is None


def test_a_token_or_time_budget_alone_replaces_the_default_max_steps(compose_config):
    default = compose_config([]).trainer.max_steps
    assert isinstance(default, int) and default > 0
    assert compose_config(["trainer.max_time=60"]).trainer.max_steps is None
    assert compose_config(["trainer.max_tokens=100000"]).trainer.max_steps is None
    assert compose_config(["trainer.max_time=60", "trainer.max_steps=40"]).trainer.max_steps == 40


def test_default_cosine_is_the_warmup_cosine_lr_lambda_at_every_step(compose_config):
    cfg = compose_config(
        [f"trainer.max_steps={T}", f"schedule.warmup_steps={W}", f"optim.lr={PEAK}", f"schedule.min_lr={FLOOR}"]
    )
    schedule = schedule_from_config(cfg.schedule, cfg.trainer.max_steps, cfg.optim.lr)
    assert schedule.name == "cosine"
    for t in range(T + 1):
        assert math.isclose(schedule(t), warmup_cosine_lr_lambda(t), rel_tol=1e-12, abs_tol=1e-15), t


def test_warmup_fraction_of_total_steps_is_rounded_to_updates():
    assert config_schedule(total_steps=1000, warmup_steps=0.05).warmup_steps == 50
    assert resolve_steps(0.0, 1000, "k") == 0 and resolve_steps(7, 1000, "k") == 7


# ---- each schedule's formula, written out independently ------------------------------------------------------


def test_warmup_shapes_rise_from_their_start_to_the_peak():
    s, n = 0.1, 8
    for t in range(n):
        x = t / n
        assert math.isclose(warmup(t, n), x)
        assert math.isclose(warmup(t, n, s), s + x * (1 - s))
        assert math.isclose(warmup(t, n, s, "cosine"), s + (1 - s) * (1 - math.cos(math.pi * x)) / 2)
        assert math.isclose(warmup(t, n, s, "exponential"), s ** (1 - x))
        assert math.isclose(warmup(t, n, s, "1-sqrt"), s + (1 - s) * (1 - math.sqrt(1 - x)))
    for shape in WARMUP_SHAPES:
        assert math.isclose(
            Schedule("linear", total_steps=20, warmup_steps=n, warmup_shape=shape, warmup_start_ratio=s)(0), s
        )


def test_linear_polynomial_and_wsd_follow_their_formulas():
    n, w, r = 100, 10, 0.2
    lin = Schedule("linear", total_steps=n, warmup_steps=w, min_lr_ratio=r)
    poly = Schedule("polynomial", total_steps=n, warmup_steps=w, min_lr_ratio=r, power=2.5)
    for t in range(w, n + 1):
        p = (t - w) / (n - w)
        assert math.isclose(lin(t), (1 - p) * (1 - r) + r)
        assert math.isclose(poly(t), (1 - p) ** 2.5 * (1 - r) + r)
    d = 30
    shapes = {
        "linear": lambda q: 1 - q,
        "cosine": lambda q: (1 + math.cos(math.pi * q)) / 2,
        "1-sqrt": lambda q: 1 - q**0.5,
    }
    for shape, f in shapes.items():
        wsd = Schedule("wsd", total_steps=n, warmup_steps=w, decay_steps=d, decay_shape=shape, min_lr_ratio=r)
        assert all(wsd(t) == 1.0 for t in range(w, n - d))
        for t in range(n - d, n + 1):
            assert math.isclose(wsd(t), f((t - n + d) / d) * (1 - r) + r), (shape, t)


def test_inverse_sqrt_decays_with_its_timescale_then_cools_down_to_the_floor():
    n, w, tau, c, r = 200, 10, 25.0, 40, 0.1
    s = Schedule("inverse_sqrt", total_steps=n, warmup_steps=w, timescale=tau, cooldown_steps=c, min_lr_ratio=r)
    g = lambda t: 1 / math.sqrt((t - w + tau) / tau) * (1 - r) + r  # noqa: E731
    for t in range(w, n - c):
        assert math.isclose(s(t), g(t))
    for t in range(n - c, n + 1):
        assert math.isclose(s(t), r + (g(n - c) - r) * (n - t) / c)
    assert Schedule("inverse_sqrt", warmup_steps=0)(10_000) == 1 / math.sqrt(2)  # τ = 10 000 when W = 0


def test_a_cooldown_over_the_whole_decay_starts_at_the_peak_not_a_rounding_above_it():
    for c in range(1, 60):
        for r in (1 / 3, 0.1, 0.7, 1 / 7):
            s = Schedule("inverse_sqrt", total_steps=40 + c, warmup_steps=40, min_lr_ratio=r, cooldown_steps=c)
            assert s(40) == 1.0 and max(s(t) for t in range(40, 41 + c)) == 1.0, (c, r)


@pytest.mark.parametrize("T, warmup, cooldown", [(11, 0.5, 0.5), (5, 0.3, 0.7), (15, 0.1, 0.9)])
def test_inverse_sqrt_shares_of_T_that_fill_it_are_taken_though_each_rounds_up(T, warmup, cooldown):
    s = config_schedule("inverse_sqrt", T, warmup_steps=warmup, cooldown_steps=cooldown)
    assert s.warmup_steps + s.params["cooldown_steps"] == T and s(T) == s.params["min_lr_ratio"]
    with pytest.raises(ScheduleError, match="schedule.cooldown_steps"):
        config_schedule("inverse_sqrt", T, warmup_steps=warmup, cooldown_steps=min(0.99, cooldown + 1.5 / T))


def test_cosine_restarts_cycles_and_lowers_each_restart_by_cycle_decay():
    n, w, cycles, gamma, r = 130, 10, 3, 0.5, 0.1
    s = Schedule("cosine_restarts", total_steps=n, warmup_steps=w, num_cycles=cycles, cycle_decay=gamma, min_lr_ratio=r)
    length = (n - w) // cycles  # 40 updates per cycle
    for k in range(cycles):
        start = w + k * length
        assert math.isclose(s(start), gamma**k * (1 - r) + r)
        mid = start + length // 2
        assert math.isclose(s(mid), 0.5 * gamma**k * (1 - r) + r)
    assert s(n) == r


@pytest.mark.parametrize("name", [n for n in SCHEDULES if n != "constant"])
def test_every_decay_holds_its_floor_after_total_steps(name):
    extra = {"wsd": {"decay_steps": 20}, "inverse_sqrt": {"cooldown_steps": 20}}.get(name, {})
    s = Schedule(name, warmup_steps=10, **decay(name, 100, 0.25), **extra)
    assert [s(t) for t in range(100, 400)] == [0.25] * 300


@pytest.mark.parametrize("name", ["linear", "cosine", "polynomial", "cosine_restarts", "wsd"])
def test_a_warmup_as_long_as_the_run_leaves_every_decay_at_its_floor_from_total_steps(name):
    extra = {"wsd": {"decay_steps": 0}}.get(name, {})
    s = Schedule(name, warmup_steps=100, **decay(name, 100, 0.25), **extra)
    assert s(99) < 1.0 and [s(t) for t in range(100, 110)] == [0.25] * 10


def test_a_floor_given_absolute_or_as_a_ratio_is_the_same():
    absolute = config_schedule(peak_lr=2e-3, min_lr=5e-4, min_lr_ratio=0.9)
    ratio = config_schedule(peak_lr=2e-3, min_lr_ratio=0.25)
    assert absolute == ratio


def test_constant_ignores_the_floor_and_keeps_the_peak():
    s = config_schedule("constant", min_lr=1e-5, warmup_steps=10)
    assert s(0) == 0 and s(5) == 0.5 and all(s(t) == 1.0 for t in range(10, 2000))


def test_wsd_decay_steps_win_over_the_fraction():
    assert config_schedule("wsd", decay_steps=7, decay_fraction=0.3).params["decay_steps"] == 7
    assert config_schedule("wsd", decay_steps=7, decay_fraction=None).params["decay_steps"] == 7  # none given
    assert config_schedule("wsd", decay_fraction=0.3).params["decay_steps"] == round(0.3 * 500)


@pytest.mark.parametrize("T, warmup, decay", [(15, 0.1, 0.9), (7, 0.5, 0.5), (35, 0.1, 0.9), (7, 4, 3 / 7)])
def test_wsd_shares_of_T_that_fill_it_are_taken_though_each_rounds_up(T, warmup, decay):
    # 0.1 and 0.9 of 15 round to 2 and 14 (ties to even): the decay then ends at T rather than being refused
    s = config_schedule("wsd", T, warmup_steps=warmup, decay_fraction=decay)
    assert s.warmup_steps + s.params["decay_steps"] == T and s(T) == s.params["min_lr_ratio"]
    with pytest.raises(ScheduleError, match="do not fit together"):
        config_schedule("wsd", T, warmup_steps=warmup, decay_fraction=min(1.0, decay + 1.5 / T))


# ---- validation: one line naming the key ---------------------------------------------------------------------

# (schedule, changes to its config file, T, peak lr, the key the message must name); T = 500, peak 3e-3 by default
BAD = [
    ("cosine", {"warmup_steps": -1}, "schedule.warmup_steps"),
    ("cosine", {"warmup_steps": 600}, "schedule.warmup_steps"),  # > T
    ("cosine", {"warmup_steps": 1.5}, "schedule.warmup_steps"),
    ("constant", {"warmup_steps": 600}, "schedule.warmup_steps"),
    ("cosine", {"total_steps": 0}, "trainer.max_steps"),
    ("cosine", {"total_steps": -5}, "trainer.max_steps"),
    ("cosine", {"min_lr": -1e-5}, "schedule.min_lr"),
    ("cosine", {"min_lr_ratio": -0.1}, "schedule.min_lr_ratio"),
    ("cosine", {"min_lr": 4e-3}, "schedule.min_lr"),  # above the peak
    ("linear", {"min_lr_ratio": 1.5}, "schedule.min_lr_ratio"),
    ("wsd", {"decay_fraction": -0.1}, "schedule.decay_fraction"),
    ("wsd", {"decay_fraction": 1.5}, "schedule.decay_fraction"),
    ("wsd", {"decay_fraction": 0.95}, "schedule.warmup_steps"),  # warmup 50 + decay 475 > 500: both named
    ("wsd", {"decay_steps": 480}, "schedule.warmup_steps"),
    ("wsd", {"decay_shape": "exp"}, "schedule.decay_shape"),
    ("polynomial", {"power": 0}, "schedule.power"),
    ("polynomial", {"power": -2.0}, "schedule.power"),
    ("inverse_sqrt", {"timescale": 0}, "schedule.timescale"),
    ("inverse_sqrt", {"cooldown_steps": 480}, "schedule.warmup_steps"),  # names both: with the warmup, too long
    ("cosine_restarts", {"num_cycles": 0}, "schedule.num_cycles"),
    ("cosine_restarts", {"num_cycles": 1.5}, "schedule.num_cycles"),
    ("cosine_restarts", {"cycle_decay": 0.0}, "schedule.cycle_decay"),
    ("cosine", {"warmup_shape": "exponential"}, "schedule.warmup_start_ratio"),  # from 0 it never grows
    ("cosine", {"warmup_shape": "step"}, "schedule.warmup_shape"),
    ("cosine", {"power": 2.0}, "schedule.power"),  # cosine has no power
]


@pytest.mark.parametrize("name,changes,key", BAD, ids=[f"{n}-{c}" for n, c, _ in BAD])
def test_invalid_settings_raise_one_line_naming_the_key(name, changes, key):
    changes = dict(changes)
    total = changes.pop("total_steps", 500)
    with pytest.raises(ScheduleError) as err:
        config_schedule(name, total, **changes)
    message = str(err.value)
    assert message.startswith(key + " ") and "\n" not in message, message
    assert all(f"schedule.{k}" in message for k in changes if k not in ("warmup_shape", "total_steps")), message


def test_a_value_another_key_overrides_is_checked_too():
    for name, changes, key in [
        ("cosine", {"min_lr": 3e-5, "min_lr_ratio": -5}, "min_lr_ratio"),
        ("wsd", {"decay_steps": 50, "decay_fraction": 7}, "decay_fraction"),
    ]:
        with pytest.raises(ScheduleError, match=f"^schedule.{key} must be "):
            config_schedule(name, **changes)


def test_unknown_schedule_name_lists_the_known_ones():
    with pytest.raises(ScheduleError) as err:
        schedule_from_config({"name": "cosine_annealing"}, 100, 1e-3)
    message = str(err.value)
    assert message.startswith("schedule.name ") and "'cosine_annealing'" in message
    assert all(name in message for name in SCHEDULES)


# ---- properties over random valid parameters ------------------------------------------------------------------
#
# Exemptions, by design: `constant` has no decay and no floor (λ = 1 after warmup, so lr(T) is the peak);
# `inverse_sqrt` reaches the floor at T only with a cooldown (without one λ(T) ≥ floor, and it holds λ(T) after T);
# `cosine_restarts` rises at each restart, so it is non-increasing only within a cycle, and its restarts are
# jumps by design. WSD gets D ≥ 1 decay steps (D = 0 means no decay: the peak until T, then the floor).


@st.composite
def schedule_params(draw, name: str) -> dict:
    total = draw(st.integers(2, 240))
    shape = draw(st.sampled_from(WARMUP_SHAPES))
    p = {
        "warmup_steps": draw(st.integers(0, total - 1)),
        "warmup_shape": shape,
        "warmup_start_ratio": draw(st.floats(0.01 if shape == "exponential" else 0.0, 0.9)),
    }
    if name == "constant":
        return p | {"_T": total}
    room = total - p["warmup_steps"]
    if name == "tabulated":  # knots after W, the last at T, λ never increasing
        updates = sorted(draw(st.sets(st.integers(p["warmup_steps"] + 1, total), max_size=6)) | {total})
        lambdas = sorted(draw(st.lists(st.floats(0.0, 1.0), min_size=len(updates), max_size=len(updates))))
        return p | {"total_steps": total, "knots": tuple(zip(updates, reversed(lambdas), strict=True))}
    p |= {"total_steps": total, "min_lr_ratio": draw(st.floats(0.0, 0.9))}
    if name == "polynomial":
        p["power"] = draw(st.floats(0.1, 5.0))
    elif name == "inverse_sqrt":
        p["timescale"] = draw(st.none() | st.floats(1.0, 1000.0))
        p["cooldown_steps"] = draw(st.integers(0, room))
    elif name == "wsd":
        p["decay_steps"] = draw(st.integers(1, room))
        p["decay_shape"] = draw(st.sampled_from(DECAY_SHAPES))
    elif name == "cosine_restarts":
        p["num_cycles"] = draw(st.integers(1, 5))
        p["cycle_decay"] = draw(st.floats(0.1, 1.0))
    return p


def curve(name: str, params: dict) -> tuple[Schedule, int, list[float]]:
    """The schedule, T, and λ(t) for t = 0 … T + T/2 (+ 5)."""
    params = dict(params)
    total = params.pop("_T", None) or params["total_steps"]
    s = Schedule(name, **params)
    return s, total, [s(t) for t in range(total + total // 2 + 6)]


def floor_of(s: Schedule) -> float:
    """The floor: the last knot's λ for a tabulated schedule, else ``min_lr_ratio``."""
    return s.params["knots"][-1][1] if s.name == "tabulated" else s.params.get("min_lr_ratio", 0.0)


PROPERTY = settings(deadline=None, max_examples=30)  # 8 schedules × 6 properties: a few seconds in all
NAMES = sorted(SCHEDULES)


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(data=st.data())
def test_lr_stays_between_zero_and_the_peak(name, data):
    _, _, lam = curve(name, data.draw(schedule_params(name)))
    assert all(0.0 <= x <= 1.0 + 1e-12 for x in lam)


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(data=st.data())
def test_lr_reaches_the_peak_at_the_end_of_warmup(name, data):
    s, _, lam = curve(name, data.draw(schedule_params(name)))
    assert math.isclose(lam[s.warmup_steps], 1.0, rel_tol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(data=st.data())
def test_lr_never_decreases_during_warmup(name, data):
    s, _, lam = curve(name, data.draw(schedule_params(name)))
    assert all(lam[t] <= lam[t + 1] for t in range(s.warmup_steps))


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(data=st.data())
def test_lr_never_increases_after_warmup_within_a_cycle(name, data):
    s, total, lam = curve(name, data.draw(schedule_params(name)))
    w = s.warmup_steps

    def cycle(t: int) -> int:  # restarts: which cycle t is in (the last one runs on into the floor)
        if name != "cosine_restarts":
            return 0
        n = s.params["num_cycles"]
        return min(n - 1, math.floor(n * ((t - w) / max(1, total - w))))  # rounded as the schedule rounds

    for t in range(w, len(lam) - 1):
        if cycle(t) == cycle(t + 1):
            assert lam[t + 1] <= lam[t] + 1e-15, t


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(data=st.data())
def test_lr_is_the_floor_at_total_steps_and_holds_it_after(name, data):
    s, total, lam = curve(name, data.draw(schedule_params(name)))
    after = lam[total:]
    assert after == [after[0]] * len(after)  # constant from T on, for every schedule
    if name == "constant":
        assert after[0] == 1.0  # no decay, no floor
    elif name == "inverse_sqrt" and not s.params["cooldown_steps"]:
        assert after[0] >= floor_of(s)  # no cooldown: the rsqrt decay stops above the floor
    else:
        assert math.isclose(after[0], floor_of(s), rel_tol=1e-12, abs_tol=1e-15)


def phase_starts(name: str, s: Schedule, total: int) -> list[int]:
    """The updates at which a new phase begins: end of warmup, WSD's decay, the cooldown, T."""
    p, starts = s.params, {s.warmup_steps, total}
    if name == "wsd":
        starts.add(total - p["decay_steps"])
    if name == "inverse_sqrt" and p["cooldown_steps"]:
        starts.add(total - p["cooldown_steps"])
    return sorted(b for b in starts if b > 0)


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(data=st.data())
def test_no_jump_at_phase_boundaries(name, data):
    """ "One step's change" is the largest change of λ between neighbouring updates anywhere on the curve. The
    schedules are functions of a real t, so the jump at a phase boundary b is what is left of the change when the
    step shrinks to nothing: |λ(b) − λ(b − ε)| with ε = 1e-12 of an update. It must stay below a tenth of one
    step's change. A continuous shape leaves at most ε^α of a step (α = the power of its steepest end: 1/2 for
    1-sqrt, ≥ 0.1 for the generated polynomial powers; 1e-12^0.1 ≈ 0.06), so the boundary step (b − 1 → b) is an
    ordinary step of the phases it joins, even where a phase's last step is its steepest (exponential or 1-sqrt
    warmup, polynomial power < 1). Restart boundaries are exempt."""
    s, total, lam = curve(name, data.draw(schedule_params(name)))
    one_step = max(abs(b - a) for a, b in zip(lam, lam[1:], strict=False))
    for b in phase_starts(name, s, total):
        jump = abs(s(b) - s(b - 1e-12))
        assert jump <= 0.1 * one_step + 1e-15, (b, jump, one_step)


def numpy_decay(t, *, total_steps, warmup_steps=0, min_lr_ratio=0.0):
    """A fork's λ that returns a numpy scalar, as LambdaLR takes it."""
    return np.float32(1 - t / total_steps)


def negative_decay(t, *, total_steps, warmup_steps=0, min_lr_ratio=0.0):
    return -t / total_steps


def test_a_forks_schedule_is_tried_before_any_work_and_may_return_a_numpy_scalar():
    here = "tests.scheduling.test_schedule_functions"
    assert Schedule(f"{here}.numpy_decay", total_steps=100)(50) == pytest.approx(0.5)
    with pytest.raises(ScheduleError, match=rf"^schedule.name: {here}.negative_decay gives -0.01 at update 1, not a"):
        Schedule(f"{here}.negative_decay", total_steps=100, warmup_steps=1)


def nan_at_five(t, *, total_steps, warmup_steps=0, min_lr_ratio=0.0):
    return math.nan if t == 5 else 1.0  # fine at the updates the probe tries (0, W, T - 1)


def test_a_forks_schedule_is_held_to_a_finite_multiplier_at_every_update_before_an_update_uses_it():
    from scheduling import build_scheduler

    schedule = Schedule("tests.scheduling.test_schedule_functions.nan_at_five", total_steps=10)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    scheduler = build_scheduler(optimizer, schedule)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    optimizer.step()
    with pytest.raises(ScheduleError, match=r"^schedule.name: .*nan_at_five gives nan at update 5, not a finite"):
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.1  # update 5 never ran with it


def to_zero_at_the_last_update(t, *, total_steps, warmup_steps=0, min_lr_ratio=0.0):
    return 1 - t / (total_steps - 1)  # 0 at T − 1, below 0 at T, which no update uses


def test_a_forks_schedule_past_its_last_update_is_not_held_to_it():
    from scheduling import build_scheduler

    here = "tests.scheduling.test_schedule_functions"
    schedule = Schedule(f"{here}.to_zero_at_the_last_update", total_steps=6)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    scheduler = build_scheduler(optimizer, schedule)
    for _ in range(6):  # every update of the run, and LambdaLR's λ(T) after the last
        optimizer.step()
        scheduler.step()
    assert schedule(7) < 0  # a plot past T draws it as it is


def test_a_forks_schedule_that_cannot_run_is_one_line_naming_the_key(tmp_path, monkeypatch):
    """A λ of a dotted path: a module that fails as it imports, a mistyped name, a key it needs and is not given,
    what the template passes that it does not take, and any error it raises at the probed updates."""
    from scheduling.spec import ScheduleError

    (tmp_path / "fork_lambdas.py").write_text(
        "def levels(t, *, total_steps, warmup_steps=0, min_lr_ratio=0.0, heights):\n"
        "    return heights[t // 50]\n"  # one height: an IndexError from update 50 on
        "def floorless(t, *, total_steps, warmup_steps=0):\n"
        "    return 1.0\n"
        "from scheduling.schedules import after_warmup\n"
        "@after_warmup\n"
        "def open_ended(t, *, total_steps, warmup_steps=0, min_lr_ratio=0.0, **others):\n"
        "    return 1.0\n"
        "def by_step(step, *, total_steps, warmup_steps=0, min_lr_ratio=0.0):\n"
        "    return 1.0 - step / total_steps\n"
        "def absolute_floor(t, *, total_steps, warmup_steps=0, min_lr_ratio=0.0, min_lr):\n"
        "    return 1.0\n"
    )
    (tmp_path / "fork_broken.py").write_text("def step(t:\n")
    (tmp_path / "fork_raising.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    resolved = {"total_steps": 100, "warmup_steps": 0, "min_lr_ratio": 0.0}
    cases = [
        (
            "fork_broken.step",
            {},
            r"^schedule.name: 'fork_broken.step' cannot be imported \(.*\(fork_broken.py, line 1\)\)$",
        ),
        ("fork_raising.step", {}, r"^schedule.name: 'fork_raising.step' cannot be imported \(no GPU here\)$"),
        ("fork_lambdas.levls", {}, r"has no levls; did you mean fork_lambdas.levels\?\)$"),
        ("fork_lambdas.levels", {}, r"^schedule.heights: schedule fork_lambdas.levels needs it, and it is not set$"),
        ("fork_lambdas.floorless", {}, r"^schedule.name: fork_lambdas.floorless must take min_lr_ratio, which the"),
        ("fork_lambdas.absolute_floor", {}, r"^schedule.name: fork_lambdas.absolute_floor takes min_lr, which the tem"),
        ("fork_lambdas.levels", {"heights": [1.0]}, r"fails at update 99 \(IndexError: list index out of range"),
    ]
    for name, own, message in cases:
        with pytest.raises(ScheduleError, match=message):
            Schedule(name, **resolved, **own)
    assert Schedule("fork_lambdas.levels", **resolved, heights=[1.0, 0.5])(99) == 0.5
    assert Schedule("fork_lambdas.open_ended", **resolved)(99) == 1.0  # **others needs nothing
    assert Schedule("fork_lambdas.open_ended", **resolved, shape="any")(99) == 1.0  # and takes any key
    assert Schedule("fork_lambdas.open_ended", **{**resolved, "warmup_steps": 10}, shape="any")(5) == 0.5
    assert Schedule("fork_lambdas.by_step", **resolved)(50) == 0.5  # the update index by any name


def test_cosine_restarts_restarts_at_its_update_exactly_for_any_number_of_cycles():
    """n·p mod 1 in floats rounds 22 · (15000/22000) to 14.999…: the restart would come an update late (as in
    transformers); one division of exact integers puts every restart at the peak on its update."""
    for n in (3, 22, 23, 39, 46):
        W, span = 100, n * 1000
        s = Schedule("cosine_restarts", total_steps=W + span, warmup_steps=W, num_cycles=n, min_lr_ratio=0.1)
        for k in range(n):
            assert s(W + k * 1000) == 1.0, (n, k)
            assert s(W + k * 1000 + 1) < 1.0 and (k == 0 or s(W + k * 1000 - 1) < 0.1 + 1e-4)
