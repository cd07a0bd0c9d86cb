"""A sweep's report: ``python -m training.report SWEEP_DIR`` (also written at the end of every ``train.py -m``).

Into the sweep directory it writes ``report.csv`` and ``report.md`` — one row per job: the values the sweep varied,
final and best val/bpb, T, tokens, seconds and status, the final ``eval/<name>/acc`` and ``eval/<name>/acc_norm``
of each multiple-choice evaluation, best first, failed jobs last and marked failed — and
``report.png``, val/bpb and lr against tokens overlaid, each job labelled by what differs between the jobs. When
the jobs end at different T (cooldown branches, budgets), ``frontier.png`` plots final val/bpb against tokens, over
the val/bpb curve of the run they were branched from. Given a fit (``--forecast fit.json``, or
``hydra.callbacks.sweep_report.forecast=fit.json`` on a sweep), each row adds the job's final loss, the loss the fit
forecast for its schedule and the forecast's error, and ``forecast.png`` draws each forecast beside the real curve.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.atomic import DiskFull
from scheduling.audit import AuditError, number, saved_overrides
from scheduling.spec import CommandLine, first_line, is_int
from training.plots import WriteError, check_writable, image_bytes, pyplot, read_metrics, run_labels, write_files

COLUMNS = ("final val/bpb", "best val/bpb", "T", "tokens", "seconds", "status")


@dataclass
class Job:
    run_dir: Path
    swept: dict[str, str]
    status: str
    final_bpb: float | None
    best_bpb: float | None
    total_steps: int | None
    tokens: int | None
    seconds: float | None
    error: str | None = None
    rows: list[dict] = field(default_factory=list, repr=False)
    forecast: Any = None  # scheduling.forecast.Forecast of the job's schedule, given a fit
    evals: dict[str, float] = field(default_factory=dict)  # the last value of each eval/<name>/acc(_norm)

    def cells(self) -> list[Any]:
        return [self.final_bpb, self.best_bpb, self.total_steps, self.tokens, self.seconds, self.status]

    def forecast_cells(self) -> list[Any]:
        """The job's final loss (the fit's kind), its forecast (multi-power) and the forecast's relative error."""
        f = self.forecast
        if f is None or f.actual is None or not len(f.actual) or f.actual_steps[-1] != f.steps[-1]:
            return [None, None if f is None else f.final(), None]  # no real loss at the forecast's T to compare
        return [f.actual[-1], f.final(), f.final() / f.actual[-1] - 1]


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's job directories (Hydra's ``.hydra/`` record in each), in job order."""
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def overrides(run_dir: Path) -> dict[str, str]:
    """The job's command-line overrides, as Hydra recorded them: ``{"optim.lr": "0.001"}``."""
    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        given = saved_overrides(path) if path.is_file() else []
    except AuditError:  # a damaged record: as a missing one
        given = []
    pairs = (o.split("=", 1) for o in given)
    return {k.lstrip("+~"): v for k, v in (p for p in pairs if len(p) == 2)}


def val_against_tokens(rows: list[dict], key: str = "val/bpb") -> tuple[list[float], list[float]]:
    """An evaluation at step s comes before update s: it has seen the tokens the training row of update s − 1
    counts (each update's own, so a batch changed on resume counts as it was), between logged rows in
    proportion."""
    seen = {r["step"] + 1: r["tokens"] for r in rows if r.get("tokens") is not None}
    if not seen:
        return [], []
    after = sorted(seen)
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    # past the last logged update (a run's final evaluation at T): at the rate of the last logged ones
    before = after[-2] if len(after) > 1 else 0
    rate = (seen[after[-1]] - seen.get(before, 0)) / (after[-1] - before)
    tokens = [
        float(np.interp(s, [0, *after], [0, *(seen[u] for u in after)]))
        if s <= after[-1]
        else seen[after[-1]] + (s - after[-1]) * rate
        for s, _ in points
    ]
    return tokens, [v for _, v in points]


def read_summary(path: Path) -> tuple[dict, str | None]:
    """A job's summary.json and, when it is damaged (it cannot be read, or a value the report reads is not of the
    type the run writes), why, naming it: then it reads as none."""
    try:
        summary = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return {}, f"{path}: cannot be read ({first_line(e)})"
    if not isinstance(summary, dict):
        return {}, f"{path}: cannot be read (not a JSON object)"
    for key in ("status", "error"):
        if summary.get(key) is not None and not isinstance(summary[key], str):
            return {}, f"{path}: {key} is not a string, got {summary[key]!r:.60}"
    for key in ("total_steps", "tokens"):
        if summary.get(key) is not None and not is_int(summary[key]):
            return {}, f"{path}: {key} is not a whole number, got {summary[key]!r:.60}"
    if summary.get("seconds") is not None:  # null where it was not finite
        try:
            number(summary["seconds"], f"{path}: seconds")
        except AuditError as e:
            return {}, first_line(e)
    return summary, None


def read_job(run_dir: Path, swept: list[str]) -> Job:
    """What the report says of a job; its damaged files (a summary.json or metrics.jsonl that cannot be read, or a
    summary.json value of another type) named in its error. A logged value that is not a finite number reads as
    missing (``read_metrics``)."""
    summary, damaged = read_summary(run_dir / "summary.json")
    metrics = run_dir / "metrics.jsonl"
    started = summary.get("started") if summary.get("status") == "failed" else None
    # a job that failed before it logged: the metrics there are an earlier run's in a folder used again
    stale = isinstance(started, (int, float)) and metrics.is_file() and metrics.stat().st_mtime < started
    try:
        rows, unreadable = (read_metrics(run_dir) if metrics.is_file() and not stale else []), None
    except AuditError as e:
        rows, unreadable = [], first_line(e)
    # its curve and val/bpb gone (a job stopped as it started, before any record, has none to lose: no T either)
    logged = summary.get("status") == "ok" or summary.get("status") == "preempted" and "total_steps" in summary
    if logged and not metrics.is_file():
        unreadable = f"{metrics.name} is missing"
    evaluated = [r["val/bpb"] for r in rows if "val/bpb" in r]  # null where it was not finite
    vals = [v for v in evaluated if isinstance(v, (int, float))]
    trained = [r for r in rows if r.get("tokens") is not None]
    given = overrides(run_dir)
    ending = summary.get("error") or damaged or (None if summary else "ended without a summary.json (killed?)")
    return Job(
        run_dir=run_dir,
        swept={k: given.get(k, "") for k in swept},
        status=summary.get("status") or "failed",  # no summary: the job never reached its end (killed, crashed)
        final_bpb=evaluated[-1] if evaluated and isinstance(evaluated[-1], (int, float)) else None,
        best_bpb=min(vals) if vals else None,
        total_steps=summary.get("total_steps"),
        tokens=summary.get("tokens", trained[-1]["tokens"] if trained else None),
        seconds=summary.get("seconds"),
        error="; ".join(e for e in (ending, unreadable) if e) or None,
        rows=rows,
        evals={k: v for r in rows for k, v in r.items() if is_accuracy(k)},  # later rows overwrite earlier ones
    )


def is_accuracy(key: str) -> bool:
    return key.startswith("eval/") and key.endswith(("/acc", "/acc_norm"))


def read_sweep(sweep_dir: Path, only: set[Path] | None = None) -> list[Job]:
    """Every job (of those in ``only``, when given), best first: finished jobs by final val/bpb, then the others in
    job order."""
    dirs = [d for d in job_dirs(sweep_dir) if only is None or d.resolve() in only]
    given = [overrides(d) for d in dirs]
    keys = list(dict.fromkeys(k for g in given for k in g))
    swept = [k for k in keys if len({g.get(k) for g in given}) > 1]
    jobs = [read_job(d, swept) for d in dirs]
    ok = sorted((j for j in jobs if j.status == "ok"), key=lambda j: _value(j.final_bpb))
    return ok + [j for j in jobs if j.status != "ok"]


def _value(x: float | None) -> float:
    return x if x is not None and math.isfinite(x) else math.inf


FORMATS = ("{:.4f}", "{:.4f}", "{:,}", "{:,}", "{:.1f}", "{}")  # one per column of COLUMNS
FORECAST_FORMATS = ("{:.4f}", "{:.4f}", "{:+.2%}")


def forecast_columns(jobs: list[Job]) -> list[str]:
    """The columns the jobs' forecasts add, named by the loss they forecast (none without a forecast)."""
    loss = next((j.forecast.loss_name for j in jobs if j.forecast is not None), None)
    return [f"final {loss}", f"forecast {loss}", "forecast error"] if loss else []


def eval_columns(jobs: list[Job]) -> list[str]:
    """The accuracies any job logged, in the order first logged."""
    return list(dict.fromkeys(k for j in jobs for k in j.evals))


def table(jobs: list[Job]) -> tuple[list[str], list[list[str]]]:
    swept = list(jobs[0].swept) if jobs else []
    forecasts, evals = forecast_columns(jobs), eval_columns(jobs)
    header = ["job", *swept, *COLUMNS, *(f"final {k}" for k in evals), *forecasts]

    def cells(j: Job) -> list[str]:
        formats = FORMATS + ("{:.3f}",) * len(evals)
        values = j.cells() + [j.evals.get(k) for k in evals]
        if forecasts:
            formats, values = formats + FORECAST_FORMATS, values + j.forecast_cells()
        return ["" if v is None else f.format(v) for f, v in zip(formats, values, strict=True)]

    return header, [[j.run_dir.name, *j.swept.values(), *cells(j)] for j in jobs]


def markdown(jobs: list[Job]) -> str:
    header, rows = table(jobs)

    def line(cells: list[str]) -> str:  # a swept value's | or line break would split its cell
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    lines = [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]
    errors = [f"- job {j.run_dir.name}: {j.error}" for j in jobs if j.error]  # a finished job has one: a damaged file
    return "\n".join(lines + ([""] + errors if errors else [])) + "\n"


def csv_text(jobs: list[Job]) -> str:
    swept = list(jobs[0].swept) if jobs else []
    forecasts, evals = forecast_columns(jobs), eval_columns(jobs)
    with io.StringIO(newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["job", *swept, *COLUMNS, *(f"final {k}" for k in evals), *forecasts, "error"])
        for j in jobs:
            values = j.cells() + [j.evals.get(k) for k in evals] + (j.forecast_cells() if forecasts else [])
            writer.writerow(
                [j.run_dir.name, *j.swept.values(), *("" if v is None else v for v in values), j.error or ""]
            )
        return fh.getvalue()


def plot_curves(jobs: list[Job], out: Path) -> bytes:
    """val/bpb and lr against tokens, one colour per job, labelled by what differs between the jobs: the image to
    write to ``out``."""
    plt = pyplot()
    fig, (ax_val, ax_lr) = plt.subplots(1, 2, figsize=(13, 4.8))
    shown = [j for j in jobs if j.rows]
    for i, (job, label) in enumerate(zip(shown, run_labels([j.run_dir for j in shown]), strict=True)):
        color, label = f"C{i % 10}", label + ("" if job.status == "ok" else f" ({job.status})")
        ax_val.plot(*val_against_tokens(job.rows), "o-", ms=3, lw=1.3, color=color, label=label)
        lr = [(r["tokens"], r["train/lr"]) for r in job.rows if r.get("train/lr") is not None and "tokens" in r]
        ax_lr.plot([p[0] for p in lr], [p[1] for p in lr], lw=1.4, color=color, label=label)
    ax_val.set(xlabel="tokens", ylabel="val/bpb (bits per byte)", title="validation")
    ax_lr.set(xlabel="tokens", ylabel="learning rate", title="train/lr")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    for ax in (ax_val, ax_lr):
        ax.grid(alpha=0.3)
    ax_val.legend(fontsize=8)
    return image_bytes(fig, out)


def branched_from(job: Job) -> Path | None:
    """The run directory a job branched from: the last run other than its own that it resumed from (its
    schedule.json's segments; a branch may since have resumed from its own checkpoints too)."""
    record = job.run_dir / "schedule.json"
    try:
        segments = json.loads(record.read_text())["segments"] if record.is_file() else []
        resumed = [s["resumed_from"] for s in segments if isinstance(s.get("resumed_from"), str)]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):  # damaged: none known
        return None
    others = [Path(r).parent.parent for r in resumed]  # <run>/checkpoints/step-N
    others = [p for p in others if p.resolve() != job.run_dir.resolve()]
    return others[-1] if others and (others[-1] / "metrics.jsonl").is_file() else None


def plot_frontier(jobs: list[Job], out: Path) -> bytes | None:
    """Final val/bpb against tokens of the finished jobs, when they end at different T; the run they branched
    from (when they share one, and its metrics.jsonl can be read) as the curve behind them: the image to write
    to ``out``."""
    done = [j for j in jobs if j.status == "ok" and j.final_bpb is not None and j.tokens]
    done.sort(key=lambda j: j.tokens)
    if len({j.tokens for j in done}) < 2:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    sources = {branched_from(j) for j in done}
    if len(sources) == 1 and None not in sources:
        source = sources.pop()
        try:
            rows = read_metrics(source)
        except AuditError:  # damaged: the jobs' points alone
            rows = []
        ax.plot(*val_against_tokens(rows), "-", lw=1.2, color="0.6", label=f"branched from: {source.name}")
    ax.plot(
        [j.tokens for j in done],
        [j.final_bpb for j in done],
        "o-",
        ms=6,
        lw=1.6,
        color="C3",
        label="final val/bpb of each job",
    )
    for j in done:
        ax.annotate(
            f"T = {j.total_steps:,}" if j.total_steps else j.run_dir.name,
            (j.tokens, j.final_bpb),
            xytext=(5, 5),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set(xlabel="tokens", ylabel="val/bpb (bits per byte)", title="final val/bpb against tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return image_bytes(fig, out)


def add_forecasts(jobs: list[Job], fit: Any) -> None:
    """Each job's forecast (``scheduling.forecast.forecast_run``): of the lrs it logged and its recorded schedule to
    its T, beside what it logged (one beyond the fit's runs warned of); none for a job too short to compare."""
    from scheduling.forecast import ForecastError, forecast_run

    for job in jobs:
        if job.rows:
            try:
                job.forecast = forecast_run(fit, job.run_dir, label=f"job {job.run_dir.name}")
            except (ForecastError, AuditError) as e:  # too short to forecast, or its records damaged: none, said
                job.forecast = None
                print(f"warning: job {job.run_dir.name}: no forecast: {e}", file=sys.stderr)


def write_report(
    sweep_dir: Path, forecast: Path | None = None, only: set[Path] | None = None
) -> tuple[list[Job], list[Path]]:
    """Write report.csv, report.md, report.png (and frontier.png) into ``sweep_dir``, and with a fit each job's
    forecast (and forecast.png); returns the jobs, best first, and the files written. ``only``: the job folders
    of this sweep (a sweep directory used again can hold an earlier, larger grid's). A fit that cannot be read
    raises ``scheduling.forecast.ForecastError``, a file that cannot be written ``training.plots.WriteError`` (out
    of space ``DiskFull``), before anything is written: the files are written all or none."""
    fit = None
    if forecast is not None:
        from scheduling.forecast import load_fit

        fit = load_fit(forecast)
    check_writable([sweep_dir / "report.csv", sweep_dir / "report.md"])  # before the work; each file again below
    jobs = read_sweep(sweep_dir, only)
    if fit is not None:
        add_forecasts(jobs, fit)
    files = {
        sweep_dir / "report.csv": csv_text(jobs).encode(),
        sweep_dir / "report.md": (f"# Sweep {sweep_dir}\n\n" + markdown(jobs)).encode(),
    }
    if any(j.rows for j in jobs):
        files[sweep_dir / "report.png"] = plot_curves(jobs, sweep_dir / "report.png")
    frontier = plot_frontier(jobs, sweep_dir / "frontier.png")
    if frontier is not None:
        files[sweep_dir / "frontier.png"] = frontier
    forecasts = [j.forecast for j in jobs if j.forecast is not None]
    if forecasts:
        from scheduling.forecast import plot

        files[sweep_dir / "forecast.png"] = plot(forecasts, fit, "Each job's forecast and its real curve")
    write_files(files)
    for name in ("report.png", "frontier.png", "forecast.png"):  # an earlier report's that this one has not
        if sweep_dir / name not in files:
            (sweep_dir / name).unlink(missing_ok=True)
    return jobs, list(files)


def main(argv: list[str] | None = None) -> int:
    parser = CommandLine(prog="python -m training.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (multirun/<date>/<time>)")
    parser.add_argument("--forecast", type=Path, metavar="FIT", help="a fit.json: each job's forecast beside it")
    args = parser.parse_args(argv)
    try:
        found = job_dirs(args.sweep_dir) if args.sweep_dir.is_dir() else []
    except OSError as e:
        print(f"error: {args.sweep_dir}: cannot be read ({e.strerror or first_line(e)})", file=sys.stderr)
        return 2
    if not found:
        print(f"error: {args.sweep_dir}: not a sweep directory (no job folder with a .hydra record)", file=sys.stderr)
        return 2
    from scheduling.forecast import ForecastError

    try:
        jobs, files = write_report(args.sweep_dir, args.forecast)
    except (ForecastError, WriteError, DiskFull) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(jobs), end="")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
