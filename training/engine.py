"""One optimizer update: the code train.py's loop, a time budget's measurement and bench/ run, built once here.

``build_model`` makes the model a run trains (the same initial weights on every rank; fp8 layers, compiled,
wrapped or sharded) and how its update runs (device, autocast, GradScaler, clipping); ``TrainStep`` is that
model with its optimizer and schedule, one call one update.

An update runs forward and backward over its micro-batches (DDP synchronises gradients only on the last),
clips the gradient norm, then makes the one host sync of the update — the loss (averaged over ranks) and the
norm, which the log and the non-finite guard need. Only then does the optimizer step, followed by exactly one
``scheduler.step()``. With fp16 a GradScaler may skip the optimizer step on overflow; the schedule then does
not advance either, and :func:`train_update_retrying` (what train.py calls) retries the update on the same
micro-batches at the lowered scale.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.distributed as dist

from model import GPT, GPTConfig
from model.gpt import liger_cross_entropy, unused_settings
from training import distributed
from training.distributed import is_initialized

log = logging.getLogger("train")

OK, OVERFLOW, NONFINITE = "ok", "overflow", "nonfinite"
# GradScaler halves its scale at each overflow: 64 of them take fp16's usual 2^16 to 2^-48, and gradients that
# still overflow there are not finite at any scale
MAX_OVERFLOWS = 64


@dataclass
class Update:
    loss: float  # mean over micro-batches and ranks
    grad_norm: float  # global norm before clipping
    status: str  # ok | overflow (fp16 step skipped by the scaler) | nonfinite (no step taken)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def train_update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    autocast,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float = 1.0,
) -> Update:
    """Forward/backward over ``micro_batches``, clip, then step the optimizer and the schedule once."""
    n = len(micro_batches)
    loss_sum = torch.zeros((), device=device)
    for m, (x, y) in enumerate(micro_batches):
        x, y = to_device(x, device), to_device(y, device)
        last = m == n - 1
        # Gradients are reduced across ranks only on the last micro-batch: DDP's no_sync, FSDP2's switch.
        no_sync = model.no_sync() if hasattr(model, "no_sync") and not last else contextlib.nullcontext()
        if hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(last)
        with no_sync:
            with autocast:
                _, loss = model(x, y)
            loss = loss / n
            (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_sum += loss.detach()
    if scaler is not None:
        scaler.unscale_(optimizer)
    max_norm = grad_clip if grad_clip and grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
        grad_norm = grad_norm.full_tensor()
    if is_initialized():
        dist.all_reduce(loss_sum, op=dist.ReduceOp.SUM)
        loss_sum /= dist.get_world_size()
    loss_value, norm_value = torch.stack([loss_sum, grad_norm.float()]).tolist()  # the one host sync

    if not math.isfinite(loss_value) or (scaler is None and not math.isfinite(norm_value)):
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:  # close this update's unscale_(), or the next update's unscale_() raises
            scaler.update()
        return Update(loss_value, norm_value, NONFINITE)
    if scaler is not None:
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        stepped = scaler.get_scale() >= scale  # an overflow skipped the step and lowered the scale
    else:
        optimizer.step()
        stepped = True
    optimizer.zero_grad(set_to_none=True)
    if stepped:
        scheduler.step()
    return Update(loss_value, norm_value, OK if stepped else OVERFLOW)


def train_update_retrying(*args: Any, max_overflows: int = MAX_OVERFLOWS, **kwargs: Any) -> tuple[Update, int]:
    """:func:`train_update` on the same micro-batches until fp16's GradScaler takes the step; returns the update
    and how many overflows went before it. Each overflow skipped the optimizer step and the schedule and halved
    the scale. After ``max_overflows`` in a row the update counts as non-finite, for ``trainer.nonfinite``, and the
    scale goes back to what it was before it: one batch's bad gradients would otherwise leave it at 2^-48."""
    scaler = kwargs.get("scaler")
    scale = scaler.get_scale() if scaler is not None else None
    for overflows in range(max_overflows):
        update = train_update(*args, **kwargs)
        if update.status != OVERFLOW:
            return update, overflows
    if scaler is not None:
        scaler.update(new_scale=scale)
    return Update(update.loss, update.grad_norm, NONFINITE), max_overflows


@dataclass(frozen=True)
class How:
    """How an update runs, besides the model and the optimizer: train_update's keywords, each field one (a setting
    of a fork's update is a field here, set in build_model)."""

    device: torch.device
    autocast: Any  # the forward's mixed-precision context
    scaler: torch.amp.GradScaler | None  # fp16's
    grad_clip: float


@dataclass(frozen=True)
class Model:
    """The model a run trains: ``raw`` (the GPT, for its weights, sampling and export) and ``module`` (what the
    loop calls: compiled, wrapped or sharded), how its update runs, and the choices made for this device."""

    raw: GPT
    module: torch.nn.Module
    how: How
    strategy: str  # single | ddp | fsdp
    precision: str  # fp32 | bf16 | fp16 | fp8
    compiled: bool


def build_model(
    trainer, d: distributed.Dist, model_config: GPTConfig, weights: dict | None = None, keep_freed_memory: bool = True
) -> Model:
    """The model of ``model_config`` for ``trainer`` (``cfg.trainer``) on this process's device: the same initial
    weights on every rank (``weights``: an imported model's, loaded before any wrapping or sharding). On a CPU
    glibc's malloc keeps the memory an update frees (``keep_freed_memory=False``: its default, to compare)."""
    device = d.device
    precision = distributed.resolve_precision(trainer.precision, device)
    strategy = distributed.resolve_strategy(trainer.strategy, d.world_size)
    compiled = distributed.resolve_compile(trainer.compile, device)
    if model_config.fused_cross_entropy and (device.type != "cuda" or liger_cross_entropy() is None):
        why = (
            f"liger-kernel's kernels need a CUDA GPU, not the {device.type}"
            if device.type != "cuda"
            else "liger-kernel is not installed here (pip install liger-kernel)"
        )
        log.warning("model.fused_cross_entropy: %s; the plain head and cross-entropy run instead", why)
    for line in unused_settings(model_config):
        log.warning(line)
    torch.manual_seed(trainer.seed)
    raw = GPT(model_config).to(device)
    if weights is not None:
        raw.load_state_dict(weights)
    module = distributed.parallelize(raw, strategy, d, precision, compiled)
    autocast = distributed.autocast(device, precision if distributed.autocast_needed(strategy, device) else "fp32")
    distributed.allow_tf32(device)  # here, not at import: train() must pickle for Hydra's submitit launcher
    if keep_freed_memory:
        distributed.keep_freed_memory(device)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    how = How(device, autocast, scaler, trainer.grad_clip)
    return Model(raw, module, how, strategy, precision, compiled)


class TrainStep:
    """One optimizer update of a run: ``step(micro_batches)`` → (the update, fp16 overflows retried before it)."""

    def __init__(self, model: Model, optimizer: torch.optim.Optimizer, scheduler):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def __call__(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[Update, int]:
        how = {f.name: getattr(self.model.how, f.name) for f in fields(How)}  # train_update's keywords
        return train_update_retrying(self.model.module, self.optimizer, self.scheduler, micro_batches, **how)

    def with_optimizer(self, optimizer: torch.optim.Optimizer, scheduler) -> TrainStep:
        """The same update with another optimizer and schedule (and a GradScaler of its own): what a time budget
        measures with, leaving this one's state untouched."""
        scaler = torch.amp.GradScaler(self.model.how.device.type) if self.model.how.scaler is not None else None
        return TrainStep(replace(self.model, how=replace(self.model.how, scaler=scaler)), optimizer, scheduler)
