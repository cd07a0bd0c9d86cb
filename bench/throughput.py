"""Training throughput: the template's update step against a bare PyTorch loop on the same model, in one run.

    python bench/throughput.py --model micro --device cpu --batch-size 16 --steps 5 --repeats 3
    python bench/throughput.py --model gpt2 --device cuda --batch-size 16 --steps 20 trainer.compile=true
    python bench/throughput.py --model micro --device cpu --profile     # where the step's time goes
    python bench/throughput.py --model nano --device cpu --compare-ref HEAD~3   # this tree against a git ref
    python bench/throughput.py --model nano --device cpu --against trainer.precision=bf16 --against optim=muon

**template**: what train.py times as ``train/step_time`` — its ``TrainStep`` on the micro-batches of its
``TrainBatches`` (built-in corpus), built by train.py's own build (``training.engine.build_model``: precision,
autocast, compile, TF32; the optimizer ``optim._target_`` names; the schedule), all from the same Hydra config
train.py composes (extra ``key=value`` arguments override it as on train.py's command line), and on a CPU
glibc's malloc keeping freed memory as train.py has it (``--return-freed-memory`` leaves glibc's default, to
compare in a second run).
**bare**: the least a PyTorch user writes for the same work — the same model, random tokens already on the
device, ``forward → backward → clip → AdamW.step → zero_grad`` per update (same micro-batches, autocast,
compile, clipping; in the same process, so with the same malloc). What the bare loop leaves out is printed.

``--compare-ref <git ref or folder>`` times the template's update of this tree against the same update of the
ref's code instead (``git archive`` of the ref into a temporary folder, or a copy of the folder): each side runs
in its own process, and the two take turns, one update each, while the other waits. ``--against "<overrides>"``
(repeatable) times the template as configured against the template with those overrides added, each a loop of
its own in this process: which settings cost what on this machine, from one run. ``--vocab-size`` gives the
model an output head of that many rows (GPT-2's 50,304) without training a tokenizer that large.

The loops alternate (template, bare, bare, template, ...: every update on a CPU, blocks of ``--steps`` on a
GPU), so drift and other load on the machine hit both alike; a repetition is ``--steps`` updates of each,
the table gives the medians over repetitions and the ratio is the median of the per-repetition ratios.
MFU = model FLOPs per token (6N + 12·L·H·Q·T, model/flops.py) × tokens/s / a peak, against two peaks: the
device's (GPU data sheet table; on CPU the best fp32 matmul rate measured here, cached; ``--refresh-peak``
measures again and keeps the higher), and the square-matmul rate measured at the run's precision in this run.
Other processes' share of the CPUs is printed per repetition: above 5% the figures are flagged unreliable.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the template runs from its root

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from data import TrainBatches, prepare  # noqa: E402
from model import GPT, GPTConfig, padded_vocab  # noqa: E402
from model.flops import cpu_name, cpu_peak_flops, measure_matmul_flops, model_flops_per_token, peak_flops  # noqa: E402
from scheduling import build_scheduler, schedule_from_config  # noqa: E402
from training import distributed  # noqa: E402
from training.config import USER_ERRORS, ConfigError, check_config, check_overrides, compose, grad_accum_steps  # noqa: E402
from training.engine import train_update  # noqa: E402
from training.optim import build_optimizer  # noqa: E402

try:
    from scheduling.spec import CommandLine, at_least
except ImportError:  # an older tree's modules: a --compare-ref side, whose arguments this tree checked already
    CommandLine, at_least = argparse.ArgumentParser, lambda low: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = CommandLine(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="micro", help="a conf/model preset (default micro)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument(
        "--batch-size", type=at_least(1), default=None, help="sequences per micro-batch (default: the config's)"
    )
    p.add_argument("--steps", type=at_least(1), default=5, help="timed updates per repetition and loop")
    p.add_argument("--repeats", type=at_least(1), default=3, help="alternating repetitions of each loop")
    p.add_argument("--warmup", type=at_least(0), default=2, help="untimed updates of each loop first")
    p.add_argument("--threads", type=at_least(1), default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument(
        "--vocab-size",
        type=at_least(1),
        default=None,
        help="rows of the model's output head (default: the tokenizer's)",
    )
    p.add_argument("--compare-ref", metavar="REF", default=None, help="time this tree's update against a git ref's")
    p.add_argument(
        "--against",
        metavar="OVERRIDES",
        action="append",
        default=[],
        help="time the template again with these overrides added (quoted, space-separated; repeatable)",
    )
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # a --compare-ref side (internal)
    p.add_argument("--refresh-peak", action="store_true", help="measure the CPU peak again (keeps the higher)")
    p.add_argument("--profile", action="store_true", help="then profile the template's updates with torch.profiler")
    p.add_argument(
        "--return-freed-memory",
        action="store_true",
        help="leave glibc's malloc returning freed memory to the kernel (train.py keeps it on a CPU)",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py (e.g. trainer.compile=true)")
    return p.parse_args(argv)


def compose_config(args: argparse.Namespace, extra: list[str] | None = None):
    """The config of the command line, with ``extra`` overrides (one ``--against``) last."""
    overrides = [f"model={args.model}", f"trainer.device={args.device}", "logger=none"]
    if args.batch_size is not None:
        overrides.append(f"trainer.batch_size={args.batch_size}")
    return compose_checked(overrides + list(args.overrides) + list(extra or []))


def compose_checked(overrides: list[str]):
    """train.py's config with ``overrides``, through train.py's checks. Not training.config's: --compare-ref runs
    this file against the modules of older trees, which lack it."""
    check_overrides(overrides)
    cfg = compose(overrides)
    check_config(cfg)
    return cfg


def cpu_times(pids: list[int] | None = None) -> tuple[int, int, int] | None:
    """(busy ticks of all CPUs, ticks of the processes ``pids`` (default: this one), all ticks) from /proc;
    None where there is no /proc."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(x) for x in fh.readline().split()[1:]]
        mine = 0
        for pid in pids or ["self"]:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            mine += int(fields[11]) + int(fields[12])  # utime + stime of all its threads
    except (OSError, ValueError, IndexError):
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, mine, sum(ticks)


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


def build_template(
    cfg,
    d: distributed.Dist,
    precision: str,
    use_compile: bool,
    keep_freed_memory: bool = True,
    head_rows: int | None = None,
):
    """train.py's data, model, optimizer, scheduler and update step, built by train.py's own build (with
    ``keep_freed_memory=False``, except that glibc's malloc returns freed memory to the kernel as by default;
    with ``head_rows``, an output head of that many rows instead of the tokenizer's vocabulary).

    Returns (step(t), the uncompiled model, the batches, the tokenizer's vocabulary size).
    """
    try:
        from training.build import build_data, gpt_config
        from training.engine import TrainStep, build_model
    except ImportError:  # an older tree's modules (--compare-ref)
        return legacy_template(cfg, d, precision, use_compile, keep_freed_memory, head_rows)
    cache, batches, _ = build_data(cfg, d)
    if head_rows is not None and head_rows < cache.vocab_size:
        raise ConfigError(f"--vocab-size must be at least the tokenizer's {cache.vocab_size}; got {head_rows}")
    model = build_model(cfg.trainer, d, gpt_config(cfg, cache, head_rows), keep_freed_memory=keep_freed_memory)
    optimizer = build_optimizer(model.raw, OmegaConf.to_container(cfg.optim, resolve=True), d.device)
    schedule = schedule_from_config(cfg.schedule, cfg.trainer.max_steps, cfg.optim.lr)
    update = TrainStep(model, optimizer, build_scheduler(optimizer, schedule))

    def step(t: int) -> None:
        taken, _ = update(batches.micro_batches(t))
        step.losses.append(taken.loss)

    step.losses, step.resident = [], lambda: resident_bytes(model.raw, optimizer)
    return step, model.raw, batches, cache.vocab_size


def legacy_template(
    cfg,
    d: distributed.Dist,
    precision: str,
    use_compile: bool,
    keep_freed_memory: bool = True,
    head_rows: int | None = None,
):
    """``build_template`` for a tree from before train.py's one build (``training.engine.build_model``), which
    --compare-ref may time this tree against: the same parts, wired here as such a tree's train.py wired them."""
    device = d.device
    cache = prepare(cfg.data)
    block, batch = cfg.model.block_size, cfg.trainer.batch_size
    accum = grad_accum_steps(cfg.trainer, block, d.world_size)
    batches = TrainBatches(cache.tokens("train"), block, batch, accum, d.world_size, d.rank, cfg.trainer.seed)
    schedule = schedule_from_config(cfg.schedule, cfg.trainer.max_steps, cfg.optim.lr)
    if head_rows is not None and head_rows < cache.vocab_size:
        raise ConfigError(f"--vocab-size must be at least the tokenizer's {cache.vocab_size}; got {head_rows}")
    vocab = padded_vocab(head_rows or cache.vocab_size)
    separator = cache.eot_id if cfg.data.get("document_mask") else None  # as train.py (older trees lack the key)
    model_config = GPTConfig.from_dict(
        {**OmegaConf.to_container(cfg.model), "vocab_size": vocab, "document_separator": separator}
    )
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
        update = train_update(
            model,
            optimizer,
            scheduler,
            batches.micro_batches(t),
            device=device,
            autocast=autocast,
            scaler=scaler,
            grad_clip=cfg.trainer.grad_clip,
        )
        step.losses.append(update.loss)

    step.losses, step.resident = [], lambda: resident_bytes(raw_model, optimizer)
    return step, raw_model, batches, cache.vocab_size


def resident_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes a loop holds between updates: its parameters, buffers and optimizer state (not its gradients, which
    each update allocates and frees). Peak memory counts these once, not those of other loops in the process."""
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    unique = {id(t): t for t in tensors}.values()  # a tied weight once
    return sum(t.numel() * t.element_size() for t in unique)


def template_for(cfg, d: distributed.Dist, args: argparse.Namespace):
    """``build_template`` at the precision and compile setting train.py would pick for ``cfg`` on this device,
    with the command line's malloc and head choices. Returns its four values, then the precision and compile."""
    precision = distributed.resolve_precision(cfg.trainer.precision, d.device)
    use_compile = distributed.resolve_compile(cfg.trainer.compile, d.device)
    built = build_template(cfg, d, precision, use_compile, not args.return_freed_memory, args.vocab_size)
    return *built, precision, use_compile


BARE_LEAVES_OUT = (
    "batches from the token cache and their transfer, the loss and gradient-norm read-back (one host sync) "
    "with its non-finite guard, and the schedule's step"
)


def build_bare(
    model_config: GPTConfig,
    batches: TrainBatches,
    vocab: int,
    optim: dict,
    seed: int,
    device: torch.device,
    precision: str,
    use_compile: bool,
    grad_clip: float,
):
    """The minimal loop: same model and seed, random tokens already on the device, forward/backward, clipping
    (unless ``grad_clip`` is 0), the same optimizer (``optim``, the optim group: AdamW fused as the template's,
    with its groups), as many micro-batches of the same size per update."""
    torch.manual_seed(seed)
    model = GPT(model_config).to(device)
    if use_compile:
        model.compile()
    optimizer = build_optimizer(model, optim, device)
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
            scaler.unscale_(optimizer)
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step.resident = lambda: resident_bytes(model, optimizer)
    return step


def timed(step: Callable[[int], None], first: int, steps: int, device: torch.device) -> tuple[float, int | None]:
    """Seconds for updates first … first + steps − 1, and on a GPU (else None) the peak memory of the loop: what
    it holds between updates (``step.resident()``, where the process holds other loops too; else all there was
    before) plus the most the updates allocated above that."""
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    for t in range(first, first + steps):
        step(t)
    sync(device)
    seconds = time.perf_counter() - t0
    if device.type != "cuda":
        return seconds, None
    resident = getattr(step, "resident", None)
    return seconds, torch.cuda.max_memory_allocated(device) - before + (resident() if resident else before)


def profile(step: Callable[[int], None], first: int, steps: int, peak: float | None, device: torch.device) -> None:
    """Where the template's update spends its time: the top operators, and the matmul share and rate."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"  # the run's device, not the machine's: a CPU run on a GPU machine has no kernels
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, with_flops=True) as prof:
        for t in range(first, first + steps):
            step(t)
    events = prof.key_averages()
    if cuda:  # the GPU's kernels by their time on the GPU (compiled code runs as fused triton_* kernels)
        print(events.table(sort_by="self_device_time_total", row_limit=25))
    print(events.table(sort_by="self_cpu_time_total", row_limit=20))
    total = sum(e.self_cpu_time_total for e in events)

    def share(match: Callable[[str], bool], self_time: bool = True) -> float:
        return sum(e.self_cpu_time_total if self_time else e.cpu_time_total for e in events if match(e.key)) / total

    gemm = [e for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm")]
    # on a GPU an operator's CPU time is its launch: the GEMMs' rate is over their kernels' time (on the device)
    gemm_time = sum(e.device_time_total if cuda else e.self_cpu_time_total for e in gemm)
    gemm_rate = sum(e.flops for e in gemm) / max(gemm_time, 1) * 1e6  # FLOP/s
    if cuda:
        device_total = sum(e.self_device_time_total for e in events)
        vs_peak = f" = {gemm_rate / peak:.0%} of the peak" if peak else ""
        print(
            f"kernel time over {steps} updates: {device_total / 1e6:.2f} s; GEMMs {gemm_time / device_total:.1%}"
            f" of it at {gemm_rate / 1e12:.1f} TFLOP/s{vs_peak} (the shares below are of the CPU's launch time)"
        )
    print(f"operator time over {steps} updates: {total / 1e6:.2f} s")
    vs_peak = f" = {gemm_rate / peak:.0%} of the peak" if peak else ""
    print(
        f"  GEMMs (mm, addmm, bmm)     {share(lambda k: k in ('aten::mm', 'aten::addmm', 'aten::bmm')):6.1%}"
        f"   at {gemm_rate / 1e9:.1f} GFLOP/s{vs_peak}"
    )
    print(f"  attention forward          {share(lambda k: 'attention' in k and 'backward' not in k):6.1%}")
    print(f"  attention backward         {share(lambda k: 'attention' in k and 'backward' in k):6.1%}")
    print(f"  GELU / SiLU (fwd + bwd)    {share(lambda k: 'gelu' in k or 'silu' in k):6.1%}")
    print(f"  log-softmax (fwd + bwd)    {share(lambda k: 'log_softmax' in k):6.1%}")
    print(f"  norms (fwd + bwd)          {share(lambda k: 'layer_norm' in k or 'rms_norm' in k):6.1%}")
    print(f"  optimizer step (total)     {share(lambda k: k.startswith('Optimizer.step'), self_time=False):6.1%}")


class Side:
    """One side of ``--compare-ref``: this script, run with ``--serve`` from a tree's root, timing that tree's
    template update on request (``first steps`` on stdin, a JSON reply line on stdout)."""

    PREFIX = "@throughput "  # reply lines; anything else on the side's stdout is passed through

    def __init__(self, root: Path, argv: list[str]):
        script = root / "bench" / "throughput.py"
        self.process = subprocess.Popen(
            [sys.executable, str(script), *argv, "--serve"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.info = self.reply()

    def reply(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(self.PREFIX):
                return json.loads(line[len(self.PREFIX) :])
            print(line, end="", file=sys.stderr)
        raise RuntimeError(f"the side in {self.process.args[1]} stopped (exit {self.process.wait()})")

    def __call__(self, first: int, steps: int) -> tuple[float, int | None]:
        self.process.stdin.write(f"{first} {steps}\n")
        reply = self.reply()
        return reply["seconds"], reply["peak_memory"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def serve(args: argparse.Namespace, cfg) -> None:
    """The ``--serve`` side: build the template's update, then time ``first steps`` updates per stdin line."""
    out, sys.stdout = sys.stdout, sys.stderr  # stdout carries replies only

    def reply(**fields) -> None:
        print(Side.PREFIX + json.dumps(fields), file=out, flush=True)

    d = distributed.init(cfg.trainer.device)
    step, _, batches, *_ = template_for(cfg, d, args)
    reply(tokens=batches.tokens_per_update)
    for line in sys.stdin:
        first, steps = (int(x) for x in line.split())
        seconds, peak_memory = timed(step, first, steps, d.device)
        reply(seconds=seconds, peak_memory=peak_memory)


def check_ref(ref: str) -> None:
    if Path(ref).is_dir():
        missing = [f for f in ("model/gpt.py", "training/engine.py", "train.py") if not (Path(ref) / f).is_file()]
        if missing:  # an installed template would stand in for what the folder lacks: this tree against itself
            raise ConfigError(f"--compare-ref: {ref!r} holds no tree of the template (no {missing[0]})")
        return
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], capture_output=True
    )
    if found.returncode != 0:
        raise ConfigError(f"--compare-ref: {ref!r} is neither a folder nor a commit of the git repository at {ROOT}")


def ref_tree(ref: str, into: Path) -> Path:
    """The template's files at ``ref`` (a git ref of this repository, or a folder holding them) copied under
    ``into``, with this script in bench/."""
    root = into / "ref"
    if Path(ref).is_dir():
        shutil.copytree(ref, root, ignore=shutil.ignore_patterns(".git", ".cache", "outputs", "multirun", ".venv*"))
    else:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", ref], capture_output=True, check=True
        )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(root, filter="data")
    (root / "bench").mkdir(exist_ok=True)
    (root / "bench" / "throughput.py").write_text(Path(__file__).read_text())
    return root


def alternate(
    loops: dict[str, Callable[[int, int], tuple[float, int | None]]],
    args,
    tokens: dict[str, int],
    device: torch.device,
    pids: list[int] | None = None,
) -> tuple[dict[str, list[float]], dict]:
    """Tokens/s of each loop (``tokens`` per update) per repetition, the loops taking turns (see the module
    docstring), and each loop's peak memory on a GPU."""
    t = dict.fromkeys(loops, 0)
    for name, loop in loops.items():  # compile, allocator and thread-pool warm-up
        loop(t[name], args.warmup)
        t[name] += args.warmup
    rates: dict[str, list[float]] = {name: [] for name in loops}
    peak_memory: dict[str, int | None] = dict.fromkeys(loops)
    noise = []
    # On a CPU the loops alternate every update (the host's speed drifts within seconds); on a GPU in blocks of
    # --steps updates, so that the bare loop keeps the CPU running ahead of the GPU as it would untimed.
    block = args.steps if device.type == "cuda" else 1
    names = list(loops)
    for r in range(args.repeats):
        before, seconds = cpu_times(pids), dict.fromkeys(loops, 0.0)
        for i in range(args.steps // block):
            for name in names if (r + i) % 2 == 0 else names[::-1]:
                elapsed, memory = loops[name](t[name], block)
                seconds[name] += elapsed
                peak_memory[name] = max(memory, peak_memory[name] or 0) if memory is not None else None
                t[name] += block
        for name in rates:
            rates[name].append(args.steps * tokens[name] / seconds[name])
        noise.append(others_share(before, cpu_times(pids)))
        busy = f" | other processes used {noise[-1]:.0%} of the CPUs" if noise[-1] is not None else ""
        each = ", ".join(f"{name} {rates[name][-1]:,.0f} tok/s" for name in names)
        print(f"  repetition {r + 1}: {each}{busy}")
    if any(n is not None and n > 0.05 for n in noise):
        print("warning: other processes kept the CPUs busy during the run; the figures are not reliable")
    return rates, peak_memory


def report(
    measured: tuple[dict[str, list[float]], dict],
    tokens: dict[str, int],
    flops_per_token: dict[str, float],
    peaks: dict[str, float | None],
) -> None:
    """The table of medians, MFUs and peak memory, and the first loop's ratio to each other loop."""
    rates, peak_memory = measured
    print()
    mfus = "".join(f"{'MFU ' + name:>13}" for name in peaks)
    print(f"{'loop':<16}{'tokens/s':>12}{'step ms':>10}{mfus}{'memory GiB':>12}   per repetition (tokens/s)")
    for name, each in rates.items():
        median = statistics.median(each)
        flops = flops_per_token[name] * median
        mfu = "".join(f"{flops / peak:>13.1%}" if peak else f"{'-':>13}" for peak in peaks.values())
        memory = f"{peak_memory[name] / 2**30:>12.2f}" if peak_memory[name] is not None else f"{'-':>12}"
        per = " ".join(f"{x:,.0f}" for x in each)
        print(f"{name:<16}{median:>12,.0f}{1e3 * tokens[name] / median:>10.1f}{mfu}{memory}   {per}")
    first, *others = rates
    for other in others:
        ratios = [a / b for a, b in zip(rates[first], rates[other], strict=True)]
        print(
            f"{first} / {other} (tokens/s): {statistics.median(ratios):.3f} (median of the repetitions' ratios; "
            f"range {min(ratios):.3f} to {max(ratios):.3f})"
        )


def against_configs(args: argparse.Namespace) -> list:
    """The config of each ``--against``: the command line's with its overrides added, checked."""
    configs = []
    for extra in args.against:
        try:
            configs.append(compose_config(args, shlex.split(extra)))
        except ValueError as e:  # an unbalanced quote, or an override the config refuses
            raise ConfigError(f"--against {extra!r}: {e}") from None
    return configs


def against(
    args: argparse.Namespace,
    d: distributed.Dist,
    template,
    batches: TrainBatches,
    raw_model: GPT,
    peaks: dict[str, float | None],
) -> None:
    """The template as configured against the template with each ``--against`` set of overrides added, every
    one a loop of this process (its own model, batches, optimizer, precision and compile), taking turns."""
    steps = {"as given": template}
    tokens, flops = {"as given": batches.tokens_per_update}, {"as given": model_flops_per_token(raw_model)}
    for i, (extra, cfg) in enumerate(zip(args.against, against_configs(args), strict=True), 1):
        step, model, its_batches, _, precision, use_compile = template_for(cfg, d, args)
        name = f"+{i}"
        steps[name], tokens[name], flops[name] = step, its_batches.tokens_per_update, model_flops_per_token(model)
        print(f"{name} = {extra} | {tokens[name]} tokens per update | {precision}{', compiled' if use_compile else ''}")
    loops = {name: (lambda first, n, step=step: timed(step, first, n, d.device)) for name, step in steps.items()}
    report(alternate(loops, args, tokens, d.device), tokens, flops, peaks)
    # Every loop took the same updates from the same initial weights: how far each one's losses ended from the first's
    last = {name: statistics.mean(step.losses[-args.steps :]) for name, step in steps.items()}
    print(
        f"train loss, mean of the last {args.steps} of {len(template.losses)} updates: "
        + ", ".join(
            f"{name} {loss:.4f}" + (f" ({loss - last['as given']:+.4f})" if name != "as given" else "")
            for name, loss in last.items()
        )
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = compose_config(args)
    if args.serve:
        return serve(args, cfg)
    if args.compare_ref:
        if args.against:
            raise ConfigError("--compare-ref and --against: give one of them")
        check_ref(args.compare_ref)
    against_configs(args)  # a bad --against is one line before any work
    d = distributed.init(cfg.trainer.device)  # one process: no process group, just the device
    device = d.device
    template, raw_model, batches, vocab, precision, use_compile = template_for(cfg, d, args)
    # fp8 runs its blocks' matmuls in fp8 and the rest in bf16: the bf16 rate (fp8's own is higher)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.bfloat16}.get(precision, torch.float32)
    if device.type == "cpu" and args.refresh_peak:
        cpu_peak_flops(refresh=True)
        if dtype == torch.bfloat16:
            cpu_peak_flops(refresh=True, dtype=dtype)
    sizes = (4096, 8192) if device.type == "cuda" else (512, 1024, 1536, 2048)
    peaks = {"peak": peak_flops(device, precision), "matmul": measure_matmul_flops(device, sizes, dtype=dtype)}
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
    peak = f"{peaks['peak'] / 1e12:.3g} TFLOP/s" if peaks["peak"] else "unknown for this device"
    rate = f"{str(dtype).removeprefix('torch.')} matmuls, measured now"
    print(f"MFU against: peak {peak}; matmul {peaks['matmul'] / 1e12:.3g} TFLOP/s ({rate})")

    if args.compare_ref:
        del template, raw_model  # each side builds its own
        with tempfile.TemporaryDirectory() as tmp:
            side_argv = [a for i, a in enumerate(argv) if a != "--compare-ref" and argv[i - 1 : i] != ["--compare-ref"]]
            sides = {"this tree": Side(ROOT, side_argv)}
            sides[f"ref {args.compare_ref}"] = Side(ref_tree(args.compare_ref, Path(tmp)), side_argv)
            try:
                pids = [side.process.pid for side in sides.values()]
                measured = alternate(sides, args, dict.fromkeys(sides, tokens), device, pids)
            finally:
                for side in sides.values():
                    side.close()
        return report(measured, dict.fromkeys(sides, tokens), dict.fromkeys(sides, flops_per_token), peaks)

    if args.against:
        return against(args, d, template, batches, raw_model, peaks)

    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    bare = build_bare(c, batches, vocab, optim, cfg.trainer.seed, device, precision, use_compile, cfg.trainer.grad_clip)
    print(f"bare leaves out: {BARE_LEAVES_OUT}")
    loops = {
        "template": lambda first, steps: timed(template, first, steps, device),
        "bare": lambda first, steps: timed(bare, first, steps, device),
    }
    tokens_of, flops_of = dict.fromkeys(loops, tokens), dict.fromkeys(loops, flops_per_token)
    report(alternate(loops, args, tokens_of, device), tokens_of, flops_of, peaks)
    if args.profile:
        print()
        profile(template, args.warmup + args.steps * args.repeats, args.steps, peaks["peak"], device)


if __name__ == "__main__":
    try:
        main()
    except USER_ERRORS as e:  # bad input, as train.py reports it
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
