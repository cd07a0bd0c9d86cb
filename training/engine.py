"""One optimizer update, and an evaluation pass: the code train.py runs in its loop (and bench/ measures).

An update runs forward and backward over its micro-batches (DDP synchronises gradients only on the last),
clips the gradient norm, then makes the one host sync of the update — the loss (averaged over ranks) and the
norm, which the log and the non-finite guard need. Only then does the optimizer step, followed by exactly one
``scheduler.step()``. With fp16 a GradScaler may skip the optimizer step on overflow; the schedule then does
not advance either, and :func:`train_update_retrying` (what train.py calls) retries the update on the same
micro-batches at the lowered scale.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from training.distributed import is_initialized

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
    the scale. After ``max_overflows`` in a row the update counts as non-finite, for ``trainer.nonfinite``."""
    for overflows in range(max_overflows):
        update = train_update(*args, **kwargs)
        if update.status != OVERFLOW:
            return update, overflows
    return Update(update.loss, update.grad_norm, NONFINITE), max_overflows


def evaluate(
    model: torch.nn.Module,
    batches,
    token_bytes: torch.Tensor,
    *,
    device: torch.device,
    autocast,
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


@torch.no_grad()
def validation_sums(
    model: torch.nn.Module,
    batches,
    token_bytes: torch.Tensor,
    *,
    device: torch.device,
    autocast,
) -> torch.Tensor:
    """Σ loss, Σ targets, Σ loss of the targets that encode text, Σ bytes they encode (float64, over ranks)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, tokens, loss over text, bytes
    for x, y in batches:
        x, y = to_device(x, device), to_device(y, device)
        with autocast:
            _, loss = model(x, y, reduction="none")
        loss = loss.double()
        nbytes = token_bytes[y.reshape(-1)]
        text = nbytes > 0
        sums += torch.stack([loss.sum(), loss.new_tensor(loss.numel()), loss[text].sum(), nbytes.sum().double()])
    if is_initialized():
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    model.train(was_training)
    return sums
