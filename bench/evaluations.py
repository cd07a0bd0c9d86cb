"""What evaluations cost a run: each evaluation the config names, timed against the run's own update, in one run.

    python bench/evaluations.py     # the default run: model=nano, the built-in corpus, eval=[perplexity,next_line]
    python bench/evaluations.py model=micro 'eval=[perplexity,next_line,hellaswag]' eval.evals.hellaswag.limit=200
    python bench/evaluations.py trainer.device=cuda --repeats 5

The run is built as train.py builds it (``training.build.build_run`` in a temporary folder, ``logger=none``, the
same Hydra config and overrides), then its update and each of its evaluations take turns, ``--repeats`` times
after one untimed round (the median is printed). A multiple-choice evaluation also gives items per second. The
cost is the share of a run's time its evaluations take at these settings: ⌈T / trainer.eval_every⌉ + 1 rounds
(once at T with ``eval_every=0``) against ``T`` updates; the sample, checkpoints and startup are left out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.throughput import sync  # noqa: E402
from model.flops import cpu_name  # noqa: E402
from scheduling.spec import CommandLine, at_least  # noqa: E402
from training.budget import evaluation_count  # noqa: E402
from training.build import build_run  # noqa: E402
from training.config import USER_ERRORS, compose_checked  # noqa: E402
from training.multiple_choice import ChoiceTask  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = CommandLine(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=at_least(1), default=3, help="timed rounds of an update and every evaluation")
    parser.add_argument("overrides", nargs="*", help="train.py's key=value overrides")
    args = parser.parse_args(argv)
    overrides = ["logger=none", "trainer.sample_tokens=0", *args.overrides]
    try:
        cfg = compose_checked(overrides)
        with tempfile.TemporaryDirectory() as tmp:
            report(cfg, build_run(cfg, Path(tmp) / "run"), args.repeats)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def report(cfg, run, repeats: int) -> None:
    device, model = run.device, run.model.module
    evaluations = run.evaluations.evaluations
    times: dict[str, list[float]] = {name: [] for name in ["update", *evaluations]}

    def timed(name: str, work) -> None:
        sync(device)
        t0 = time.perf_counter()
        work()
        sync(device)
        times[name].append(time.perf_counter() - t0)

    for r in range(repeats + 1):  # the first round warms up and is dropped
        timed("update", lambda r=r: run.step(run.micro_batches(run.start + r)))
        for name, evaluation in evaluations.items():
            timed(name, lambda evaluation=evaluation: evaluation(model))
    median = {name: statistics.median(ts[1:]) for name, ts in times.items()}
    T, every = run.total_steps, cfg.trainer.eval_every
    rounds = evaluation_count(T, every)
    where = cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(
        f"{where}, torch {torch.__version__}, {torch.get_num_threads()} threads; model={cfg.model.name}, T={T}, "
        f"eval_every={every}: {rounds} evaluations; median of {repeats}"
    )
    print(f"{'':16} {'seconds':>9} {'× update':>9} {'items/s':>9} {'share of run':>13}")
    total = T * median["update"] + rounds * sum(median[name] for name in evaluations)
    print(f"{'update':16} {median['update']:9.3f} {1:9.2f} {'':>9} {T * median['update'] / total:13.1%}")
    for name, evaluation in evaluations.items():
        items = len(evaluation.items) / median[name] if isinstance(evaluation, ChoiceTask) else None
        rate = f"{items:9.1f}" if items else f"{'':>9}"
        print(
            f"{name:16} {median[name]:9.3f} {median[name] / median['update']:9.2f} {rate} "
            f"{rounds * median[name] / total:13.1%}"
        )


if __name__ == "__main__":
    sys.exit(main())
