"""The validation loss's own noise: each window's loss under runs' final checkpoints, on the windows train.py
evaluates.

    python bench/val_noise.py outputs/forecast/cosine outputs/forecast/wsd

For each run (its latest checkpoint, and its own config's validation windows: ``trainer.eval_batches`` batches of
``trainer.batch_size``), the mean loss, which is the run's last val/loss, the spread of the windows' losses and the
standard error of their mean: how far that mean could lie from the loss on the whole validation distribution.
For each pair of runs, the standard error of the difference of their means, window by window: every run evaluates
the same windows, so most of what makes one window harder than another cancels between two runs, and this is the
noise of a comparison (or of a forecast fitted on the same windows). Seed-to-seed spread needs runs of two seeds.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the template runs from its root

import torch  # noqa: E402

from data import ValBatches, prepare  # noqa: E402
from sample import load_model  # noqa: E402
from scheduling.spec import CommandLine  # noqa: E402
from training import checkpoint  # noqa: E402
from training.config import USER_ERRORS  # noqa: E402


def window_losses(run_dir: Path) -> torch.Tensor:
    """The mean loss of each validation window (float64) under the run's latest checkpoint."""
    from omegaconf import OmegaConf

    folder = checkpoint.latest(run_dir / "checkpoints")
    if folder is None:
        print(f"error: {run_dir}: no checkpoint (checkpoints/latest)", file=sys.stderr)
        raise SystemExit(2)
    model, state = load_model(folder, torch.device("cpu"))
    cfg = OmegaConf.create(state["config"])
    cache = prepare(cfg.data, build_if_missing=False)
    batches = ValBatches(
        cache.tokens("val"),
        model.config.block_size,
        cfg.trainer.batch_size,
        cfg.trainer.eval_batches,
        vocab_size=cache.vocab_size,
    )
    losses = []
    with torch.no_grad():
        for x, y in batches:
            _, loss = model(x, y, reduction="none")
            losses.append(loss.double().reshape(x.shape[0], -1).mean(1))
    return torch.cat(losses)


def main(argv: list[str] | None = None) -> int:
    parser = CommandLine(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories with a final checkpoint")
    args = parser.parse_args(argv)
    try:
        per_run = {run: window_losses(run) for run in args.runs}
    except USER_ERRORS as e:  # a damaged checkpoint, a token cache gone
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'run':<40} {'windows':>7} {'val/loss':>9} {'spread':>7} {'std error':>10}")
    for run, w in per_run.items():
        se = w.std().item() / math.sqrt(len(w))
        print(
            f"{str(run):<40} {len(w):>7} {w.mean().item():>9.4f} {w.std().item():>7.3f} "
            f"{se:>9.4f} ({100 * se / w.mean().item():.2f} %)"
        )
    for (a, wa), (b, wb) in itertools.combinations(per_run.items(), 2):
        if len(wa) != len(wb):
            continue
        d = wa - wb
        se = d.std().item() / math.sqrt(len(d))
        print(
            f"{a.name} − {b.name}: {d.mean().item():+.4f}, standard error {se:.4f} "
            f"({100 * se / wa.mean().item():.2f} % of {a.name}'s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
