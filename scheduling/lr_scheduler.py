"""torch's LambdaLR around a Schedule, a drop-in ``get_scheduler`` for transformers' names, and the resume check.

Stepping contract: build the scheduler before the first update (LambdaLR's constructor sets lr = peak·λ(0));
update t runs with peak·λ(t); call ``scheduler.step()`` once after each optimizer update that was taken — never
per micro-batch, and not after an fp16 step the GradScaler skipped (the same update index is then retried).
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers
import warnings
from collections.abc import Mapping
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from scheduling.schedules import SCHEDULES
from scheduling.spec import (
    CONFIG_KEYS,
    Schedule,
    ScheduleError,
    _key,
    check_floor_ratio,
    is_int,
    is_number,
    plain,
    with_defaults,
)

# Messages from get_scheduler name the arguments the caller passed, not config keys: transformers' names for T
# and W, and warmup_stable_decay's for its own; every other parameter under its own name.
_PARAMS = {p for fn in SCHEDULES.values() for p in inspect.signature(fn).parameters if p != "t"}
HF_KEYS = {**{p: p for p in _PARAMS}, "total_steps": "num_training_steps", "warmup_steps": "num_warmup_steps"}
_PYTHON_KEYS = {p: p for p in _PARAMS}  # a scheduler built in Python: its parameters by their names
WSD_KEYS = {**HF_KEYS, "decay_steps": "num_decay_steps", "decay_shape": "decay_type", "warmup_shape": "warmup_type"}

# transformers' SchedulerType values this module provides (the same lr for steps 0 … T), and our own names.
TRANSFORMERS_NAMES = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "warmup_stable_decay",
)
OWN_NAMES = ("wsd", "cosine_restarts")
_FLOOR_ARGS = ("min_lr", "min_lr_ratio", "min_lr_rate")


class ScheduleLR(LambdaLR):
    """LambdaLR whose multiplier is one Schedule, for every param group.

    Its state dict carries a copy of the schedule's name and parameters (LambdaLR's shares the live ones), and
    ``load_state_dict`` is a resume: it refuses a state saved under another schedule or peak, as
    ``restore_scheduler`` does, rather than swapping the saved schedule in for the one this scheduler was built with.
    """

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["lr_lambdas"] = copy.deepcopy(state["lr_lambdas"])
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        restore_scheduler(self, state_dict, keys=None)  # a Python loop's: no config keys to name


def build_scheduler(optimizer: Optimizer, schedule: Schedule, last_epoch: int = -1) -> ScheduleLR:
    """LambdaLR whose multiplier is ``schedule``: every param group gets ``its base lr · λ(t)``.

    ``schedule`` is a plain object, so ``scheduler.state_dict()`` carries its name and parameters.
    """
    return ScheduleLR(optimizer, schedule, last_epoch=last_epoch)


def _floor_ratio(optimizer: Optimizer, kwargs: dict[str, Any], default: float | None = 0.0) -> float | None:
    """Pop our floor arguments, accepted by every decaying schedule: ``min_lr`` (absolute, divided by the
    optimizer's default lr as transformers does) or ``min_lr_ratio`` (alias ``min_lr_rate``) of the peak."""
    given = {k: kwargs.pop(k) for k in _FLOOR_ARGS if k in kwargs}
    given = {k: v for k, v in given.items() if v is not None}
    if len(given) > 1:
        raise ValueError(f"Only one of min_lr, min_lr_ratio or min_lr_rate should be set, got {sorted(given)}")
    if not given:
        return default
    (key, value), peak = given.popitem(), plain(optimizer.defaults["lr"])
    if key == "min_lr":
        if not (is_number(value) and 0 <= value <= peak):
            raise ScheduleError("min_lr", f"a floor in [0, the optimizer's lr {peak:g}]", value)
        return value / peak
    check_floor_ratio(value, key)
    return value


def _steps(value: Any) -> Any:
    """A count of updates as transformers takes it: any integral number (``np.int64(2)``, ``2.0``,
    ``torch.tensor(2)``) is that int."""
    value = plain(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return value


def _schedule(
    own: str, kwargs: dict[str, Any], name: str, keys: Mapping[str, str] = HF_KEYS, **params: Any
) -> Schedule:
    """Schedule ``own`` from ``params`` plus the caller's extra ``kwargs``; an argument the schedule does not take
    is a TypeError, as in transformers."""
    accepted = inspect.signature(SCHEDULES[own]).parameters
    for k in kwargs:
        if k not in accepted or k == "t":
            raise TypeError(f"get_scheduler({name!r}) got an unexpected keyword argument {k!r}")
    return Schedule(own, keys=keys, **{**params, **kwargs})


def get_scheduler(
    name: str,
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> LambdaLR | ReduceLROnPlateau:
    """A drop-in for ``transformers.get_scheduler``: the same names, arguments and defaults, and the same lr at
    every step 0 … T. Extra arguments go in ``scheduler_specific_kwargs`` (as in transformers) or as keywords.

    Differences: past T every decay holds its floor (transformers' ``cosine`` and ``cosine_with_min_lr`` climb
    back up); every decay takes a floor (``min_lr`` absolute, or ``min_lr_ratio``/``min_lr_rate`` of the peak);
    ``inverse_sqrt`` also takes ``num_training_steps`` and ``cooldown_steps`` (a linear cooldown to the floor);
    ``cosine_with_restarts`` also takes ``cycle_decay`` and restarts on its update exactly; a warmup longer than
    T ends the decay at W; a layer-wise optimizer's loop scheduler is a plain one (transformers' fails to build
    under torch 2.13; docs/schedules.md has the whole table). The
    template's own names ``wsd`` and ``cosine_restarts`` take the Schedule parameters.
    ``cosine_warmup_with_min_lr`` and ``greedy`` are not provided. ``last_epoch`` is passed on to LambdaLR
    (``reduce_lr_on_plateau`` starts its count there too).
    """
    name = getattr(name, "value", name)  # a transformers SchedulerType works too
    if type(optimizer).__name__ == "LayerWiseDummyOptimizer" and hasattr(optimizer, "optimizer_dict"):
        return _layer_wise(name, optimizer, num_warmup_steps, num_training_steps, scheduler_specific_kwargs, kwargs)
    kw = {k: plain(v) for k, v in {**(scheduler_specific_kwargs or {}), **kwargs}.items()}  # np.int64(3) is 3
    known = TRANSFORMERS_NAMES + OWN_NAMES
    if name not in known:
        raise ValueError(f"{name!r} is not a known schedule; known: {', '.join(known)}")
    last_epoch = kw.pop("last_epoch", -1)
    if name == "reduce_lr_on_plateau":
        plateau = ReduceLROnPlateau(optimizer, **kw)
        plateau.last_epoch = last_epoch + 1  # where a LambdaLR built with this last_epoch starts counting
        return plateau
    W, T = _steps(num_warmup_steps), _steps(num_training_steps)
    if T is not None and not (is_int(T) and T >= 0):  # before a warmup longer than T replaces it
        raise ScheduleError("num_training_steps", "an integer number of updates ≥ 0", num_training_steps)
    if name == "constant":  # transformers ignores the warmup and every other argument here
        return build_scheduler(optimizer, Schedule("constant", keys=HF_KEYS), last_epoch)
    if W is None:
        raise ValueError(f"{name} requires `num_warmup_steps`, please provide that argument.")
    if name == "constant_with_warmup":  # likewise: only the warmup counts
        return build_scheduler(optimizer, Schedule("constant", keys=HF_KEYS, warmup_steps=W), last_epoch)
    if T is not None and W > T and name != "warmup_stable_decay":
        T = W  # a run shorter than its warmup: transformers warms up through it, as a decay that starts at W does

    if name == "inverse_sqrt":  # T is optional: without it (or a cooldown) the decay goes on for ever
        floor = _floor_ratio(optimizer, kw)
        extra = {"total_steps": T} if T is not None else {}
        schedule = _schedule("inverse_sqrt", kw, name, warmup_steps=W, min_lr_ratio=floor, **extra)
        return build_scheduler(optimizer, schedule, last_epoch)
    if name == "warmup_stable_decay":
        floor = _floor_ratio(optimizer, kw)
        if "num_decay_steps" not in kw:
            raise TypeError("get_scheduler('warmup_stable_decay') requires the argument 'num_decay_steps'")
        decay, stable = _steps(kw.pop("num_decay_steps")), _steps(kw.pop("num_stable_steps", None))
        if T is None and stable is None:
            raise ValueError("Either num_training_steps or num_stable_steps must be specified.")
        if T is not None and stable is not None:
            warnings.warn(
                "Both num_training_steps and num_stable_steps are specified. num_stable_steps will be used.",
                stacklevel=2,
            )
        warmup = kw.pop("warmup_type", "linear")
        if warmup == "exponential" and not floor:
            raise ValueError(
                "warmup_type='exponential' needs a floor > 0 (min_lr_ratio or min_lr): its warmup grows geometrically "
                "from the floor (transformers', from 0, stays at 0 until num_warmup_steps)"
            )
        params = dict(
            total_steps=W + stable + decay if stable is not None else T,
            warmup_steps=W,
            decay_steps=decay,
            min_lr_ratio=floor,
            warmup_start_ratio=floor,  # transformers' WSD warmup starts at the floor, not at 0
            warmup_shape=warmup,
            decay_shape=kw.pop("decay_type", "cosine"),
        )
        return build_scheduler(optimizer, _schedule("wsd", kw, name, WSD_KEYS, **params), last_epoch)

    if T is None:
        raise ValueError(f"{name} requires `num_training_steps`, please provide that argument.")
    if name == "polynomial":
        lr_init = plain(optimizer.defaults["lr"])
        lr_end = kw.pop("lr_end", None)
        floor = _floor_ratio(optimizer, kw, default=None)
        if lr_end is not None and floor is not None:
            raise ValueError("Only one of lr_end or a floor argument (min_lr, min_lr_ratio) should be set")
        if lr_end is None:
            lr_end = 1e-7 if floor is None else floor * lr_init
        elif not (is_number(lr_end) and lr_end >= 0):
            raise ScheduleError("lr_end", "an end lr ≥ 0", lr_end)
        if not lr_init > lr_end:
            raise ValueError(f"lr_end ({lr_end}) must be smaller than initial lr ({lr_init})")
        schedule = _schedule("polynomial", kw, name, total_steps=T, warmup_steps=W, min_lr_ratio=lr_end / lr_init)
        return build_scheduler(optimizer, schedule, last_epoch)
    if name == "cosine_with_min_lr" and not any(kw.get(k) is not None for k in _FLOOR_ARGS):
        raise ValueError("One of min_lr or min_lr_rate should be set through the `lr_scheduler_kwargs`")
    floor = _floor_ratio(optimizer, kw)
    own = {"cosine_with_restarts": "cosine_restarts", "cosine_with_min_lr": "cosine"}.get(name, name)
    schedule = _schedule(own, kw, name, total_steps=T, warmup_steps=W, min_lr_ratio=floor)
    return build_scheduler(optimizer, schedule, last_epoch)


def _layer_wise(name, optimizer, W, T, specific, kwargs) -> LambdaLR:
    """transformers' layer-wise optimizers (GaLore's ``*_layerwise``) step each parameter's optimizer in a hook
    after its gradient is accumulated: each gets its own scheduler here, stepped in the same hook, as transformers'
    ``get_scheduler`` arranges. The loop's scheduler moves nothing."""
    schedulers = {
        param: get_scheduler(name, inner, W, T, specific, **kwargs) for param, inner in optimizer.optimizer_dict.items()
    }

    def step(param) -> None:  # after the optimizer's hook, registered first, stepped and cleared the gradient
        schedulers[param].step()

    for param in schedulers:
        if param.requires_grad:
            param.register_post_accumulate_grad_hook(step)
    return LambdaLR(optimizer, lambda t: 1.0)  # its state dict stays the loop's alone: the hooks hold the rest


def restore_scheduler(
    scheduler: LambdaLR,
    saved_state: Mapping[str, Any],
    allow_change: bool | str = False,
    keys: Mapping[str, str] | None = CONFIG_KEYS,
) -> None:
    """Continue ``scheduler`` (built from the current config) at the saved update index; a refusal names what
    changed by ``keys`` (None: a scheduler built in Python, by its parameters' names).

    Refuses, with one line, a checkpoint whose schedule (name or any parameter, T included) or peak lr differs
    from the config's, unless ``allow_change``; then the config's schedule and peak apply from the saved update
    index on. ``allow_change="branch"`` allows only a change that leaves the lr of every update already taken as
    it was (a cooldown branched from a stable phase; see ``check_branch``). The lr of every param group is
    recomputed from the schedule, so it never depends on what the optimizer's saved state carried.
    """
    config, keys = keys is not None, keys or _PYTHON_KEYS
    schedule = scheduler.lr_lambdas[0]
    saved = (saved_state.get("lr_lambdas") or [None])[0] or {}
    if allow_change == "branch":
        check_branch(saved, saved_state.get("base_lrs", []), schedule, scheduler.base_lrs, saved_state["last_epoch"])
    elif not allow_change:
        old_name, old = saved.get("name", schedule.name), saved.get("params", schedule.params)
        if old_name != schedule.name:
            what = f"schedule.name {old_name!r} → {schedule.name!r}"
        else:  # a parameter left at its default is the same as one spelt out
            old, new = with_defaults(old_name, old), with_defaults(schedule.name, schedule.params)
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            what = ", ".join(f"{_key(k, keys)} {_short(old.get(k))} → {_short(new.get(k))}" for k in diff)
        old_peaks = [float(x) for x in saved_state.get("base_lrs", [])]
        what = ", ".join(filter(None, [what, *peak_changes(old_peaks, scheduler, config)]))
        if what:
            how = (
                "set trainer.allow_schedule_change=true (from Python: restore_scheduler(scheduler, state, "
                "allow_change=True))"
                if config
                else "call restore_scheduler(scheduler, state, allow_change=True)"
            )
            raise ScheduleError(
                f"the checkpoint was trained with another schedule ({what}); resume with the same settings, "
                f"or {how} to continue with the new one from the saved update"
            )
    state = {k: v for k, v in saved_state.items() if k not in ("base_lrs", "_last_lr")}
    state["lr_lambdas"] = [None] * len(scheduler.lr_lambdas)  # keep the config's schedule, not the saved one
    LambdaLR.load_state_dict(scheduler, state)
    lrs = [base * schedule(scheduler.last_epoch) for base in scheduler.base_lrs]
    for group, base, lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, lrs, strict=True):
        group["initial_lr"], group["lr"] = base, lr  # the optimizer's saved state may carry the old peak
    scheduler._last_lr = lrs


def peak_changes(old_peaks: list[float], scheduler: LambdaLR, config: bool = True) -> list[str]:
    """The peaks that differ from the saved ones, each once by its key: ``optim.lr`` (the unnamed groups, AdamW's)
    or ``optim.<name>.lr`` (a named group's, as Muon's); without ``config``, as ``param group <i> lr``."""
    new_peaks = [float(x) for x in scheduler.base_lrs]
    if not old_peaks or old_peaks == new_peaks:
        return []
    if len(old_peaks) != len(new_peaks):  # other groups altogether: name the first group's peak
        return [f"{'optim.lr' if config else 'param group 0 lr'} {old_peaks[0]:g} → {new_peaks[0]:g}"]
    changes = {}
    for i, (group, old, new) in enumerate(zip(scheduler.optimizer.param_groups, old_peaks, new_peaks, strict=True)):
        if old != new:
            key = f"optim.{group['name']}.lr" if "name" in group else "optim.lr"
            key = key if config else f"param group {i} lr"
            changes.setdefault(key, f"{key} {old:g} → {new:g}")
    return list(changes.values())


def _short(value: Any) -> str:
    """A parameter for a one-line message: a tabulated schedule's knots by their count and ends, not all of them."""
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f"({len(value)} knots, {tuple(value[0])!r} … {tuple(value[-1])!r})"
    return repr(value)


def check_branch(saved: Mapping[str, Any], saved_peaks, schedule: Schedule, peaks, step: int) -> None:
    """Refuse a branch at update ``step`` whose schedule gives any of the updates already taken (0 … step − 1)
    another lr than the checkpoint's schedule did: the two must agree, bit for bit, on the shared prefix."""
    if "name" not in saved:
        raise ScheduleError("trainer.allow_schedule_change=branch: the checkpoint does not record its schedule")
    old = Schedule(saved["name"], **saved.get("params", {}))
    old_peaks = [float(x) for x in saved_peaks] or [float(x) for x in peaks]
    new_peaks = [float(x) for x in peaks]
    for t in range(step):
        if [p * old(t) for p in old_peaks] != [p * schedule(t) for p in new_peaks]:
            start = ""
            if schedule.name == "wsd":
                decay_start = schedule.total_steps - schedule.params["decay_steps"]
                start = f" (this schedule's decay starts at update {decay_start})"
            raise ScheduleError(
                f"trainer.resume: the checkpoint is at update {step}, past where this schedule parts from the one it "
                f"was trained with{start}: update {t} used lr {old_peaks[0] * old(t):.6g}, this schedule gives "
                f"{new_peaks[0] * schedule(t):.6g}; branch from a checkpoint at or before update {t}"
            )
