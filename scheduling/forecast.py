"""Forecast a run's loss under any schedule from runs already made, and find the schedule the forecast says is best.

    python -m scheduling.forecast fit RUN [RUN…] [--out fit.json] [--loss auto|val|train]
    python -m scheduling.forecast predict fit.json [OVERRIDE…] [--against RUN…] [--out forecast]
    python -m scheduling.forecast optimize fit.json [OVERRIDE…] [--knots 100] [--out knots.csv]

Two laws give the loss L(s) after s updates as a function of the lrs η_0 … η_{s−1} those updates used:

- the multi-power law (Luo et al., ICLR 2025), seven parameters:
  ``L(s) = L0 + A·S(s)^(−α) − B·Σ_k d_k·G(η_k^(−γ)·(S(s) − S(k)))``, ``G(x) = 1 − (C·x + 1)^(−β)``;
- the lr annealing law (Tissue et al. 2024), four, with ``λ = 0.999``:
  ``L(s) = L0 + A·S(s)^(−α) − C·S2(s)``, ``S2(s) = Σ_{i<s} m_i``, ``m_i = λ·m_{i−1} + d_i``,
  summed here in closed form: ``S2(s) = Σ_k d_k·(1 − λ^(s−k))/(1 − λ)``;

with ``S(s) = η_0 + … + η_{s−1}`` the area under the lr (the warmup's included), and ``d_k = η_{k−1} − η_k`` the
drop at update k from the warmup's end W on (``d_W`` is the peak − η_W). The lrs are divided by the fit's
``lr_scale`` (its runs' highest peak). The sums over k run over groups of drops: every drop of a step schedule is
its own group, and a smooth decay's drops are pooled into groups of at most 1/``MAX_GROUPS`` of the drop and of
the run's length, split at each step the loss is wanted at, so a run of 100 000 updates costs what one of 1 000
does.

``fit`` reads runs as ``python -m scheduling.audit`` does (run directories, W&B offline runs, trainer_state.json),
fits both laws to their losses after the warmup — the validation loss where every run has ``MIN_VAL_POINTS`` of
them, else the training loss averaged over windows — by a Huber loss on log L (LBFGS from a few starts), and
writes fit.json. ``predict`` draws and tabulates the forecast of the schedules the overrides describe (as
``train.py`` and ``python -m scheduling.plot`` take them); ``--against RUN`` adds the run's real curve and prints
the error (without overrides, each ``--against`` run is forecast on its own schedule). ``optimize`` finds the
schedule with the lowest forecast final loss among those with the overrides' T, peak, warmup and floor that never
increase after the warmup, and writes it as knots for ``schedule=tabulated``.
Bad input is one ``error:`` line and exit code 2, with nothing written; so is a forecast that is no loss (not
finite, or ≤ 0), and a peak lr or T beyond the fit's runs (``fit.json``'s ``runs``) is forecast with a warning line.
Imports nothing from training/.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import io
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scheduling import audit
from scheduling.spec import (
    CommandLine,
    Schedule,
    SettingError,
    at_least,
    check_knots,
    file_path,
    is_int,
    is_number,
)

LAWS = {"multi_power": ("L0", "A", "alpha", "B", "C", "beta", "gamma"), "annealing": ("L0", "A", "alpha", "C")}
LAW_NAMES = {"multi_power": "multi-power", "annealing": "annealing"}
ANNEALING_DECAY = 0.999  # λ of the annealing law's momentum, as its authors fix it
MAX_GROUPS = 500  # the drops of a smooth decay are pooled into ~this many groups by lr and by time (each)
MIN_POINTS = 5  # losses after the warmup a run must have to be fitted
MIN_VAL_POINTS = 10  # validation losses after the warmup every run must have for the fit to use them
DECAYED = 0.9  # a fit needs a run whose lr falls below this fraction of its peak to fit the laws' decay terms
MAX_POINTS = 400  # losses per run that a fit uses (evenly spaced, the last one kept)
TRAIN_WINDOWS = 200  # a training loss is averaged over this many windows of a run
HUBER_DELTA = 1e-3  # on log L, as the multi-power law's authors fit it
CURVE_POINTS = 1000  # points of a predicted curve, plus its last
# A peak lr or T beyond the fit's runs by more than this factor is warned of, not refused: forecasting past the runs
# is what the laws are for (2T here: −1.5 %) and no factor marks where that stops; a forecast that is no loss is
# refused (``forecast``).
EXTRAPOLATION = 1.1
FIT_FORMAT = 1  # fit.json's layout; a file without the key is of format 1, the first


class ForecastError(SettingError):
    """A run, fit file or setting the forecast cannot use: one line naming it."""


# --- what a run logged -----------------------------------------------------------------------------------------


@dataclass
class Observed:
    """A run's lr of every update 0 … N−1 and its losses after ``steps`` updates (all after the warmup)."""

    source: str
    lrs: np.ndarray
    steps: np.ndarray
    losses: np.ndarray
    warmup: int  # W: the first update at the run's highest lr

    @property
    def peak(self) -> float:
        return float(self.lrs.max())


def every_lr(logged: audit.Logged, n: int) -> np.ndarray:
    """The lr of updates 0 … n−1: the logged one; between logged updates, the schedule's where the run's
    schedule is known, else the straight line between the logged ones (held before the first and after the last)."""
    if logged.segments:
        lrs = np.array([audit.expected_lr(logged.segments, t) for t in range(n)], dtype=np.float64)
    else:
        known = sorted(logged.lrs)
        lrs = np.interp(np.arange(n), known, [logged.lrs[t] for t in known])
    for t, lr in logged.lrs.items():
        if t < n:
            lrs[t] = lr
    return lrs


def warmup_of(lrs: np.ndarray) -> int:
    """W: the first update that uses the run's highest lr."""
    return int(np.argmax(lrs >= lrs.max() * (1 - 1e-9)))


def smoothed(losses: dict[int, float], n: int) -> dict[int, float]:
    """A training loss averaged over windows of n / TRAIN_WINDOWS updates, each at its middle."""
    width = max(1, round(n / TRAIN_WINDOWS))
    windows: dict[int, list[tuple[int, float]]] = {}
    for s, loss in losses.items():
        windows.setdefault(s // width, []).append((s, loss))
    return {round(np.mean([s for s, _ in w])): float(np.mean([x for _, x in w])) for w in windows.values()}


def read_run(path: Path) -> audit.Logged:
    """The run at ``path`` as the audit reads it (its schedule when known), refused without a logged lr."""
    logged = audit.read(path, [], schedule_required=False)
    if not logged.lrs:
        raise ForecastError(f"{path}: no learning rate was logged (a forecast needs the lr of every update)")
    return logged


def after_warmup(losses: dict[int, float], lrs: np.ndarray) -> dict[int, float]:
    """The losses after the warmup, finite, and within the updates whose lr is known."""
    W = warmup_of(lrs)
    return {s: x for s, x in losses.items() if W < s <= len(lrs) and math.isfinite(x) and x > 0}


def observe(path: Path, loss: str, logged: audit.Logged | None = None) -> Observed:
    """The run's lrs and its ``loss`` ("val", or "train" averaged over windows) after the warmup."""
    logged = logged or read_run(path)
    if "val" in logged.diverged:  # read as not logged, the losses before would stand for a run that ended well
        raise ForecastError(
            f"{path}: its last validation loss, at update {logged.diverged['val']}, is not finite: the run diverged, "
            "and a law of a falling loss cannot fit it (leave it out)"
        )
    losses = logged.losses.get(loss, {})
    n = max([t + 1 for t in logged.lrs] + list(losses))
    lrs = every_lr(logged, n)
    if logged.lrs[negative := min(logged.lrs, key=logged.lrs.get)] < 0:
        raise ForecastError(f"{path}: update {negative} logged the learning rate {logged.lrs[negative]:g}, below 0")
    if not lrs.max() > 0:
        raise ForecastError(f"{path}: every logged learning rate is 0 (a forecast needs the lr of every update)")
    points = after_warmup(smoothed(losses, n) if loss == "train" else losses, lrs)
    if len(points) < MIN_POINTS:
        have = f"{len(points)} validation losses"
        fixes = ["evaluate more often: trainer.eval_every"]
        if loss == "val" and logged.losses.get("train"):
            fixes.append("fit the training loss: --loss train")
        if loss == "train":  # asked for, or what auto took for want of validation losses: both counts
            val = len(after_warmup(logged.losses.get("val", {}), lrs))
            have = f"{len(points)} training losses and {val} validation losses"
            if val >= MIN_POINTS:
                fixes.append("fit the validation loss: --loss val")
        raise ForecastError(
            f"{path}: {have} after the warmup (W = {warmup_of(lrs)}); a fit needs at least {MIN_POINTS} of one "
            f"kind per run ({', or '.join(fixes)})"
        )
    steps = np.array(sorted(points))
    if len(steps) > MAX_POINTS:
        keep = np.unique(np.linspace(0, len(steps) - 1, MAX_POINTS).round().astype(int))
        steps = steps[keep]
    return Observed(str(path), lrs, steps, np.array([points[s] for s in steps]), warmup_of(lrs))


def loss_to_fit(logged: list[tuple[Path, audit.Logged]], asked: str) -> str:
    """``asked``, or for ``auto`` the validation loss when every run has MIN_VAL_POINTS of them after the warmup."""
    if asked != "auto":
        return asked
    for _, run in logged:
        lrs = every_lr(run, max([t + 1 for t in run.lrs] + list(run.losses.get("val", {}))))
        if len(after_warmup(run.losses.get("val", {}), lrs)) < MIN_VAL_POINTS:
            return "train"
    return "val"


# --- the laws --------------------------------------------------------------------------------------------------


@dataclass
class Profile:
    """What the laws need of a schedule: the area S(s) at the steps asked for, and the drops after the warmup
    in groups (each group's total drop, its drop-weighted update, lr after the drop and area there)."""

    steps: torch.Tensor
    area: torch.Tensor
    drop_at: torch.Tensor
    drop: torch.Tensor
    drop_eta: torch.Tensor
    drop_area: torch.Tensor


def profile(
    eta: torch.Tensor,
    steps: Sequence[int],
    warmup: int,
    peak: float | torch.Tensor | None = None,
    max_groups: int | None = MAX_GROUPS,
) -> Profile:
    """The profile of the (scaled) lrs ``eta`` of updates 0 … N−1 at ``steps`` (1 ≤ s ≤ N); ``peak`` is the lr the
    decay starts from at W (the highest lr by default); ``max_groups=None`` keeps every drop apart (exact)."""
    n = eta.numel()
    area = torch.cat([eta.new_zeros(1), torch.cumsum(eta, 0)])
    d = eta.new_zeros(n)
    if warmup < n:
        d[warmup] = (eta.max() if peak is None else peak) - eta[warmup]
        d[warmup + 1 :] = eta[warmup:-1] - eta[warmup + 1 :]
    at = torch.nonzero(d.detach() != 0).flatten()
    size, weight = d[at], d[at].detach().abs()
    s = torch.as_tensor(steps, dtype=torch.long)
    if max_groups is None or at.numel() <= max_groups:
        group = torch.arange(at.numel())
    else:  # a new group where the drop so far or the update crosses a 1/max_groups step of its range, and at
        # every step asked for, so that each group acts on a loss wholly or not at all
        by_drop = torch.floor((torch.cumsum(weight, 0) - weight) / (weight.sum() / max_groups))
        by_time = torch.floor(at.double() / (n / max_groups))
        by_step = torch.searchsorted(torch.sort(s).values, at, right=True)
        change = (by_drop[1:] != by_drop[:-1]) | (by_time[1:] != by_time[:-1]) | (by_step[1:] != by_step[:-1])
        group = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(change.long(), 0)])
    count = int(group[-1]) + 1 if at.numel() else 0

    # the weights relative to the largest: a mean is the same, and value × weight cannot overflow to inf (an lr of
    # 1e300 did, and its drops then gained nothing: a forecast of L0 that looked like a loss)
    relative = weight / weight.max() if weight.numel() else weight

    def pooled(values: torch.Tensor) -> torch.Tensor:  # the drop-weighted mean of each group
        total = relative.new_zeros(count).index_add(0, group, relative)
        return values.new_zeros(count).index_add(0, group, values * relative) / total

    return Profile(
        steps=s.double(),
        area=area[s],
        drop_at=pooled(at.double()),
        drop=size.new_zeros(count).index_add(0, group, size),
        drop_eta=pooled(eta[at]),
        drop_area=pooled(area[at]),
    )


def multi_power(p: dict[str, torch.Tensor], prof: Profile) -> torch.Tensor:
    """L(s) = L0 + A·S(s)^(−α) − B·Σ_k d_k·G(η_k^(−γ)·(S(s) − S(k))), G(x) = 1 − (C·x + 1)^(−β)."""
    since = (prof.area[:, None] - prof.drop_area[None, :]).clamp_min(0)
    # log(C·x) with x = η_k^(−γ)·since, and log(1 + C·x) as softplus of it: a drop at an lr near 0 under a large γ
    # made x = ∞·0 = NaN where nothing has been trained since (and every loss NaN with it), or (C·∞ + 1)^−β
    untrained = since == 0  # there G(0) = 0, and no log of 0 (its gradient is NaN); an overflow's NaN stays NaN
    log_x = -p["gamma"] * prof.drop_eta.clamp_min(1e-12).log()[None, :] + torch.where(untrained, 1.0, since).log()
    g = torch.where(untrained, 0.0, 1 - torch.exp(-p["beta"] * F.softplus(torch.log(p["C"]) + log_x)))
    before = prof.drop_at[None, :] < prof.steps[:, None]  # a drop at update k acts on losses after k + 1 updates
    return p["L0"] + p["A"] * prof.area ** -p["alpha"] - p["B"] * (prof.drop * g * before).sum(1)


def annealing(p: dict[str, torch.Tensor], prof: Profile, decay: float = ANNEALING_DECAY) -> torch.Tensor:
    """L(s) = L0 + A·S(s)^(−α) − C·S2(s), S2(s) = Σ_k d_k·(1 − λ^(s−k))/(1 − λ)."""
    lag = (prof.steps[:, None] - prof.drop_at[None, :]).clamp_min(0)
    s2 = (prof.drop * (1 - decay**lag) / (1 - decay)).sum(1)
    return p["L0"] + p["A"] * prof.area ** -p["alpha"] - p["C"] * s2


def law(name: str, p: dict[str, torch.Tensor], prof: Profile, decay: float = ANNEALING_DECAY) -> torch.Tensor:
    return multi_power(p, prof) if name == "multi_power" else annealing(p, prof, decay)


# --- fitting ---------------------------------------------------------------------------------------------------


@dataclass
class Fit:
    """Both laws' parameters, the lr scale, and which loss they forecast."""

    params: dict[str, dict[str, float]]
    lr_scale: float
    loss: str  # "val" or "train"
    decay: float = ANNEALING_DECAY
    runs: list[dict] = field(default_factory=list)
    decay_fitted: bool = True  # False: no run's lr fell below DECAYED of its peak, and the decay terms are guesses

    @property
    def loss_name(self) -> str:
        return "val/loss" if self.loss == "val" else "train/loss (window mean)"

    def extent(self) -> tuple[tuple[float, float], tuple[int, int]] | None:
        """The (lowest, highest) peak lr and (shortest, longest) length in updates of the runs it was fitted on;
        None when it records no runs (a fit written by hand)."""
        if not self.runs:
            return None
        peaks, lengths = [r["peak_lr"] for r in self.runs], [r["updates"] for r in self.runs]
        return (min(peaks), max(peaks)), (min(lengths), max(lengths))

    def fitted_on(self) -> str:
        """The runs' peaks and lengths, as a message quotes them ("" when it records no runs)."""
        extent = self.extent()
        if extent is None:
            return ""
        (low, high), (short, long) = extent
        peak = f"{low:g}" if low == high else f"{low:g}–{high:g}"
        return f"peak {peak}, T = " + (f"{short:,}" if short == long else f"{short:,}–{long:,}")

    def profile(
        self,
        lrs: np.ndarray,
        steps: Sequence[int],
        warmup: int,
        peak: float | None = None,
        max_groups: int | None = MAX_GROUPS,
    ) -> Profile:
        eta = torch.as_tensor(np.asarray(lrs, dtype=np.float64) / self.lr_scale)
        return profile(eta, steps, warmup, None if peak is None else peak / self.lr_scale, max_groups)

    def predict(self, prof: Profile, name: str = "multi_power") -> np.ndarray:
        p = {k: torch.tensor(v, dtype=torch.float64) for k, v in self.params[name].items()}
        with torch.no_grad():
            return law(name, p, prof, self.decay).numpy()

    def to_json(self) -> dict:
        return {
            "format": FIT_FORMAT,
            "loss": self.loss,
            "lr_scale": self.lr_scale,
            "annealing_decay": self.decay,
            "decay_fitted": self.decay_fitted,
            **self.params,
            "runs": self.runs,
        }


def huber(r: torch.Tensor, delta: float = HUBER_DELTA) -> torch.Tensor:
    """Huber's loss divided by δ: |r| − δ/2 beyond δ, r²/2δ within (in units of r, for LBFGS's tolerances)."""
    a = r.abs()
    return torch.where(a <= delta, 0.5 * r**2 / delta, a - 0.5 * delta)


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread: the laws' tensors are small, and a second thread only waits (on a busy 2-core
    machine a fit is ten times slower with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def starts(name: str, runs: list[tuple[Profile, torch.Tensor]]) -> list[dict[str, float]]:
    """Starting points for LBFGS: L0 below the lowest loss, A from the first point, the drop's weight from how
    far the loss fell, the exponents and C over a small grid."""
    lowest = min(float(y.min()) for _, y in runs)
    first = min(runs, key=lambda r: float(r[0].area[0]))
    out = []
    for l0 in (0.5 * lowest, 0.85 * lowest):
        for alpha in (0.3, 0.6):
            a = max(float(first[1][0]) - l0, 1e-3) * float(first[0].area[0]) ** alpha
            if name == "annealing":
                out.append({"L0": l0, "A": a, "alpha": alpha, "C": 1e-4})
                continue
            for c in (0.02, 0.5):
                out.append({"L0": l0, "A": a, "alpha": alpha, "B": 0.1 * lowest, "C": c, "beta": 0.5, "gamma": 0.5})
    return out


def fit_law(name: str, runs: list[tuple[Profile, torch.Tensor]], decay: float = ANNEALING_DECAY) -> dict[str, float]:
    """The parameters (all > 0, fitted as logs) that minimise the mean over runs of the mean Huber loss of
    log L; the best of LBFGS from each of ``starts``."""
    keys = LAWS[name]
    targets = [torch.log(y) for _, y in runs]

    def objective(raw: torch.Tensor) -> torch.Tensor:
        p = dict(zip(keys, torch.exp(raw), strict=True))
        total = raw.new_zeros(())
        for (prof, _), target in zip(runs, targets, strict=True):
            predicted = law(name, p, prof, decay).clamp_min(1e-6)
            total = total + huber(torch.log(predicted) - target).mean()
        return total / len(runs)

    best, best_value = None, math.inf
    for start in starts(name, runs):
        raw = torch.tensor([math.log(start[k]) for k in keys], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS(
            [raw],
            lr=1,
            max_iter=400,
            history_size=50,
            tolerance_grad=1e-9,
            tolerance_change=1e-11,
            line_search_fn="strong_wolfe",
        )

        def closure(opt=opt, raw=raw):
            opt.zero_grad()
            value = objective(raw)
            value.backward()
            return value

        try:
            opt.step(closure)
        except RuntimeError:  # a start that wandered into NaN: the other starts decide
            continue
        with torch.no_grad():
            value = float(objective(raw))
        if math.isfinite(value) and value < best_value:
            best, best_value = raw.detach().clone(), value
    if best is None:
        raise ForecastError(f"the {LAW_NAMES[name]} law could not be fitted to these runs (every start diverged)")
    return {k: float(v) for k, v in zip(keys, torch.exp(best), strict=True)}


def fit_runs(observed: list[Observed], loss: str) -> Fit:
    """Both laws fitted to the runs; each run's fit error recorded."""
    scale = max(o.peak for o in observed)
    fit = Fit(params={}, lr_scale=scale, loss=loss)
    fit.decay_fitted = any(decays(o.lrs[o.warmup : int(o.steps.max())], o.peak) for o in observed)
    runs = [(fit.profile(o.lrs, o.steps, o.warmup), torch.as_tensor(o.losses)) for o in observed]
    with one_thread():
        for name in LAWS:
            fit.params[name] = fit_law(name, runs)
    for o, (prof, _) in zip(observed, runs, strict=True):
        row = {
            "run": o.source,
            "updates": len(o.lrs),
            "warmup": o.warmup,
            "peak_lr": o.peak,
            "points": len(o.steps),
            "final": {"updates": int(o.steps[-1]), "loss": float(o.losses[-1])},
        }
        for name in LAWS:
            predicted = fit.predict(prof, name)
            row["final"][name] = float(predicted[-1])
            row[f"{name}_rms_error"] = float(np.sqrt(np.mean((predicted / o.losses - 1) ** 2)))
        fit.runs.append(row)
    return fit


def load_fit(path: Path) -> Fit:
    """A fit.json written by ``fit``; anything else is one line naming the file (and the key, for a bad value)."""
    not_a_fit = ForecastError(f"{path}: not a fit written by python -m scheduling.forecast fit")
    try:
        data = json.loads(Path(path).read_text())
        loss, runs = data["loss"], data.get("runs", [])
        given = {f"{name}.{k}": data[name][k] for name, keys in LAWS.items() for k in keys}
        given["lr_scale"] = data["lr_scale"]
        decay = data.get("annealing_decay", ANNEALING_DECAY)
        decay_fitted = data.get("decay_fitted", True)  # a fit from before it was recorded: as it was read then
        layout = data.get("format", 1)
    except FileNotFoundError:
        raise ForecastError(f"{path} does not exist (write one with: python -m scheduling.forecast fit RUN…)") from None
    except KeyError:  # which key, where the rest reads as a fit
        missing = next(
            (k for k in ("loss", "lr_scale", *LAWS) if not isinstance(data, dict) or k not in data), None
        ) or next((f"{n}.{k}" for n, keys in LAWS.items() for k in keys if k not in data[n]), None)
        raise ForecastError(f"{not_a_fit} (it lacks {missing})") from None
    except (OSError, ValueError, TypeError, AttributeError):
        raise not_a_fit from None
    if loss not in ("val", "train") or not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise not_a_fit
    if layout != FIT_FORMAT:
        raise ForecastError(
            f"{path}: format {short(layout)} is not one this version reads ({FIT_FORMAT}); fit the runs again"
        )
    # is_number before float(): an int past float's range (lr_scale 10**400) would overflow it
    for key, value in given.items():
        if not (is_number(value) and value > 0):
            raise ForecastError(
                f"{path}: {key} must be a positive finite number (a fit's parameters are), got {short(value)}"
            )
    if not (is_number(decay) and 0 < decay < 1):
        raise ForecastError(f"{path}: annealing_decay must be in (0, 1), got {short(decay)}")
    if not isinstance(decay_fitted, bool):
        raise ForecastError(f"{path}: decay_fitted must be true or false, got {short(decay_fitted)}")
    # each run's peak and length, which tell a forecast within the runs from an extrapolation (every fit records them)
    for i, run in enumerate(runs):
        peak, updates = run.get("peak_lr"), run.get("updates")
        if not (is_number(peak) and peak > 0):
            raise ForecastError(f"{path}: runs[{i}].peak_lr must be the run's peak lr, a number > 0, got {short(peak)}")
        if not (is_int(updates) and updates > 0):
            raise ForecastError(
                f"{path}: runs[{i}].updates must be the run's length, an integer > 0, got {short(updates)}"
            )
    # the lrs are divided by it before either law sees them: another scale is another fit's parameters
    if runs and not math.isclose(given["lr_scale"], highest := max(r["peak_lr"] for r in runs), rel_tol=1e-9):
        raise ForecastError(
            f"{path}: lr_scale must be the runs' highest peak_lr, {highest!r}, got {short(given['lr_scale'])}"
        )
    params = {name: {k: float(given[f"{name}.{k}"]) for k in keys} for name, keys in LAWS.items()}
    return Fit(
        params=params,
        lr_scale=float(given["lr_scale"]),
        loss=loss,
        decay=float(decay),
        runs=runs,
        decay_fitted=decay_fitted,
    )


def short(value: object, limit: int = 40) -> str:
    """A value's repr cut to ``limit`` characters (an int of 400 digits is still one readable line)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


# --- forecasts of schedules -------------------------------------------------------------------------------------


@dataclass
class Forecast:
    """One schedule's forecast: lr of every update, both laws' loss at ``steps``, and what a run really logged."""

    label: str
    lrs: np.ndarray
    warmup: int
    steps: np.ndarray
    predicted: dict[str, np.ndarray]
    loss_name: str  # the fit's: val/loss, or the training loss averaged over windows
    actual_steps: np.ndarray | None = None
    actual: np.ndarray | None = None

    def final(self, name: str = "multi_power") -> float:
        return float(self.predicted[name][-1])

    def errors(self) -> dict[str, tuple[float, float]]:
        """Per law: (relative error of the final loss, RMS relative error over the run's curve)."""
        out = {}
        for name, curve in self.predicted.items():
            at = np.interp(self.actual_steps, self.steps, curve)
            relative = at / self.actual - 1
            out[name] = (float(relative[-1]), float(np.sqrt(np.mean(relative**2))))
        return out


def curve_steps(warmup: int, n: int, extra: Sequence[int] = ()) -> np.ndarray:
    """Steps after the warmup up to n, evenly, with n itself and ``extra``; only n when the warmup lasts the run."""
    grid = np.linspace(min(warmup + 1, n), n, min(CURVE_POINTS, max(1, n - warmup))).round().astype(int)
    return np.unique(np.concatenate([grid, [n], [s for s in extra if warmup < s <= n]]).astype(int))


def forecast(
    fit: Fit,
    label: str,
    lrs: np.ndarray,
    warmup: int,
    peak: float | None = None,
    actual: tuple[np.ndarray, np.ndarray] | None = None,
    laws: tuple[str, ...] = tuple(LAWS),
) -> Forecast:
    """Both laws' forecast of the schedule whose update t uses ``lrs[t]``, at every step after the warmup; one of
    ``laws`` that forecasts no loss is refused (``not_a_loss``)."""
    steps = curve_steps(warmup, len(lrs), [] if actual is None else actual[0])
    prof = fit.profile(lrs, steps, warmup, peak)
    predicted = {name: fit.predict(prof, name) for name in LAWS}
    for name in laws:
        not_a_loss(fit, label, name, predicted[name], steps, float(lrs.max()) if peak is None else peak, len(lrs))
    result = Forecast(label, lrs, warmup, steps, predicted, fit.loss_name)
    if actual is not None:
        keep = actual[0] <= len(lrs)
        result.actual_steps, result.actual = actual[0][keep], actual[1][keep]
    return result


def not_a_loss(fit: Fit, label: str, name: str, curve: np.ndarray, steps: np.ndarray, peak: float, total: int) -> None:
    """Refuse a forecast that is not a loss (not finite, or ≤ 0) at any step, in one line naming the schedule and its
    settings. Not one below a law's L0: that is the loss of unlimited updates at a constant lr, and by the law's own
    terms a decay's gain takes a run below it."""
    bad = np.flatnonzero(~(np.isfinite(curve) & (curve > 0)))
    if not len(bad):
        return
    nan = bad[~np.isfinite(curve[bad])]
    i = nan[0] if len(nan) else bad[np.argmin(curve[bad])]  # the first non-finite value, else the lowest
    fitted = fit.fitted_on()
    raise ForecastError(
        f"{label} (peak {peak:g}, T = {total:,}): the {LAW_NAMES[name]} law forecasts {fit.loss_name} "
        f"{curve[i]:.6g} after {int(steps[i]):,} updates, which is not a loss: these settings are outside where "
        "the law holds" + (f" (its fit's runs: {fitted})" if fitted else "")
    )


def extrapolates(fit: Fit, label: str, peak: float, total: int) -> str | None:
    """A warning line when the peak lr or T lie beyond the fit's runs by more than EXTRAPOLATION; None within them
    (or for a fit that records no runs)."""
    extent = fit.extent()
    if extent is None:
        return None
    (low, high), (short_T, long_T) = extent

    def times(x: float) -> str:  # 10,000 rather than 1e+04
        return f"{x:.3g}" if x < 1000 else f"{x:,.0f}"

    beyond = []
    if peak > high * EXTRAPOLATION:
        beyond.append(f"its peak lr {peak:g} is {times(peak / high)}× the highest of the fit's runs ({high:g})")
    elif peak < low / EXTRAPOLATION:
        beyond.append(f"its peak lr {peak:g} is 1/{times(low / peak)} of the lowest of the fit's runs ({low:g})")
    if total > long_T * EXTRAPOLATION:
        beyond.append(f"T = {total:,} is {times(total / long_T)}× the longest of the fit's runs ({long_T:,} updates)")
    elif total < short_T / EXTRAPOLATION:
        beyond.append(
            f"T = {total:,} is 1/{times(short_T / total)} of the shortest of the fit's runs ({short_T:,} updates)"
        )
    if not beyond:
        return None
    return (
        f"warning: {label}: {' and '.join(beyond)}: the forecast extrapolates beyond the runs it was fitted on, and "
        "is the less reliable the further (docs/instruments.md: when not to trust a forecast)"
    )


def warn_extrapolation(fit: Fit, label: str, peak: float, total: int, decaying: bool = False) -> None:
    """The extrapolation's warning, and where the schedule decays (``decaying``) and the fit's runs never did,
    that its decay terms are guesses."""
    line = extrapolates(fit, label, peak, total)
    if line:
        print(line, file=sys.stderr)
    if decaying and not fit.decay_fitted:
        print(
            f"warning: {label}: the fit's runs never decayed (their lr stayed above {DECAYED:.0%} of its peak), so "
            "its decay terms are guesses and so is this forecast of a decay (fit a run that decays beside them)",
            file=sys.stderr,
        )


def decays(lrs: np.ndarray, peak: float) -> bool:
    """Whether an lr after the warmup (``lrs``) falls below DECAYED of the peak: what fits the laws' decay terms."""
    return bool(lrs.min(initial=peak) < DECAYED * peak)


def schedule_lrs(schedule: Schedule, peak: float, n: int) -> np.ndarray:
    return np.array([peak * schedule(t) for t in range(n)], dtype=np.float64)


def planned(logged: audit.Logged) -> tuple[np.ndarray, int, float] | None:
    """(lrs, W, peak) of every update up to the run's T, from its recorded schedule (each segment's from its
    start); None if it is unknown. W and the peak are the first segment's: where the run warmed up, a resume
    that changed the schedule later changed neither."""
    if not logged.segments:
        return None
    T = logged.segments[-1].schedule.total_steps
    if T is None:
        return None
    lrs = np.array([audit.expected_lr(logged.segments, t) for t in range(T)], dtype=np.float64)
    first = logged.segments[0]
    return lrs, first.schedule.warmup_steps, first.peak_lr


def forecast_run(fit: Fit, path: Path, label: str | None = None) -> Forecast:
    """The forecast of a run's own lrs (those it logged; past its last logged update, its recorded schedule to its
    T) beside its real curve, in the fit's loss; warned of where it extrapolates beyond the fit's runs."""
    logged = read_run(path)
    seen = observe(path, fit.loss, logged)
    plan = planned(logged)
    lrs, warmup, peak = plan if plan is not None else (seen.lrs, seen.warmup, None)
    if plan is not None:  # what the run did, where that was not its plan (a scheduler stepped twice an update)
        lrs = lrs.copy()
        for t, lr in logged.lrs.items():
            if t < len(lrs):
                lrs[t] = lr
    label = label or path.name
    warn_extrapolation(fit, label, float(lrs.max()), len(lrs), decays(lrs[warmup:], float(lrs.max())))
    return forecast(fit, label, lrs, warmup, peak, actual=(seen.steps, seen.losses))


def in_the_fit(fit: Fit, run: Path, final: tuple[int, float] | None = None) -> bool:
    """Whether ``run`` is one of the runs ``fit`` was fitted on (its errors then measure the fit, not a forecast).
    A run recorded by a relative path, from whichever folder the fit was made, is one whose path ends with it and
    whose last loss (``final``: updates, loss) is the one the fit recorded (another sweep's job ``0`` is not)."""
    here = run.resolve()
    for r in fit.runs:
        recorded = Path(r["run"]) if isinstance(r.get("run"), str) else None
        if recorded is None:
            continue
        if recorded.resolve() == here:
            return True
        ends_so = not recorded.is_absolute() and here.parts[-len(recorded.parts) :] == recorded.parts
        last = r.get("final") if isinstance(r.get("final"), dict) else {}
        if ends_so and final is not None and (last.get("updates"), last.get("loss")) == final:
            return True
    return False


def differs_from(seen: Observed, lrs: np.ndarray) -> str | None:
    """Where a run's logged lrs are not a schedule's (the first update and both values), None if they agree."""
    n = min(len(seen.lrs), len(lrs))
    off = np.flatnonzero(~np.isclose(seen.lrs[:n], lrs[:n], rtol=1e-6, atol=0.0))
    if not len(off):
        return None
    t = int(off[0])
    return f"update {t} ran at lr {seen.lrs[t]:.6g}, the schedule's is {lrs[t]:.6g}"


# --- optimizing the schedule ------------------------------------------------------------------------------------


def knot_updates(warmup: int, total: int, count: int) -> np.ndarray:
    """``count`` knots (fewer if the decay is shorter) at updates evenly spaced in (W, T], the last at T."""
    # at most one knot per update after the warmup, before any array is made: more would only repeat updates
    count = min(count, total - warmup)
    if count < 1:
        return np.zeros(0, dtype=int)
    times = np.unique(np.linspace(warmup, total, count + 1)[1:].round().astype(int))
    return times[times > warmup]


def interpolate(knots_t: np.ndarray, knots_y: torch.Tensor, warmup: int, n: int) -> torch.Tensor:
    """λ of updates W … n−1 from the knots, as the tabulated schedule draws them: a straight line from (W, 1)
    through each knot, the last knot's λ after it."""
    xs = torch.as_tensor(np.concatenate([[warmup], knots_t]), dtype=torch.float64)
    ys = torch.cat([knots_y.new_ones(1), knots_y])
    t = torch.arange(warmup, n, dtype=torch.float64)
    i = torch.clamp(torch.searchsorted(xs, t, right=True), 1, len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    inside = y0 + (y1 - y0) * ((t - x0) / (x1 - x0)).clamp(0, 1)
    return torch.where(t >= xs[-1], ys[-1], inside)


def check_decay(warmup: int, total: int) -> None:
    """An optimized schedule needs an update after the warmup to decay over."""
    if total <= warmup:
        raise ForecastError(f"schedule.warmup_steps ({warmup}) leaves no update to decay over before T = {total}")


def optimize(
    fit: Fit,
    total: int,
    warmup: int,
    peak: float,
    floor: float,
    count: int,
    name: str = "multi_power",
    warmup_lrs: np.ndarray | None = None,
) -> list[tuple[int, float]]:
    """The knots (update, λ) of the schedule with the lowest forecast loss after ``total`` updates among those
    that warm up as ``warmup_lrs`` over W updates, start their decay at the peak and never increase, and stay at
    or above ``floor`` (a fraction of the peak). λ_k = floor + (1 − floor)·(1 − the first k of K + 1 shares of
    the way down), the shares a softmax: every such schedule on the knots, and only those."""
    check_decay(warmup, total)
    times = knot_updates(warmup, total, count)
    head = torch.as_tensor(warmup_lrs if warmup_lrs is not None else np.zeros(warmup), dtype=torch.float64)
    scale, p = peak / fit.lr_scale, {k: torch.tensor(v, dtype=torch.float64) for k, v in fit.params[name].items()}

    def knots_of(z: torch.Tensor) -> torch.Tensor:
        shares = torch.softmax(z, 0)[:-1]  # the last share is the way down left untaken
        return floor + (1 - floor) * (1 - torch.cumsum(shares, 0)).clamp(0, 1)

    def final_loss(z: torch.Tensor) -> torch.Tensor:
        eta = torch.cat([head / fit.lr_scale, scale * interpolate(times, knots_of(z), warmup, total)])
        return law(name, p, profile(eta, [total], warmup, scale, max_groups=None), fit.decay)[0]

    best, best_value = None, math.inf
    for slack in (-8.0, 0.0):  # from linear to the floor, and from a linear decay halfway there
        z = torch.cat([torch.zeros(len(times)), torch.tensor([slack + math.log(len(times))])]).double()
        z.requires_grad_(True)
        adam = torch.optim.Adam([z], lr=0.1)
        for _ in range(300):
            adam.zero_grad()
            value = final_loss(z)
            value.backward()
            adam.step()
        lbfgs = torch.optim.LBFGS([z], max_iter=300, history_size=30, line_search_fn="strong_wolfe")

        def closure(lbfgs=lbfgs, z=z):
            lbfgs.zero_grad()
            value = final_loss(z)
            value.backward()
            return value

        lbfgs.step(closure)
        with torch.no_grad():
            value = float(final_loss(z))
        if value < best_value:
            best, best_value = z.detach().clone(), value
    with torch.no_grad():
        ys = knots_of(best).numpy()
    # rounding keeps the order (never increasing) and the floor, since both are kept by a monotone rounding
    return [(int(t), max(floor, round(float(y), 6))) for t, y in zip(times, ys, strict=True)]


# --- output ------------------------------------------------------------------------------------------------------


def write_outputs(files: dict[Path, bytes]) -> None:
    """Write every file or none: each to a temporary file beside it, then each renamed over its path. A path that
    cannot be written is one line naming it."""
    done: list[tuple[Path, Path]] = []
    path = next(iter(files))
    try:
        for path, data in files.items():
            if path.is_dir():
                raise IsADirectoryError(errno.EISDIR, "Is a directory")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            done.append((tmp, path))
            tmp.write_bytes(data)
        for tmp, path in done:
            os.replace(tmp, path)
    except OSError as e:
        for tmp, _ in done:
            tmp.unlink(missing_ok=True)
        raise ForecastError(f"--out {path}: cannot be written ({e.strerror or e})") from None


def csv_text(forecasts: list[Forecast]) -> str:
    """One row per (schedule, step): both laws' forecast, and the real loss where a run gave it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["schedule", "updates", "multi_power", "annealing", "actual"])
    for f in forecasts:
        actual = dict(zip(f.actual_steps.tolist(), f.actual.tolist(), strict=True)) if f.actual is not None else {}
        for i, s in enumerate(f.steps):
            real = actual.get(int(s))
            mp, an = f.predicted["multi_power"][i], f.predicted["annealing"][i]
            writer.writerow([f.label, s, f"{mp:.6f}", f"{an:.6f}", "" if real is None else f"{real:.6f}"])
    return out.getvalue()


def plot(forecasts: list[Forecast], fit: Fit, title: str = "Forecast") -> bytes:
    """Forecast loss (multi-power solid, annealing dashed) and the real curve (dots) against updates, and the lr
    below; one colour per schedule: a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(9, 7.5), sharex=True, height_ratios=(3, 1.3))
    for i, f in enumerate(forecasts):
        color = f"C{i % 10}"
        mark = "o" if len(f.steps) == 1 else None  # a single point is drawn as a marker, not an empty line
        label = f"{f.label}: multi-power"
        ax.plot(f.steps, f.predicted["multi_power"], "-", marker=mark, lw=1.6, color=color, label=label)
        ax.plot(f.steps, f.predicted["annealing"], "--", lw=1.0, color=color, alpha=0.7, label=f"{f.label}: annealing")
        if f.actual is not None:
            ax.plot(f.actual_steps, f.actual, "o", ms=3, color=color, label=f"{f.label}: actual")
        ax_lr.plot(np.arange(len(f.lrs)), f.lrs, lw=1.3, color=color)
    values = np.concatenate([v for f in forecasts for v in f.predicted.values()])
    low, high = values.min() - 0.05 * np.ptp(values), np.percentile(values, 97)
    if high > low:  # one value (a warmup as long as the run) leaves matplotlib's own margins
        ax.set_ylim(low, high)
    ax.set(ylabel=f"{fit.loss_name}", title=title)
    ax_lr.set(xlabel="updates", ylabel="learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    for a in (ax, ax_lr):
        a.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(forecasts) > 2 else 1)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    return png.getvalue()


def percent(x: float) -> str:
    return f"{100 * x:+.2f} %"


# --- the command line -------------------------------------------------------------------------------------------


def run_fit(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    logged = [(path, read_run(path)) for path in args.runs]
    loss = loss_to_fit(logged, args.loss)
    observed = [observe(path, loss, run) for path, run in logged]
    fit = fit_runs(observed, loss)
    write_outputs({args.out: (json.dumps(fit.to_json(), indent=1) + "\n").encode()})
    # a run of TRAIN_WINDOWS updates or fewer has windows of one update: its training losses as logged
    how = "validation loss" if loss == "val" else f"training loss, averaged over ≤ {TRAIN_WINDOWS} windows per run"
    points = sum(len(o.steps) for o in observed)
    seconds = time.perf_counter() - started
    print(f"fitted {len(observed)} runs on the {how} ({points} points after warmup) in {seconds:.1f} s")
    for name, keys in LAWS.items():
        print(f"{LAW_NAMES[name]:>12}: " + ", ".join(f"{k} {v:.4g}" for k, v in fit.params[name].items()))
        if points < 2 * len(keys):  # fewer than two points a parameter: many parameter sets fit them as well
            print(
                f"warning: {points} points for the {LAW_NAMES[name]} law's {len(keys)} parameters are too few to "
                "pin them down: its forecasts are unreliable (fit more runs, or evaluate more often)",
                file=sys.stderr,
            )
    if not fit.decay_fitted:
        print(  # the decay terms keep their starting values: a forecast of a decay would read them as fitted
            f"warning: no run's learning rate falls below {DECAYED:.0%} of its peak before its last loss: the laws' "
            "terms for a decay (multi-power B, C, beta, gamma; annealing C) are not fitted, and forecasts of a "
            "schedule that decays are guesses (fit a run that decays beside it: schedule=wsd or cosine)",
            file=sys.stderr,
        )
    for row in fit.runs:
        final = row["final"]
        errors = ", ".join(
            f"{LAW_NAMES[n]} {final[n]:.4f} ({percent(final[n] / final['loss'] - 1)}; RMS over the "
            f"curve {100 * row[f'{n}_rms_error']:.2f} %)"
            for n in LAWS
        )
        print(f"{row['run']}: final {final['loss']:.4f} after {final['updates']:,} updates; {errors}")
    print(f"wrote {args.out}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from scheduling.plot import build_curves

    fit = load_fit(args.fit)
    against = args.against or []
    pairs: list[tuple[Forecast, Path | None]] = []  # each forecast, and the run it is held against
    if args.overrides or not against:
        if len(against) > 1:
            raise ForecastError(
                "--against: one run beside the overrides' schedules (several only without overrides, "
                "each run then forecast on its own schedule)"
            )
        seen = observe(against[0], fit.loss) if against else None
        for c in build_curves(args.overrides):
            n = max(c.total_steps, int(seen.steps[-1]) if seen is not None else 0)
            actual = (seen.steps, seen.losses) if seen is not None else None
            lrs = schedule_lrs(c.schedule, c.peak_lr, n)
            after_warmup = lrs[c.schedule.warmup_steps : c.total_steps]
            warn_extrapolation(fit, c.label, c.peak_lr, c.total_steps, decays(after_warmup, c.peak_lr))
            if seen is not None and (where := differs_from(seen, lrs)) is not None:
                print(
                    f"warning: {against[0]} did not run {c.label} ({where}): its error measures another schedule's "
                    "forecast",
                    file=sys.stderr,
                )
            run = against[0] if against else None
            pairs.append((forecast(fit, c.label, lrs, c.schedule.warmup_steps, c.peak_lr, actual), run))
    else:  # each run on its own schedule
        pairs = [(forecast_run(fit, run), run) for run in against]
    forecasts = [f for f, _ in pairs]
    csv_path, png_path = args.out.with_suffix(".csv"), args.out.with_suffix(".png")
    write_outputs(
        {png_path: plot(forecasts, fit, f"Forecast of {fit.loss_name}"), csv_path: csv_text(forecasts).encode()}
    )
    for f, run in pairs:
        finals = ", ".join(f"{LAW_NAMES[n]} {f.final(n):.4f}" for n in LAWS)
        print(f"{f.label}: forecast {fit.loss_name} after {int(f.steps[-1]):,} updates: {finals}")
        if run is not None and len(f.actual):
            said = ", ".join(
                f"{LAW_NAMES[n]} {percent(e[0])} (RMS over the curve {100 * e[1]:.2f} %)" for n, e in f.errors().items()
            )
            own = in_the_fit(fit, run, (int(f.actual_steps[-1]), float(f.actual[-1])))
            fitted = " (one of the fit's runs: the fit's own error, not a held-out one)" if own else ""
            print(
                f"  against {run}{fitted}: {f.actual[-1]:.4f} after {int(f.actual_steps[-1]):,} updates; error {said}"
            )
    print(f"wrote {csv_path}, {png_path}")
    return 0


def run_optimize(args: argparse.Namespace) -> int:
    from scheduling.plot import build_curves

    fit = load_fit(args.fit)
    curves = build_curves(args.overrides)
    if len(curves) != 1:
        raise ForecastError(f"optimize takes one T, peak and warmup; the overrides give {len(curves)} schedules")
    c = curves[0]
    T, W, peak = c.total_steps, c.schedule.warmup_steps, c.peak_lr
    floor = float(c.schedule.params.get("min_lr_ratio", 0.0))
    png = args.out.with_suffix(".png")
    if png == args.out:
        raise ForecastError("--out", "the knots' CSV path (the plot is written beside it, as .png)", str(args.out))
    check_decay(W, T)
    warn_extrapolation(fit, f"T = {T:,}, peak {peak:g}", peak, T, decaying=True)
    if args.knots > T - W:
        print(f"note: --knots {args.knots} clamped to {T - W:,}, one per update after the warmup", file=sys.stderr)
    shape = {k: c.schedule.params[k] for k in ("warmup_shape", "warmup_start_ratio") if k in c.schedule.params}
    same = dict(total_steps=T, warmup_steps=W, min_lr_ratio=floor, **shape)
    rivals = {
        "cosine": Schedule("cosine", **same),
        "wsd": Schedule("wsd", decay_steps=min(round(0.2 * T), T - W), **same),  # the last 20 %, after the warmup
        "linear": Schedule("linear", **same),
    }
    # the rivals first: settings where even they are no loss are refused before the search
    # only --law's forecasts decide: the other law's are drawn beside them, whatever they are
    law = (args.law,)
    rival_forecasts = [forecast(fit, name, schedule_lrs(s, peak, T), W, peak, laws=law) for name, s in rivals.items()]
    warmup_lrs = schedule_lrs(c.schedule, peak, W)
    knots = optimize(fit, T, W, peak, floor, args.knots, args.law, warmup_lrs)
    # what train.py will run: the tabulated schedule with these knots, forecast as any other schedule
    best = Schedule("tabulated", total_steps=T, warmup_steps=W, knots=tuple(knots), **shape)
    check_knots(best.params["knots"], W, T, "the optimized knots")
    forecasts = [forecast(fit, "optimized", schedule_lrs(best, peak, T), W, peak, laws=law), *rival_forecasts]
    mine = forecasts[0].final(args.law)
    command = (
        "python -m scheduling.forecast optimize "
        + " ".join([str(args.fit), *args.overrides])
        + f" --knots {args.knots}"
        + (f" --law {args.law}" if args.law != "multi_power" else "")
    )
    versus = ", ".join(f"{f.label} {f.final(args.law):.4f}" for f in forecasts[1:])
    header = [
        f"# {command}",
        f"# T = {T}, W = {W}, peak {peak:g}, floor {floor:g} of the peak: forecast {fit.loss_name} after T "
        f"({LAW_NAMES[args.law]} law) {mine:.4f}; {versus}",
    ]
    table = "\n".join([*header, "update,lambda", *(f"{t},{y!r}" for t, y in knots)]) + "\n"
    image = plot(forecasts, fit, f"The schedule with the lowest forecast (T = {T:,})")
    write_outputs({png: image, args.out: table.encode()})
    print(f"forecast {fit.loss_name} after {T:,} updates ({LAW_NAMES[args.law]} law): optimized {mine:.4f}; {versus}")
    # the overrides given, but for the schedule's, T's and the peak's, which the knots now fix
    settled = ("schedule", "trainer.max_steps", "optim.lr")
    kept = [o for o in args.overrides if not o.lstrip("+~").split("=")[0].startswith(settled)]
    defaults = ("linear", 0.0)  # the warmup's shape and start unless the overrides said otherwise
    run = [
        *kept,
        f"schedule=tabulated schedule.knots={args.out}",
        f"schedule.warmup_steps={W}",
        f"trainer.max_steps={T}",
        f"optim.lr={peak!r}",  # exact: the knots were optimized for this peak
        *(f"schedule.{k}={v}" for k, v in shape.items() if v not in defaults),
    ]
    print(f"wrote {args.out} ({len(knots)} knots), {png}; train it with:\n  python train.py {' '.join(run)}")
    return 0


def parser() -> CommandLine:
    """The command line: fit, predict and optimize."""
    cli = CommandLine(prog="python -m scheduling.forecast", description=__doc__.split("\n\n")[0])
    sub = cli.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit both laws to runs already made")
    fit.add_argument("runs", nargs="+", type=Path, help="run directories, W&B offline runs or trainer_state.json")
    fit.add_argument("--out", type=file_path, default=Path("fit.json"), help="the fit (default: %(default)s)")
    fit.add_argument(
        "--loss",
        choices=("auto", "val", "train"),
        default="auto",
        help="the loss to fit (auto: validation where every run has enough of it)",
    )
    predict = sub.add_parser("predict", help="forecast the loss of the schedules the overrides describe")
    predict.add_argument("fit", type=Path, help="a fit.json")
    predict.add_argument("overrides", nargs="*", default=[], help="Hydra overrides, as for train.py (sweeps overlay)")
    predict.add_argument(
        "--against",
        type=Path,
        action="append",
        metavar="RUN",
        help="a run to draw beside the forecast; without overrides, repeatable: each on its own schedule",
    )
    predict.add_argument("--out", type=file_path, default=Path("forecast"), help="writes OUT.csv, OUT.png")
    opt = sub.add_parser("optimize", help="the schedule with the lowest forecast final loss, as tabulated knots")
    opt.add_argument("fit", type=Path, help="a fit.json")
    opt.add_argument("overrides", nargs="*", default=[], help="T, peak, warmup and floor as train.py overrides")
    opt.add_argument(
        "--knots",
        type=at_least(1),
        default=100,
        help="knots between W and T (default: %(default)s; more than T − W is clamped to T − W, one per update)",
    )
    opt.add_argument("--law", choices=tuple(LAWS), default="multi_power", help="the law to minimise")
    opt.add_argument("--out", type=file_path, default=Path("knots.csv"), help="the knots CSV (default: %(default)s)")
    return cli


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    command = {"fit": run_fit, "predict": run_predict, "optimize": run_optimize}[args.command]
    try:
        return command(args)
    except (SettingError, HydraException, OmegaConfBaseException) as e:
        message = " ".join(str(e).split()).split(" Config search path:")[0]
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
