"""Data pipeline: tokenization throughput against bare ``tokenizers``, and the data wait per update, in one run.

    python bench/data.py                         # the built-in corpus, 3 repetitions (~1–3 min on 2 cores)
    python bench/data.py --reps 5 data.max_bytes=3000000

**Throughput** (MB/s of UTF-8 text through the whole pipeline):
- *pipeline + training*: ``data.prepare()`` into a fresh, empty cache directory — list and read the files,
  fingerprint them, train the byte-level BPE, encode, write the token files and meta.json (once);
- *pipeline*: the same with that BPE given as ``data.tokenizer`` (no training): read, fingerprint, encode, write;
- *bare*: ``Tokenizer.encode_batch_fast`` (and ``encode_batch``) of the same documents, already in memory, in
  one call, with the same tokenizer loaded from the same file — only the encoding, none of the pipeline.
Repetitions alternate (pipeline, bare, bare, pipeline, …) so drift and other load hit both alike; figures are
medians, the ratio is the median of the repetitions' ratios.

**Data wait**: ``TrainBatches.micro_batches(t)`` (gather the windows of update t from the memory-mapped
tokens) against ``training.engine.train_update`` of the default nano model on those micro-batches — the
share of each update's time the loop spends waiting for data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the template runs from its root (and ROOT/data must win over this file)

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from throughput import cpu_times, others_share  # noqa: E402  (bench/throughput.py: CPU noise from /proc)
from tokenizers import Tokenizer  # noqa: E402

from data import TrainBatches, build_corpus, prepare  # noqa: E402
from model import GPT, GPTConfig, padded_vocab  # noqa: E402
from model.flops import cpu_name  # noqa: E402
from scheduling import build_scheduler, schedule_from_config  # noqa: E402
from scheduling.spec import CommandLine, at_least  # noqa: E402
from training import distributed  # noqa: E402
from training.config import USER_ERRORS, compose_checked  # noqa: E402
from training.engine import train_update  # noqa: E402
from training.optim import build_optimizer  # noqa: E402

TARGET_RATIO = 0.8  # the pipeline should reach this share of bare encode_batch throughput
TARGET_WAIT = 0.01  # and wait for data less than this share of an update


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = CommandLine(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reps", type=at_least(1), default=3, help="alternating repetitions of pipeline and bare encoding")
    p.add_argument("--steps", type=at_least(1), default=10, help="timed training updates for the data wait")
    p.add_argument("--warmup", type=at_least(0), default=2, help="untimed updates first")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py (e.g. data.max_bytes=3000000)")
    return p.parse_args(argv)


def compose_config(overrides: list[str]):
    return compose_checked(["logger=none", "trainer.device=cpu", *overrides])


SCRATCH: list[str] = []  # the temporary folders made, removed when the script ends, however it ends


def scratch() -> str:
    SCRATCH.append(tempfile.mkdtemp(prefix="bench-data-"))
    return SCRATCH[-1]


def timed_prepare(data_cfg, **values) -> tuple[float, object]:
    """Seconds for prepare() into a fresh empty cache directory (removed afterwards unless kept)."""
    cfg = OmegaConf.merge(data_cfg, {"cache_dir": scratch(), **values})
    t0 = time.perf_counter()
    cache = prepare(cfg)
    return time.perf_counter() - t0, cache


def timed_bare(tokenizer_file: str, texts: list[str], fast: bool) -> float:
    tok = Tokenizer.from_file(tokenizer_file)  # fresh, as the pipeline loads it
    t0 = time.perf_counter()
    (tok.encode_batch_fast if fast else tok.encode_batch)(texts, add_special_tokens=False)
    return time.perf_counter() - t0


def data_wait(cfg, tokens, vocab: int, warmup: int, steps: int) -> tuple[list[float], list[float]]:
    """Per update: seconds in ``micro_batches(t)`` and seconds in ``train_update`` (train.py's model and step)."""
    device = torch.device("cpu")
    precision = distributed.resolve_precision(cfg.trainer.precision, device)
    block, batch, accum = cfg.model.block_size, cfg.trainer.batch_size, cfg.trainer.grad_accum_steps
    batches = TrainBatches(tokens, block, batch, accum, 1, 0, cfg.trainer.seed)
    torch.manual_seed(cfg.trainer.seed)
    model = GPT(GPTConfig.from_dict({**OmegaConf.to_container(cfg.model), "vocab_size": padded_vocab(vocab)}))
    optimizer = build_optimizer(model, cfg.optim, device)
    scheduler = build_scheduler(optimizer, schedule_from_config(cfg.schedule, cfg.trainer.max_steps, cfg.optim.lr))
    autocast = distributed.autocast(device, precision)
    waits, updates = [], []
    for t in range(warmup + steps):
        t0 = time.perf_counter()
        micro = batches.micro_batches(t)
        t1 = time.perf_counter()
        train_update(
            model, optimizer, scheduler, micro, device=device, autocast=autocast, grad_clip=cfg.trainer.grad_clip
        )
        t2 = time.perf_counter()
        if t >= warmup:
            waits.append(t1 - t0)
            updates.append(t2 - t1)
    return waits, updates


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = compose_config(args.overrides)
    load_before = os.getloadavg()
    texts = [text for _, text in build_corpus(cfg.data).split_documents()]
    mb = sum(len(t.encode("utf-8", "surrogateescape")) for t in texts) / 1e6

    # Once: the pipeline that trains its tokenizer; its tokenizer is then given to the others.
    with_training, trained = timed_prepare(cfg.data)
    work = Path(scratch())
    tokenizer_file = str(work / "tokenizer.json")
    shutil.copy(trained.path / "tokenizer.json", tokenizer_file)
    assert abs(sum(trained.meta["bytes"].values()) / 1e6 - mb) < 1e-6, "the bare texts differ from the pipeline's"
    print(
        f"corpus: {trained.meta['corpus']} ({cfg.data.source}), {len(texts)} documents, {mb:.2f} MB of UTF-8 text, "
        f"{sum(trained.meta['tokens'].values()):,} tokens | byte-level BPE, vocab {trained.vocab_size} | "
        f"{os.cpu_count()} CPUs ({cpu_name()}), load average {load_before[0]:.2f}"
    )
    print(f"  pipeline + training the tokenizer: {with_training:.2f} s = {mb / with_training:.2f} MB/s (1 run)")

    seconds: dict[str, list[float]] = {"pipeline": [], "bare encode_batch_fast": [], "bare encode_batch": []}
    noise = []
    for r in range(args.reps):
        before = cpu_times()
        order = list(seconds) if r % 2 == 0 else list(reversed(seconds))
        for name in order:
            if name == "pipeline":
                took, cache = timed_prepare(cfg.data, tokenizer=tokenizer_file)
                assert cache.meta["tokens"] == trained.meta["tokens"]
                shutil.rmtree(cache.path.parent)  # now: the repetitions would fill the disk
            else:
                took = timed_bare(tokenizer_file, texts, fast=name.endswith("fast"))
            seconds[name].append(took)
        noise.append(others_share(before, cpu_times()))
        busy = f" | other processes used {noise[-1]:.0%} of the CPUs" if noise[-1] is not None else ""
        rates = ", ".join(f"{n} {mb / s[-1]:.2f} MB/s" for n, s in seconds.items())
        print(f"  repetition {r + 1}: {rates}{busy}")

    print()
    print(f"{'throughput (MB/s of text)':<36}{'median':>8}   per repetition")
    print(f"{'pipeline + training the tokenizer':<36}{mb / with_training:>8.2f}   (1 run)")
    for name, runs in seconds.items():
        print(f"{name:<36}{mb / statistics.median(runs):>8.2f}   " + " ".join(f"{mb / s:.2f}" for s in runs))
    for bare in ("bare encode_batch_fast", "bare encode_batch"):
        ratios = [b / p for p, b in zip(seconds["pipeline"], seconds[bare], strict=True)]
        ratio = statistics.median(ratios)
        verdict = "ok" if ratio >= TARGET_RATIO else f"BELOW the {TARGET_RATIO:.0%} target"
        print(f"pipeline / {bare}: {ratio:.3f} (range {min(ratios):.3f} to {max(ratios):.3f}) — {verdict}")
    training_share = 1 - statistics.median(seconds["pipeline"]) / with_training
    print(f"tokenizer training: ~{training_share:.0%} of a first preparation's time")

    before = cpu_times()
    waits, updates = data_wait(cfg, trained.tokens("train"), trained.vocab_size, args.warmup, args.steps)
    noise.append(others_share(before, cpu_times()))
    share = sum(waits) / (sum(waits) + sum(updates))
    m = cfg.model
    print()
    print(
        f"data wait ({cfg.model.get('arch', 'gpt2')} {m.n_layer}×{m.n_embd}, batch {cfg.trainer.batch_size} × block "
        f"{m.block_size}, accum {cfg.trainer.grad_accum_steps}, {torch.get_num_threads()} threads, "
        f"{args.steps} updates): micro_batches {1e3 * statistics.median(waits):.3f} ms vs train_update "
        f"{1e3 * statistics.median(updates):.1f} ms (medians) — {share:.3%} of update time "
        f"({'below' if share < TARGET_WAIT else 'ABOVE'} the {TARGET_WAIT:.0%} target)"
    )
    if any(n is not None and n > 0.05 for n in noise):
        print("warning: other processes kept the CPUs busy during the run; the figures are not reliable")


if __name__ == "__main__":
    try:
        main()
    except USER_ERRORS as e:  # bad input, as train.py reports it
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    finally:
        for folder in SCRATCH:
            shutil.rmtree(folder, ignore_errors=True)
