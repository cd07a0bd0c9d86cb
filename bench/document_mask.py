"""The cost of document masking: train.py's update with ``data.document_mask`` off and on, in turns.

    python bench/document_mask.py                          # nano on the built-in corpus, the CPU
    python bench/document_mask.py --steps 40 model=llama-nano model.reset_positions=true trainer.device=cuda

Two models with the same weights — plain causal attention, and attention kept inside documents (the mask that
``data.document_mask=true`` gives, and ``model.reset_positions`` as the overrides set it) — each take
``training.engine.train_update`` on the same micro-batches of ``data.TrainBatches``, one update each in turn,
so drift and other load on the machine hit both alike. Prints the median seconds per update of each, their
ratio, and the share of windows that hold a document boundary (where the two differ at all).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the template runs from its root

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from data import TrainBatches, prepare  # noqa: E402
from model import GPT, GPTConfig, padded_vocab  # noqa: E402
from model.flops import cpu_name  # noqa: E402
from scheduling import Schedule, build_scheduler  # noqa: E402
from scheduling.spec import CommandLine, at_least  # noqa: E402
from training import distributed  # noqa: E402
from training.config import USER_ERRORS, compose_checked, grad_accum_steps  # noqa: E402
from training.engine import train_update  # noqa: E402
from training.optim import build_optimizer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = CommandLine(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=at_least(1), default=30, help="timed updates of each (default 30)")
    p.add_argument("--warmup", type=at_least(0), default=3, help="untimed updates of each first")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    args = p.parse_args(argv)
    try:
        cfg = compose_checked(args.overrides + ["data.document_mask=true"])
        device = distributed.resolve_device(cfg.trainer.device)
        cache = prepare(cfg.data)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    block = cfg.model.block_size
    accum = grad_accum_steps(cfg.trainer, block, 1)
    batches = TrainBatches(cache.tokens("train"), block, cfg.trainer.batch_size, accum, seed=cfg.trainer.seed)
    base = {**OmegaConf.to_container(cfg.model), "vocab_size": padded_vocab(cache.vocab_size)}
    autocast = distributed.autocast(device, distributed.resolve_precision(cfg.trainer.precision, device))
    runs = {}
    for name, separator in (("off", None), ("on", cache.eot_id)):
        torch.manual_seed(cfg.trainer.seed)  # the same initial weights
        config = {**base, "document_separator": separator}
        if separator is None:
            config["reset_positions"] = False
        model = GPT(GPTConfig.from_dict(config)).to(device)
        optimizer = build_optimizer(model, cfg.optim, device)
        runs[name] = (model, optimizer, build_scheduler(optimizer, Schedule("constant")), [])
    for t in range(args.warmup + args.steps):
        for model, optimizer, scheduler, times in runs.values():
            micro_batches = batches.micro_batches(t)
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            train_update(
                model,
                optimizer,
                scheduler,
                micro_batches,
                device=device,
                autocast=autocast,
                grad_clip=cfg.trainer.grad_clip,
            )
            if device.type == "cuda":  # its host sync comes before the optimizer's step, whose kernels count too
                torch.cuda.synchronize()
            if t >= args.warmup:
                times.append(time.perf_counter() - started)
    windows = torch.cat([x for t in range(args.steps) for x, _ in batches.micro_batches(t)])
    crossing = (windows[:, 1:] == cache.eot_id).any(dim=1).float().mean().item()
    off, on = (statistics.median(runs[name][3]) for name in ("off", "on"))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(
        f"device {device} ({where}), {cfg.model.arch} n_layer {cfg.model.n_layer} n_embd {cfg.model.n_embd}, "
        f"{batches.tokens_per_update:,} tokens per update, {args.steps} updates each"
    )
    print(f"document_mask off: {1e3 * off:.1f} ms per update")
    print(f"document_mask on:  {1e3 * on:.1f} ms per update ({on / off:.3f}×)")
    print(f"windows holding a document boundary: {100 * crossing:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
