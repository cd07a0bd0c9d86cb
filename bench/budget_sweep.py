"""Which settings spend a wall-clock budget best? A sweep with the template's own multirun, then a fair score.

Each grid runs ``python train.py -m <grid> trainer.max_time=<budget>`` (one Hydra job per combination, one
after the other). Every job plans its own T from the budget and trains; afterwards its final checkpoint is
scored on the whole validation split (every non-overlapping window, outside the budget), so runs with
different context lengths and batch sizes are compared on the same text. Prints a table sorted by that bpb and
writes results.json into the sweep directory.

    python bench/budget_sweep.py --grid shapes              # model shape × peak lr
    python bench/budget_sweep.py --grid schedules -- model.n_layer=2 optim.lr=6e-3
    python bench/budget_sweep.py --grid recipe --corpus docs  # the recipe on the 2nd corpus (and --grid defaults)
    python bench/budget_sweep.py --report multirun/budget-shapes   # re-score a finished sweep

The second corpus (``--corpus docs``) is the package documentation of this Python environment: every
installed distribution's METADATA (its README) and the .md/.rst files in site-packages, copied into
.cache/docs-corpus/ as text files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.plots import overrides as run_overrides  # noqa: E402

GRIDS = {
    # stage 1: how big a model, at which peak lr
    "shapes": ["model.n_layer=2,4", "model.n_embd=128,192", "optim.lr=3e-3,6e-3"],
    # stage 1b: smaller still, higher lr (the winner of stage 1 was the smallest model at the higher lr)
    "smaller": ["model.n_layer=1,2", "optim.lr=6e-3,1e-2"],
    # stage 2: batch and context length
    "batch": ["trainer.batch_size=8,32", "model.block_size=64,128"],
    # stage 3: the schedule and its floor, then the warmup
    "schedules": ["schedule=cosine,linear,wsd", "schedule.min_lr_ratio=0.0,0.1"],
    "warmup": ["schedule.warmup_steps=0.02,0.05"],
    # stage 4: the peak lr again, at the smaller batches stage 2 preferred
    "lr_batch": ["trainer.batch_size=4,8", "optim.lr=4e-3,8e-3"],
    # the recipe, and the plain defaults (one job each) to compare it with
    "recipe": ["experiment=cpu_budget"],
    "defaults": [],
}


def docs_corpus() -> Path:
    """Text files made from the installed packages' METADATA and their .md/.rst files."""
    out = ROOT / ".cache" / "docs-corpus"
    if out.is_dir() and any(out.iterdir()):
        return out
    out.mkdir(parents=True, exist_ok=True)
    site = Path(sysconfig.get_paths()["purelib"])
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        shutil.copyfile(meta, out / f"{meta.parent.name}.txt")
    for doc in sorted(p for p in site.rglob("*") if p.suffix in (".md", ".rst") and p.is_file()):
        shutil.copyfile(doc, out / ("_".join(doc.relative_to(site).parts) + ".txt"))
    return out


def run_sweep(grid: list[str], extra: list[str], budget: float, sweep_dir: Path) -> float:
    cmd = [sys.executable, "train.py", "-m", *grid, f"trainer.max_time={budget}", "logger=none",
           "trainer.log_every=1000", f"hydra.sweep.dir={sweep_dir}", *extra]  # fmt: skip
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=False)
    return time.perf_counter() - t0


def full_val_bpb(run_dir: Path) -> tuple[float, float]:
    """(val loss, bits per byte) of the run's final checkpoint over every non-overlapping val window."""
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from tokenizers import Tokenizer

    import training  # noqa: F401 — the config resolvers
    from data import prepare, token_byte_lengths
    from data.batches import gather
    from model import GPT, GPTConfig
    from training import checkpoint, distributed
    from training.engine import evaluate

    path = checkpoint.latest(run_dir / "checkpoints")
    state = checkpoint.load(path)
    cfg = OmegaConf.create(state["config"])
    config = GPTConfig.from_dict(state["model_config"])
    model = GPT(config)
    model.load_state_dict(state["model"])
    tokens = prepare(cfg.data).tokens("val")
    block = config.block_size
    starts = np.arange(0, len(tokens) - block - 1, block)
    batches = [gather(tokens, starts[i : i + 32], block) for i in range(0, len(starts), 32)]
    token_bytes = torch.from_numpy(
        token_byte_lengths(Tokenizer.from_file(str(path / "tokenizer.json")), config.vocab_size)
    )
    cpu = torch.device("cpu")
    return evaluate(model, batches, token_bytes, device=cpu, autocast=distributed.autocast(cpu, "fp32"))


def report(sweep_dir: Path) -> list[dict]:
    rows = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        swept = [o for o in run_overrides(job) if not o.startswith("trainer.max_time")]
        row = {"job": job.name, "overrides": " ".join(swept)}
        metrics = job / "metrics.jsonl"
        if not (job / "checkpoints" / "latest").exists() or not metrics.exists():
            row["error"] = "failed"
            rows.append(row)
            continue
        evals = [json.loads(line) for line in metrics.read_text().splitlines() if '"val/bpb"' in line]
        plan = json.loads((job / "budget.json").read_text())
        loss, bpb = full_val_bpb(job)
        row.update(T=plan["total_steps"], step_s=plan["step_seconds"], run_bpb=evals[-1]["val/bpb"],
                   val_loss=loss, bpb=bpb)  # fmt: skip
        rows.append(row)
    rows.sort(key=lambda r: r.get("bpb", math.inf))
    (sweep_dir / "results.json").write_text(json.dumps(rows, indent=1))
    print("\n| bpb (whole val) | bpb (run's eval) | T | s/update | overrides |\n|---|---|---|---|---|")
    for r in rows:
        if "bpb" in r:
            print(f"| {r['bpb']:.4f} | {r['run_bpb']:.4f} | {r['T']} | {r['step_s']:.3f} | {r['overrides']} |")
        else:
            print(f"| failed | | | | {r['overrides']} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), help="a predefined grid")
    parser.add_argument("--budget", type=float, default=120.0, help="trainer.max_time of every job (s)")
    parser.add_argument("--corpus", choices=["builtin", "docs"], default="builtin")
    parser.add_argument("--report", type=Path, help="only score an existing sweep directory")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides (after --)")
    args = parser.parse_args()
    if args.report:
        report(args.report)
        return 0
    if not args.grid:
        parser.error("--grid or --report is required")
    extra = list(args.overrides)
    if args.corpus == "docs":
        extra += ["data=text_files", f"data.path={docs_corpus()}"]
    sweep_dir = ROOT / "multirun" / f"budget-{args.grid}-{args.corpus}-{time.strftime('%Y%m%d-%H%M%S')}"
    os.environ.setdefault("WANDB_MODE", "disabled")
    seconds = run_sweep(GRIDS[args.grid], extra, args.budget, sweep_dir)
    jobs = len([p for p in sweep_dir.iterdir() if p.is_dir()]) if sweep_dir.exists() else 0
    print(f"\n{jobs} jobs in {seconds:.0f} s ({seconds / max(jobs, 1):.1f} s per job, budget {args.budget:g} s)")
    report(sweep_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
