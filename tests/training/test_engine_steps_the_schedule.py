"""One schedule step per optimizer update: training.engine steps the scheduler after each update it takes, never
per micro-batch, and not after an update the fp16 GradScaler skipped or that came out non-finite."""

from __future__ import annotations

import contextlib

import torch

from model import GPT, GPTConfig
from scheduling import Schedule, build_scheduler
from training.engine import NONFINITE, OK, OVERFLOW, train_update, train_update_retrying
from training.optim import adamw_groups


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=16))


def micro_batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 64, (2, 8), generator=g), torch.randint(0, 64, (2, 8), generator=g)) for _ in range(n)]


def test_one_schedule_step_per_optimizer_update_not_per_micro_batch():
    model = tiny_gpt()
    optimizer = torch.optim.AdamW(adamw_groups(list(model.parameters()), 0.1), lr=1e-3)
    schedule = Schedule("linear", total_steps=10, warmup_steps=4)
    scheduler = build_scheduler(optimizer, schedule)
    for t in range(3):
        assert optimizer.param_groups[0]["lr"] == 1e-3 * schedule(t)  # what update t uses
        update = train_update(
            model, optimizer, scheduler, micro_batches(4), device=torch.device("cpu"), autocast=contextlib.nullcontext()
        )
        assert update.status == OK and scheduler.last_epoch == t + 1


def test_a_step_the_grad_scaler_skips_does_not_advance_the_schedule():
    model = tiny_gpt()
    optimizer = torch.optim.AdamW(adamw_groups(list(model.parameters()), 0.1), lr=1e-3)
    schedule = Schedule("linear", total_steps=10, warmup_steps=2, warmup_start_ratio=0.5)
    scheduler = build_scheduler(optimizer, schedule)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # the scaled loss overflows float32
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs = dict(device=torch.device("cpu"), autocast=contextlib.nullcontext(), scaler=scaler)

    update = train_update(model, optimizer, scheduler, micro_batches(2), **kwargs)
    assert update.status == OVERFLOW
    assert scheduler.last_epoch == 0 and optimizer.param_groups[0]["lr"] == 1e-3 * schedule(0)  # update 0's lr
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert scaler.get_scale() < 2.0**127

    # as train.py runs it: update 0 again on the same batches at the lowered scale, until the step is taken
    update, overflows = train_update_retrying(model, optimizer, scheduler, micro_batches(2), **kwargs)
    assert update.status == OK and overflows >= 1 and scheduler.last_epoch == 1  # one schedule step, after them
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_update_that_overflows_at_every_scale_tried_counts_as_non_finite():
    model = tiny_gpt()
    optimizer = torch.optim.AdamW(adamw_groups(list(model.parameters()), 0.1), lr=1e-3)
    scheduler = build_scheduler(optimizer, Schedule("constant"))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # overflows at 2^127 and at the next halving
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs = dict(device=torch.device("cpu"), autocast=contextlib.nullcontext(), scaler=scaler)
    update, overflows = train_update_retrying(model, optimizer, scheduler, micro_batches(2), max_overflows=2, **kwargs)
    assert update.status == NONFINITE and overflows == 2  # for trainer.nonfinite: stop, or skip the batch
    assert scaler.get_scale() == 2.0**127  # the scale from before that batch, not the halvings it caused
    assert scheduler.last_epoch == 0 and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    update, overflows = train_update_retrying(model, optimizer, scheduler, micro_batches(2), **kwargs)
    assert update.status == OK and scheduler.last_epoch == 1  # the scaler is left ready for the next update


def test_a_non_finite_update_takes_no_step_and_leaves_the_grad_scaler_ready_for_the_next():
    model = tiny_gpt()
    optimizer = torch.optim.AdamW(adamw_groups(list(model.parameters()), 0.1), lr=1e-3)
    scheduler = build_scheduler(optimizer, Schedule("constant"))
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    kwargs = dict(device=torch.device("cpu"), autocast=contextlib.nullcontext(), scaler=scaler)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")  # a NaN loss
    update = train_update(model, optimizer, scheduler, micro_batches(1), **kwargs)
    assert update.status == NONFINITE and scheduler.last_epoch == 0  # train.py decides: stop, or skip the update
    with torch.no_grad():
        model.lm_head.weight[0, 0] = 0.0
    update = train_update(model, optimizer, scheduler, micro_batches(1), **kwargs)
    assert update.status == OK and scheduler.last_epoch == 1
