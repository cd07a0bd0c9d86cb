"""Loss and learning-rate curves from metrics.jsonl, without W&B.

At the end of every run train.py writes ``plots/loss.png`` and ``plots/lr.png`` in the run directory. To
compare runs, overlay them in one PNG (a sweep directory counts as all the runs under it):

    python -m training.plots multirun/2026-11-25/17-30-00 outputs/2026-11-25/16-02-11 --out compare.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a killed process
    return rows


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def smooth(values: list[float], window: int) -> list[float]:
    """A trailing moving average over ``window`` points (the first points average what there is)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def window_for(n: int) -> int:
    return max(1, n // 50)


def overrides(run_dir: Path) -> list[str]:
    """The run's command-line overrides, without the ones that only change how it reports."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    items = [line[2:].strip() for line in path.read_text().splitlines() if line.startswith("- ")]
    noise = ("hydra.", "logger", "trainer.log_every", "trainer.sample", "trainer.device", "data.cache_dir")
    return [i for i in items if not i.startswith(noise)]


def run_labels(run_dirs: list[Path]) -> list[str]:
    """What tells the runs apart: their overrides minus those they all share, else their directory names."""
    items = [overrides(r) for r in run_dirs]
    shared = set.intersection(*map(set, items)) if len(items) > 1 else set()
    labels = [" ".join(i for i in its if i not in shared) for its in items]
    return [label or run.name for label, run in zip(labels, run_dirs, strict=True)]


def write_run_plots(run_dir: Path) -> list[Path]:
    """``plots/loss.png`` (train and val loss) and ``plots/lr.png`` of one run; returns the files written."""
    rows = read_metrics(run_dir)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps, loss = series(rows, "train/loss")
    ax.plot(steps, loss, lw=0.6, alpha=0.3, color="tab:blue")
    ax.plot(steps, smooth(loss, window_for(len(loss))), lw=1.5, color="tab:blue", label="train/loss (moving average)")
    steps, val = series(rows, "val/loss")
    if steps:
        ax.plot(steps, val, "o-", ms=4, label="val/loss")
    ax.set(xlabel="optimizer update", ylabel="loss (nats per token)", title=f"loss — {run_dir.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(*series(rows, "train/lr"), lw=1.5, color="tab:green")
    ax.set(xlabel="optimizer update", ylabel="learning rate", title=f"train/lr — {run_dir.name}")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "lr.png", dpi=110)
    plt.close(fig)
    return [out / "loss.png", out / "lr.png"]


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories (holding metrics.jsonl) at or under each path, in a stable order."""
    runs: list[Path] = []
    for p in map(Path, paths):
        found = [p] if (p / "metrics.jsonl").is_file() else sorted(m.parent for m in p.rglob("metrics.jsonl"))
        runs += [r for r in found if r not in runs]
    return runs


def overlay(run_dirs: list[Path], out: Path) -> Path:
    """One PNG comparing runs: train loss (val loss as markers) and lr against the update index."""
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, (run, label) in enumerate(zip(run_dirs, run_labels(run_dirs), strict=True)):
        rows = read_metrics(run)
        color = f"C{i % 10}"
        steps, loss = series(rows, "train/loss")
        ax_loss.plot(steps, smooth(loss, window_for(len(loss))), lw=1.3, color=color, label=label)
        steps, val = series(rows, "val/loss")
        if steps:
            ax_loss.plot(steps, val, "o-", ms=4, color=color)
        ax_lr.plot(*series(rows, "train/lr"), lw=1.5, color=color, label=label)
    ax_loss.set(xlabel="optimizer update", ylabel="loss (lines: train, moving average; dots: val)", title="loss")
    ax_lr.set(xlabel="optimizer update", ylabel="learning rate", title="train/lr")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.plots", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run directories or sweep directories")
    parser.add_argument("--out", default="compare.png", help="the PNG to write (default: compare.png)")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"error: {missing[0]} does not exist", file=sys.stderr)
        return 2
    runs = find_runs(args.paths)
    if not runs:
        print(f"error: no metrics.jsonl under {', '.join(args.paths)}", file=sys.stderr)
        return 2
    out = overlay(runs, Path(args.out))
    print(f"{len(runs)} run(s) → {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
