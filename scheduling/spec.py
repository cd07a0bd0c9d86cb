"""A named schedule with fixed, validated parameters: the picklable callable that LambdaLR multiplies by.

``Schedule`` keeps its parameters in its ``__dict__``, so ``LambdaLR.state_dict()`` saves them with the
checkpoint and a resumed run can tell whether the config still describes the same schedule.
``schedule_from_config`` turns the Hydra ``schedule`` group (plus T and the peak lr) into one. No torch here.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib
import inspect
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from scheduling.schedules import DECAY_SHAPES, SCHEDULES, WARMUP_SHAPES

_UNSET = object()


class SettingError(ValueError):
    """A bad setting, in one line that names the key, what is allowed and what was given: ``(key, expected, got)``
    reads "{key} must be {expected}, got {got!r}"; ``(message)`` is the message as it is. The base of each
    layer's own error type (``ScheduleError`` here, ``ModelConfigError``, ``training.config.ConfigError``)."""

    def __init__(self, key: str, expected: str | None = None, got: Any = _UNSET):
        if expected is None:
            message = key
        elif got is _UNSET:
            message = f"{key} must be {expected}"
        else:
            message = f"{key} must be {expected}, got {got!r}"
        super().__init__(" ".join(message.split()))  # always one line


def first_line(error: BaseException, limit: int = 200) -> str:
    """An error's message cut to its first line (some libraries' run over several), or its type when it has none:
    what a one-line error quotes of its cause. A first line that ends in ":" only heads the reason below it
    (torch's "Error(s) in loading state_dict for GPT:"), so the next line comes with it."""
    lines = [line.strip() for line in str(error).strip().splitlines()]
    if not lines:
        return type(error).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[1]}"[:limit]
    return lines[0][:limit]


class CommandLine(argparse.ArgumentParser):
    """The parser of every command here: a bad command line is one ``error:`` line and exit code 2, as any other
    bad input is, and Hydra overrides may come after the options too (``--against RUN trainer.max_steps=60``)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see --help)\n")

    def parse_args(self, args=None, namespace=None):
        known, rest = self.parse_known_args(args, namespace)
        if rest and hasattr(known, "overrides") and not any(a.startswith("-") for a in rest):
            known.overrides = [*known.overrides, *rest]
        elif rest:
            self.error(f"unrecognized arguments: {' '.join(rest)}")
        return known


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer ≥ ``minimum`` (the parser's one-line error names the option)."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer ≥ {minimum}, got {text!r}")
        return value

    return integer


def file_path(text: str) -> Path:
    """An argparse type: the path of a file to write, which has a name ('', '.' and 'folder/' have none: Path would
    drop the slash and write folder.png beside the folder)."""
    if not text or text.endswith(("/", os.sep)) or Path(text).name in ("", ".", ".."):
        raise argparse.ArgumentTypeError(f"must be the path of a file, got {text!r}")
    return Path(text)


class ScheduleError(SettingError):
    """A schedule setting that makes the schedule ill-defined."""


# How parameters are named in messages by default: as Hydra config keys (``schedule.<param>`` unless listed).
CONFIG_KEYS = {"total_steps": "trainer.max_steps"}


def unless_budget(default: Any, *, _parent_: Any) -> Any:
    """The OmegaConf resolver for T: ``trainer.max_steps: ${unless_budget:500}`` is 500 unless
    ``trainer.max_tokens`` or ``trainer.max_time`` is set, then null, so a budget alone fixes T.

    Pure: whoever composes ``conf/`` registers it, with ``register_resolvers``.
    """
    if _parent_.get("max_tokens") is None and _parent_.get("max_time") is None:
        return default
    return None


def register_resolvers() -> None:
    """The resolvers conf/ uses (``trainer.max_steps: ${unless_budget:500}``), registered once; every entry point
    that composes conf/ calls this."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("unless_budget"):
        OmegaConf.register_new_resolver("unless_budget", unless_budget)


CONF = Path(__file__).resolve().parents[1] / "conf"


def compose(overrides: list[str] | None = None, config_name: str = "config", return_hydra_config: bool = False):
    """The config train.py composes from conf/ with these overrides, without running it (unresolved): the one
    composer of the CLIs, tests and benchmarks."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name, list(overrides or []), return_hydra_config=return_hydra_config)


def is_int(value: Any) -> bool:
    """An int, not a bool (YAML's ``true`` is not a number of updates)."""
    return isinstance(value, int) and not isinstance(value, bool)


def plain(value: Any) -> Any:
    """A numpy or torch scalar as the Python number it holds, as the checks and a saved state take it; anything
    else as it is."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # np.int64(3), np.float32(2), tensor(1e-3)
        value = value.item()
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def with_defaults(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with each parameter of schedule ``name`` they leave out at its default: two schedules that
    differ only in what they spell out are the same λ."""
    signature = inspect.signature(schedule_function(name)).parameters
    return {**{p: v.default for p, v in signature.items() if v.default is not v.empty}, **params}


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool (nor an int past float's range, which arithmetic with floats overflows)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def missing_name(path: str) -> str | None:
    """Where a dotted path breaks when its module imports but a name in it is missing (a mistyped class in a
    file that was found), with the closest name there; None otherwise (no module, or one that fails to import)."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:i])
        try:
            found: Any = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:  # not a module: perhaps a name in the one above it
                continue
            return None  # it imports something missing: the import's own error says so
        except Exception:  # a module that fails to import: its own error says why
            return None
        for j in range(i, len(parts)):
            if not hasattr(found, parts[j]):
                names = [n for n in dir(found) if not n.startswith("_")]
                close = difflib.get_close_matches(parts[j], names, n=1)
                owner = ".".join(parts[:j])
                return f"{owner} has no {parts[j]}" + (f"; did you mean {owner}.{close[0]}?" if close else "")
            found = getattr(found, parts[j])
        return None
    return None


# The most updates a schedule counts: past 2**53 a float no longer holds every update index (t / T, fractions of T).
MAX_UPDATES = 2**53


def check_total_steps(total: Any, key: str) -> None:
    """T: an integer > 0 that a float holds exactly."""
    if not is_int(total) or total <= 0:
        raise ScheduleError(key, "an integer > 0", total)
    if total > MAX_UPDATES:
        raise ScheduleError(key, "an integer ≤ 2**53 (the update counts a float holds exactly)", total)


def _key(param: str, keys: Mapping[str, str]) -> str:
    return keys.get(param, f"schedule.{param}")


def schedule_function(name: Any, key: str = "schedule.name") -> Callable[..., float]:
    """λ(t, **params) of a schedule: one of ``SCHEDULES`` by name, or a fork's function by its dotted path
    (``my_schedules.step_decay``: a file and a YAML file add a schedule; docs/extending.md)."""
    if isinstance(name, str) and name in SCHEDULES:
        return SCHEDULES[name]
    if not isinstance(name, str) or "." not in name or not all(part.isidentifier() for part in name.split(".")):
        raise ScheduleError(key, f"one of {', '.join(sorted(SCHEDULES))}, or the dotted path of a λ(t) function", name)
    return _imported(name, key)


def dotted(path: str) -> Any:
    """The object a dotted path names (``my_module.MyClass``); an ImportError whose message is the one-line reason
    when it cannot be had: a missing file or name (with the closest one), or a module that fails as it imports."""
    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as e:
        raise ImportError(missing_name(path) or first_line(e)) from None


@functools.cache
def _imported(name: str, key: str) -> Callable[..., float]:
    try:
        found = dotted(name)
    except ImportError as e:
        raise ScheduleError(f"{key}: {name!r} cannot be imported ({e})") from None
    if not callable(found):
        raise ScheduleError(key, "the dotted path of a λ(t) function", name)
    return found


# What schedule_from_config resolves from the schedule's keys and passes a fork's λ (fractions of T, min_lr as a ratio)
_RESOLVED = ("total_steps", "warmup_steps", "min_lr_ratio")


class Schedule:
    """λ(t) of one of ``SCHEDULES`` with its parameters; call it with the update index.

    >>> s = Schedule("cosine", total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    >>> s(0), s(10), s(100), s(500)
    (0.0, 1.0, 0.1, 0.1)
    """

    def __init__(self, name: str, keys: Mapping[str, str] = CONFIG_KEYS, **params: Any):
        params = {k: plain(v) for k, v in params.items()}  # T from numpy, a floor from a tensor lr
        signature = dict(inspect.signature(schedule_function(name, _key("name", keys))).parameters)
        signature.pop(next(iter(signature), None), None)  # the update index, whatever its name (t, step)
        accepted = list(signature)
        any_key = any(v.kind is v.VAR_KEYWORD for v in signature.values())
        unknown = [] if any_key else sorted(set(params) - set(accepted))
        resolved = [p for p in unknown if p in _RESOLVED]
        if resolved and name not in SCHEDULES:  # a fork's λ that lacks what the template passes every schedule
            raise ScheduleError(
                f"{_key('name', keys)}: {name} must take {resolved[0]}, which the template resolves from the "
                f"schedule's keys and passes to it (docs/extending.md)"
            )
        if unknown:
            allowed = ", ".join(_key(p, keys) for p in accepted)
            raise ScheduleError(f"{_key(unknown[0], keys)} is not a parameter of schedule {name!r}; it takes {allowed}")
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)  # not *args, **keys
        needed = [p for p, v in signature.items() if v.kind in named and v.default is v.empty and p not in params]
        if needed and name not in SCHEDULES:  # the template's own say what they need in validate's words
            if needed[0] in _CONFIG_ONLY:  # min_lr: the template passes the floor as min_lr_ratio instead
                raise ScheduleError(
                    f"{_key('name', keys)}: {name} takes {needed[0]}, which the template resolves and does not pass "
                    f"(it passes {', '.join(_RESOLVED)})"
                )
            raise ScheduleError(f"{_key(needed[0], keys)}: schedule {name} needs it, and it is not set")
        if name not in SCHEDULES:  # a fork's: where a key's default is a number, it takes a number
            for p, v in params.items():
                default = signature[p].default if p in signature else None
                if is_number(default) and v is not None and not is_number(v):
                    raise ScheduleError(_key(p, keys), f"a number (schedule {name}'s default is {default!r})", v)
        validate(name, params, keys)
        self.name = name
        self.params = dict(params)
        if name not in SCHEDULES:
            self.probe(_key("name", keys))

    def probe(self, key: str) -> None:
        """A fork's λ, tried at the warmup's start and end and at T − 1: an error or a value that is not a finite
        multiplier ≥ 0 is one line naming ``key``, before any work."""
        total = self.total_steps or self.warmup_steps + 1
        for t in sorted({0, self.warmup_steps, max(total - 1, 0)}):
            try:
                value = float(schedule_function(self.name)(t, **self.params))  # a numpy or torch scalar too
            except Exception as e:  # a fork's code: whatever it raises is one line
                cause = f"{type(e).__name__}: {first_line(e)}"
                raise ScheduleError(f"{key}: {self.name} fails at update {t} ({cause})") from None
            self.check(value, t, key)

    def check(self, value: float, t: int, key: str = "schedule.name") -> None:
        if not math.isfinite(value) or value < 0:
            raise ScheduleError(f"{key}: {self.name} gives {value!r} at update {t}, not a finite multiplier ≥ 0")

    def __call__(self, t: int) -> float:
        value = schedule_function(self.name)(t, **self.params)
        T = self.total_steps
        if self.name not in SCHEDULES and (T is None or t < T):  # a fork's λ at every update a run takes, before it
            self.check(float(value), t)  # does (LambdaLR also computes λ(T), which no update uses)
        return value

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


def validate(name: str, p: Mapping[str, Any], keys: Mapping[str, str] = CONFIG_KEYS) -> None:
    """Raise ScheduleError, naming the key, for the first parameter that makes ``name`` ill-defined."""
    k = lambda param: _key(param, keys)  # noqa: E731
    total = p.get("total_steps")
    needs_total = "total_steps" in p or name not in ("constant", "inverse_sqrt")
    if needs_total:
        check_total_steps(total, k("total_steps"))
    warm = p.get("warmup_steps", 0)
    if not is_int(warm) or warm < 0:
        raise ScheduleError(k("warmup_steps"), "an integer number of updates ≥ 0", warm)
    if total is not None and warm > total:
        raise ScheduleError(k("warmup_steps"), f"≤ the total number of updates ({total})", warm)
    shape = p.get("warmup_shape", "linear")
    if shape not in WARMUP_SHAPES:
        raise ScheduleError(k("warmup_shape"), f"one of {', '.join(WARMUP_SHAPES)}", shape)
    start = p.get("warmup_start_ratio", 0.0)
    if not is_number(start) or not 0.0 <= start <= 1.0:
        raise ScheduleError(k("warmup_start_ratio"), "a number in [0, 1]", start)
    if shape == "exponential" and start <= 0.0:
        raise ScheduleError(k("warmup_start_ratio"), "> 0 for an exponential warmup (it grows geometrically)", start)
    check_floor_ratio(p.get("min_lr_ratio", 0.0), k("min_lr_ratio"))
    if name == "polynomial":
        power = p.get("power", 1.0)
        if not is_number(power) or power <= 0:
            raise ScheduleError(k("power"), "a number > 0", power)
    if name == "inverse_sqrt":
        tau = p.get("timescale")
        if tau is not None and (not is_number(tau) or tau <= 0):
            raise ScheduleError(k("timescale"), "> 0 (or null for the warmup length)", tau)
        cool = p.get("cooldown_steps", 0)
        if not is_int(cool) or cool < 0:
            raise ScheduleError(k("cooldown_steps"), "an integer number of updates ≥ 0", cool)
        if cool and total is None:
            raise ScheduleError(k("cooldown_steps"), "0 when there is no total number of updates", cool)
        if cool and warm + cool > total:
            raise ScheduleError(k("cooldown_steps"), f"≤ total − warmup updates ({total} − {warm})", cool)
    if name == "wsd":
        decay = p.get("decay_steps")
        if not is_int(decay) or decay < 0:
            raise ScheduleError(k("decay_steps"), "an integer ≥ 0", decay)
        if warm + decay > total:
            raise ScheduleError(
                k("decay_steps"), f"≤ total − warmup updates ({total} − {warm} = {total - warm})", decay
            )
        if p.get("decay_shape", "1-sqrt") not in DECAY_SHAPES:
            raise ScheduleError(k("decay_shape"), f"one of {', '.join(DECAY_SHAPES)}", p.get("decay_shape"))
    if name == "tabulated":
        check_knots(p.get("knots"), warm, total, k("knots"))
    if name in ("cosine", "wsd"):
        cycles = p.get("num_cycles", 0.5)
        if not is_number(cycles) or cycles <= 0:
            raise ScheduleError(k("num_cycles"), "a number > 0", cycles)
    if name == "cosine_restarts":
        cycles = p.get("num_cycles", 1)
        if not is_number(cycles) or cycles < 1 or cycles != int(cycles):
            raise ScheduleError(k("num_cycles"), "a whole number of cycles ≥ 1", cycles)
        decay = p.get("cycle_decay", 1.0)
        if not is_number(decay) or not 0.0 < decay <= 1.0:
            raise ScheduleError(k("cycle_decay"), "in (0, 1] (1 = every cycle starts at the peak)", decay)


def check_knots(
    knots: Any, warmup_steps: int, total_steps: int, key: str, total_key: str = "trainer.max_steps"
) -> None:
    """A tabulated schedule's knots: (update, λ) pairs at whole updates after W up to T (the last one at T), λ in
    [0, 1] and never above the one before it (the peak at W for the first): the lr never increases after the
    warmup."""
    if not isinstance(knots, (list, tuple)) or not knots:
        raise ScheduleError(key, "a non-empty list of (update, λ) knots", knots)
    previous_t, previous_y = warmup_steps, 1.0
    for i, knot in enumerate(knots):
        if not isinstance(knot, (list, tuple)) or len(knot) != 2 or not is_int(knot[0]) or not is_number(knot[1]):
            raise ScheduleError(f"{key}: knot {i + 1} must be a pair (update, λ), got {knot!r}")
        t, y = knot
        if t <= previous_t:
            where = f"after the knot at update {previous_t}" if i else f"after the warmup's end (W = {warmup_steps})"
            raise ScheduleError(f"{key}: knot {i + 1} is at update {t}; the knots lie at increasing updates {where}")
        if not 0.0 <= y <= 1.0:
            raise ScheduleError(
                f"{key}: knot {i + 1} (update {t}) has λ = {y!r}; λ is a fraction of the peak, in [0, 1]"
            )
        if y > previous_y:
            raise ScheduleError(
                f"{key}: knot {i + 1} (update {t}) has λ = {y!r}, above the {previous_y!r} before it; the lr must "
                "never increase after the warmup"
            )
        previous_t, previous_y = t, y
    if previous_t != total_steps:
        set_by = "" if total_key == "trainer.max_steps" else f" ({total_key})"
        budget = re.search(r"trainer\.(max_tokens|max_time)", total_key)  # then null, or both would set T
        instead = f" trainer.{budget.group(1)}=null" if budget else ""
        raise ScheduleError(
            f"{key}: the last knot is at update {previous_t}, and the run has {total_steps} updates{set_by}; a "
            f"tabulated schedule ends at its last knot, so run it with trainer.max_steps={previous_t}{instead}"
        )


def read_knots(path: Any) -> tuple[tuple[int, float], ...]:
    """The knots of a CSV file with the columns ``update,lambda`` (a header line; ``#`` lines are comments), as
    ``python -m scheduling.forecast optimize`` writes them."""
    import csv

    key = "schedule.knots"
    if not isinstance(path, str) or not path:
        raise ScheduleError(key, "a CSV file of (update, lambda) knots", path)
    file = Path(path)
    if not file.is_file():
        raise ScheduleError(f"{key}: {path} is not a file (a CSV of update,lambda knots)")
    try:
        text = file.read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark is not part of the header
    except (OSError, UnicodeDecodeError) as e:
        raise ScheduleError(f"{key}: {path} cannot be read as UTF-8 text ({type(e).__name__})") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    rows = list(csv.reader(lines))
    if not rows or [c.strip() for c in rows[0]] != ["update", "lambda"]:
        raise ScheduleError(f"{key}: {path} must start with the header line update,lambda")
    knots = []
    for n, row in enumerate(rows[1:], start=2):
        try:
            t, y = (float(c) for c in row)
        except ValueError:
            raise ScheduleError(f"{key}: {path}, row {n}: expected an update and a λ, got {','.join(row)!r}") from None
        if not t.is_integer():
            raise ScheduleError(f"{key}: {path}, row {n}: the update must be a whole number, got {row[0]!r}")
        if abs(t) > MAX_UPDATES:  # a float holds no later update exactly, nor any T to end there
            raise ScheduleError(f"{key}: {path}, row {n}: the update must be ≤ 2**53, got {row[0]!r}")
        knots.append((int(t), y))
    if not knots:
        raise ScheduleError(f"{key}: {path} holds no knot")
    return tuple(knots)


def check_floor_ratio(ratio: Any, key: str) -> None:
    """A floor as a fraction of the peak: in [0, 1] (the floor can be neither negative nor above the peak)."""
    if not is_number(ratio) or ratio < 0.0:
        raise ScheduleError(key, "a floor ≥ 0", ratio)
    if ratio > 1.0:
        raise ScheduleError(key, "≤ 1 (the floor cannot exceed the peak)", ratio)


def resolve_steps(value: Any, total_steps: int, key: str) -> int:
    """``warmup_steps``-style values: an int is a number of updates; a float in (0, 1) a fraction of T, rounded
    to the nearest update (``0.1`` of ``T = 100000`` is 10 000 updates); ``0``/``0.0`` is none."""
    if is_int(value):
        if value < 0:
            raise ScheduleError(key, "≥ 0 (an integer number of updates or a fraction in (0, 1))", value)
        return value
    if isinstance(value, float) and value == 0.0:
        return 0
    if isinstance(value, float) and 0.0 < value < 1.0:
        return int(round(value * total_steps))
    raise ScheduleError(key, "an integer number of updates ≥ 0 or a fraction in (0, 1)", value)


def check_fit(
    cfg: Mapping[str, Any], warm: int, what: str, key: str, given: Any, steps: int, total: int, total_key: str
) -> None:
    """The warmup and a phase after it (WSD's decay, a cooldown) within T; the error names both keys, since either
    may be the one to change, and T by the key that set it."""
    if warm + steps > total:
        raise ScheduleError(
            f"schedule.warmup_steps ({cfg.get('warmup_steps')!r}) and {key} ({given!r}) do not fit together: "
            f"warmup + {what} = {warm} + {steps} > {total_key} ({total})"
        )


def fitted(share: float, warmup: Any, warm: int, total_steps: int) -> int:
    """A share of T that follows the warmup (WSD's decay, inverse_sqrt's cooldown), rounded to an update; shares
    that fit T together fit it once each is rounded too (0.5 and 0.5 of T = 11 round to 6 and 6)."""
    steps = int(round(share * total_steps))
    if (warmup if isinstance(warmup, float) else warm / total_steps) + share <= 1.0 + 1e-12:
        steps = min(steps, total_steps - warm)
    return steps


# Config keys that are not schedule parameters as such, resolved into parameters here; a schedule's own ones
# (WSD's decay_fraction) belong to that schedule alone, and any other key is refused as not its parameter.
_CONFIG_ONLY = ("name", "min_lr", "min_lr_ratio", "warmup_steps")
_OWN_CONFIG_ONLY = {
    "wsd": ("decay_fraction", "decay_steps"),
    "inverse_sqrt": ("cooldown_steps",),
    "tabulated": ("knots",),  # a file name in the config, the knots themselves in the schedule
}
# Schedules whose floor is their own (constant has none; tabulated's is its last knot): min_lr keys do not apply.
_OWN_FLOOR = ("constant", "tabulated")


def schedule_from_config(
    cfg: Mapping[str, Any], total_steps: int, peak_lr: float, total_key: str = "trainer.max_steps"
) -> Schedule:
    """Build the Schedule that the Hydra ``schedule`` group describes, for T = ``total_steps`` updates.

    Resolves ``warmup_steps``/``cooldown_steps`` fractions against T, the floor from ``min_lr`` (absolute, wins
    when set) or ``min_lr_ratio`` (null = 0), and WSD's decay length from ``decay_steps`` (wins when set) or
    ``decay_fraction`` (of T). ``constant`` has no decay: its floor keys are checked but have no effect.
    Raises ScheduleError naming the config key (``schedule.…``, ``optim.lr``, and T as ``total_key``: what set
    it, a budget's where ``trainer.max_steps`` is null).
    """
    cfg = dict(cfg)
    name = cfg.get("name")
    schedule_function(name)  # known, or a fork's that imports
    check_total_steps(total_steps, total_key)
    if not is_number(peak_lr) or peak_lr <= 0:
        raise ScheduleError("optim.lr", "a number > 0", peak_lr)

    resolved_here = _CONFIG_ONLY + _OWN_CONFIG_ONLY.get(name, ())
    params: dict[str, Any] = {k: v for k, v in cfg.items() if k not in resolved_here}
    warm = resolve_steps(cfg.get("warmup_steps", 0), total_steps, "schedule.warmup_steps")
    if warm > total_steps:
        raise ScheduleError("schedule.warmup_steps", f"≤ {total_key} ({total_steps})", warm)
    params["warmup_steps"] = warm
    min_lr = cfg.get("min_lr")
    if min_lr is not None:
        if not is_number(min_lr) or min_lr < 0:
            raise ScheduleError("schedule.min_lr", "a floor ≥ 0", min_lr)
        if min_lr > peak_lr:
            raise ScheduleError("schedule.min_lr", f"≤ the peak optim.lr ({peak_lr:g})", min_lr)
    ratio = cfg.get("min_lr_ratio")
    ratio = 0.0 if ratio is None else ratio
    check_floor_ratio(ratio, "schedule.min_lr_ratio")  # checked where min_lr wins too: every value given is
    if min_lr is not None:
        ratio = min_lr / peak_lr
    if name != "constant":
        params["total_steps"] = total_steps
    if name not in _OWN_FLOOR:
        params["min_lr_ratio"] = ratio
    if name == "wsd":
        fraction = cfg.get("decay_fraction", 0.2)
        unset = fraction is None and cfg.get("decay_steps") is not None  # null beside decay_steps: none given
        if not unset and (not is_number(fraction) or not 0.0 <= fraction <= 1.0):  # checked where steps win too
            raise ScheduleError("schedule.decay_fraction", f"a fraction of {total_key} in [0, 1]", fraction)
        if cfg.get("decay_steps") is not None:
            key, given = "schedule.decay_steps", cfg["decay_steps"]
            if not is_int(given) or given < 0:
                raise ScheduleError(key, "an integer number of updates ≥ 0 (or null to use decay_fraction)", given)
            decay = given
        else:
            key, given = "schedule.decay_fraction", fraction
            decay = fitted(given, cfg.get("warmup_steps", 0), warm, total_steps)
        check_fit(cfg, warm, "decay", key, given, decay, total_steps, total_key)
        params["decay_steps"] = decay
    if name == "inverse_sqrt":
        cooldown = cfg.get("cooldown_steps", 0)
        cool = resolve_steps(cooldown, total_steps, "schedule.cooldown_steps")
        if isinstance(cooldown, float) and 0.0 < cooldown < 1.0:
            cool = fitted(cooldown, cfg.get("warmup_steps", 0), warm, total_steps)
        check_fit(cfg, warm, "cooldown", "schedule.cooldown_steps", cooldown, cool, total_steps, total_key)
        params["cooldown_steps"] = cool
    if name == "tabulated":
        params["knots"] = read_knots(cfg.get("knots"))
        check_knots(params["knots"], warm, total_steps, f"schedule.knots ({cfg['knots']})", total_key)  # names the file
    return Schedule(name, keys={**CONFIG_KEYS, "total_steps": total_key}, **params)
