"""A named schedule with fixed, validated parameters: the picklable callable that LambdaLR multiplies by.

``Schedule`` keeps its parameters in its ``__dict__``, so ``LambdaLR.state_dict()`` saves them with the
checkpoint and a resumed run can tell whether the config still describes the same schedule.
``schedule_from_config`` turns the Hydra ``schedule`` group (plus T and the peak lr) into one. No torch here.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from scheduling.schedules import DECAY_SHAPES, SCHEDULES, WARMUP_SHAPES
from training.errors import ConfigError

# How the parameters are named in messages by default: as Hydra config keys.
CONFIG_KEYS = {"total_steps": "trainer.max_steps"}


def _key(param: str, keys: Mapping[str, str]) -> str:
    return keys.get(param, f"schedule.{param}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Schedule:
    """λ(t) of one of ``SCHEDULES`` with its parameters; call it with the update index.

    >>> s = Schedule("cosine", total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    >>> s(0), s(10), s(100), s(500)
    (0.0, 1.0, 0.1, 0.1)
    """

    def __init__(self, name: str, keys: Mapping[str, str] = CONFIG_KEYS, **params: Any):
        if name not in SCHEDULES:
            raise ConfigError(_key("name", keys), f"one of {', '.join(sorted(SCHEDULES))}", name)
        accepted = inspect.signature(SCHEDULES[name]).parameters
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            allowed = ", ".join(p for p in accepted if p != "t")
            raise ConfigError(_key(unknown[0], keys), f"a parameter that schedule {name!r} takes ({allowed})", "?")
        validate(name, params, keys)
        self.name = name
        self.params = dict(params)

    def __call__(self, t: int) -> float:
        return SCHEDULES[self.name](t, **self.params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and (self.name, self.params) == (other.name, other.params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Schedule({self.name!r}, {args})"

    @property
    def total_steps(self) -> int | None:
        return self.params.get("total_steps")

    @property
    def warmup_steps(self) -> int:
        return self.params.get("warmup_steps", 0)

    def state(self) -> dict[str, Any]:
        """What LambdaLR saves of this schedule (its ``__dict__``)."""
        return {"name": self.name, "params": dict(self.params)}


def validate(name: str, p: Mapping[str, Any], keys: Mapping[str, str] = CONFIG_KEYS) -> None:
    """Raise ConfigError, naming the key, for the first parameter that makes ``name`` ill-defined."""
    k = lambda param: _key(param, keys)  # noqa: E731
    total = p.get("total_steps")
    needs_total = "total_steps" in p or name not in ("constant", "inverse_sqrt")
    if needs_total and (not _is_int(total) or total <= 0):
        raise ConfigError(k("total_steps"), "an integer > 0", total)
    warm = p.get("warmup_steps", 0)
    if not _is_int(warm) or warm < 0:
        raise ConfigError(k("warmup_steps"), "an integer number of updates ≥ 0 (or a fraction in (0, 1))", warm)
    if total is not None and warm > total:
        raise ConfigError(k("warmup_steps"), f"≤ the total number of updates ({total})", warm)
    shape = p.get("warmup_shape", "linear")
    if shape not in WARMUP_SHAPES:
        raise ConfigError(k("warmup_shape"), f"one of {', '.join(WARMUP_SHAPES)}", shape)
    start = p.get("warmup_start_ratio", 0.0)
    if not _is_number(start) or not 0.0 <= start <= 1.0:
        raise ConfigError(k("warmup_start_ratio"), "a number in [0, 1]", start)
    if shape == "exponential" and start <= 0.0:
        raise ConfigError(k("warmup_start_ratio"), "> 0 for an exponential warmup", start)
    floor = p.get("min_lr_ratio", 0.0)
    if not _is_number(floor) or floor < 0.0:
        raise ConfigError(k("min_lr_ratio"), "a floor ≥ 0", floor)
    if floor > 1.0:
        raise ConfigError(k("min_lr_ratio"), "≤ 1 (the floor cannot exceed the peak)", floor)
    if name == "polynomial":
        power = p.get("power", 1.0)
        if not _is_number(power) or power <= 0:
            raise ConfigError(k("power"), "> 0", power)
    if name == "inverse_sqrt":
        tau = p.get("timescale")
        if tau is not None and (not _is_number(tau) or tau <= 0):
            raise ConfigError(k("timescale"), "> 0 (or null for the warmup length)", tau)
        cool = p.get("cooldown_steps", 0)
        if not _is_int(cool) or cool < 0:
            raise ConfigError(k("cooldown_steps"), "an integer ≥ 0 (or a fraction in (0, 1))", cool)
        if cool and total is None:
            raise ConfigError(k("cooldown_steps"), "0 when there is no total number of updates", cool)
        if cool and warm + cool > total:
            raise ConfigError(k("cooldown_steps"), f"≤ total − warmup updates ({total - warm})", cool)
    if name == "wsd":
        decay = p.get("decay_steps")
        if not _is_int(decay) or decay < 0:
            raise ConfigError(k("decay_steps"), "an integer ≥ 0", decay)
        if warm + decay > total:
            raise ConfigError(k("decay_steps"), f"≤ total − warmup updates ({total} − {warm} = {total - warm})", decay)
        if p.get("decay_shape", "1-sqrt") not in DECAY_SHAPES:
            raise ConfigError(k("decay_shape"), f"one of {', '.join(DECAY_SHAPES)}", p.get("decay_shape"))
    if name in ("cosine", "wsd"):
        cycles = p.get("num_cycles", 0.5)
        if not _is_number(cycles) or cycles <= 0:
            raise ConfigError(k("num_cycles"), "> 0", cycles)
    if name == "cosine_restarts":
        cycles = p.get("num_cycles", 1)
        if not _is_int(cycles) or cycles < 1:
            raise ConfigError(k("num_cycles"), "an integer ≥ 1", cycles)
        decay = p.get("cycle_decay", 1.0)
        if not _is_number(decay) or not 0.0 < decay <= 1.0:
            raise ConfigError(k("cycle_decay"), "in (0, 1]", decay)


def resolve_steps(value: Any, total_steps: int, key: str) -> int:
    """``warmup_steps``-style values: an int is a number of updates; a float in (0, 1) a fraction of T."""
    if _is_int(value):
        if value < 0:
            raise ConfigError(key, "≥ 0 (an integer number of updates or a fraction in (0, 1))", value)
        return value
    if isinstance(value, float) and value == 0.0:
        return 0
    if isinstance(value, float) and 0.0 < value < 1.0:
        return int(round(value * total_steps))
    raise ConfigError(key, "an integer number of updates ≥ 0 or a fraction in (0, 1)", value)


# Config keys that are not schedule parameters: resolved into ones here, or read elsewhere.
_CONFIG_ONLY = ("name", "min_lr", "min_lr_ratio", "warmup_steps", "decay_fraction", "decay_steps", "cooldown_steps")


def schedule_from_config(cfg: Mapping[str, Any], total_steps: int, peak_lr: float) -> Schedule:
    """Build the Schedule that the Hydra ``schedule`` group describes, for T = ``total_steps`` updates.

    Resolves ``warmup_steps``/``cooldown_steps`` fractions against T, the floor from ``min_lr`` (absolute, wins
    when set) or ``min_lr_ratio``, and WSD's decay from ``decay_steps`` (wins when set) or ``decay_fraction``.
    """
    cfg = dict(cfg)
    name = cfg.get("name")
    if name not in SCHEDULES:
        raise ConfigError("schedule.name", f"one of {', '.join(sorted(SCHEDULES))}", name)
    if not _is_int(total_steps) or total_steps <= 0:
        raise ConfigError("trainer.max_steps", "an integer > 0", total_steps)
    if not _is_number(peak_lr) or peak_lr <= 0:
        raise ConfigError("optim.lr", "> 0", peak_lr)

    params: dict[str, Any] = {k: v for k, v in cfg.items() if k not in _CONFIG_ONLY}
    params["warmup_steps"] = resolve_steps(cfg.get("warmup_steps", 0), total_steps, "schedule.warmup_steps")
    if name != "constant":
        params["total_steps"] = total_steps
        min_lr = cfg.get("min_lr")
        if min_lr is not None:
            if not _is_number(min_lr) or min_lr < 0:
                raise ConfigError("schedule.min_lr", "a floor ≥ 0", min_lr)
            if min_lr > peak_lr:
                raise ConfigError("schedule.min_lr", f"≤ the peak optim.lr ({peak_lr:g})", min_lr)
            params["min_lr_ratio"] = min_lr / peak_lr
        elif "min_lr_ratio" in cfg:
            params["min_lr_ratio"] = cfg["min_lr_ratio"]
    if name == "wsd":
        if cfg.get("decay_steps") is not None:
            params["decay_steps"] = cfg["decay_steps"]
        else:
            fraction = cfg.get("decay_fraction", 0.2)
            if not _is_number(fraction) or not 0.0 <= fraction <= 1.0:
                raise ConfigError("schedule.decay_fraction", "a fraction in [0, 1]", fraction)
            params["decay_steps"] = int(round(fraction * total_steps))
    if name == "inverse_sqrt":
        params["cooldown_steps"] = resolve_steps(cfg.get("cooldown_steps", 0), total_steps, "schedule.cooldown_steps")
    return Schedule(name, **params)
