"""The logger group's plug point: metric sinks. ``Metrics.log(step, metrics)`` fans every record out to
metrics.jsonl and the console (always) and to the sinks ``logger.sinks`` names (W&B, CSV, a fork's own), under
the same metric names in every sink.

A sink is built once per run, on rank 0, from its YAML node (``training.components``) as
``Target(info: RunInfo, **its own keys)``, and follows :class:`Sink`'s protocol. One sink failing never stops
training: its first error is said in one line and the run goes on without it (metrics.jsonl stays complete).

On a terminal a tqdm bar shows step/total, loss, lr, tokens/s and the ETA after every update, and a log line goes
above it every ``trainer.log_every`` updates. Without a terminal (CI, a SLURM log) there is no bar: one plain line
every ``log_every`` updates, and every evaluation. train.log always gets the lines.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.atomic import DiskFull, replace_file, space_for
from scheduling.spec import first_line
from training.config import ConfigError, check_seconds

log = logging.getLogger("train")

TRAIN_METRICS = (
    "train/loss",
    "train/lr",
    "train/grad_norm",
    "train/tokens_per_sec",
    "train/mfu",
    "train/step_time",
    "tokens",
)
VAL_METRICS = ("val/loss", "val/bpb")
METRIC_NAMES = TRAIN_METRICS + VAL_METRICS
# Also logged: a mixture's val/<source>/loss and val/<source>/bpb (data=mixture), Muon's lr (optim=muon), seconds
# spent fetching the batches, peak memory (GPU allocated or CPU RSS).
EXTRA_METRICS = ("train/lr_muon", "train/data_wait", "train/peak_memory_gb")


@dataclass(frozen=True)
class RunInfo:
    """What a sink knows of its run when it is built (before update ``start``)."""

    run_dir: Path
    config: dict[str, Any]  # the run's resolved config, secrets redacted
    settings: dict[str, Any]  # the logger group's keys (logger.*), resolved: shared by every sink
    total_steps: int  # T
    start: int = 0  # the first update this process takes: > 0 when resuming
    state: dict[str, Any] = field(default_factory=dict)  # this sink's state() at the checkpoint this run continues
    checkpoint: dict[str, Any] = field(default_factory=dict)  # that checkpoint's other entries (older layouts)
    group: str | None = None  # a sweep's jobs share it
    name: str | None = None  # this job's name in its sweep


class Sink:
    """A metric sink's protocol: subclass it, or write the same methods.

    - ``log(step, metrics)``: one record — update t's train metrics, or an evaluation's — under the metric names
      of metrics.jsonl; ``step`` is the update index t.
    - ``log_sample(step, prompt, text)``: the end-of-run sample.
    - ``state()``: plain values it needs to continue after a resume (W&B: its run id). Saved in every checkpoint
      and handed back as ``RunInfo.state`` when the run continues in its own directory (not to a branch).
    - ``finish(status, summary)``: the run ended, ``status`` ok | failed | preempted; ``summary``: best/*, the
      parameter count and counters. Close what it holds.
    - ``rewind(step)`` (optional): the run went back to update ``step`` (``trainer.on_spike=rollback``) and logs
      its updates from there again: drop what it holds of them, where it can.
    - ``files``: what it writes in the run directory, for the end-of-run summary.
    - ``check(settings)`` (class method): refuse a bad ``logger.*`` value in one line (``ConfigError``), before
      any work.
    A time budget sets aside ``LOG_SECONDS`` per logged update, ``SAMPLE_SECONDS`` with the end-of-run sample
    and ``TEARDOWN_SECONDS`` at the end for each sink.
    """

    LOG_SECONDS = 0.0
    SAMPLE_SECONDS = 0.0
    TEARDOWN_SECONDS = 0.0
    files: tuple[str, ...] = ()

    @classmethod
    def check(cls, settings: Mapping[str, Any]) -> None:
        pass

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        pass

    def log_sample(self, step: int, prompt: str, text: str) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {}

    def finish(self, status: str, summary: Mapping[str, Any]) -> None:
        pass


# each method of Sink's protocol, and the arguments the run passes it
PROTOCOL = {
    "log": "step, metrics",
    "log_sample": "step, prompt, text",
    "state": "",
    "finish": "status, summary",
    "rewind": "step",
}


def check_sink(sink: Any, where: str) -> None:
    """A plugged sink keeps ``Sink``'s protocol: ``log`` at least, each of its methods taking the arguments the run
    passes. A sink that would receive nothing (a method named otherwise) or fail at the end of the run (a
    ``log_sample`` without ``prompt``) is a one-line error naming ``where`` as it starts, not a silent sink."""
    import inspect

    kind = f"{type(sink).__module__}.{type(sink).__qualname__}"
    if not callable(getattr(sink, "log", None)):
        raise ConfigError(f"{where}: {kind} has no log(step, metrics) method (training.loggers.Sink's protocol)")
    inherited = all(getattr(getattr(sink, m, None), "__func__", None) is getattr(Sink, m, None) for m in PROTOCOL)
    if isinstance(sink, Sink) and inherited:  # each method is Sink's own, which does nothing
        raise ConfigError(f"{where}: {kind} overrides none of Sink's methods ({', '.join(PROTOCOL)}): it gets nothing")
    for name, arguments in PROTOCOL.items():
        method = getattr(sink, name, None)
        if method is None:
            continue
        try:
            inspect.signature(method).bind(*arguments.split(", ") if arguments else ())
        except TypeError:
            raise ConfigError(f"{where}: {kind}.{name} must take ({arguments}), as Sink.{name} does") from None
        except ValueError:  # no signature to read (a builtin): the call itself will say
            pass


class FileSink:
    """A sink that appends to one file. A write that runs out of space raises ``DiskFull`` once; closing after it
    drops the unwritten rest without a second report."""

    def __init__(self, path: Path, fh):
        self.path, self.fh, self.full = path, fh, False

    def write(self, write: Callable[[], Any], needed: int | None = None) -> None:
        try:
            with space_for(self.path, needed):
                write()
        except DiskFull:
            self.full = True
            raise

    def close(self) -> None:
        if self.full:
            with contextlib.suppress(OSError):
                self.fh.close()
            return
        with space_for(self.path):
            self.fh.close()


class JsonlSink(FileSink):
    """metrics.jsonl: one JSON object per logged step. On resume from update k, records of steps ≥ k (written
    by the interrupted run after its last checkpoint) are dropped first, and a fresh start replaces the file of a
    run that left no checkpoint, so the file reads as one run."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        self.cut_and_open(resume_step)

    def rewind(self, step: int) -> None:
        """Drop the records of steps ≥ ``step`` (a rollback), as on resume."""
        self.close()
        self.cut_and_open(step)

    def cut_and_open(self, resume_step: int | None) -> None:
        path = self.path
        if resume_step is not None and path.exists():
            keep = [line for line in path.read_text().splitlines() if 0 <= _step(line) < resume_step]  # not torn
            with space_for(path):
                replace_file(path, "".join(line + "\n" for line in keep))
        super().__init__(path, open(path, "a" if resume_step is not None else "w", buffering=1))

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        # strict JSON: a non-finite value (the NaN loss of a batch trainer.nonfinite=skip skipped) is null
        record = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
        line = json.dumps({"step": step, **record}, allow_nan=False) + "\n"
        self.write(lambda: self.fh.write(line), len(line.encode()))  # line-buffered: a full disk shows here


def _step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -1


class CsvRecord(FileSink):
    """metrics.csv: a column per metric name, one row per logged step. A name first logged mid-run (a mixture's
    sources, an evaluation's metrics) adds its column: the file is written again with the wider header."""

    def __init__(self, path: Path, resume_step: int | None = None):
        rows, names = [], ["step", *METRIC_NAMES, *EXTRA_METRICS]
        if resume_step is not None and path.exists():
            rows, given = read_csv(path)
            rows = [r for r in rows if r["step"].isdecimal() and int(r["step"]) < resume_step]  # not torn
            names += [n for n in given if n not in names]
        super().__init__(path, None)
        self.start(names, rows)

    def start(self, names: list[str], rows: list[dict]) -> None:
        """The file anew — the header ``names``, then ``rows`` — replacing the old at once: a crash or a full disk
        meanwhile leaves the old file whole."""
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
        with space_for(self.path):
            replace_file(self.path, text.getvalue())
        if self.fh is not None:
            self.fh.close()
        self.fh = open(self.path, "a", newline="", buffering=1)
        self.writer = csv.DictWriter(self.fh, fieldnames=names)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        row = {"step": step, **metrics}
        names = list(self.writer.fieldnames)
        new = [name for name in row if name not in names]
        if new:
            self.fh.flush()
            self.write(lambda: self.start(names + new, read_csv(self.path)[0]))
        self.write(lambda: self.writer.writerow(row))


def read_csv(path: Path) -> tuple[list[dict], list[str]]:
    """metrics.csv's rows and header; a last row without its line end (a write cut short) is left out."""
    with open(path, newline="") as fh:
        text = fh.read()
    reader = csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1], newline=""))
    return list(reader), list(reader.fieldnames or [])


class CsvSink(Sink):
    """``logger=csv``: metrics.csv in the run directory, cut back to the resumed update like metrics.jsonl."""

    files = ("metrics.csv",)

    def __init__(self, info: RunInfo):
        self.record = CsvRecord(info.run_dir / "metrics.csv", info.start or None)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.record.log(step, metrics)

    def rewind(self, step: int) -> None:
        self.record.close()
        self.record = CsvRecord(self.record.path, step)

    def finish(self, status: str, summary: Mapping[str, Any]) -> None:
        self.record.close()


def format_line(step: int, total: int, m: Mapping[str, Any]) -> str:
    """One console line for a train or eval record."""
    parts = [f"step {step:>{len(str(total))}}/{total}"]
    if "train/loss" not in m:  # an evaluation's record: what it measured
        if "val/loss" in m:
            parts.append(f"val loss {m['val/loss']:.4f}")
        if "val/bpb" in m:
            parts.append(f"bpb {m['val/bpb']:.4f}")
        shown = {"val/loss", "val/bpb"}
        for k, v in m.items():
            if k in shown or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if k.startswith("val/") and k.count("/") == 2:  # a mixture's source: its bpb (its loss is in the files)
                if k.endswith("/bpb"):
                    parts.append(f"{k[4:-4]} bpb {v:.4f}")
            elif k.startswith("eval/") and k.endswith("/acc"):  # a multiple-choice evaluation
                parts.append(f"{k[5:-4]} acc {v:.3f}")
            elif not k.startswith("eval/") or not k.endswith("/acc_norm"):  # a fork's evaluation: its own names
                parts.append(f"{k} {v:.4g}")
        if len(parts) > 1:
            return " | ".join(parts)
    if "train/loss" in m:
        parts.append(f"loss {m['train/loss']:.4f}")
    if "train/lr" in m:
        parts.append(f"lr {m['train/lr']:.3e}")
    if "train/grad_norm" in m:
        parts.append(f"gnorm {m['train/grad_norm']:.3f}")
    if "train/tokens_per_sec" in m:
        parts.append(f"{m['train/tokens_per_sec'] / 1e3:.1f}k tok/s")
    if m.get("train/mfu") is not None and math.isfinite(m["train/mfu"]):
        parts.append(f"mfu {100 * m['train/mfu']:.1f}%")
    if "train/step_time" in m:
        parts.append(f"{1e3 * m['train/step_time']:.0f} ms")
    return " | ".join(parts)


def on_terminal() -> bool:
    return sys.stderr.isatty()


class ProgressSink:
    """A metric sink for people: the bar (on a terminal) and the periodic log lines."""

    def __init__(self, total_steps: int, start: int = 0, every: int = 10, bar: bool | None = None):
        self.total, self.every = total_steps, max(1, every)
        self.bar = None
        self._redirect = None
        if on_terminal() if bar is None else bar:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.bar = tqdm(total=total_steps, initial=start, unit="update", dynamic_ncols=True, leave=False)
            self._redirect = logging_redirect_tqdm([logging.getLogger()])  # log lines go above the bar
            self._redirect.__enter__()

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        if "train/loss" in metrics and self.bar is not None:
            self.bar.update(step + 1 - self.bar.n)
            postfix = {"loss": f"{metrics['train/loss']:.4f}", "lr": f"{metrics['train/lr']:.2e}"}
            if "train/tokens_per_sec" in metrics:
                postfix["tok/s"] = f"{metrics['train/tokens_per_sec'] / 1e3:.1f}k"
            self.bar.set_postfix(postfix, refresh=False)
        if "train/loss" not in metrics or step % self.every == 0 or step == self.total - 1:
            log.info(format_line(step, self.total, metrics))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self._redirect.__exit__(None, None, None)
            self.bar = None


def start_summary(**facts: Any) -> str:
    """The one-screen block printed before update 0 (or the resumed update)."""
    width = max(len(k) for k in facts)
    lines = ["-" * 78] + [f"{k.replace('_', ' '):<{width}}  {v}" for k, v in facts.items()] + ["-" * 78]
    return "\n".join(lines)


def human(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:g}"


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Metrics:
    """Fan-out to metrics.jsonl and the console (``core``: their failures, a full disk, stop the run) and to the
    plugged sinks (``sinks``, by name: a failure is said once and the sink dropped); ``summary`` keeps the
    values the end-of-run report and every sink's summary show."""

    def __init__(self, core: list[Any], sinks: Mapping[str, Sink] | None = None):
        self.core, self.sinks = core, dict(sinks or {})
        self.dropped: dict[str, Sink] = {}  # failed mid-run: still finished at the end, their runs closed
        self.summary: dict[str, Any] = {}
        self.validated = False  # a val/loss was logged, finite or not

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        metrics = {k: v for k, v in metrics.items() if v is not None}
        for sink in self.core:
            sink.log(step, metrics)
        self.each("log", f"at update {step}", step, metrics)
        self.validated = self.validated or "val/loss" in metrics
        if "val/loss" in metrics and metrics["val/loss"] < self.summary.get("best/val_loss", math.inf):
            self.summary["best/val_loss"] = metrics["val/loss"]
            self.summary["best/val_bpb"] = metrics.get("val/bpb")
            self.summary["best/step"] = step

    def log_sample(self, step: int, prompt: str, text: str) -> None:
        self.each("log_sample", "logging the sample", step, prompt, text)

    def rewind(self, step: int, summary: Mapping[str, Any] | None = None) -> None:
        """The run went back to update ``step``: metrics.jsonl and the sinks that can drop what they hold from it
        on, and the summary back to ``summary`` (what the checkpoint at ``step`` saved; without it, a best
        validation from ``step`` on is forgotten)."""
        for sink in self.core:
            if hasattr(sink, "rewind"):
                sink.rewind(step)
        self.each("rewind", f"going back to update {step}", step)
        if summary is not None:
            self.summary = dict(summary)
        elif self.summary.get("best/step", -1) >= step:
            for key in ("best/val_loss", "best/val_bpb", "best/step"):
                self.summary.pop(key, None)

    def each(self, method: str, what: str, *args: Any, check: Callable[[Any], Any] | None = None) -> dict[str, Any]:
        """``sink.method(*args)`` for every plugged sink, by name (what ``check`` makes of each result), each with
        its own copy of a dict argument (one that edits its metrics leaves the others' and the summary as they
        were); one that fails, or whose result ``check`` refuses, is named once and dropped."""
        results = {}
        for name, sink in list(self.sinks.items()):
            call = getattr(sink, method, None)
            if call is None:
                continue
            try:
                own = [dict(a) if isinstance(a, dict) else a for a in args]
                results[name] = call(*own) if check is None else check(call(*own))
            except Exception as e:
                self.dropped[name] = self.sinks.pop(name)
                log.warning(
                    "logger %s failed %s (%s: %s); training goes on without it, metrics.jsonl stays complete",
                    name,
                    what,
                    type(e).__name__,
                    first_line(e),
                )
        return results

    def states(self) -> dict[str, dict[str, Any]]:
        """Each plugged sink's ``state()``, for the checkpoint (loaded back with ``weights_only``, so plain values)."""
        return self.each("state", "giving its state to the checkpoint", check=plain_state)

    def files(self) -> list[str]:
        return ["metrics.jsonl", *(f for sink in self.sinks.values() for f in getattr(sink, "files", ()))]

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to a counter of the summary (batches skipped as non-finite, fp16 overflows)."""
        if n:
            self.summary[key] = self.summary.get(key, 0) + n

    def close(self, status: str = "ok") -> None:
        """``status``: ok | failed | preempted (stopped early with a checkpoint to resume from). Every sink is
        finished even when one fails — one dropped mid-run too, quietly: its failure was said — and a core sink's
        failure (a full disk) is raised after."""
        dropped, self.dropped = list(self.dropped.values()), {}  # before: one whose finish fails is not called twice
        self.each("finish", "closing its run", status, self.summary)
        for sink in dropped:
            with contextlib.suppress(Exception):
                sink.finish(status, dict(self.summary))
        errors = []
        for sink in self.core:
            try:
                sink.close()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]


def plain_state(state: Any) -> dict[str, Any]:
    """A sink's ``state()`` as a checkpoint keeps it: a dict of JSON's values, else a TypeError saying so."""
    try:
        if isinstance(state, dict) and json.loads(json.dumps(state)) == state:
            return state
    except (TypeError, ValueError):
        pass
    raise TypeError(f"state() must return a dict of str, int, float, bool, None, list and dict, not {state!r:.100}")


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """A nested config as ``group.key`` → a value every tracker stores: lists and null as their YAML text."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    return flat


def config_yaml(config: Mapping[str, Any]) -> str:
    """The resolved config as YAML text, for a tracker's text entry or artifact."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(dict(config)))


def check_tracking(settings: Mapping[str, Any]) -> None:
    """The keys the experiment trackers share (conf/logger/tracking.yaml), each in one line when bad."""

    def quoted(key: str, value: Any) -> str:  # Hydra reads logger.group=2024 as a number
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return f"; a number quoted: 'logger.{key}=\"{value}\"'" if number else ""

    project = settings.get("project")
    if not isinstance(project, str) or not project.strip():
        what = f"a name (W&B's project, MLflow's experiment{quoted('project', project)})"
        raise ConfigError("logger.project", what, project)
    for key in ("group", "run_name", "notes"):
        value = settings.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"logger.{key}", f"null or a string{quoted(key, value)}", value)
    tags = settings.get("tags")
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise ConfigError("logger.tags", "a list of names ('logger.tags=[baseline,lr-sweep]')", tags)
    check_seconds(settings.get("init_timeout"), "logger.init_timeout")


def require(package: str, extra: str, chosen: str) -> None:
    """A sink's package is an optional dependency: its absence is one line naming the extra that installs it."""
    import importlib

    try:
        importlib.import_module(package)
    except ImportError:
        raise ConfigError(f'{chosen} needs the {package} package: pip install -e ".[{extra}]"') from None
