"""torch's LambdaLR around a Schedule, a drop-in ``get_scheduler`` for transformers' names, and the resume check.

Stepping contract: build the scheduler before the first update (LambdaLR's constructor sets lr = peak·λ(0));
update t runs with peak·λ(t); call ``scheduler.step()`` once after each optimizer update, never per micro-batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from scheduling.spec import Schedule
from training.errors import ConfigError

HF_KEYS = {"total_steps": "num_training_steps", "warmup_steps": "num_warmup_steps"}

# transformers' SchedulerType values that are LambdaLR schedules, and ours under their own names.
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


def build_scheduler(optimizer: Optimizer, schedule: Schedule) -> LambdaLR:
    """LambdaLR whose multiplier is ``schedule``; every param group follows it (each from its own base lr)."""
    return LambdaLR(optimizer, schedule)


def _floor_ratio(optimizer: Optimizer, kwargs: dict[str, Any], default: float = 0.0) -> float:
    """Our floor arguments, accepted by every schedule: ``min_lr`` (absolute) or ``min_lr_ratio``/``min_lr_rate``."""
    given = {k: kwargs.pop(k) for k in ("min_lr", "min_lr_ratio", "min_lr_rate") if kwargs.get(k) is not None}
    for k in ("min_lr", "min_lr_ratio", "min_lr_rate"):
        kwargs.pop(k, None)
    if len(given) > 1:
        raise ValueError(f"Only one of min_lr, min_lr_ratio or min_lr_rate should be set, got {sorted(given)}")
    if "min_lr" in given:
        return given["min_lr"] / optimizer.defaults["lr"]
    return next(iter(given.values()), default)


def get_scheduler(
    name: str,
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> LambdaLR | ReduceLROnPlateau:
    """A drop-in for ``transformers.get_scheduler``: same names, arguments and defaults, the same lr at every
    step 0 … T. Differences: past T every schedule holds its floor (transformers' cosine climbs back up), and
    every schedule takes a floor (``min_lr`` absolute, or ``min_lr_ratio``). Extra arguments may be given as
    keywords or, as in transformers, in ``scheduler_specific_kwargs``.

    Also accepts this template's own names ``wsd`` and ``cosine_restarts`` with the Schedule parameters.
    """
    name = getattr(name, "value", name)  # a transformers SchedulerType works too
    kw = dict(scheduler_specific_kwargs or {}, **kwargs)
    known = TRANSFORMERS_NAMES + OWN_NAMES
    if name not in known:
        raise ValueError(f"{name!r} is not a known schedule; known: {', '.join(known)}")
    if name == "reduce_lr_on_plateau":
        return ReduceLROnPlateau(optimizer, **kw)
    if name == "constant":  # transformers ignores warmup and every other argument here
        return build_scheduler(optimizer, Schedule("constant", keys=HF_KEYS))
    if num_warmup_steps is None:
        raise ValueError(f"{name} requires `num_warmup_steps`, please provide that argument.")
    W = num_warmup_steps
    if name == "constant_with_warmup":
        return build_scheduler(optimizer, Schedule("constant", keys=HF_KEYS, warmup_steps=W))
    if name == "inverse_sqrt":
        floor = _floor_ratio(optimizer, kw)
        params = dict(warmup_steps=W, min_lr_ratio=floor, **kw)
        if num_training_steps is not None:
            params["total_steps"] = num_training_steps
        return build_scheduler(optimizer, Schedule("inverse_sqrt", keys=HF_KEYS, **params))
    if name == "warmup_stable_decay":
        floor = _floor_ratio(optimizer, kw)
        decay = kw.pop("num_decay_steps")
        stable = kw.pop("num_stable_steps", None)
        if num_training_steps is None and stable is None:
            raise ValueError("Either num_training_steps or num_stable_steps must be specified.")
        if num_training_steps is not None and stable is not None:
            warnings.warn(
                "Both num_training_steps and num_stable_steps are specified. num_stable_steps will be used.",
                stacklevel=2,
            )
        total = W + stable + decay if stable is not None else num_training_steps
        warmup_shape = kw.pop("warmup_type", "linear")
        params = dict(
            total_steps=total,
            warmup_steps=W,
            decay_steps=decay,
            min_lr_ratio=floor,
            decay_shape=kw.pop("decay_type", "cosine"),
            warmup_shape=warmup_shape,
            warmup_start_ratio=floor,  # transformers' WSD warmup starts at the floor
            **kw,
        )
        return build_scheduler(optimizer, Schedule("wsd", keys=HF_KEYS, **params))
    if num_training_steps is None:
        raise ValueError(f"{name} requires `num_training_steps`, please provide that argument.")
    T = num_training_steps
    if name == "polynomial":
        lr_init = optimizer.defaults["lr"]
        lr_end = kw.pop("lr_end", None)
        if lr_end is None:
            lr_end = _floor_ratio(optimizer, kw, default=1e-7 / lr_init) * lr_init
        if not lr_init > lr_end:
            raise ValueError(f"lr_end ({lr_end}) must be smaller than initial lr ({lr_init})")
        params = dict(total_steps=T, warmup_steps=W, min_lr_ratio=lr_end / lr_init, power=kw.pop("power", 1.0), **kw)
        return build_scheduler(optimizer, Schedule("polynomial", keys=HF_KEYS, **params))
    if name == "cosine_with_min_lr":
        given = [k for k in ("min_lr", "min_lr_rate", "min_lr_ratio") if kw.get(k) is not None]
        if not given:
            raise ValueError("One of min_lr or min_lr_rate should be set through the `lr_scheduler_kwargs`")
        floor = _floor_ratio(optimizer, kw)
        return build_scheduler(
            optimizer, Schedule("cosine", keys=HF_KEYS, total_steps=T, warmup_steps=W, min_lr_ratio=floor, **kw)
        )
    floor = _floor_ratio(optimizer, kw)
    own = {"cosine_with_restarts": "cosine_restarts"}.get(name, name)
    return build_scheduler(
        optimizer, Schedule(own, keys=HF_KEYS, total_steps=T, warmup_steps=W, min_lr_ratio=floor, **kw)
    )


def restore_scheduler(scheduler: LambdaLR, saved_state: Mapping[str, Any], allow_change: bool = False) -> None:
    """Continue ``scheduler`` (built from the current config) at the saved update index.

    Refuses, with one line, a checkpoint whose schedule or peak lr differs from the config's unless
    ``allow_change``; then the config's schedule and peak apply from the saved update index on. The lr of every
    param group is recomputed from the schedule, so it never depends on what the optimizer state carried.
    """
    schedule = scheduler.lr_lambdas[0]
    saved = (saved_state.get("lr_lambdas") or [None])[0] or {}
    if not allow_change:
        if saved and (saved.get("name") != schedule.name or saved.get("params") != schedule.params):
            old = saved.get("params", {})
            if saved.get("name") != schedule.name:
                what = f"schedule {saved.get('name')!r} → {schedule.name!r}"
            else:
                diff = sorted(k for k in set(old) | set(schedule.params) if old.get(k) != schedule.params.get(k))
                what = ", ".join(f"{k} {old.get(k)!r} → {schedule.params.get(k)!r}" for k in diff)
            raise ConfigError(
                f"schedule: the checkpoint was trained with another schedule ({what}); resume with the same "
                "settings, or set trainer.allow_schedule_change=true to continue with the new schedule"
            )
        old_peaks = [float(x) for x in saved_state.get("base_lrs", [])]
        if old_peaks and old_peaks != [float(x) for x in scheduler.base_lrs]:
            raise ConfigError(
                f"optim.lr: the checkpoint was trained with peak lr {old_peaks[0]:g}, the config asks for "
                f"{float(scheduler.base_lrs[0]):g}; resume with the same value, or set "
                "trainer.allow_schedule_change=true to continue with the new one"
            )
    state = {k: v for k, v in saved_state.items() if k not in ("lr_lambdas", "base_lrs", "_last_lr")}
    scheduler.load_state_dict(state)
    lrs = [base * schedule(scheduler.last_epoch) for base in scheduler.base_lrs]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs
