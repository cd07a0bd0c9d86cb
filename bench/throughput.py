"""Training throughput: the template's update step against a bare PyTorch loop on the same model, in one run.

    python bench/throughput.py --model micro --device cpu --batch-size 16 --steps 5 --repeats 3
    python bench/throughput.py --model gpt2 --device cuda --batch-size 16 --steps 20 trainer.compile=true
    python bench/throughput.py --model micro --device cpu --profile     # where the step's time goes

**template**: what train.py times as ``train/step_time`` — ``training.engine.train_update`` on the micro-batches
of ``data.TrainBatches`` (built-in corpus), with the optimizer of ``training.optim.build_optimizer``, the
scheduler of ``scheduling.build_scheduler``, train.py's precision, autocast, compile and TF32 choices, all
from the same Hydra config train.py composes (extra ``key=value`` arguments override it as on train.py's
command line), and on a CPU glibc's malloc keeping freed memory as train.py has it (``--return-freed-memory``
leaves glibc's default, to compare in a second run).
**bare**: the least a PyTorch user writes for the same work — the same model, random tokens already on the
device, ``forward → backward → AdamW.step → zero_grad`` per update (same micro-batches, autocast, compile; in
the same process, so with the same malloc).

The loops alternate (template, bare, bare, template, ...: every update on a CPU, blocks of ``--steps`` on a
GPU), so drift and other load on the machine hit both alike; a repetition is ``--steps`` updates of each,
the table gives the medians over repetitions and the ratio is the median of the per-repetition ratios.
MFU = model FLOPs per token (6N + 12·L·H·Q·T, model/flops.py) × tokens/s / the device's peak (GPU data sheet
table; on CPU the best fp32 matmul rate measured here, cached; ``--refresh-peak`` measures again and keeps the higher).
Other processes' share of the CPUs is printed per repetition: above 5% the figures are flagged unreliable.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the template runs from its root

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from data import TrainBatches, prepare  # noqa: E402
from model import GPT, GPTConfig, padded_vocab  # noqa: E402
from model.flops import cpu_name, cpu_peak_flops, model_flops_per_token, peak_flops  # noqa: E402
from scheduling import build_scheduler, schedule_from_config  # noqa: E402
from training import distributed  # noqa: E402
from training.config import USER_ERRORS, check_config, check_overrides, compose, grad_accum_steps  # noqa: E402
from training.engine import train_update  # noqa: E402
from training.optim import build_optimizer  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="micro", help="a conf/model preset (default micro)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per micro-batch (default: the config's)")
    p.add_argument("--steps", type=int, default=5, help="timed updates per repetition and loop")
    p.add_argument("--repeats", type=int, default=3, help="alternating repetitions of each loop")
    p.add_argument("--warmup", type=int, default=2, help="untimed updates of each loop first")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--refresh-peak", action="store_true", help="measure the CPU peak again (keeps the higher)")
    p.add_argument("--profile", action="store_true", help="then profile the template's updates with torch.profiler")
    p.add_argument(
        "--return-freed-memory",
        action="store_true",
        help="leave glibc's malloc returning freed memory to the kernel (train.py keeps it on a CPU)",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py (e.g. trainer.compile=true)")
    return p.parse_args(argv)


def compose_config(args: argparse.Namespace):
    overrides = [f"model={args.model}", f"trainer.device={args.device}", "logger=none"]
    if args.batch_size is not None:
        overrides.append(f"trainer.batch_size={args.batch_size}")
    return compose_checked(overrides + list(args.overrides))


def compose_checked(overrides: list[str]):
    """train.py's config with ``overrides``, through train.py's checks."""
    check_overrides(overrides)
    cfg = compose(overrides)
    check_config(cfg)
    return cfg


def cpu_times() -> tuple[int, int, int] | None:
    """(busy ticks of all CPUs, ticks of this process, all ticks) from /proc; None where there is no /proc."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(x) for x in fh.readline().split()[1:]]
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, int(fields[11]) + int(fields[12]), sum(ticks)  # utime + stime of all threads


def others_share(before: tuple[int, int, int] | None, after: tuple[int, int, int] | None) -> float | None:
    """The share of all CPUs' time that other processes used between two ``cpu_times`` (the noise here)."""
    if before is None or after is None or after[2] <= before[2]:
        return None
    busy, mine, total = (a - b for a, b in zip(after, before, strict=True))
    return max(busy - mine, 0) / total


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def build_template(cfg, d: distributed.Dist, precision: str, use_compile: bool, keep_freed_memory: bool = True):
    """train.py's data, model, optimizer, scheduler and update step, built as train.py builds them (with
    ``keep_freed_memory=False``, except that glibc's malloc returns freed memory to the kernel as by default).

    Returns (step(t), the uncompiled model, the batches, the tokenizer's vocabulary size).
    """
    device = d.device
    cache = prepare(cfg.data)
    block, batch = cfg.model.block_size, cfg.trainer.batch_size
    accum = grad_accum_steps(cfg.trainer, block, d.world_size)
    batches = TrainBatches(cache.tokens("train"), block, batch, accum, d.world_size, d.rank, cfg.trainer.seed)
    schedule = schedule_from_config(cfg.schedule, cfg.trainer.max_steps, cfg.optim.lr)
    vocab = padded_vocab(cache.vocab_size)
    model_config = GPTConfig.from_dict({**OmegaConf.to_container(cfg.model), "vocab_size": vocab})
    torch.manual_seed(cfg.trainer.seed)
    raw_model = GPT(model_config).to(device)
    strategy = distributed.resolve_strategy(cfg.trainer.strategy, d.world_size)
    model = distributed.parallelize(raw_model, strategy, d, precision, use_compile)
    optimizer = build_optimizer(raw_model, cfg.optim, device)
    scheduler = build_scheduler(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    use_autocast = distributed.autocast_needed(strategy, device)
    autocast = distributed.autocast(device, precision if use_autocast else "fp32")
    distributed.allow_tf32(device)  # as train.py: TF32 on CUDA,
    if keep_freed_memory:
        distributed.keep_freed_memory(device)  # and glibc's malloc keeping freed memory on a CPU

    def step(t: int) -> None:
        train_update(
            model, optimizer, scheduler, batches.micro_batches(t),
            device=device, autocast=autocast, scaler=scaler, grad_clip=cfg.trainer.grad_clip,
        )  # fmt: skip

    return step, raw_model, batches, cache.vocab_size


def build_bare(model_config: GPTConfig, batches: TrainBatches, vocab: int, lr: float, seed: int,
               device: torch.device, precision: str, use_compile: bool):  # fmt: skip
    """The minimal loop: same model and seed, random tokens already on the device, forward/backward/AdamW,
    as many micro-batches of the same size per update."""
    torch.manual_seed(seed)
    model = GPT(model_config).to(device)
    if use_compile:
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    autocast = distributed.autocast(device, precision)
    accum, shape = batches.accum, (batches.batch_size, batches.block_size)
    xs = [torch.randint(0, vocab, shape, device=device) for _ in range(accum)]
    ys = [torch.randint(0, vocab, shape, device=device) for _ in range(accum)]

    def step(t: int) -> None:
        for x, y in zip(xs, ys, strict=True):
            with autocast:
                _, loss = model(x, y)
            loss = loss / accum
            (scaler.scale(loss) if scaler is not None else loss).backward()
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed(step: Callable[[int], None], first: int, steps: int, device: torch.device) -> float:
    """Seconds for updates first … first + steps − 1."""
    sync(device)
    t0 = time.perf_counter()
    for t in range(first, first + steps):
        step(t)
    sync(device)
    return time.perf_counter() - t0


def profile(step: Callable[[int], None], first: int, steps: int, peak: float | None) -> None:
    """Where the template's update spends its time: the top operators, and the matmul share and rate."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities, with_flops=True) as prof:
        for t in range(first, first + steps):
            step(t)
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=20))
    total = sum(e.self_cpu_time_total for e in events)

    def share(match: Callable[[str], bool], self_time: bool = True) -> float:
        return sum(e.self_cpu_time_total if self_time else e.cpu_time_total for e in events if match(e.key)) / total

    gemm = [e for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm")]
    gemm_rate = sum(e.flops for e in gemm) / max(sum(e.self_cpu_time_total for e in gemm), 1) * 1e6  # FLOP/s
    print(f"operator time over {steps} updates: {total / 1e6:.2f} s")
    vs_peak = f" = {gemm_rate / peak:.0%} of the peak" if peak else ""
    print(f"  GEMMs (mm, addmm, bmm)     {share(lambda k: k in ('aten::mm', 'aten::addmm', 'aten::bmm')):6.1%}"
          f"   at {gemm_rate / 1e9:.1f} GFLOP/s{vs_peak}")  # fmt: skip
    print(f"  attention forward          {share(lambda k: 'attention' in k and 'backward' not in k):6.1%}")
    print(f"  attention backward         {share(lambda k: 'attention' in k and 'backward' in k):6.1%}")
    print(f"  GELU / SiLU (fwd + bwd)    {share(lambda k: 'gelu' in k or 'silu' in k):6.1%}")
    print(f"  log-softmax (fwd + bwd)    {share(lambda k: 'log_softmax' in k):6.1%}")
    print(f"  norms (fwd + bwd)          {share(lambda k: 'layer_norm' in k or 'rms_norm' in k):6.1%}")
    print(f"  optimizer step (total)     {share(lambda k: k.startswith('Optimizer.step'), self_time=False):6.1%}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = compose_config(args)
    d = distributed.init(cfg.trainer.device)  # one process: no process group, just the device
    device = d.device
    precision = distributed.resolve_precision(cfg.trainer.precision, device)
    use_compile = distributed.resolve_compile(cfg.trainer.compile, device)
    template, raw_model, batches, vocab = build_template(cfg, d, precision, use_compile, not args.return_freed_memory)
    bare = build_bare(raw_model.config, batches, vocab, cfg.optim.lr, cfg.trainer.seed, device, precision, use_compile)
    if device.type == "cpu" and args.refresh_peak:
        cpu_peak_flops(refresh=True)
    peak = peak_flops(device, precision)
    flops_per_token = model_flops_per_token(raw_model)
    tokens = batches.tokens_per_update

    c = raw_model.config
    where = {"cpu": f"{cpu_name()}, {torch.get_num_threads()} threads"}.get(device.type, str(device))
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    print(
        f"model {args.model}: {c.arch}, {c.n_layer} layers × {c.n_embd} wide, {c.n_head} heads, block {c.block_size}, "
        f"vocab {c.vocab_size} | {raw_model.num_params(exclude_embeddings=True) / 1e6:.2f}M matmul parameters | "
        f"{flops_per_token / 1e6:.1f} MFLOP per token"
    )
    print(
        f"device {device.type} ({where}) | {precision}{', compiled' if use_compile else ''} | "
        f"{tokens} tokens per update ({batches.accum} × {batches.batch_size} × {c.block_size}) | "
        f"{args.warmup} warm-up + {args.steps} timed updates × {args.repeats} repetitions per loop"
    )
    print(f"peak: {peak / 1e9:.1f} GFLOP/s" if peak else "peak: unknown for this device (no MFU)")

    t = {"template": 0, "bare": 0}
    loops = {"template": template, "bare": bare}
    for name in ("template", "bare"):  # compile, allocator and thread-pool warm-up
        timed(loops[name], t[name], args.warmup, device)
        t[name] += args.warmup
    rates: dict[str, list[float]] = {"template": [], "bare": []}
    noise = []
    # On a CPU the loops alternate every update (the host's speed drifts within seconds); on a GPU in blocks of
    # --steps updates, so that the bare loop keeps the CPU running ahead of the GPU as it would untimed.
    block = args.steps if device.type == "cuda" else 1
    for r in range(args.repeats):
        before, seconds = cpu_times(), {"template": 0.0, "bare": 0.0}
        for i in range(args.steps // block):
            for name in ("template", "bare") if (r + i) % 2 == 0 else ("bare", "template"):
                seconds[name] += timed(loops[name], t[name], block, device)
                t[name] += block
        for name in rates:
            rates[name].append(args.steps * tokens / seconds[name])
        noise.append(others_share(before, cpu_times()))
        busy = f" | other processes used {noise[-1]:.0%} of the CPUs" if noise[-1] is not None else ""
        template_rate, bare_rate = rates["template"][-1], rates["bare"][-1]
        print(f"  repetition {r + 1}: template {template_rate:,.0f} tok/s, bare {bare_rate:,.0f} tok/s{busy}")

    print()
    print(f"{'loop':<10}{'tokens/s':>12}{'step ms':>10}{'MFU':>8}   per repetition (tokens/s)")
    for name in ("template", "bare"):
        median = statistics.median(rates[name])
        mfu = f"{flops_per_token * median / peak:.1%}" if peak else "-"
        each = " ".join(f"{x:,.0f}" for x in rates[name])
        print(f"{name:<10}{median:>12,.0f}{1e3 * tokens / median:>10.0f}{mfu:>8}   {each}")
    ratios = [a / b for a, b in zip(rates["template"], rates["bare"], strict=True)]
    print(
        f"template / bare: {statistics.median(ratios):.3f} (median of the repetitions' ratios; "
        f"range {min(ratios):.3f} to {max(ratios):.3f})"
    )
    if any(n is not None and n > 0.05 for n in noise):
        print("warning: other processes kept the CPUs busy during the run; the figures are not reliable")
    if args.profile:
        print()
        profile(template, t["template"], args.steps, peak)


if __name__ == "__main__":
    try:
        main()
    except USER_ERRORS as e:  # bad input, as train.py reports it
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
