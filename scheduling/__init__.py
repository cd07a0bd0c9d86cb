"""Learning-rate schedules: pure functions of the update index (``scheduling.schedules``), a validated
picklable ``Schedule`` (``scheduling.spec``), torch's LambdaLR around it with a drop-in ``get_scheduler``
(``scheduling.lr_scheduler``, the only part that imports torch; loaded on first use), a plot CLI
(``python -m scheduling.plot``) and the lr audit of a run (``python -m scheduling.audit``)."""

from scheduling.schedules import (
    DECAY_SHAPES,
    SCHEDULES,
    WARMUP_SHAPES,
    constant,
    cosine,
    cosine_restarts,
    inverse_sqrt,
    linear,
    polynomial,
    warmup,
    wsd,
)
from scheduling.spec import Schedule, ScheduleError, resolve_steps, schedule_from_config, unless_budget

_TORCH_NAMES = ("build_scheduler", "get_scheduler", "restore_scheduler", "TRANSFORMERS_NAMES")

__all__ = [
    "DECAY_SHAPES",
    "SCHEDULES",
    "WARMUP_SHAPES",
    "Schedule",
    "ScheduleError",
    "constant",
    "cosine",
    "cosine_restarts",
    "inverse_sqrt",
    "linear",
    "polynomial",
    "resolve_steps",
    "schedule_from_config",
    "unless_budget",
    "warmup",
    "wsd",
    *_TORCH_NAMES,
]


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        from scheduling import lr_scheduler

        return getattr(lr_scheduler, name)
    raise AttributeError(f"module 'scheduling' has no attribute {name!r}")
