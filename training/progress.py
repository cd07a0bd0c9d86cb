"""What a run shows while it goes: a tqdm bar on a terminal, plain lines elsewhere, and summaries at both ends.

On a terminal the bar shows step/total, loss, lr, tokens/s and the ETA after every update, and a log line goes
above it every ``trainer.log_every`` updates. Without a terminal (CI, a SLURM log) there is no bar: one plain
line every ``log_every`` updates, and every evaluation. train.log always gets the lines.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping
from typing import Any

from training.metrics import format_line

log = logging.getLogger("train")


def on_terminal() -> bool:
    return sys.stderr.isatty()


class ProgressSink:
    """A metric sink for people: the bar (on a terminal) and the periodic log lines."""

    def __init__(self, total_steps: int, start: int = 0, every: int = 10, bar: bool | None = None):
        self.total, self.every = total_steps, max(1, every)
        self.bar = None
        self._redirect = None
        if on_terminal() if bar is None else bar:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.bar = tqdm(total=total_steps, initial=start, unit="update", dynamic_ncols=True, leave=False)
            self._redirect = logging_redirect_tqdm([logging.getLogger()])  # log lines go above the bar
            self._redirect.__enter__()

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        if "train/loss" in metrics and self.bar is not None:
            self.bar.update(step + 1 - self.bar.n)
            postfix = {"loss": f"{metrics['train/loss']:.4f}", "lr": f"{metrics['train/lr']:.2e}"}
            if "train/tokens_per_sec" in metrics:
                postfix["tok/s"] = f"{metrics['train/tokens_per_sec'] / 1e3:.1f}k"
            self.bar.set_postfix(postfix, refresh=False)
        if "val/loss" in metrics or step % self.every == 0 or step == self.total - 1:
            log.info(format_line(step, self.total, metrics))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self._redirect.__exit__(None, None, None)
            self.bar = None


def start_summary(**facts: Any) -> str:
    """The one-screen block printed before update 0 (or the resumed update)."""
    width = max(len(k) for k in facts)
    lines = ["-" * 78] + [f"{k.replace('_', ' '):<{width}}  {v}" for k, v in facts.items()] + ["-" * 78]
    return "\n".join(lines)


def human(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:g}"


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"
