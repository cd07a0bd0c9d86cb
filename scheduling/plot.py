"""Plot learning-rate schedules from the training config: ``python -m scheduling.plot [-m] [--out PATH] OVERRIDE…``

Takes the same Hydra overrides as ``train.py`` (the config is composed from ``conf/`` with Hydra's compose API),
writes a PNG of lr against the optimizer update t — 10% past T, to show that the floor is held — and prints the
lr at key steps: 0, W, mid-decay, T and past T.

    python -m scheduling.plot schedule=cosine trainer.max_steps=100000 schedule.warmup_steps=10000 \\
        optim.lr=3e-4 schedule.min_lr=3e-5
    python -m scheduling.plot -m schedule=cosine,linear,wsd --out schedules.png   # several curves, one PNG

Sweeps (``a=x,y``, ``range(…)``, ``glob(…)``) expand as in ``train.py -m``, with or without ``-m``; each
combination is one curve. ``--out PATH`` sets the PNG (default ``lr_schedule.png`` in the current directory).
A bad override or value prints one ``error:`` line and exits 2. Imports no torch.
"""

from __future__ import annotations

import itertools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from scheduling.spec import (
    CONF,
    CommandLine,
    Schedule,
    ScheduleError,
    compose,
    file_path,
    first_line,
    schedule_from_config,
)

PAST_T = 0.1  # the plot and the table go this fraction of T past T
POINTS = 2000  # samples per curve, plus its key steps


@dataclass
class Curve:
    label: str
    schedule: Schedule
    peak_lr: float
    total_steps: int  # T = trainer.max_steps

    def lr(self, t: int) -> float:
        return self.peak_lr * self.schedule(t)

    @property
    def floor(self) -> float | None:
        knots = self.schedule.params.get("knots")
        ratio = knots[-1][1] if knots else self.schedule.params.get("min_lr_ratio")
        return None if ratio is None else self.peak_lr * ratio

    def key_steps(self) -> list[tuple[str, int]]:
        """(point, t) for the table: start, end of warmup, the middle of the decay, T, past T."""
        T, W = self.total_steps, self.schedule.warmup_steps
        mid = (W + T) // 2
        if self.schedule.name == "wsd":  # its decay is the last D updates
            mid = T - self.schedule.params["decay_steps"] // 2
        return [("start", 0), ("end of warmup (W)", W), ("mid-decay", mid), ("end (T)", T), ("past T", past(T))]


def describe(schedule: Schedule) -> str:
    """The schedule's own settings, short, for the legend: ``wsd (1-sqrt, D = 20,000)``."""
    p = schedule.params
    if schedule.name == "polynomial":
        return f"power {p.get('power', 1.0):g}"
    if schedule.name == "wsd":
        return f"{p.get('decay_shape', '1-sqrt')}, D = {p['decay_steps']:,}"
    if schedule.name == "cosine_restarts":
        decay = p.get("cycle_decay", 1.0)
        return f"{p.get('num_cycles', 1)} cycles" + (f", γ = {decay:g}" if decay != 1.0 else "")
    if schedule.name == "tabulated":
        return f"{len(p['knots'])} knots"
    if schedule.name == "inverse_sqrt":
        tau = p.get("timescale") or schedule.warmup_steps or 10_000
        return f"τ = {tau:,}, cooldown {p.get('cooldown_steps', 0):,}"
    return ""


def past(total_steps: int) -> int:
    return total_steps + max(1, round(PAST_T * total_steps))


def expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """Every combination of the sweep overrides (``a=1,2``, ``range``, ``glob``), in the order train.py -m runs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    choices = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if not o.is_sweep_override():
            choices.append([o.input_line])
            continue
        if o.value_type == ValueType.GLOB_CHOICE_SWEEP:  # a glob over a config group's options
            values = o.value().filter(sorted(p.stem for p in (CONF / o.key_or_group).glob("*.yaml")))
        else:
            values = list(o.sweep_string_iterator())
        if not values:
            raise ScheduleError(f"override {o.input_line!r} selects nothing")
        choices.append([f"{o.get_key_element()}={v}" for v in values])
    return [list(job) for job in itertools.product(*choices)]


def with_config_sweeps(overrides: list[str]) -> list[str]:
    """``overrides`` behind the sweeps the config sets (an experiment's ``hydra.sweeper.params``), as Hydra's
    sweeper orders them: each key where it first appears, with the value given last (the command line's)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    plain = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    params = compose(plain, return_hydra_config=True).hydra.sweeper.get("params") or {}
    lines = [*(f"{key}={value}" for key, value in params.items()), *overrides]
    merged: dict[str, str] = {}
    for o, line in zip(parser.parse_overrides(lines), lines, strict=True):
        merged[o.get_key_element()] = line
    return list(merged.values())


def build_curves(overrides: list[str]) -> list[Curve]:
    """Compose the config of each job and build its schedule, validated as train.py validates it."""
    from omegaconf import OmegaConf

    appended = [o for o in overrides if o.startswith("+") and not o.startswith("++")]  # ++ sets a key that exists
    if appended:  # every key the template reads is already in conf/: an appended one would be ignored
        raise ScheduleError(f"{appended[0].split('=')[0]}: the config has no such key to plot with (drop the +)")
    jobs = expand_sweeps(with_config_sweeps(overrides))
    varying = [i for i in range(len(jobs[0])) if len({job[i] for job in jobs}) > 1]
    curves = []
    for job in jobs:
        cfg = compose(job)
        T, peak = cfg.trainer.max_steps, cfg.optim.lr
        budget = next((k for k in ("max_tokens", "max_time") if cfg.trainer.get(k) is not None), None)
        if T is None and budget:
            raise ScheduleError(
                f"trainer.{budget}: a budget fixes T when the run starts (from the batch and the number of "
                "processes, or a timing); plot its schedule with trainer.max_steps=T"
            )
        schedule = schedule_from_config(OmegaConf.to_container(cfg.schedule, resolve=True), T, peak)
        # The label: the schedule's name plus whatever else differs between the curves.
        details = [job[i].lstrip("+~").removeprefix("schedule.") for i in varying]
        details = [d for d in details if not d.startswith("schedule=")]
        own = describe(schedule)
        label = " ".join([schedule.name + (f" ({own})" if own else ""), *details])
        curves.append(Curve(label, schedule, float(peak), T))
    return curves


def table(curves: list[Curve]) -> str:
    """The lr of each curve at its key steps, one row per (curve, point)."""
    width = max(len("schedule"), *(len(c.label) for c in curves))
    rows = [f"{'schedule':<{width}}  {'point':<17}  {'step':>10}  {'lr':>11}"]
    for c in curves:
        rows += [f"{c.label:<{width}}  {point:<17}  {t:>10}  {c.lr(t):>11.4e}" for point, t in c.key_steps()]
    return "\n".join(rows)


def _common(values: list) -> object | None:
    """The value all curves share, if they do."""
    return values[0] if len(set(values)) == 1 else None


def plot(curves: list[Curve], out: Path) -> None:
    """lr against t for every curve in one PNG, marked at W and T, with the region past T shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    end = max(past(c.total_steps) for c in curves)
    longest = max(len(c.label) for c in curves)
    ncol = min(len(curves), 3 if longest <= 40 else 2 if longest <= 60 else 1)  # long labels: fewer columns
    rows = -(-len(curves) // ncol)  # legend rows under the axes
    fig, ax = plt.subplots(figsize=(10, 5.2 + 0.22 * rows), dpi=100)
    for n, c in enumerate(curves):
        key = {t for _, t in c.key_steps()} | {max(0, c.schedule.warmup_steps - 1)}
        steps = sorted({round(i * end / POINTS) for i in range(POINTS + 1)} | key)
        style = ("-", "--", ":")[n // 10 % 3]  # the colour cycle has 10: the next 10 curves are dashed
        ax.plot(steps, [c.lr(t) for t in steps], label=c.label, lw=1.8, ls=style)

    T, W = _common([c.total_steps for c in curves]), _common([c.schedule.warmup_steps for c in curves])
    peak, floor = _common([c.peak_lr for c in curves]), _common([c.floor for c in curves if c.floor is not None])
    for T_i in sorted({c.total_steps for c in curves}):
        ax.axvspan(T_i, end, color="0.5", alpha=0.06, lw=0)
        ax.axvline(T_i, color="0.35", ls="--", lw=1)
        ax.annotate(
            f"T = {T_i:,}",
            (T_i, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(-4, -14),
            textcoords="offset points",
            ha="right",
            fontsize=9,
            color="0.25",
        )
    for W_i in sorted({c.schedule.warmup_steps for c in curves} - {0}):
        ax.axvline(W_i, color="0.35", ls=":", lw=1)
        ax.annotate(
            f"W = {W_i:,}",
            (W_i, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(4, -14),
            textcoords="offset points",
            ha="left",
            fontsize=9,
            color="0.25",
        )
    if floor:
        ax.axhline(floor, color="0.35", ls=":", lw=1)
        ax.annotate(
            f"floor {floor:.3g}",
            (0.5, floor),
            xycoords=("axes fraction", "data"),
            xytext=(0, -4),
            textcoords="offset points",
            ha="center",
            va="top",
            fontsize=9,
            color="0.25",
        )

    names = ", ".join(dict.fromkeys(c.schedule.name for c in curves))
    setting = [
        f"T = {T:,}" if T else "",
        f"W = {W:,}" if W is not None else "",
        f"peak {peak:.3g}" if peak else "",
        f"floor {floor:.3g}" if floor else "",
    ]
    title = f"Learning-rate schedule{'s' * (len(curves) > 1)}" + (f": {names}" if len(curves) <= 3 else "")
    ax.set_title(title + ("\n" + ", ".join(s for s in setting if s) if any(setting) else ""), fontsize=11)
    ax.set_xlabel("optimizer update t")
    ax.set_ylabel("learning rate")
    ax.set_xlim(0, end)
    ax.set_ylim(0, max(c.peak_lr for c in curves) * 1.08)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:.1e}" if y else "0"))
    ax.grid(alpha=0.25)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=ncol, fontsize=9, frameon=False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")  # the image grows to hold a legend wider than the axes
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = CommandLine(
        prog="python -m scheduling.plot",
        description="Plot the learning-rate schedule(s) the training config describes, and print key values.",
        epilog="example: python -m scheduling.plot -m schedule=cosine,linear,wsd trainer.max_steps=100000",
    )
    parser.add_argument("overrides", nargs="*", default=[], help="Hydra overrides, as for train.py (sweeps overlay)")
    parser.add_argument("-m", "--multirun", action="store_true", help="accepted for symmetry with train.py -m")
    parser.add_argument(
        "--out", type=file_path, default=Path("lr_schedule.png"), metavar="PATH", help="the PNG (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    from hydra.errors import HydraException
    from matplotlib.backend_bases import FigureCanvasBase
    from omegaconf.errors import OmegaConfBaseException

    out = args.out if args.out.suffix else args.out.with_suffix(".png")  # matplotlib's default format
    formats = FigureCanvasBase.get_supported_filetypes()
    if out.suffix.lstrip(".").lower() not in formats:
        print(f"error: --out {out}: an image file ({', '.join(f'.{f}' for f in sorted(formats))})", file=sys.stderr)
        return 2
    try:
        curves = build_curves(args.overrides)
    except (ScheduleError, HydraException, OmegaConfBaseException) as e:
        message = " ".join(str(e).split()).split(" Config search path:")[0]  # Hydra's own details: one line
        unknown = re.match(r"Could not override '([^']+)'", message)  # Hydra's advice, a +, is refused above
        if unknown:
            key = unknown.group(1)
            message = f"{key}: the config has no such key to plot with (python train.py --cfg job lists the keys)"
        elif e.__cause__ is not None and str(e.__cause__).split()[:1] != str(e).split()[:1]:
            message += " (" + " ".join(str(e.__cause__).split()) + ")"
        print(f"error: {message}", file=sys.stderr)
        return 2
    try:
        plot(curves, out)
    except OSError as e:
        print(f"error: --out {out}: cannot be written ({e.strerror or first_line(e)})", file=sys.stderr)
        return 2
    print(table(curves))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
