"""Audit a run's learning rate: ``python -m scheduling.audit PATH [OVERRIDE…] [--tolerance 1e-9]``

Recomputes lr(t) = peak · λ(t) from the schedule the run was given and compares it with the lr it logged for every
update t. PATH is one of:

- a run directory of this template: its ``metrics.jsonl`` (``train/lr`` at step t is the lr update t used) and
  ``schedule.json`` (the schedule of each start and resume, with its T, warmup, floor and peak, and the schedule
  changes ``trainer.allow_schedule_change`` let through); without ``schedule.json``, Hydra's record
  ``.hydra/overrides.yaml`` composed with conf/, and T from ``trainer.max_steps`` or ``budget.json``; with neither,
  the overrides;
- a W&B offline run directory (``wandb/offline-run-…``, or its ``run-*.wandb`` file): the history's ``train/lr``
  (or ``train/learning_rate``, ``learning_rate``, ``lr``) at W&B step t; the schedule from the overrides, or from
  the run's own config when it was made by this template (a budget's T from its summary, or ``trainer.max_steps``
  given alone);
- a Hugging Face Trainer ``trainer_state.json`` (or the checkpoint folder holding it): ``log_history``'s
  ``learning_rate`` logged at ``step`` s is the lr that update s − 1 used; T defaults to its ``max_steps``.

OVERRIDEs describe the schedule of a run made elsewhere, as train.py takes them (``schedule=cosine
schedule.warmup_steps=100 schedule.min_lr_ratio=0 optim.lr=5e-5 trainer.max_steps=1000``); what they leave out
is conf/'s default. Prints the largest relative deviation and the first update that deviates, with what the
deviation looks like (a step per micro-batch, a warmup off by one, a jump at a resume, a decay that climbs back
after T). Exit code 0: every update within the tolerance; 1: a deviation; 2: bad input (one ``error:`` line).
The readers also return the validation and training losses each run logged (``scheduling.forecast`` fits them).
Imports no torch and nothing from training/.
"""

from __future__ import annotations

import json
import struct
import sys
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduling.spec import (
    MAX_UPDATES,
    CommandLine,
    Schedule,
    SettingError,
    compose,
    first_line,
    is_int,
    is_number,
    schedule_from_config,
)

TOLERANCE = 1e-9
LR_KEYS = ("train/lr", "train/learning_rate", "learning_rate", "lr")  # a W&B history's lr, by preference
# A W&B history's losses, by preference: this template's names, then transformers' W&B callback's.
LOSS_KEYS = {"val": ("val/loss", "eval/loss"), "train": ("train/loss", "loss")}
MAX_STEPS_PER_UPDATE = 64  # how many scheduler.step() per update the diagnosis looks for


class AuditError(SettingError):
    """A path or override the audit cannot read: one line naming it."""


class DamagedRecord(AuditError):
    """A run's schedule.json that cannot be read: where the schedule is not required, said in a warning."""


@dataclass
class Segment:
    """The schedule in force from update ``start`` on (a run's start or resume)."""

    start: int
    schedule: Schedule
    peak_lr: float
    resumed_from: str | None = None

    def lr(self, t: int) -> float:
        return self.peak_lr * self.schedule(t)


@dataclass
class Logged:
    """What a run logged: the lr each update t used, its losses, and where they came from.

    ``losses["val"][s]`` and ``losses["train"][s]`` are losses after s updates: the validation loss evaluated
    before update s, the training loss of update s's batch (a Trainer's, averaged over its logging window, at the
    window's last update). ``segments`` is empty where the schedule is unknown and was not required."""

    source: str
    lrs: dict[int, float]
    segments: list[Segment]
    every_update: bool = True  # a run of this template logs every update; others log every logging_steps
    losses: dict[str, dict[int, float]] = field(default_factory=dict)
    diverged: dict[str, int] = field(default_factory=dict)  # "val" when its last record is not finite: its step


@dataclass
class Finding:
    checked: int
    first: int | None = None  # the first update whose lr deviates
    worst: int | None = None  # the update with the largest deviation
    largest: float = 0.0
    missing: list[tuple[int, int]] = field(default_factory=list)  # ranges of updates never logged
    diagnosis: str = ""

    @property
    def ok(self) -> bool:
        return self.first is None and not self.missing


def relative(logged: float, expected: float, peak: float) -> float:
    """|logged − expected| relative to the expected lr (to the peak where the expected lr is 0)."""
    scale = abs(expected) if expected != 0 else abs(peak)
    return abs(logged - expected) / scale if scale else abs(logged)


def segment_at(segments: list[Segment], t: int) -> Segment:
    return segments[max(0, bisect_right([s.start for s in segments], t) - 1)]


def expected_lr(segments: list[Segment], t: int) -> float:
    return segment_at(segments, t).lr(t)


def audit(logged: Logged, tolerance: float = TOLERANCE) -> Finding:
    """Compare every logged lr with the schedule's; name the first and the largest deviation, and diagnose."""
    steps = sorted(logged.lrs)
    finding = Finding(checked=len(steps))
    for t in steps:
        seg = segment_at(logged.segments, t)
        dev = relative(logged.lrs[t], seg.lr(t), seg.peak_lr)
        if not dev <= tolerance:  # NaN deviates too
            finding.first = t if finding.first is None else finding.first
            if not dev <= finding.largest:
                finding.largest, finding.worst = dev, t
    if logged.every_update and steps:  # a run of this template logs every update it takes
        have = set(steps)
        finding.missing = ranges([t for t in range(steps[0], steps[-1] + 1) if t not in have])
    if finding.first is not None:
        finding.diagnosis = diagnose(logged, finding.first, tolerance)
    elif finding.missing:
        a, b = finding.missing[0]
        finding.diagnosis = (
            f"the updates jumped from {a - 1} to {b + 1}: updates {a}–{b} were never taken "
            "(a resume that skipped them?)"
        )
    return finding


def ranges(values: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in values:
        if out and out[-1][1] == v - 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


def diagnose(logged: Logged, first: int, tolerance: float) -> str:
    """What the deviation looks like, tried from the most specific explanation to the least."""
    lrs, segments = logged.lrs, logged.segments
    steps = sorted(lrs)

    def close(t: int, value: float) -> bool:
        return relative(value, expected_lr(segments, t), segment_at(segments, t).peak_lr) <= tolerance

    for k in range(2, MAX_STEPS_PER_UPDATE + 1):
        if all(close(k * t, lrs[t]) for t in steps):
            return (
                f"update t logged the schedule's lr of update {k}·t: the scheduler stepped {k} times per update "
                f"(once per micro-batch with {k} micro-batches?) instead of once per optimizer update"
            )

    seg = segment_at(segments, first)
    T = seg.schedule.total_steps
    later = [t for t in steps if t >= first]
    if T is not None and first > T and "min_lr_ratio" in seg.schedule.params:
        floor = seg.peak_lr * seg.schedule.params["min_lr_ratio"]
        above = [t for t in later if lrs[t] > floor * (1 + tolerance)]
        if above:
            top = max(above, key=lambda t: lrs[t])
            return (
                f"past T = {T} the lr left the floor {floor:.6g} and climbed back (to {lrs[top]:.6g} at update "
                f"{top}): a periodic decay (torch's CosineAnnealingLR, transformers' cosine) used past its end"
            )

    shift = find_shift(lrs, later, segments, tolerance)
    off = [t for t in later if not close(t, lrs[t])]
    if shift is None and off[-1] != later[-1]:  # the deviation did not last: the schedule holds again after it
        shown = ", ".join(map(str, off[:5])) + (", …" if len(off) > 5 else "")
        return (
            f"{len(off)} of the {len(later)} updates logged from {first} on deviate ({shown}) and the lr follows the "
            f"schedule again after update {off[-1]}: an lr set by other code at those updates, not another schedule"
        )
    if shift is None:
        return (
            f"the logged lr follows another schedule from update {first} on (not a shift, a multiple of the "
            "update index or a climb after T): compare the run's schedule settings with the ones audited"
        )
    if abs(shift) == 1 and first == steps[0] and first <= seg.schedule.warmup_steps:
        how = "the scheduler stepped once before the first update" if shift > 0 else "the scheduler is one step late"
        return (
            f"the warmup is off by one: update t logged the schedule's lr of update t {shift:+d} ({how}, or "
            "the lr was read after the update's scheduler.step())"
        )
    # a resume (a segment's start, or the first update a resumed run directory logged) where the shift begins
    resumes = [r for r in {s.start for s in segments} | {steps[0]} if 0 < r <= first]
    for r in sorted(resumes, reverse=True):
        if find_shift(lrs, [t for t in steps if t >= r], segments, tolerance, only=shift) is not None:
            return (
                f"a resume that jumped: from the resume at update {r} on, update t logged the schedule's lr of "
                f"update t {shift:+d} (the restored schedule index is {shift:+d} off the update index)"
            )
    return f"from update {first} on, update t logged the schedule's lr of update t {shift:+d}"


def find_shift(
    lrs: dict[int, float], steps: list[int], segments: list[Segment], tolerance: float, only: int | None = None
) -> int | None:
    """The constant j ≠ 0 (``only``, or the closest to 0 of all) with lrs[t] = lr(t + j) for every t in
    ``steps``, else None."""
    t0 = steps[0]
    seg = segment_at(segments, t0)
    end = max((s.schedule.total_steps or t0) for s in segments) + max(steps) + 2
    candidates = [only] if only is not None else sorted((j for j in range(-t0, end) if j != 0), key=abs)[:20_000]
    # the updates that deviate first: a wrong j fails there at once, not after a long stretch where λ is flat
    deviating = [t for t in steps if relative(lrs[t], expected_lr(segments, t), seg.peak_lr) > tolerance][:64]
    probe = (t0, *deviating, *steps)
    for j in candidates:
        if all(relative(lrs[t], expected_lr(segments, t + j), seg.peak_lr) <= tolerance for t in probe):
            return j
    return None


def report(logged: Logged, finding: Finding, tolerance: float) -> str:
    steps = sorted(logged.lrs)
    span = f"updates {steps[0]}–{steps[-1]}" if steps else "no update"
    parts = []
    for s in logged.segments:
        T = s.schedule.total_steps
        what = f"{s.schedule.name} (peak {s.peak_lr:.6g}, warmup {s.schedule.warmup_steps}"
        what += f", T = {T})" if T is not None else ")"
        parts.append(what + (f" from update {s.start}" if s.start else ""))
    lines = [f"{logged.source}: {finding.checked} logged lrs ({span}) against {'; then '.join(parts)}"]
    if finding.ok:
        lines.append(
            f"largest relative deviation {finding.largest:.3g}: every logged lr is the schedule's within {tolerance:g}"
        )
        return "\n".join(lines)
    if finding.first is not None:
        t = finding.first
        want = expected_lr(logged.segments, t)
        lines.append(f"largest relative deviation {finding.largest:.3g} at update {finding.worst}")
        lines.append(f"first deviating update {t}: logged lr {logged.lrs[t]:.9g}, the schedule gives {want:.9g}")
    for a, b in finding.missing[:3]:
        lines.append(f"updates {a}–{b} were never logged" if b > a else f"update {a} was never logged")
    lines.append(f"looks like: {finding.diagnosis}")
    return "\n".join(lines)


# --- reading runs ---------------------------------------------------------------------------------------------


def schedule_of(group: dict[str, Any], total_steps: Any, peak_lr: Any) -> Schedule:
    if not is_int(total_steps):
        raise AuditError("trainer.max_steps", "an integer T (the run's own is not recorded; give it)", total_steps)
    return schedule_from_config(group, total_steps, peak_lr)


def composed(overrides: list[str]):
    """The config conf/ composes with these overrides (as train.py would), resolved."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose(overrides), resolve=True)


def from_overrides(overrides: list[str], total_steps: int | None = None) -> list[Segment]:
    """One segment from update 0: the schedule the overrides describe; T from them, else ``total_steps``."""
    cfg = composed(overrides)
    given_T = any(o.split("=")[0].lstrip("+~") == "trainer.max_steps" for o in overrides)
    T = cfg["trainer"]["max_steps"] if given_T or total_steps is None else total_steps
    return [Segment(0, schedule_of(cfg["schedule"], T, cfg["optim"]["lr"]), float(cfg["optim"]["lr"]))]


def read_jsonl(path: Path) -> list[dict]:
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")  # a damaged line is skipped below
    except OSError as e:
        raise AuditError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    rows, damaged = [], []
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            if number < len(lines):  # the last: a line cut short by a killed process; another is damage
                damaged.append(number)
            continue
        if isinstance(row, dict):
            rows.append(row)
    if damaged:
        shown = ", ".join(map(str, damaged[:5])) + (", …" if len(damaged) > 5 else "")
        print(f"warning: {path}: line {shown} cannot be read as JSON; left out", file=sys.stderr)
    return rows


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise AuditError(f"{path}: cannot be read as JSON ({str(e).splitlines()[0]})") from None


def number(value: Any, where: str) -> float | None:
    """A logged value, None when it is not finite (read as not logged: metrics.jsonl writes such a value null);
    anything but a number means a record of another shape, named by ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AuditError(f"{where} is not a number, got {value!r}")
    return float(value) if is_number(value) else None  # an int past float's range is as infinite as 1e400


def finite(values: dict[int, float | None]) -> dict[int, float]:
    """The steps whose value ``number`` read as finite."""
    return {t: v for t, v in values.items() if v is not None}


def logged_values(rows: list[dict], key: str, source: Path) -> dict[int, float]:
    """``{step: value}`` of the rows that hold a finite ``key``; a step that is not an update index (0, 1, …: a
    negative one, a string) is a file of another kind, named in one line."""
    for r in rows:
        if r.get(key) is not None and "step" in r and not (is_int(r["step"]) and r["step"] >= 0):
            raise AuditError(f"{source}: step {r['step']!r} is not an update index (0, 1, …)")
    return finite(
        {
            r["step"]: number(r[key], f"{source}: step {r['step']}: {key}")
            for r in rows
            if is_int(r.get("step")) and r.get(key) is not None
        }
    )


def recorded_segments(record: Path) -> list[Segment]:
    """The segments of a run directory's schedule.json; anything else in it is one line naming the file."""
    try:
        try:
            segments = read_json(record)["segments"]
        except AuditError as e:
            raise DamagedRecord(str(e)) from None
        if not isinstance(segments, list) or not segments:
            raise ValueError("no segment")
        found: list[Segment] = []
        for s in segments:
            start = s["from_update"]
            if not is_int(start) or start < (found[-1].start + 1 if found else 0):
                raise ValueError(f"from_update {start!r} is not an update index after the segment before")
            try:
                schedule = schedule_of(s["schedule"], s["total_steps"], s["peak_lr"])
            except SettingError as e:  # the schedule's own line (a knots file since moved), named as in the file
                raise AuditError(f"{record}: {e}") from None
            found.append(Segment(start, schedule, float(s["peak_lr"]), s.get("resumed_from")))
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, AuditError):
            raise
        raise DamagedRecord(f"{record}: not a schedule record train.py writes ({type(e).__name__}: {e})") from None
    return found


def saved_overrides(saved: Path) -> list[str]:
    """Hydra's record of a run's command-line overrides (``.hydra/overrides.yaml``): a list of strings."""
    import yaml

    try:
        overrides = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise AuditError(f"{saved}: cannot be read as YAML ({first_line(e)})") from None
    if overrides is None:
        return []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise AuditError(f"{saved}: not Hydra's list of overrides (a YAML list of key=value strings)")
    return overrides


def read_run_dir(run_dir: Path, overrides: list[str], schedule_required: bool = True) -> Logged:
    metrics = run_dir / "metrics.jsonl"
    rows = read_jsonl(metrics)
    losses = {"val": logged_values(rows, "val/loss", metrics), "train": logged_values(rows, "train/loss", metrics)}

    def segments() -> list[Segment]:
        record = run_dir / "schedule.json"
        if record.is_file() and not overrides:
            return recorded_segments(record)
        saved = run_dir / ".hydra" / "overrides.yaml"
        if not saved.is_file() and not overrides:  # conf/'s defaults would stand in for a schedule never recorded
            raise AuditError(
                f"{run_dir}: neither schedule.json nor .hydra/overrides.yaml records the run's schedule; give it "
                "as overrides (schedule=… optim.lr=… trainer.max_steps=…)"
            )
        base = saved_overrides(saved) if saved.is_file() else []
        budget = run_dir / "budget.json"
        record = read_json(budget) if budget.is_file() else {}
        T = record.get("total_steps") if isinstance(record, dict) else None
        return from_overrides(base + overrides, T)

    lrs = logged_values(rows, "train/lr", metrics)
    diverged = {}  # the validation loss alone: a training loss is null where trainer.nonfinite=skip skipped a batch
    last = next((r for r in reversed(rows) if "val/loss" in r and is_int(r.get("step"))), None)
    if last is not None and not is_number(last["val/loss"]):  # written null: NaN or infinite
        diverged["val"] = last["step"]
    schedule = known_schedule(segments, schedule_required)
    return Logged(f"{run_dir}", lrs, schedule, losses=losses, diverged=diverged)


def known_schedule(segments: Callable[[], list[Segment]], required: bool) -> list[Segment]:
    """The run's schedule; where it is not required, none (``[]``) when it cannot be known (not recorded, not
    composable, a knots file since moved): a forecast needs only what the run logged."""
    if required:
        return segments()
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return segments()
    except DamagedRecord as e:  # not an unrecorded schedule or a knots file since moved, which are no news
        print(f"warning: {e}: going by the learning rates the run logged alone", file=sys.stderr)
        return []
    except (SettingError, HydraException, OmegaConfBaseException):
        return []


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a W&B run file (``run-<id>.wandb``): a 7-byte header (``:W&B``, 0xBEE1, version), then a
    LevelDB-style log of 32 KiB blocks whose records (7-byte header: crc32, length, type 1 full, 2 first,
    3 middle, 4 last) carry protobuf ``Record``s."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if data[:4] != b":W&B" or len(data) < 7 or struct.unpack("<H", data[4:6])[0] != 0xBEE1:
        raise AuditError(f"{path}: not a W&B run file")
    block, pos, pending = 32 * 1024, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # no room for a header: the rest of the block is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += block - pos % block
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if len(chunk) < length:  # the last record, cut short by a killed process: the run ends before it
            return
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(pending)
            except DecodeError:  # a damaged record: what came before it is the run
                return
            pending = b""
            yield record


def wandb_value(item: Any, source: Path, where: str) -> Any:
    """A W&B record item's value, JSON-encoded; an item that is not JSON is a damaged run file, named in one line."""
    try:
        return json.loads(item.value_json)
    except (ValueError, RecursionError) as e:
        name = item.key or "/".join(item.nested_key)
        raise AuditError(f"{source}: {where} {name!r} is not JSON ({first_line(e)}): a damaged run file") from None


def read_wandb(path: Path, overrides: list[str], schedule_required: bool = True) -> Logged:
    files = [path] if path.is_file() else sorted(path.glob("run-*.wandb"))
    if not files:
        raise AuditError(f"{path}: no run-*.wandb file (a W&B offline run directory holds one)")
    rows, config, summary = [], {}, {}

    def values(items: Any, where: str) -> dict[str, Any]:
        return {i.key or "/".join(i.nested_key): wandb_value(i, files[0], where) for i in items}

    for r in wandb_records(files[0]):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            rows.append(values(r.history.item, "a history record's"))
        elif kind == "run" and r.run.config.update:
            config = {i.key: wandb_value(i, files[0], "the config's") for i in r.run.config.update}
        elif kind == "summary":
            summary.update(values(r.summary.update, "the summary's"))
    key = next((k for k in LR_KEYS if any(k in row for row in rows)), None)
    if key is None:
        raise AuditError(f"{files[0]}: its history logs no learning rate (looked for {', '.join(LR_KEYS)})")
    hf = "train/global_step" in {k for row in rows for k in row}  # transformers' W&B callback

    def history(name: str, shift: int = 0) -> dict[int, float]:
        """``{t: value}``: at W&B step t for this template's runs, at global step s + ``shift`` for a Trainer's."""
        out = {}
        counter = "train/global_step" if hf else "_step"
        for row in rows:
            step = row.get(counter)
            if row.get(name) is not None and isinstance(step, (int, float)) and not isinstance(step, bool):
                # checked before int(): int(inf) overflows and int(nan) raises
                if not (is_number(step) and 0 <= step <= MAX_UPDATES and step == int(step)):
                    raise AuditError(
                        f"{files[0]}: a history record's {counter} {step!r} is not an update index (0, 1, …)"
                    )
                out[int(step) + shift if hf else int(step)] = number(row[name], f"{files[0]}: step {step}: {name}")
        return finite(out)

    def first(names: tuple[str, ...], shift: int = 0) -> dict[int, float]:
        return next((found for found in (history(n, shift) for n in names) if found), {})

    # a Trainer logs at global step s (after s updates) the lr of update s − 1 and the training loss of its
    # logging window, which ends at update s − 1; its evaluation comes after s updates
    lrs = history(key, shift=-1)
    losses = {"val": first(LOSS_KEYS["val"]), "train": first(LOSS_KEYS["train"], shift=-1)}

    own = {"schedule", "optim", "trainer"} <= set(config)
    only_T = [o.split("=", 1)[1] for o in overrides if o.split("=")[0] == "trainer.max_steps"]

    def segments() -> list[Segment]:
        if overrides and not (own and len(only_T) == len(overrides) == 1):
            return from_overrides(overrides)
        if not own:
            raise AuditError(
                f"{files[0]}: the run's config does not describe a schedule; give it as overrides "
                "(schedule=… optim.lr=… trainer.max_steps=…)"
            )
        # a budget's T (trainer.max_steps null): the run's summary, else trainer.max_steps=N alone beside its config
        T = config["trainer"].get("max_steps") or summary.get("budget/total_steps")
        if only_T:
            T = int(only_T[0]) if only_T[0].isdigit() else only_T[0]
        if T is None:
            raise AuditError(
                f"{files[0]}: the run's T is not recorded (a budget, and no budget/total_steps in its summary); "
                "give it as trainer.max_steps=N"
            )
        peak = config["optim"]["lr"]
        return [Segment(0, schedule_of(config["schedule"], T, peak), float(peak))]

    segments = known_schedule(segments, schedule_required)
    return Logged(f"{files[0]}", lrs, segments, every_update=not hf, losses=losses)


def read_trainer_state(path: Path, overrides: list[str], schedule_required: bool = True) -> Logged:
    try:
        state = json.loads(path.read_bytes())
        history = state["log_history"]
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise AuditError(f"{path}: not a Hugging Face trainer_state.json (no log_history list)") from None

    def logged(key: str, shift: int) -> dict[int, float]:
        out = {}
        for h in history:
            if h.get(key) is not None and "step" in h:
                step = h["step"]
                if not is_int(step):
                    raise AuditError(f"{path}: log_history: step {step!r} is not an update count")
                out[step + shift] = number(h[key], f"{path}: log_history: step {step}: {key}")
        return finite(out)

    def segments() -> list[Segment]:
        given = {o.split("=")[0].lstrip("+~") for o in overrides}
        if "optim.lr" not in given:
            raise AuditError(f"{path}: trainer_state.json does not record the peak lr; give it as optim.lr=…")
        if state.get("max_steps") is None and "trainer.max_steps" not in given:
            raise AuditError(f"{path}: trainer_state.json does not record max_steps; give T as trainer.max_steps=…")
        return from_overrides(overrides, state.get("max_steps"))

    # transformers logs, at global step s (after s updates), the lr that update s − 1 used and the mean training
    # loss of the logging window that ends at update s − 1; its evaluations come after s updates
    lrs, losses = logged("learning_rate", -1), {"val": logged("eval_loss", 0), "train": logged("loss", -1)}
    segments = known_schedule(segments, schedule_required)
    return Logged(f"{path}", lrs, segments, every_update=False, losses=losses)


def read(path: Path, overrides: list[str], schedule_required: bool = True) -> Logged:
    """What the run at ``path`` logged, and its schedule (from its records and ``overrides``); with
    ``schedule_required=False`` an unknown schedule is no error (``segments`` is then empty)."""
    if not path.exists():
        raise AuditError(f"{path} does not exist")
    if path.is_dir() and (path / "metrics.jsonl").is_file():
        return read_run_dir(path, overrides, schedule_required)
    if path.name == "trainer_state.json" or (path.is_dir() and (path / "trainer_state.json").is_file()):
        state = path if path.is_file() else path / "trainer_state.json"
        return read_trainer_state(state, overrides, schedule_required)
    if path.suffix == ".wandb" or (path.is_dir() and any(path.glob("run-*.wandb"))):
        return read_wandb(path, overrides, schedule_required)
    raise AuditError(
        f"{path}: not a run directory (metrics.jsonl), a W&B offline run (run-*.wandb) or a trainer_state.json"
    )


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = CommandLine(
        prog="python -m scheduling.audit",
        description="Compare the lr a run logged for every update with peak · λ(t) of the schedule it was given.",
        epilog="exit codes: 0 every update within the tolerance, 1 a deviation, 2 bad input (docs/instruments.md)",
    )
    parser.add_argument("path", type=Path, help="a run directory, a W&B offline run or a trainer_state.json")
    parser.add_argument(
        "overrides", nargs="*", default=[], help="the schedule of a run made elsewhere, as train.py overrides"
    )
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="relative (default: %(default)g)")
    args = parser.parse_args(argv)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not args.tolerance >= 0 or args.tolerance == float("inf"):  # NaN fails the first test
        print(f"error: --tolerance must be a relative deviation ≥ 0, got {args.tolerance:g}", file=sys.stderr)
        return 2
    try:
        logged = read(args.path, args.overrides)
    except (SettingError, HydraException, OmegaConfBaseException) as e:
        message = " ".join(str(e).split()).split(" Config search path:")[0]
        print(f"error: {message}", file=sys.stderr)
        return 2
    if not logged.lrs:
        print(f"error: {logged.source}: no learning rate was logged", file=sys.stderr)
        return 2
    finding = audit(logged, args.tolerance)
    out(report(logged, finding, args.tolerance))
    return 0 if finding.ok else 1


if __name__ == "__main__":
    sys.exit(main())
