"""Loss and learning-rate curves from metrics.jsonl, without W&B.

At the end of every run train.py writes ``plots/loss.png`` and ``plots/lr.png`` in the run directory. To
compare runs, overlay them in one image (a sweep directory counts as all the runs under it; ``--out``'s suffix picks
the format: .png, .pdf, .svg, …):

    python -m training.plots multirun/2026-11-25/17-30-00 outputs/2026-11-25/16-02-11 --out compare.png
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from data.atomic import DiskFull, fsync_dir, space_for, write_file
from scheduling.audit import AuditError, read_jsonl
from scheduling.spec import CommandLine, first_line, is_int, is_number


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (set here, not at import: importing has no effects)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl's records of an update (``step`` 0, 1, …); a damaged line is skipped, and a value that is not a
    finite number reads as missing (None, as metrics.jsonl writes a value that was not finite). A file that cannot
    be read: ``AuditError``, naming it."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    return [
        {k: v if k == "step" or is_number(v) else None for k, v in r.items()}
        for r in rows
        if is_int(r.get("step")) and r["step"] >= 0
    ]


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def smooth(values: list[float], window: int) -> list[float]:
    """A trailing moving average over ``window`` points (the first points average what there is)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def window_for(n: int) -> int:
    return max(1, n // 50)


NOISE = ("hydra", "logger", "trainer.log_every", "trainer.sample", "trainer.device", "data.cache_dir")


def settings(run_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """A run's group choices (``schedule: wsd``) and its config values by dotted key (``optim.lr: 0.001``), as
    Hydra recorded them in ``.hydra/`` (empty when it is missing)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    folder = run_dir / ".hydra"
    if not (folder / "config.yaml").is_file() or not (folder / "hydra.yaml").is_file():
        return {}, {}
    try:
        choices = OmegaConf.to_container(OmegaConf.load(folder / "hydra.yaml").hydra.runtime.choices)
        config = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=False)
    except (OSError, UnicodeDecodeError, YAMLError, OmegaConfBaseException):  # a damaged record: as a missing one
        return {}, {}
    if not isinstance(choices, dict):
        return {}, {}
    values: dict[str, str] = {}

    def flatten(node, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                flatten(v, f"{prefix}{k}.")
        else:
            values[prefix.rstrip(".")] = as_written(node)

    flatten(config, "")
    return {g: as_written(c) for g, c in choices.items() if "/" not in g}, values


def as_written(value) -> str:
    """A config value as an override writes it: ``null``, ``true``, not Python's ``None``, ``True``."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def run_labels(run_dirs: list[Path]) -> list[str]:
    """What tells the runs apart, as a sweep's W&B run names do: the group choices that differ between them
    (``schedule=wsd``), then the other config values that differ (``optim.lr=0.001``); else their folder names."""
    runs = [settings(r) for r in run_dirs]
    recorded = [run for run in runs if run[1]]

    def differing(table: list[dict[str, str]]) -> list[str]:
        keys = dict.fromkeys(k for t in table for k in t if not k.startswith(NOISE))
        return [k for k in keys if len({t.get(k) for t in table}) > 1] if len(table) > 1 else []

    groups = differing([choices for choices, _ in recorded])
    keys = [k for k in differing([values for _, values in recorded]) if k.split(".")[0] not in groups]
    labels = []
    for run, (choices, values) in zip(run_dirs, runs, strict=True):
        parts = [f"{g}={as_written(choices.get(g))}" for g in groups] + [
            f"{k}={as_written(values.get(k))}" for k in keys
        ]
        labels.append(" ".join(parts) if values and parts else run.name)
    return labels


def write_run_plots(run_dir: Path) -> list[Path]:
    """``plots/loss.png`` (train and val loss) and ``plots/lr.png`` of one run; returns the files written. Out of
    space, ``DiskFull`` names the plot."""
    out = run_dir / "plots"
    plt = pyplot()
    rows = read_metrics(run_dir)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps, loss = series(rows, "train/loss")
    ax.plot(steps, loss, lw=0.6, alpha=0.3, color="tab:blue")
    ax.plot(steps, smooth(loss, window_for(len(loss))), lw=1.5, color="tab:blue", label="train/loss (moving average)")
    steps, val = series(rows, "val/loss")
    if steps:  # markers only: evaluations are points, not a curve to read between
        ax.plot(steps, val, "o", ms=5, color="tab:orange", label="val/loss")
    ax.set(xlabel="optimizer update", ylabel="loss (nats per token)", title=f"loss — {run_dir.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    loss_fig = fig
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(*series(rows, "train/lr"), lw=1.5, color="tab:green")
    ax.set(xlabel="optimizer update", ylabel="learning rate", title=f"train/lr — {run_dir.name}")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    with space_for(out):
        files = {
            out / "loss.png": image_bytes(loss_fig, out / "loss.png"),
            out / "lr.png": image_bytes(fig, out / "lr.png"),
        }
        write_files(files)
    return list(files)


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories (holding metrics.jsonl) at or under each path, in a stable order."""
    runs: list[Path] = []
    for p in map(Path, paths):
        found = [p] if (p / "metrics.jsonl").is_file() else sorted(m.parent for m in p.rglob("metrics.jsonl"))
        runs += [r for r in found if r not in runs]
    return runs


def overlay(run_dirs: list[Path], out: Path) -> Path:
    """One image comparing runs, in the format ``out``'s suffix names: train loss (val loss as markers) and lr
    against the update index. ``WriteError`` (or ``DiskFull``) when it cannot be written, and then nothing is."""
    plt = pyplot()
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, (run, label) in enumerate(zip(run_dirs, run_labels(run_dirs), strict=True)):
        rows = read_metrics(run)
        color = f"C{i % 10}"
        steps, loss = series(rows, "train/loss")
        ax_loss.plot(steps, smooth(loss, window_for(len(loss))), lw=1.3, color=color, label=label)
        steps, val = series(rows, "val/loss")
        if steps:  # hollow markers in the run's colour, apart from its train curve
            ax_loss.plot(steps, val, "o", ms=5, mfc="none", mew=1.3, color=color)
        ax_lr.plot(*series(rows, "train/lr"), lw=1.5, color=color, label=label)
    ax_loss.set(xlabel="optimizer update", ylabel="loss (lines: train, moving average; dots: val)", title="loss")
    ax_lr.set(xlabel="optimizer update", ylabel="learning rate", title="train/lr")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
    # below the plots, not over the curves: a sweep's labels are long and many
    handles, labels = ax_loss.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=1, frameon=False)
    write_files({out: image_bytes(fig, out)})
    return out


class WriteError(OSError):
    """A file that cannot be written (nor is any other of those written with it): ``str()`` is one line naming it
    and why."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: cannot be written ({why})")
        self.path = path

    def __str__(self) -> str:
        return self.args[0]


def image_formats() -> list[str]:
    """The suffixes of the image formats matplotlib writes (``.png``, ``.pdf``, ``.svg``, …)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return [f".{f}" for f in sorted(FigureCanvasBase.get_supported_filetypes())]


def image_path_problem(out: Path) -> str | None:
    """Why ``out`` cannot name the image to write (a directory, no suffix, a suffix matplotlib does not write), in
    words naming the formats it can be; None when it can."""
    formats = image_formats()
    if out.is_dir():
        problem = "is a directory"
    elif not out.suffix:
        problem = "has no suffix to name its format"
    elif out.suffix.lower() not in formats:
        problem = f"{out.suffix} is not an image format matplotlib writes"
    else:
        return None
    return f"{out}: {problem}; give an image file ending in one of {', '.join(formats)}"


def check_writable(paths: Iterable[Path]) -> None:
    """``WriteError`` naming the first of ``paths`` that cannot be written: a directory there, a file where a
    folder of its path should be, or a folder the process may not write in."""
    for path in paths:
        if path.is_dir():
            raise WriteError(path, "is a directory")
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise WriteError(path, f"{folder} is not a directory")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise WriteError(path, os.strerror(errno.EACCES))


def write_files(files: dict[Path, bytes]) -> None:
    """Write every file or none: each to a temporary file beside it (making its folders), then each renamed over
    its path; on a failure the temporary files and the folders made are removed, and ``WriteError`` (``DiskFull``
    out of space) names the file."""
    check_writable(files)
    staged: list[tuple[Path, Path]] = []
    made: list[Path] = []
    path = next(iter(files), Path())
    try:
        for path, data in files.items():
            missing = [f for f in (path.parent, *path.parent.parents) if not f.exists()]
            path.parent.mkdir(parents=True, exist_ok=True)
            made += reversed(missing)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            staged.append((tmp, path))
            with space_for(path, len(data)):
                write_file(tmp, data)
        for tmp, path in staged:
            os.replace(tmp, path)
    except OSError as e:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(e, (DiskFull, WriteError)):
            raise
        raise WriteError(path, e.strerror or first_line(e)) from None
    for folder in dict.fromkeys(p.parent for p in files):
        fsync_dir(folder)


def image_bytes(fig, out: Path) -> bytes:
    """``fig`` laid out and drawn in the format of ``out``'s suffix (the figure is freed); a format matplotlib
    cannot draw here (.pgf without LaTeX) is a ``WriteError`` naming ``out``."""
    buffer = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buffer, format=out.suffix[1:].lower(), dpi=110, bbox_inches="tight")  # grows to hold a legend
    except (OSError, RuntimeError, ValueError) as e:
        if getattr(e, "errno", None) == errno.ENOSPC:
            raise  # the disk's: space_for names it
        raise WriteError(out, first_line(e)) from None
    finally:
        pyplot().close(fig)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = CommandLine(prog="python -m training.plots", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run directories or sweep directories")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("compare.png"),
        metavar="IMAGE",
        help="the image to write, in the format its suffix names: .png, .pdf, .svg, … (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    out = args.out
    problem = image_path_problem(out)
    if problem is not None:
        print(f"error: --out {problem}", file=sys.stderr)
        return 2
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"error: {missing[0]} does not exist", file=sys.stderr)
        return 2
    try:
        check_writable([out])
        runs = find_runs(args.paths)
        if not runs:
            print(f"error: no metrics.jsonl under {', '.join(args.paths)}", file=sys.stderr)
            return 2
        overlay(runs, out)
    except WriteError as e:
        print(f"error: --out {e}", file=sys.stderr)
        return 2
    except (AuditError, DiskFull) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(runs)} run(s) → {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
