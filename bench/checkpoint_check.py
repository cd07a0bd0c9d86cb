"""What the checkpoints' checksums cost: a GPT-2-124M-sized checkpoint (model and AdamW state) saved and loaded.

    python bench/checkpoint_check.py             # GPT-2 small, in the temp dir
    python bench/checkpoint_check.py --reps 5 model=gpt2-medium

``training.checkpoint.save`` records the size and a crc32 of each 64 MiB of every file in ``checksums.json``
(``write_checksums``) before the folder is renamed into place, and every load checks them first (``damage``).
Reported, each the best of ``--reps``: the whole save (torch.save, fsync, rename) and the whole load
(``checkpoint.load``, checksums included), and the checksums' part of each, with the throughput of crc32 and,
for comparison, of sha256 over the same file. The file is read back from the page cache (just written), so the
figures are the checksums' cost, not the disk's.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the template runs from its root

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from bench.cache_check import best_seconds  # noqa: E402
from model import GPT, GPTConfig, padded_vocab  # noqa: E402
from model.flops import cpu_name  # noqa: E402
from scheduling.spec import CommandLine, at_least  # noqa: E402
from training import checkpoint  # noqa: E402
from training.config import USER_ERRORS, compose_checked  # noqa: E402


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(64 << 20):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = CommandLine(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reps", type=at_least(1), default=3, help="timed repetitions; the best is reported")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py (default: model=gpt2)")
    args = p.parse_args(argv)
    try:
        cfg = compose_checked(["logger=none", "model=gpt2", *args.overrides])
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    config = GPTConfig.from_dict({**OmegaConf.to_container(cfg.model), "vocab_size": padded_vocab(50257)})
    model = GPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for param in model.parameters():  # AdamW's two moments per parameter, as after the first update
        param.grad = torch.zeros_like(param)
    optimizer.step()
    state = {"step": 1, "tokens": 0, "model": model.state_dict(), "optimizer": optimizer.state_dict()}

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "checkpoints"
        save = best_seconds(lambda: checkpoint.save(root, 1, state, {}, keep=1), args.reps)
        folder = checkpoint.latest(root)
        file = folder / checkpoint.STATE_FILE
        size = file.stat().st_size
        record = best_seconds(lambda: checkpoint.write_checksums(folder), args.reps)
        load = best_seconds(lambda: checkpoint.load(folder), args.reps)
        check = best_seconds(lambda: checkpoint.damage(folder), args.reps)
        sha = best_seconds(lambda: sha256_file(file), args.reps)
    print(f"{cfg.model.name}: {model.num_params() / 1e6:.0f}M parameters, state.pt {size / 1e9:.2f} GB")
    print(f"save {save:.2f} s, of which the checksums {record:.2f} s ({100 * record / save:.0f} %)")
    print(f"load {load:.2f} s, of which the check {check:.2f} s ({100 * check / load:.0f} %)")
    cores = len(os.sched_getaffinity(0))
    rates = f"crc32 {size / check / 1e9:.1f} GB/s, sha256 {size / sha / 1e9:.1f} GB/s"
    print(f"{rates} ({cores} core(s) usable, {cpu_name()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
