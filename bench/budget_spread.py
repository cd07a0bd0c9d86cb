"""How close does a wall-clock budget land? Runs ``python train.py trainer.max_time=<budget>`` a few times per
configuration (alternating, so the host's drift hits each alike), times each whole command from outside, and
compares the plan (``budget.json``) with what the run then did (``metrics.jsonl``).

    python bench/budget_spread.py                                   # defaults and experiment=cpu_budget, 3 each
    python bench/budget_spread.py --runs 5 --budget 300 --config "model=micro" --config "experiment=cpu_budget"

Per run it prints the wall clock, T, the measured update against the mean of the real updates (their ratio is
the plan's error), and the start-up; then the spread per configuration. Run nothing else meanwhile: on a small
CPU any other process slows the updates the plan was measured on. W&B is left as configured (offline without
credentials), as a user would run it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(overrides: list[str], budget: float, run_dir: Path) -> dict:
    cmd = [sys.executable, "train.py", *overrides, f"trainer.max_time={budget:g}", f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"budget_spread: {shlex.join(cmd)} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    plan = json.loads((run_dir / "budget.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["train/step_time"] for r in records if "train/step_time" in r]
    real = statistics.mean(steps)
    return {
        "wall": wall,
        "T": plan["total_steps"],
        "planned_update": plan["step_seconds"],
        "real_update": real,
        "ratio": real / plan["step_seconds"],
        "startup": plan["elapsed_at_plan"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=120.0, help="trainer.max_time, in seconds")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration")
    parser.add_argument("--config", action="append", help='overrides of one configuration, e.g. "model=micro"')
    args = parser.parse_args()
    configs = args.config or ["", "experiment=cpu_budget"]
    results: dict[str, list[dict]] = {c: [] for c in configs}
    print(f"{'configuration':<24} {'wall s':>7} {'T':>6} {'planned update':>15} {'real mean':>10} {'ratio':>6} "
          f"{'start-up s':>10}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="budget-spread-") as tmp:
        for i in range(args.runs):
            for c, config in enumerate(configs):
                r = one_run(config.split(), args.budget, Path(tmp) / f"run{i}-{c}")
                results[config].append(r)
                print(f"{config or 'defaults':<24} {r['wall']:7.1f} {r['T']:6d} {r['planned_update'] * 1e3:12.1f} ms"
                      f" {r['real_update'] * 1e3:7.1f} ms {r['ratio']:6.2f} {r['startup']:10.1f}",
                      flush=True)  # fmt: skip
    print(f"\nbudget {args.budget:g} s, {args.runs} run(s) each:")
    for config, runs in results.items():
        walls = sorted(r["wall"] for r in runs)
        ratios = [r["ratio"] for r in runs]
        print(f"  {config or 'defaults':<24} ended {', '.join(f'{w:.1f}' for w in walls)} s; real/planned update "
              f"{min(ratios):.2f}–{max(ratios):.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
