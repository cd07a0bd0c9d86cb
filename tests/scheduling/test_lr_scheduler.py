"""The torch side: LambdaLR around a Schedule, get_scheduler against transformers', and resuming a schedule."""

from __future__ import annotations

import io
import math
import pickle
import re
import warnings

import pytest
import torch
import transformers
from torch.optim.lr_scheduler import LambdaLR

from scheduling import Schedule, ScheduleError, build_scheduler, get_scheduler, restore_scheduler

PEAK = 3e-4


def two_group_optimizer(lr: float = PEAK) -> torch.optim.AdamW:
    """AdamW with a decay and a no-decay group, as train.py builds it, over a tiny linear layer."""
    layer = torch.nn.Linear(4, 4)
    groups = [{"params": [layer.weight], "weight_decay": 0.1}, {"params": [layer.bias], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def lr_history(scheduler, optimizer, steps: int) -> list[list[float]]:
    """The lr of every param group that update t uses, for t = 0 … steps, read from the optimizer."""
    history = [[g["lr"] for g in optimizer.param_groups]]
    for _ in range(steps):
        optimizer.step()  # no gradients: a no-op, but in the order torch expects
        scheduler.step()
        history.append([g["lr"] for g in optimizer.param_groups])
    return history


# Several parameter sets per transformers schedule name: (name, W, T, scheduler_specific_kwargs).
SHARED = [
    ("linear", 10, 100, {}),
    ("linear", 0, 37, {}),
    ("linear", 50, 50, {}),
    ("cosine", 10, 100, {}),
    ("cosine", 0, 64, {}),
    ("cosine", 7, 80, {"num_cycles": 1.5}),
    ("cosine_with_restarts", 10, 100, {}),
    ("cosine_with_restarts", 5, 95, {"num_cycles": 3}),
    ("polynomial", 10, 100, {}),
    ("polynomial", 5, 60, {"power": 2.0, "lr_end": 3e-5}),
    ("polynomial", 0, 40, {"power": 0.5, "lr_end": 0.0}),
    ("constant", 10, 100, {}),
    ("constant_with_warmup", 10, 100, {}),
    ("constant_with_warmup", 0, 30, {}),
    ("inverse_sqrt", 10, 100, {}),
    ("inverse_sqrt", 0, 100, {}),
    ("inverse_sqrt", 10, 100, {"timescale": 25}),
    # a run shorter than its warmup (a short debugging run of a long recipe), and T = 0 beside a warmup
    ("linear", 500, 10, {}),
    ("linear", 5, 0, {}),
    ("cosine", 40, 12, {}),
    ("cosine_with_restarts", 30, 5, {"num_cycles": 2}),
    ("polynomial", 20, 8, {}),
    ("inverse_sqrt", 50, 10, {}),
    ("cosine_with_min_lr", 25, 10, {"min_lr": 3e-5}),
    ("cosine_with_min_lr", 10, 100, {"min_lr": 3e-5}),
    ("cosine_with_min_lr", 3, 50, {"min_lr_rate": 0.2, "num_cycles": 0.5}),
    ("warmup_stable_decay", 10, 100, {"num_decay_steps": 20}),
    (
        "warmup_stable_decay",
        10,
        100,
        {"num_decay_steps": 30, "min_lr_ratio": 0.1, "decay_type": "1-sqrt", "warmup_type": "cosine"},
    ),
    (
        "warmup_stable_decay",
        8,
        None,
        {
            "num_decay_steps": 12,
            "num_stable_steps": 40,
            "decay_type": "linear",
            "warmup_type": "1-sqrt",
            "min_lr_ratio": 0.05,
        },
    ),
]


@pytest.mark.parametrize("name,W,T,kwargs", SHARED, ids=[f"{n}-{W}-{T}-{kw}" for n, W, T, kw in SHARED])
def test_get_scheduler_gives_transformers_lr_at_every_step_up_to_T(name, W, T, kwargs):
    total = T if T is not None else W + kwargs["num_stable_steps"] + kwargs["num_decay_steps"]
    histories = []
    for factory in (transformers.get_scheduler, get_scheduler):
        optimizer = two_group_optimizer()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # transformers' WSD warns when it is given T and the stable steps
            scheduler = factory(name, optimizer, W, T, scheduler_specific_kwargs=dict(kwargs))
        histories.append(lr_history(scheduler, optimizer, total))
    theirs, ours = histories
    for t in range(total + 1):
        for a, b in zip(theirs[t], ours[t], strict=True):
            assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300), (t, a, b)


@pytest.mark.parametrize("name,kwargs,floor", [("cosine", {}, 0.0), ("cosine_with_min_lr", {"min_lr": 3e-5}, 3e-5)])
def test_past_T_ours_hold_the_floor_while_transformers_cosine_rebounds(name, kwargs, floor):
    W, T, past = 10, 100, 150
    theirs, ours = [], []
    for factory, out in ((transformers.get_scheduler, theirs), (get_scheduler, ours)):
        optimizer = two_group_optimizer()
        scheduler = factory(name, optimizer, W, T, scheduler_specific_kwargs=dict(kwargs))
        out += [lrs[0] for lrs in lr_history(scheduler, optimizer, past)]
    assert all(math.isclose(lr, floor, rel_tol=1e-12, abs_tol=1e-300) for lr in ours[T:])
    assert theirs[past] > floor + 0.4 * (PEAK - floor)  # transformers' cosine climbs back towards the peak


def test_scheduler_specific_kwargs_and_keywords_are_the_same_and_unknown_ones_are_a_type_error():
    by_dict = lr_history(
        *(lambda o: (get_scheduler("cosine_with_restarts", o, 5, 60, scheduler_specific_kwargs={"num_cycles": 2}), o))(
            two_group_optimizer()
        ),
        70,
    )
    optimizer = two_group_optimizer()
    by_keyword = lr_history(get_scheduler("cosine_with_restarts", optimizer, 5, 60, num_cycles=2), optimizer, 70)
    assert by_dict == by_keyword
    for factory in (transformers.get_scheduler, get_scheduler):
        with pytest.raises(TypeError):
            factory("linear", two_group_optimizer(), 5, 60, scheduler_specific_kwargs={"num_cycles": 2})
    with pytest.raises(ValueError, match="num_training_steps"):
        get_scheduler("cosine", two_group_optimizer(), 5)
    with pytest.raises(ValueError, match="num_warmup_steps"):
        get_scheduler("linear", two_group_optimizer(), num_training_steps=60)


@pytest.mark.parametrize("name", ["linear", "cosine", "cosine_with_restarts", "polynomial", "inverse_sqrt"])
def test_our_floor_arguments_lift_every_decay_to_the_floor(name):
    W, T, floor = 10, 100, 3e-5
    extra = {"cooldown_steps": 20} if name == "inverse_sqrt" else {}
    optimizer = two_group_optimizer()
    plain = [g[0] for g in lr_history(get_scheduler(name, optimizer, W, T, min_lr_ratio=0.0, **extra), optimizer, T)]
    for floor_arg in ({"min_lr": floor}, {"min_lr_ratio": floor / PEAK}):
        optimizer = two_group_optimizer()
        lifted = [g[0] for g in lr_history(get_scheduler(name, optimizer, W, T, **floor_arg, **extra), optimizer, T)]
        for t in range(W, T + 1):  # λ = λ₀·(1 − r) + r: the decay rescaled onto [floor, peak]
            expected = plain[t] * (1 - floor / PEAK) + floor
            assert math.isclose(lifted[t], expected, rel_tol=1e-9), (t, lifted[t], expected)
        assert math.isclose(lifted[T], floor, rel_tol=1e-9)
    with pytest.raises(ValueError, match="Only one"):
        get_scheduler(name, two_group_optimizer(), W, T, min_lr=floor, min_lr_ratio=0.1)


def test_the_schedule_is_picklable_and_its_parameters_are_in_the_state_dict():
    schedule = Schedule("wsd", total_steps=100, warmup_steps=10, decay_steps=20, min_lr_ratio=0.1)
    assert pickle.loads(pickle.dumps(schedule)) == schedule
    scheduler = build_scheduler(two_group_optimizer(), schedule)
    state = scheduler.state_dict()
    assert state["lr_lambdas"][0] == {"name": "wsd", "params": schedule.params}
    restored = pickle.loads(pickle.dumps(scheduler))  # the whole scheduler, optimizer included
    assert restored.lr_lambdas[0] == schedule
    buffer = io.BytesIO()  # and as checkpoints load it: torch.load(weights_only=True)
    torch.save(state, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["lr_lambdas"] == state["lr_lambdas"]


def test_the_state_dict_is_a_copy_and_loading_one_keeps_the_schedule_built():
    schedule = Schedule("cosine", total_steps=20, warmup_steps=4, min_lr_ratio=0.1)
    scheduler = build_scheduler(two_group_optimizer(), schedule)
    state = scheduler.state_dict()
    state["lr_lambdas"][0]["params"]["total_steps"] = 5  # editing what was saved leaves the live schedule alone
    assert scheduler.lr_lambdas[0].total_steps == 20
    fresh = build_scheduler(two_group_optimizer(), schedule)
    saved = trained_state(schedule)["scheduler"]
    fresh.load_state_dict(saved)
    saved["lr_lambdas"][0]["params"]["total_steps"] = 5  # nor does editing what was loaded
    assert fresh.lr_lambdas[0] == schedule and fresh.last_epoch == 7


def test_a_plain_load_state_dict_of_another_schedule_is_refused_in_one_line():
    """As the trainers of other libraries resume (transformers' Trainer): the same check as restore_scheduler."""
    longer = Schedule("cosine", total_steps=30, warmup_steps=4, min_lr_ratio=0.1)
    scheduler = build_scheduler(two_group_optimizer(), longer)
    with pytest.raises(
        ScheduleError, match=r"\(total_steps 20 → 30\).* call restore_scheduler\(.*allow_change=True"
    ) as err:
        scheduler.load_state_dict(trained_state(SCHEDULE)["scheduler"])
    assert "\n" not in str(err.value) and "trainer." not in str(err.value)  # a Python loop has no config keys
    assert scheduler.lr_lambdas[0] == longer and scheduler.last_epoch == 0  # nothing loaded


def test_a_changed_peak_is_named_by_its_groups_key():
    """Group 0 and the unnamed groups: optim.lr; a named group (Muon's): optim.<name>.lr."""

    def optimizer(lr: float, muon_lr: float) -> torch.optim.AdamW:
        a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
        groups = [{"params": [a.weight], "lr": lr}, {"params": [b.weight], "lr": muon_lr, "name": "muon"}]
        return torch.optim.AdamW(groups)

    saved = build_scheduler(optimizer(1e-3, 0.02), SCHEDULE).state_dict()
    for peaks, named in [((1e-3, 0.03), "optim.muon.lr 0.02 → 0.03"), ((2e-3, 0.02), "optim.lr 0.001 → 0.002")]:
        with pytest.raises(ScheduleError, match=rf"another schedule \({re.escape(named)}\);"):
            restore_scheduler(build_scheduler(optimizer(*peaks), SCHEDULE), saved)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("wsd", {"decay_shape": "bogus", "decay_steps": 3}, "decay_shape must be one of"),
        ("wsd", {"decay_steps": 30}, "decay_steps must be ≤ total − warmup updates"),
        ("warmup_stable_decay", {"decay_type": "bogus", "num_decay_steps": 3}, "decay_type must be one of"),
        ("warmup_stable_decay", {"num_decay_steps": 30}, "num_decay_steps must be ≤ total − warmup updates"),
        ("cosine", {"warmup_shape": "bogus"}, "warmup_shape must be one of"),
        ("polynomial", {"lr_end": -1e-4}, "lr_end must be an end lr ≥ 0, got -0.0001"),
        ("cosine_with_min_lr", {"min_lr": 6e-4}, r"min_lr must be a floor in \[0, the optimizer's lr 0.0003\], got"),
        ("cosine_with_min_lr", {"min_lr_rate": 2.0}, r"min_lr_rate must be ≤ 1 \(the floor cannot exceed the peak\)"),
    ],
)
def test_get_scheduler_names_the_argument_the_caller_passed(name, kwargs, message):
    """Each refused argument is named as given: the one it names is one the call takes."""
    with pytest.raises(ScheduleError, match=f"^{message}"):
        get_scheduler(name, two_group_optimizer(), 2, 10, **kwargs)


def test_an_integral_number_of_updates_of_any_type_is_taken_as_transformers_takes_it():
    import numpy as np

    assert get_scheduler("cosine", two_group_optimizer(), np.float32(2.0), 10).lr_lambdas[0].warmup_steps == 2
    from_tensors = get_scheduler("cosine", two_group_optimizer(), torch.tensor(2), torch.tensor(10))
    assert from_tensors.lr_lambdas[0].params["total_steps"] == 10 and from_tensors.lr_lambdas[0].warmup_steps == 2
    ours = get_scheduler("cosine", two_group_optimizer(), np.int64(2), 10.0)
    hf = transformers.get_scheduler("cosine", two_group_optimizer(), np.int64(2), 10.0)
    assert ours.lr_lambdas[0].params["total_steps"] == 10 and type(ours.lr_lambdas[0].params["total_steps"]) is int
    assert [ours.lr_lambdas[0](t) for t in range(11)] == pytest.approx([hf.lr_lambdas[0](t) for t in range(11)])


def test_a_fraction_of_updates_outside_the_config_is_refused_without_offering_one():
    """Only the config resolves fractions of T; get_scheduler and Schedule take whole updates."""
    calls = {
        "num_warmup_steps": lambda: get_scheduler("linear", two_group_optimizer(), 0.1, 100),
        "schedule.cooldown_steps": lambda: Schedule("inverse_sqrt", total_steps=100, cooldown_steps=0.2),
    }
    for key, call in calls.items():
        with pytest.raises(ScheduleError, match=f"^{key} must be an integer number of updates ≥ 0, got 0.") as err:
            call()
        assert "fraction" not in str(err.value)


@pytest.mark.parametrize("name", ["constant", "linear", "reduce_lr_on_plateau"])
def test_get_scheduler_passes_last_epoch_on_for_every_name(name):
    def resumed_optimizer():
        optimizer = two_group_optimizer()
        for group in optimizer.param_groups:
            group["initial_lr"] = group["lr"]  # as torch requires of a scheduler built with last_epoch ≥ 0
        return optimizer

    torch_own = LambdaLR(resumed_optimizer(), lambda t: 1.0, last_epoch=6)
    assert get_scheduler(name, resumed_optimizer(), 2, 20, last_epoch=6).last_epoch == torch_own.last_epoch


def test_every_param_group_follows_the_multiplier_from_its_own_base_lr():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    bases = [1e-3, 5e-4, 1e-4]
    optimizer = torch.optim.AdamW([{"params": m.parameters(), "lr": lr} for m, lr in zip(model, bases, strict=True)])
    schedule = Schedule("cosine", total_steps=50, warmup_steps=5, min_lr_ratio=0.1)
    history = lr_history(build_scheduler(optimizer, schedule), optimizer, 60)
    for t, lrs in enumerate(history):
        assert lrs == pytest.approx([base * schedule(t) for base in bases], rel=1e-12, abs=0), t


# ---- resume -------------------------------------------------------------------------------------------------


def trained_state(schedule: Schedule, lr: float = PEAK, updates: int = 7) -> dict:
    optimizer = two_group_optimizer(lr)
    scheduler = build_scheduler(optimizer, schedule)
    lr_history(scheduler, optimizer, updates)
    return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}


def resume(schedule: Schedule, saved: dict, lr: float = PEAK, allow: bool = False):
    """As train.py resumes: build from the config, load the optimizer's state, then restore the schedule."""
    optimizer = two_group_optimizer(lr)
    scheduler = build_scheduler(optimizer, schedule)
    optimizer.load_state_dict(saved["optimizer"])
    restore_scheduler(scheduler, saved["scheduler"], allow)
    return optimizer, scheduler


SCHEDULE = Schedule("cosine", total_steps=20, warmup_steps=4, min_lr_ratio=0.1)


def test_resume_with_the_same_schedule_continues_at_the_saved_update():
    optimizer, scheduler = resume(SCHEDULE, trained_state(SCHEDULE))
    assert scheduler.last_epoch == 7
    history = lr_history(scheduler, optimizer, 5)
    assert [lrs[0] for lrs in history] == pytest.approx([PEAK * SCHEDULE(t) for t in range(7, 13)], rel=1e-12)


@pytest.mark.parametrize(
    "changed,lr,named",
    [
        (Schedule("cosine", total_steps=30, warmup_steps=4, min_lr_ratio=0.1), PEAK, "trainer.max_steps 20 → 30"),
        (Schedule("cosine", total_steps=20, warmup_steps=4, min_lr_ratio=0.2), PEAK, "schedule.min_lr_ratio"),
        (Schedule("linear", total_steps=20, warmup_steps=4, min_lr_ratio=0.1), PEAK, "schedule.name"),
        (SCHEDULE, 2 * PEAK, "optim.lr"),
    ],
)
def test_resume_with_another_schedule_is_refused_in_one_line(changed, lr, named):
    saved = trained_state(SCHEDULE)
    with pytest.raises(ScheduleError) as err:
        resume(changed, saved, lr)
    message = str(err.value)
    assert named in message and "trainer.allow_schedule_change=true" in message and "\n" not in message


def test_resume_with_another_schedule_when_allowed_follows_it_from_the_saved_update():
    new = Schedule("wsd", total_steps=40, warmup_steps=4, decay_steps=10, min_lr_ratio=0.05)
    optimizer, scheduler = resume(new, trained_state(SCHEDULE), lr=2 * PEAK, allow=True)
    history = lr_history(scheduler, optimizer, 40)
    for t, lrs in enumerate(history, start=7):
        assert lrs == pytest.approx([2 * PEAK * new(t)] * 2, rel=1e-12), t
    assert scheduler.state_dict()["lr_lambdas"][0] == {"name": "wsd", "params": new.params}


def test_numpy_and_tensor_values_are_taken_as_the_numbers_they_hold():
    """A count from numpy (np.int64), a power or floor in float32, a tensor lr (as some fused optimizers keep it):
    transformers takes each; so does get_scheduler, with transformers' lr."""
    import numpy as np

    calls = [
        ("cosine_with_restarts", PEAK, {"num_cycles": np.int64(3)}),
        ("polynomial", PEAK, {"power": np.float32(2), "lr_end": np.float32(1e-5)}),
        ("polynomial", torch.tensor(PEAK), {}),
        ("cosine_with_min_lr", torch.tensor(PEAK), {"min_lr": np.float32(1e-5)}),
        ("cosine_with_min_lr", PEAK, {"min_lr_rate": np.float64(0.1)}),
    ]
    for name, lr, kwargs in calls:
        histories = []
        for factory in (transformers.get_scheduler, get_scheduler):
            optimizer = two_group_optimizer(lr)
            histories.append(
                lr_history(factory(name, optimizer, 2, 20, scheduler_specific_kwargs=kwargs), optimizer, 20)
            )
        ours, theirs = ([float(x) for row in history for x in row] for history in histories[::-1])
        assert ours == pytest.approx(theirs, rel=1e-6), name


def test_a_resume_between_schedules_that_differ_only_in_a_default_spelt_out_is_taken():
    """Schedule("cosine") leaves the floor at its default 0; get_scheduler("cosine") passes min_lr_ratio=0.0: the
    same λ, so the one's state loads into the other; a floor that differs is still refused."""
    saved = build_scheduler(two_group_optimizer(), Schedule("cosine", total_steps=100, warmup_steps=10))
    for _ in range(5):
        saved.optimizer.step()
        saved.step()
    resumed = get_scheduler("cosine", two_group_optimizer(), 10, 100)
    resumed.load_state_dict(saved.state_dict())
    assert resumed.last_epoch == 5 and resumed.get_last_lr() == saved.get_last_lr()
    with pytest.raises(ScheduleError, match=r"another schedule \(min_lr_ratio 0.0 → 0.1\)"):
        get_scheduler("cosine", two_group_optimizer(), 10, 100, min_lr_ratio=0.1).load_state_dict(saved.state_dict())


@pytest.mark.parametrize("W, T", [(0, -3), (5, -3), (2, 4.5)])
def test_a_negative_or_fractional_T_is_refused_naming_the_value_passed(W, T):
    with pytest.raises(ScheduleError, match=rf"^num_training_steps must be an integer number of updates ≥ 0, got {T}$"):
        get_scheduler("linear", two_group_optimizer(), W, T)


def test_an_exponential_wsd_warmup_without_a_floor_names_the_floor_it_needs():
    with pytest.raises(ValueError, match=r"^warmup_type='exponential' needs a floor > 0 \(min_lr_ratio or min_lr\)"):
        get_scheduler(
            "warmup_stable_decay", two_group_optimizer(), 10, 100, num_decay_steps=20, warmup_type="exponential"
        )
    scheduler = get_scheduler(
        "warmup_stable_decay",
        two_group_optimizer(),
        10,
        100,
        num_decay_steps=20,
        warmup_type="exponential",
        min_lr_ratio=0.01,
    )
    assert scheduler.lr_lambdas[0](0) == pytest.approx(0.01) and scheduler.lr_lambdas[0](10) == 1.0


def test_a_layer_wise_optimizer_gets_a_scheduler_per_parameter_stepped_in_its_gradient_hook():
    """transformers' layer-wise optimizers (GaLore's *_layerwise) step each parameter's own optimizer in a hook;
    their schedulers must follow, as transformers' get_scheduler arranges, or the lr never decays."""
    from transformers.trainer_pt_utils import LayerWiseDummyOptimizer

    model = torch.nn.Linear(3, 3)
    inner = {p: torch.optim.SGD([p], lr=PEAK) for p in model.parameters()}

    def step(p):
        inner[p].step()
        inner[p].zero_grad()

    for p in model.parameters():
        p.register_post_accumulate_grad_hook(step)
    dummy = LayerWiseDummyOptimizer(optimizer_dict=inner, lr=PEAK)
    scheduler = get_scheduler("linear", dummy, 0, 10)
    for _ in range(3):
        model(torch.ones(1, 3)).sum().backward()  # the hooks step the optimizers and their schedulers
        dummy.step()  # the loop's own, as a Trainer calls them: they move nothing
        scheduler.step()
    expected = PEAK * Schedule("linear", total_steps=10)(3)
    assert [g["lr"] for o in inner.values() for g in o.param_groups] == [pytest.approx(expected)] * 2
