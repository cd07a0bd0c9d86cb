"""Schedules written out from their formulas, independently of ``scheduling``, for the tests that hold a run's
logged lrs against them."""

from __future__ import annotations

import math


def wsd_lr(t: int, total: int, *, peak: float, floor: float, warmup: int, decay_fraction: float) -> float:
    """WSD: linear warmup over ``warmup`` updates, the peak, then a 1-sqrt decay to the floor over the last
    D = round(decay_fraction · T) updates."""
    decay = round(decay_fraction * total)
    if t < warmup:
        return peak * t / warmup
    if t < total - decay:
        return peak
    return floor + (peak - floor) * (1 - math.sqrt(min(1.0, (t - total + decay) / decay)))
