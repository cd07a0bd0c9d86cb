"""The eval group's plug point: what runs at every evaluation — before update 0, every ``trainer.eval_every``
updates and at T — on every rank, its metrics logged to every sink at step t.

An evaluation is built once per run from its YAML node (``training.components``) as
``Target(ctx: EvalContext, **its own keys)`` (``ctx.name``: its name under ``eval.evals``; ``ctx.run_dir``,
``ctx.step`` (the update index t) and ``ctx.measuring`` for one that writes files of its own) and called as
``evaluation(model)`` with the model at update t (in train mode: it sets eval mode itself, and must leave the
weights and the generators as they were; the mode is given back after it); it returns ``{metric name: value}``,
names no other evaluation logs (a clash goes under ``eval/<name>/``). Under DDP or FSDP every rank calls
it, so an evaluation that splits its work over the ranks sums over them itself (``torch.distributed``), as
:class:`Perplexity` does. A class may also have ``check(keys, where)``, called with its own keys before anything
is written, to refuse a bad value (a missing file, a task that needs the network offline) in one line.

``eval=perplexity`` (in the default ``eval=[perplexity,next_line]``): ``val/loss`` and ``val/bpb`` on the fixed
validation windows; with a mixture also ``val/<source>/loss`` and ``val/<source>/bpb``. The multiple-choice
evaluations are in ``training.multiple_choice``.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from data import MixtureValBatches, ValBatches
from data.batches import IGNORE_INDEX
from training.config import ConfigError
from training.distributed import Dist, is_initialized
from training.engine import to_device

log = logging.getLogger("train")


@dataclass
class Clock:
    """The update index the evaluations run at: set by :class:`Evaluations` before each round; ``measuring`` while
    a time budget times them before the run starts."""

    step: int = 0
    measuring: bool = False


@dataclass(frozen=True)
class EvalContext:
    """What an evaluation is built with."""

    cfg: Any  # the run's config (DictConfig)
    dist: Dist
    autocast: Any  # the run's mixed-precision context
    val_batches: ValBatches | MixtureValBatches  # the fixed validation windows of this rank
    token_bytes: torch.Tensor  # bytes each token id encodes (0 for special tokens), on the device
    tokenizer: Any  # the run's tokenizers.Tokenizer
    name: str = ""  # the evaluation's name in eval.evals: its metrics are logged as eval/<name>/...
    run_dir: Path | None = None  # the run's folder (files an evaluation writes: rank 0's alone, by dist.is_main)
    clock: Clock = field(default_factory=Clock)  # shared with the Evaluations that call this one

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def step(self) -> int:
        """The update index t of the evaluation running now (0 before any; a time budget's measurement calls
        each evaluation at the first update's index before the run starts)."""
        return self.clock.step

    @property
    def measuring(self) -> bool:
        """Whether this call is a time budget's measurement, not an evaluation of the run (a file need not be
        written for it)."""
        return self.clock.measuring


class Perplexity:
    """``val/loss`` (nats per token) and ``val/bpb`` (bits per byte) over the validation windows, summed over
    ranks; a mixture's overall values are its sources' sums weighted as training draws them."""

    def __init__(self, ctx: EvalContext):
        self.ctx = ctx

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        c = self.ctx
        return validate(model, c.val_batches, c.token_bytes, device=c.device, autocast=c.autocast)


class Evaluations:
    """Every evaluation the ``eval`` group names, as one: their metrics merged, a name another logged first going
    under ``eval/<name>/`` (said once). Each gets the model in the mode the run has it, and the run gets it back
    so (an evaluation that calls ``model.eval()`` alone would turn dropout off for the rest of training)."""

    def __init__(self, evaluations: Mapping[str, Any], clock: Clock | None = None):
        self.evaluations = dict(evaluations)
        self.clock = clock or Clock()  # the one their EvalContext reads ctx.step from
        self.warned: set[tuple[str, str]] = set()

    def measured(self, model: torch.nn.Module) -> dict[str, float]:
        """Every evaluation, as a time budget times them (``ctx.measuring`` true meanwhile)."""
        self.clock.measuring = True
        try:
            return self(model)
        finally:
            self.clock.measuring = False

    def __call__(self, model: torch.nn.Module, step: int | None = None) -> dict[str, float]:
        if step is not None:
            self.clock.step = step
        metrics: dict[str, float] = {}
        owner: dict[str, str] = {}
        training = model.training
        for name, evaluation in self.evaluations.items():
            try:
                found = evaluation(model)
            finally:
                model.train(training)
            if not isinstance(found, Mapping):
                raise ConfigError(f"eval.evals.{name} returned a {type(found).__name__}, not a dict of metrics")
            for key, value in found.items():  # every sink takes numbers: a tensor or a text would fail in each
                if not isinstance(value, numbers.Real) or isinstance(value, bool):
                    hint = " (its .item())" if isinstance(value, torch.Tensor) else ""
                    raise ConfigError(
                        f"eval.evals.{name}: its metric {key} is a {type(value).__name__}, not a number{hint}"
                    )
                value = int(value) if isinstance(value, numbers.Integral) else float(value)  # numpy's, as Python's
                if key in owner:  # one would hide the other in every sink and the summary: logged apart
                    if (name, key) not in self.warned:
                        self.warned.add((name, key))
                        log.warning(
                            "eval.evals.%s: its metric %s is eval.evals.%s's too; logged as eval/%s/%s (name it apart)",
                            name,
                            key,
                            owner[key],
                            name,
                            key,
                        )
                    key = f"eval/{name}/{key}"
                owner[key] = name
                metrics[key] = value
        return metrics


def evaluate(
    model: torch.nn.Module, batches, token_bytes: torch.Tensor, *, device: torch.device, autocast
) -> tuple[float, float]:
    """(val loss in nats per token, bits per byte) over the fixed validation windows, summed over ranks.

    Bits per byte = Σ loss of the targets that encode text / (ln 2 · Σ bytes those targets encode); special
    tokens (zero bytes) are left out of both sums, so runs with different tokenizers compare.
    """
    return loss_and_bpb(validation_sums(model, batches, token_bytes, device=device, autocast=autocast))


def loss_and_bpb(sums: torch.Tensor) -> tuple[float, float]:
    """(loss per token, bits per byte) from :func:`validation_sums`' four sums."""
    total_loss, count, text_loss, nbytes = sums.tolist()
    return total_loss / count, text_loss / (math.log(2) * max(nbytes, 1.0))


def sum_dtype(device: torch.device) -> torch.dtype:
    """What sums over many tokens are taken in: float64, but on Apple's MPS, which has none, float32."""
    return torch.float32 if device.type == "mps" else torch.float64


@torch.no_grad()
def validation_sums(
    model: torch.nn.Module, batches, token_bytes: torch.Tensor, *, device: torch.device, autocast
) -> torch.Tensor:
    """Σ loss, Σ targets, Σ loss of the targets that encode text, Σ bytes they encode (float64, over ranks)."""
    was_training = model.training
    model.eval()
    dtype = sum_dtype(device)
    sums = torch.zeros(4, dtype=dtype, device=device)  # loss, tokens, loss over text, bytes
    for x, y in batches:
        x, y = to_device(x, device), to_device(y, device)
        with autocast:
            _, loss = model(x, y, reduction="none")
        loss, y = loss.to(dtype), y.reshape(-1)
        scored = y != IGNORE_INDEX  # a rank's padding window is scored nowhere
        nbytes = token_bytes[y.clamp(min=0)] * scored
        text = nbytes > 0
        sums += torch.stack([loss.sum(), scored.sum().to(dtype), loss[text].sum(), nbytes.sum().to(dtype)])
    if is_initialized():
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    model.train(was_training)
    return sums


def validate(model, val_batches: ValBatches | MixtureValBatches, token_bytes: torch.Tensor, **on) -> dict[str, float]:
    """``val/loss`` and ``val/bpb``; for a mixture also ``val/<source>/loss`` and ``val/<source>/bpb``, and the
    overall values are the mixture's own: each source's sums weighted by its weight (every source has as many
    windows), so ``val/bpb`` is the bits per byte of text drawn as training draws it."""
    if not isinstance(val_batches, MixtureValBatches):
        loss, bpb = evaluate(model, val_batches, token_bytes, **on)
        return {"val/loss": loss, "val/bpb": bpb}
    metrics, total = {}, 0.0
    for name, batches in val_batches.sources.items():
        sums = validation_sums(model, batches, token_bytes, **on)
        metrics[f"val/{name}/loss"], metrics[f"val/{name}/bpb"] = loss_and_bpb(sums)
        total = total + val_batches.weights[name] * sums
    loss, bpb = loss_and_bpb(total)
    return {"val/loss": loss, "val/bpb": bpb, **metrics}
