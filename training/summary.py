"""What a run writes at its end: summary.json (whatever the ending), and when it ended well the plots, the time
budget's outcome (budget.json) and the end-of-run lines of the log."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from data.atomic import DiskFull, disk_full_cause, replace_file
from training import budget, checkpoint
from training.config import ConfigError
from training.loggers import duration, start_summary
from training.plots import WriteError, write_run_plots
from training.secrets import redact_text

log = logging.getLogger("train")


def write_summary(run_dir: Path, record: dict[str, Any]) -> None:
    """Merge ``record`` into the run directory's summary.json (strict JSON: a non-finite value is null)."""
    path = run_dir / "summary.json"
    try:
        old = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError):  # a damaged one is replaced, not a reason to fail the ending
        old = {}
    old = old if isinstance(old, dict) else {}
    merged = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in {**old, **record}.items()}
    try:
        replace_file(path, json.dumps(merged, indent=1, allow_nan=False) + "\n")
    except OSError as e:
        if disk_full_cause(e) is not None:
            raise  # DiskFull's line, from the run's space_for
        raise ConfigError(f"{path}: cannot be written ({e.strerror or type(e).__name__})") from e


def best_validation(summary: dict, validated: bool = True) -> str:
    """The end-of-run verdict: the best validation (``validated``: whether any val/loss was logged), and the batches
    skipped as non-finite or by rollbacks, if any."""
    if "best/val_loss" in summary:
        best = (
            f"best val loss {summary['best/val_loss']:.4f} ({summary['best/val_bpb']:.4f} bits per byte) at "
            f"update {summary['best/step']}"
        )
    elif validated:
        best = "no validation loss was finite"
    else:
        best = "no validation loss (the eval group logs none: add perplexity)"
    skipped, rollbacks = summary.get("skipped_nonfinite"), summary.get("train/rollbacks")
    best += f"; {skipped} update(s) skipped as non-finite (trainer.nonfinite=skip)" if skipped else ""
    return best + (f"; {rollbacks} rollback(s) past a loss spike (trainer.on_spike=rollback)" if rollbacks else "")


def report(run, status: str, stopped_by: str | None = None, error: str | None = None) -> None:
    """The end-of-run outputs of ``run`` (a ``training.build.Run``, rank 0): summary.json records the status
    (and what stopped a preempted run: what a job script reads to requeue it or not; a failed run's ``error``
    line), T, tokens, seconds and the summary's values (what a sweep report reads); with ``status`` ok also the
    plots, budget.json's outcome and the end-of-run lines."""
    plots = []
    if status == "ok":  # before the clock is read: part of the run's time
        try:
            plots = write_run_plots(run.run_dir)
        except (WriteError, DiskFull) as e:  # the run is complete: its plots are a view of metrics.jsonl
            log.warning("the run's plots were not written (%s); python -m training.plots %s draws them", e, run.run_dir)
    took = time.perf_counter() - run.started
    summary = run.metrics.summary
    plan = budget.TimePlan(**run.budget) if status == "ok" and "max_time" in run.budget else None
    if plan is not None:
        # One rounding for budget.json, the summary and the log line, so that the three say the same; a resumed
        # run's planned end covers every start, so its time does too.
        planned = round(plan.planned_end(run.cfg.trainer.eval_every, run.cfg.trainer.ckpt_every), 2)
        record = {**run.budget, "planned_seconds": planned, "took_seconds": round(run.earlier_seconds + took, 2)}
        (run.run_dir / "budget.json").write_text(json.dumps(record, indent=1) + "\n")
        summary.update({"budget/planned_seconds": planned, "budget/took_seconds": record["took_seconds"]})
        log.info("budget: planned %.1f s, took %.1f s of %g s", planned, record["took_seconds"], plan.max_time)
    write_summary(
        run.run_dir,
        {
            "status": status,
            **({"stopped_by": stopped_by} if stopped_by else {}),
            **({"error": redact_text(error)} if error else {}),
            "total_steps": run.total_steps,
            "tokens": run.tokens_seen,
            "seconds": round(run.earlier_seconds + took, 2),  # every start's, as tokens counts every start's
            **summary,
        },
    )
    if status != "ok":
        return
    ckpt = checkpoint.latest(run.run_dir / "checkpoints")
    done = duration(took) + (f" (this start; {duration(run.earlier_seconds + took)} in all)" if run.start else "")
    log.info(
        "\n%s",
        start_summary(
            done=f"{done}: {best_validation(summary, run.metrics.validated)}",
            run_dir=str(run.run_dir),
            metrics=", ".join(run.metrics.files()),
            checkpoint=str(ckpt.relative_to(run.run_dir)) if ckpt else "none",
            plots=", ".join(str(p.relative_to(run.run_dir)) for p in plots),
        ),
    )
