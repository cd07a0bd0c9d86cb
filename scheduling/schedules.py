"""Learning-rate schedules as pure functions of the optimizer update index ``t`` (0-based). No torch here.

Each function returns the multiplier λ(t) that optimizer update ``t`` uses: ``lr(t) = peak · λ(t)``.
Notation: ``W`` warmup updates, ``T`` total updates, ``r`` the floor as a fraction of the peak
(``min_lr / peak``), ``s`` the warmup's start as a fraction of the peak.

Every schedule is a warmup followed by a decay: ``λ(t) = warmup(t)`` for ``t < W`` (from ``s`` at ``t = 0``, 1 at
``t = W``; ``warmup()`` gives the shapes), then the decay's own formula for ``t ≥ W``. The warmup is written once,
in ``after_warmup``, which adds its two parameters (``warmup_start_ratio``, ``warmup_shape``) to each decay.

Conventions shared by every decay:
- it starts at the peak (λ(W) = 1), reaches the floor ``r`` at ``t = T`` and holds it for every ``t > T``
  (no rebound, never negative). Exceptions: ``constant`` has no decay (λ = 1 after warmup); ``inverse_sqrt``
  reaches ``r`` only with a cooldown (else it holds its value at ``T``); ``cosine`` with transformers'
  ``num_cycles`` ≠ ½ holds its value at ``T``;
- phase fractions divide by ``max(1, ·)`` as transformers does, so ``W = T`` cannot divide by zero.
"""

from __future__ import annotations

import bisect
import functools
import inspect
import math
from collections.abc import Callable, Sequence

WARMUP_SHAPES = ("linear", "cosine", "exponential", "1-sqrt")
DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


def warmup(t: float, warmup_steps: int, start: float = 0.0, shape: str = "linear") -> float:
    """λ during warmup (``0 ≤ t < W``), with ``x = t / max(1, W)``:

    - ``linear``:      ``x·(1 − s) + s``                 (``t / W`` when ``s = 0``)
    - ``cosine``:      ``½(1 − cos πx)·(1 − s) + s``
    - ``1-sqrt``:      ``(1 − √(1 − x))·(1 − s) + s``
    - ``exponential``: ``s · (1/s)^x``                   (geometric from ``s > 0`` to 1)
    """
    x = t / max(1, warmup_steps)
    if shape == "linear":
        f = x
    elif shape == "cosine":
        f = 0.5 * (1.0 - math.cos(math.pi * x))
    elif shape == "1-sqrt":
        f = 1.0 - math.sqrt(1.0 - x)
    elif shape == "exponential":
        return start * (1.0 / start) ** x
    else:
        raise ValueError(f"unknown warmup shape {shape!r}; known: {', '.join(WARMUP_SHAPES)}")
    return f * (1.0 - start) + start


def decay_factor(q: float, shape: str) -> float:
    """The fraction of the peak-to-floor range left at decay progress ``q ∈ [0, 1]`` (1 at ``q = 0``, 0 at 1):
    ``linear`` ``1 − q``, ``cosine`` ``½(1 + cos πq)``, ``1-sqrt`` ``1 − √q`` (Hägele et al. 2024's cooldown)."""
    if shape == "linear":
        return 1.0 - q
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * q))
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(q)
    raise ValueError(f"unknown decay shape {shape!r}; known: {', '.join(DECAY_SHAPES)}")


def _progress(t: float, start: int, end: int) -> float:
    """Fraction of the phase [start, end] done at t, clamped to [0, 1] so every decay holds its value past T; 1 from
    ``end`` on, also for an empty phase (W = T), so that every decay is at its floor at T."""
    if t >= end:
        return 1.0
    return max(0.0, (t - start) / (end - start))


_WARMUP_PARAMS = (
    inspect.Parameter("warmup_start_ratio", inspect.Parameter.KEYWORD_ONLY, default=0.0, annotation="float"),
    inspect.Parameter("warmup_shape", inspect.Parameter.KEYWORD_ONLY, default="linear", annotation="str"),
)


def after_warmup(decay: Callable[..., float]) -> Callable[..., float]:
    """The schedule that runs ``warmup`` for ``t < W`` and ``decay`` from ``W`` on.

    ``decay(t, *, warmup_steps=0, …)`` gives λ for ``t ≥ W`` only. The schedule takes the decay's parameters
    plus ``warmup_start_ratio`` (``s``, default 0) and ``warmup_shape`` (default ``linear``), and its signature
    says so, since ``Schedule`` and ``get_scheduler`` read a schedule's parameters from its signature.
    """
    own = inspect.signature(decay)
    params = list(own.parameters.values())
    rest = [p for p in params if p.kind is p.VAR_KEYWORD]  # a **keys of the decay stays last
    signature = own.replace(parameters=[*(p for p in params if p not in rest), *_WARMUP_PARAMS, *rest])

    @functools.wraps(decay)
    def schedule(t: float, *, warmup_start_ratio: float = 0.0, warmup_shape: str = "linear", **params) -> float:
        warmup_steps = params.get("warmup_steps", 0)
        if t < warmup_steps:
            own.bind(t, **params)  # a missing or unknown argument is a TypeError during warmup too
            return warmup(t, warmup_steps, warmup_start_ratio, warmup_shape)
        return decay(t, **params)

    schedule.__signature__ = signature
    return schedule


@after_warmup
def constant(t: float, *, warmup_steps: int = 0) -> float:
    """Warmup, then the peak for ever: ``λ(t) = 1`` for ``t ≥ W``. There is no decay, so no floor and no ``T``."""
    return 1.0


@after_warmup
def linear(
    t: float,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> float:
    """Warmup, then a straight line from the peak at ``W`` to the floor at ``T``, then the floor:

    ``λ(t) = f·(1 − r) + r`` with ``f = max(0, T − t) / max(1, T − W)`` for ``t ≥ W``.
    """
    f = max(0.0, total_steps - t) / max(1, total_steps - warmup_steps)
    return f * (1.0 - min_lr_ratio) + min_lr_ratio


@after_warmup
def cosine(
    t: float,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    num_cycles: float = 0.5,
) -> float:
    """Warmup, then half a cosine from the peak at ``W`` to the floor at ``T``, then the floor:

    ``λ(t) = c·(1 − r) + r`` with ``c = ½(1 + cos(π·(t − W)/(T − W)))`` for ``W ≤ t ≤ T``, and ``λ(T) = r`` after.

    With the default linear warmup from 0 (``λ(t) = t / W`` for ``t < W``) this is the standard warmup-cosine
    ``lr_lambda``. ``num_cycles`` is transformers' argument: other values than ½ give
    ``c = max(0, ½(1 + cos(2π·n·p)))`` over ``p ∈ [0, 1]``, held at its value at ``T``.
    """
    p = _progress(t, warmup_steps, total_steps)
    if num_cycles == 0.5:
        c = 0.5 * (1.0 + math.cos(math.pi * p))
    else:
        c = max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * p)))
    return c * (1.0 - min_lr_ratio) + min_lr_ratio


@after_warmup
def polynomial(
    t: float,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    power: float = 1.0,
) -> float:
    """Warmup, then a polynomial decay to the end lr (the floor) at ``T``, then the floor:

    ``λ(t) = (1 − p)^power·(1 − r) + r`` with ``p = (t − W)/(T − W)``; ``power = 1`` is linear.
    """
    p = _progress(t, warmup_steps, total_steps)
    return (1.0 - p) ** power * (1.0 - min_lr_ratio) + min_lr_ratio


@after_warmup
def inverse_sqrt(
    t: float,
    *,
    warmup_steps: int = 0,
    timescale: float | None = None,
    total_steps: int | None = None,
    cooldown_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> float:
    """Warmup, then an inverse square root decay with timescale ``τ``, then an optional linear cooldown:

    ``g(t) = 1 / √((t − W + τ)/τ)`` and ``λ(t) = g(t)·(1 − r) + r`` for ``W ≤ t < T − C``;
    over the last ``C = cooldown_steps`` updates λ falls linearly from ``λ(T − C)`` to ``r`` at ``T`` and holds it.
    ``τ`` defaults to ``W`` (or 10 000 when ``W = 0``) as in transformers. Without a cooldown the rsqrt decay
    never reaches the floor; with ``total_steps`` it is held at its value at ``T``.
    """
    tau = timescale if timescale is not None else (warmup_steps or 10_000)

    def rsqrt(step: float) -> float:
        return (1.0 / math.sqrt((step + (tau - warmup_steps)) / tau)) * (1.0 - min_lr_ratio) + min_lr_ratio

    if total_steps is None:
        return rsqrt(t)
    if cooldown_steps <= 0:
        return rsqrt(min(t, total_steps))
    cooldown_start = total_steps - cooldown_steps
    if t < cooldown_start:
        return rsqrt(t)
    top = rsqrt(max(cooldown_start, warmup_steps))
    # the share first: exactly 1 at T − C, so the cooldown starts at top, never a rounding above it
    return min_lr_ratio + (top - min_lr_ratio) * (max(0.0, total_steps - t) / cooldown_steps)


@after_warmup
def wsd(
    t: float,
    *,
    total_steps: int,
    decay_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    decay_shape: str = "1-sqrt",
    num_cycles: float = 0.5,
) -> float:
    """Warmup–stable–decay: warmup, the peak until the decay starts at ``T − D``, a decay to the floor at ``T``:

    ``λ(t) = 1`` for ``W ≤ t < T − D``; ``λ(t) = f(q)·(1 − r) + r`` with ``q = (t − T + D)/D`` for
    ``T − D ≤ t < T`` and ``f`` = ``decay_factor(q, decay_shape)``; ``λ(t) = r`` for ``t ≥ T``.
    ``num_cycles`` is transformers' argument for its cosine decay: ``½(1 + cos(2π·n·q))``.
    """
    decay_start = total_steps - decay_steps
    if t < decay_start:
        return 1.0
    if t >= total_steps:
        return min_lr_ratio
    q = (t - decay_start) / max(1, decay_steps)
    if decay_shape == "cosine" and num_cycles != 0.5:
        f = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * q))
    else:
        f = decay_factor(q, decay_shape)
    return max(0.0, f * (1.0 - min_lr_ratio) + min_lr_ratio)


@after_warmup
def cosine_restarts(
    t: float,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    num_cycles: int = 1,  # a whole number ≥ 1
    cycle_decay: float = 1.0,
    min_lr_ratio: float = 0.0,
) -> float:
    """Warmup, then ``n`` cosine cycles from a peak down to the floor over ``[W, T]``, then the floor:

    with ``p = (t − W)/(T − W)``, cycle ``k = ⌊n·p⌋`` and ``q = n·p mod 1``:
    ``λ(t) = ½(1 + cos πq)·γ^k·(1 − r) + r`` for ``p < 1``, ``λ(t) = r`` for ``p ≥ 1``; ``γ = cycle_decay`` lowers
    each restart's peak (1 keeps every cycle at the peak, as transformers' ``cosine_with_restarts``).
    """
    p = _progress(t, warmup_steps, total_steps)
    if p >= 1.0:
        return min_lr_ratio
    # one rounding: a restart falls on its update exactly (n·p rounds 15/22 of 22 cycles to 14.999…)
    cycles = max(0.0, num_cycles * (t - warmup_steps) / (total_steps - warmup_steps))
    c = 0.5 * (1.0 + math.cos(math.pi * (cycles % 1.0)))
    if cycle_decay != 1.0:
        c *= cycle_decay ** math.floor(cycles)
    return max(0.0, c * (1.0 - min_lr_ratio) + min_lr_ratio)


@after_warmup
def tabulated(
    t: float,
    *,
    total_steps: int,
    knots: Sequence[tuple[int, float]],
    warmup_steps: int = 0,
) -> float:
    """Warmup, then straight lines from the peak at W through the knots ``(t_i, λ_i)`` (W < t_1 < … < t_n = T,
    λ never increasing), then the last knot's λ (the floor):

    ``λ(t) = λ_{i−1} + (λ_i − λ_{i−1})·(t − t_{i−1})/(t_i − t_{i−1})`` for ``t_{i−1} ≤ t ≤ t_i``, with
    ``(t_0, λ_0) = (W, 1)``; ``λ(t) = λ_n`` for ``t ≥ T``. At a knot λ is the knot's value exactly, so a step
    is two knots one update apart.
    """
    points = [(warmup_steps, 1.0), *knots]
    if t >= points[-1][0]:
        return float(points[-1][1])
    i = bisect.bisect_right([p[0] for p in points], t)  # points[i − 1][0] ≤ t < points[i][0]
    (t0, y0), (t1, y1) = points[i - 1], points[i]
    if t == t0:
        return float(y0)
    return y0 + (y1 - y0) * ((t - t0) / (t1 - t0))


SCHEDULES: dict[str, Callable[..., float]] = {
    "constant": constant,
    "linear": linear,
    "cosine": cosine,
    "polynomial": polynomial,
    "inverse_sqrt": inverse_sqrt,
    "wsd": wsd,
    "cosine_restarts": cosine_restarts,
    "tabulated": tabulated,
}
