"""``trainer.on_spike=rollback``: a loss spike sends the run back to its newest periodic checkpoint, past the data
that led to it, as OLMo and PaLM restart from a checkpoint before a spike and skip the batches around it.

A spike is an update whose training loss or gradient norm is not finite, or whose loss exceeds
``trainer.spike_factor`` × the median loss of the ``trainer.spike_window`` updates before it. The run then reloads
its newest intact periodic checkpoint (update c) and goes on from update c with the batches that come after those of
the spike: the data of updates c … t is skipped.

Batches stay a pure function of a batch number — update t takes the t-th batch (from 0) that no rollback skipped —
so ``Skips`` (the batches skipped, the count, the recent losses) is saved in every checkpoint, and a resume
continues exactly. A skipped batch stays skipped, even after a later rollback to an earlier checkpoint, and a run
resumed with the option off keeps its skips.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

# Rolling back to the same checkpoint more often than this in a row: the spikes come from the run, not its data.
MAX_ROLLBACKS_TO_ONE_CHECKPOINT = 3


class Skips:
    """Which batch each update takes, the batches skipped, and the losses a spike is measured against."""

    def __init__(self, window: int = 1, state: dict[str, Any] | None = None):
        state = state or {}
        # [first, last] batch numbers, inclusive, ascending and disjoint
        self.skipped: list[list[int]] = [list(s) for s in state.get("skipped", [])]
        self.rollbacks: int = int(state.get("rollbacks", 0))
        self.repeats: list[int] = list(state.get("repeats", [-1, 0]))  # [checkpoint step, rollbacks to it in a row]
        self.window = window
        self.recent: deque[tuple[int, float]] = deque(
            ((int(t), float(v)) for t, v in state.get("recent", [])), maxlen=window
        )

    def batch(self, t: int) -> int:
        """The batch number update ``t`` takes: the ``t``-th that is not skipped."""
        for first, last in self.skipped:
            if first > t:
                break
            t += last - first + 1
        return t

    def spike(self, t: int, loss: float, factor: float) -> float | None:
        """The median of the window before update ``t`` when ``loss`` is a spike (nan for a non-finite loss before
        the window is full), else None; a loss that is not a spike joins the window."""
        losses = [v for _, v in self.recent]
        full = len(losses) >= self.window
        median = statistics.median(losses) if losses else math.nan
        if not math.isfinite(loss) or (full and loss > factor * median):
            return median
        self.recent.append((t, loss))
        return None

    def roll_back(self, to: int, spike: int, recent: list | None = None) -> tuple[int, int]:
        """Go back to update ``to`` from a spike at update ``spike``: the batches those updates took are skipped,
        and the losses a spike is measured against are ``recent``, those the checkpoint at ``to`` saved (else the
        window's before ``to``). Returns the skipped batches as (first, last) batch numbers."""
        first, last = self.batch(to), self.batch(spike)
        merged = []
        for a, b in sorted([*self.skipped, [first, last]]):
            if merged and a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.skipped = merged
        kept = [(int(t), float(v)) for t, v in recent] if recent is not None else [x for x in self.recent if x[0] < to]
        self.recent = deque(kept, maxlen=self.window)
        self.rollbacks += 1
        self.repeats = [to, self.repeats[1] + 1 if self.repeats[0] == to else 1]
        return first, last

    def state_dict(self) -> dict[str, Any]:
        return {
            "skipped": [list(s) for s in self.skipped],
            "rollbacks": self.rollbacks,
            "repeats": list(self.repeats),
            "recent": [[t, v] for t, v in self.recent],
        }
