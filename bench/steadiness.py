"""Is this machine steady enough for a wall-clock budget? Runs train.py's update alone for a while and shows how
far a plan measured in one moment would miss the updates that follow it.

    python bench/steadiness.py                                   # the default model, 180 s
    python bench/steadiness.py experiment=cpu_budget --seconds 240
    python bench/steadiness.py --reference                       # a fixed matmul: the machine alone

A ``trainer.max_time`` run fixes T from the median update of one short window (``measurement_seconds``: 4.8 s
of a 120 s budget) and then spends most of its budget on updates. Here the template's update
(``bench/throughput.py``'s ``build_template``: the model, data, optimizer and ``train_update`` train.py runs,
from the same Hydra config and overrides) runs back to back for ``--seconds``, with nothing else in the process:
no evaluation, no logging, no W&B. The run is cut into windows of that length. For each window the script
prints the median update and the share of the CPUs other processes of this machine used meanwhile; then, for a
plan measured in each window, the ratio of the mean update over the next ``--updates-share`` of the budget (what
a run would spend on updates) to the window's median — the real ÷ planned update of ``bench/budget_spread.py``.

On a steady machine those ratios sit near 1.00 and a 120 s run ends near 115 s; with the plan's 1.05 margin a
ratio of about 0.96–1.06 still ends it within 110–120 s. Wider ratios, with other processes near 0 %, mean the
machine's speed moves under the run from outside it (a shared VM's host), and no plan made before update 0 can
follow it.

With ``--reference`` the same windows time a fixed matmul instead (preallocated operands and output, so no
allocation and none of the template's code): if its windows move as much as the update's, the machine moved, not
the template. On a shared 2-core VM, with other processes under 1 % of the CPUs, its windows went from 14.3 to
17.6 ms (sd 7 %; plan ratios 0.94–1.13) on two threads, and from 25.0 to 32.2 ms pinned to one vCPU
(``taskset -c 0``, one thread).
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
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from throughput import build_template, compose_checked, cpu_times, others_share, sync  # noqa: E402

from training import distributed  # noqa: E402
from training.budget import measurement_seconds  # noqa: E402

WARMUP_SECONDS = 2.0  # untimed, as the plan's own warm-up


def reference_step(device: torch.device) -> Callable[[int], None]:
    """A fixed amount of matmul work with no allocation: 20 products of preallocated square fp32 matrices (384
    on a CPU, 4096 on a GPU), written into one preallocated output."""
    n = 384 if device.type == "cpu" else 4096
    g = torch.Generator(device="cpu").manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device) for _ in range(2))
    out = torch.empty(n, n, device=device)

    def step(t: int) -> None:
        for _ in range(20):
            torch.mm(a, b, out=out)

    return step


def plan_ratios(stamps: list[float], times: list[float], window: float, horizon: float) -> list[tuple[float, float]]:
    """For each window of ``window`` seconds that has ``horizon`` seconds of updates after it: (its start, the
    mean update of those ``horizon`` seconds ÷ the window's median update). ``stamps[i]`` is when update ``i``
    ended, ``times[i]`` how long it took."""
    out = []
    start = 0.0
    while start + window + horizon <= stamps[-1]:
        inside = [t for s, t in zip(stamps, times, strict=True) if start <= s < start + window]
        after = [t for s, t in zip(stamps, times, strict=True) if start + window <= s < start + window + horizon]
        if inside and after:
            out.append((start, statistics.mean(after) / statistics.median(inside)))
        start += window
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0, help="how long to run updates (default 180)")
    parser.add_argument("--budget", type=float, default=120.0, help="the trainer.max_time to judge (default 120)")
    parser.add_argument("--updates-share", type=float, default=0.8, help="share of the budget spent on updates")
    parser.add_argument("--reference", action="store_true", help="time a fixed matmul instead: the machine alone")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py (e.g. experiment=cpu_budget)")
    args = parser.parse_args(argv)
    window, horizon = measurement_seconds(args.budget), args.updates_share * args.budget
    if args.seconds < window + horizon:
        parser.error(f"--seconds must be ≥ {window + horizon:g}: one measurement window and the updates after it")

    # T only shapes the schedule, not an update's cost: the budget keys give way to max_steps' default
    cfg = compose_checked(["logger=none", *args.overrides, "trainer.max_time=null", "trainer.max_tokens=null"])
    d = distributed.init(cfg.trainer.device)
    device = d.device
    precision = distributed.resolve_precision(cfg.trainer.precision, device)
    use_compile = distributed.resolve_compile(cfg.trainer.compile, device)
    n = torch.get_num_threads()
    threads = f" ({n} thread{'s' if n > 1 else ''})" if device.type == "cpu" else ""
    if args.reference:
        step = reference_step(device)
        print(f"reference: 20 fixed fp32 matmuls per timing, {device}{threads}")
    else:
        step, raw_model, batches, _ = build_template(cfg, d, precision, use_compile)
        c = raw_model.config
        print(f"{' '.join(args.overrides) or 'defaults'}: {c.n_layer} layers × {c.n_embd}, block {c.block_size}, "
              f"{batches.tokens_per_update} tokens per update, {device}{threads}, {precision}")  # fmt: skip

    t, begun = 0, time.perf_counter()
    while t < 2 or time.perf_counter() - begun < WARMUP_SECONDS:
        step(t)
        t += 1
    sync(device)
    stamps: list[float] = []
    times: list[float] = []
    marks = [(0.0, cpu_times())]  # (seconds, CPU ticks) at each window's edge
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        t0 = time.perf_counter()
        step(t)
        sync(device)
        t1 = time.perf_counter()
        stamps.append(t1 - start)
        times.append(t1 - t0)
        t += 1
        if stamps[-1] >= len(marks) * window:
            marks.append((stamps[-1], cpu_times()))

    print(f"\n{window:g} s windows (a {args.budget:g} s budget's measurement): median update, other processes' share")
    medians = []
    for k in range(len(marks) - 1):
        inside = [x for s, x in zip(stamps, times, strict=True) if marks[k][0] <= s < marks[k + 1][0]]
        if not inside:
            continue
        medians.append(statistics.median(inside))
        share = others_share(marks[k][1], marks[k + 1][1])
        print(f"  {marks[k][0]:6.1f} s  {medians[-1] * 1e3:9.2f} ms" + (f"  {share:5.1%}" if share is not None else ""))
    spread = statistics.pstdev(medians) / statistics.mean(medians)
    print(f"window medians {min(medians) * 1e3:.2f}–{max(medians) * 1e3:.2f} ms (sd {spread:.1%} of their mean)")
    ratios = [r for _, r in plan_ratios(stamps, times, window, horizon)]
    print(f"the mean update of the {horizon:g} s after a window ÷ its median (real ÷ planned, measured there): "
          f"{min(ratios):.2f}–{max(ratios):.2f} (median {statistics.median(ratios):.2f}, {len(ratios)} windows); "
          f"{sum(0.96 <= r <= 1.06 for r in ratios)} of {len(ratios)} within 0.96–1.06")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
