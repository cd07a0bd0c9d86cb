"""How close does a wall-clock budget land? Runs ``python train.py trainer.max_time=<budget>`` a few times per
configuration (alternating, so the host's drift hits each alike), times each whole command from outside, and
compares the plan (``budget.json``) with what the run then did (``metrics.jsonl``).

    python bench/budget_spread.py                                   # defaults and experiment=cpu_budget, 3 each
    python bench/budget_spread.py --runs 5 --budget 300 --config "model=micro" --config "experiment=cpu_budget"

Per run it prints the wall clock, T, the measured update against the mean of the real updates (their ratio is
the plan's error), that ratio split in two — the first tenth of the updates against the measurement (did the
measurement catch the speed of its moment?) times all updates against their first tenth (how far the host's speed
moved afterwards) — and the slowest tenth against the fastest, the start-up, and for each phase how much longer
(+) or shorter (−) it took than the plan gave it (from ``budget.json``'s ``spent``; teardown also counts the
exit, seen from outside); then the spread per configuration. ``--keep DIR`` keeps the run directories. Run
nothing else meanwhile: on a small CPU any other process slows the updates the plan was measured on. W&B is left
as configured (offline without credentials), as a user would run it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


PHASES = ("updates", "evaluation", "checkpoint", "sample", "teardown")


def one_run(overrides: list[str], budget: float, run_dir: Path) -> dict:
    cmd = [sys.executable, "train.py", *overrides, f"trainer.max_time={budget:g}", f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"budget_spread: {shlex.join(cmd)} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    record = json.loads((run_dir / "budget.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["train/step_time"] for r in metrics if "train/step_time" in r]
    real = statistics.mean(steps)
    tenths = [statistics.mean(steps[k * len(steps) // 10 : (k + 1) * len(steps) // 10] or steps) for k in range(10)]
    spent = record["spent"]
    # teardown: what the run spent outside its loop and phases — the loggers' start, the plots, then closing
    # the loggers and the process's exit, which only the wall clock seen from outside includes
    spent["teardown"] = spent["loggers"] + spent["plots"] + (wall - spent["at_end"])
    return {
        "wall": wall,
        "T": record["total_steps"],
        "planned_update": record["step_seconds"],
        "real_update": real,
        "ratio": real / record["step_seconds"],
        # the ratio = (first tenth of the updates / the measurement) × (all updates / their first tenth): how
        # well the measurement caught the speed of its moment, then how far the host's speed moved after it
        "at_start": tenths[0] / record["step_seconds"],
        "drift": real / tenths[0],
        "wander": max(tenths) / min(tenths),  # the slowest tenth of the run against the fastest
        "startup": record["elapsed_at_plan"],
        # > 0: the phase took longer than planned (no "sample" is spent with trainer.sample_tokens=0)
        "miss": {k: spent.get(k, 0.0) - record["phases"][k] for k in PHASES},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=120.0, help="trainer.max_time, in seconds")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration")
    parser.add_argument("--config", action="append", help='overrides of one configuration, e.g. "model=micro"')
    parser.add_argument("--keep", type=Path, help="keep the run directories in this folder (default: deleted)")
    args = parser.parse_args()
    configs = args.config or ["", "experiment=cpu_budget"]
    results: dict[str, list[dict]] = {c: [] for c in configs}
    print(f"{'configuration':<24} {'wall s':>7} {'T':>6} {'planned update':>15} {'real mean':>10} {'ratio':>6} "
          f"{'= at start × drift':>19} {'wander':>7} {'start-up s':>10}  spent − planned, s: "
          + " ".join(f"{k:>10}" for k in PHASES))  # fmt: skip
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    where = contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory(prefix="budget-spread-")
    with where as tmp:
        for i in range(args.runs):
            for c, config in enumerate(configs):
                r = one_run(config.split(), args.budget, Path(tmp) / f"run{i}-{c}")
                results[config].append(r)
                print(f"{config or 'defaults':<24} {r['wall']:7.1f} {r['T']:6d} {r['planned_update'] * 1e3:12.1f} ms"
                      f" {r['real_update'] * 1e3:7.1f} ms {r['ratio']:6.2f} {r['at_start']:10.2f} × "
                      f"{r['drift']:<6.2f} {r['wander']:7.2f} {r['startup']:10.1f}"
                      f"{'':21}" + " ".join(f"{r['miss'][k]:+10.1f}" for k in PHASES),
                      flush=True)  # fmt: skip
    print(f"\nbudget {args.budget:g} s, {args.runs} run(s) each:")
    for config, runs in results.items():
        walls = sorted(r["wall"] for r in runs)
        inside = sum(args.budget * 11 / 12 <= w <= args.budget for w in walls)  # 110–120 s of 120
        ratios, at_start = [r["ratio"] for r in runs], [r["at_start"] for r in runs]
        print(f"  {config or 'defaults':<24} ended {', '.join(f'{w:.1f}' for w in walls)} s ({inside} of {len(walls)} "
              f"within {args.budget * 11 / 12:g}–{args.budget:g} s); real/planned update {min(ratios):.2f}–"
              f"{max(ratios):.2f}, of which at the start {min(at_start):.2f}–{max(at_start):.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
