"""The training layer on a CUDA GPU: an fp16 update goes through the GradScaler, and AdamW uses its fused kernel."""

from __future__ import annotations

import pytest
import torch

from model import GPT, GPTConfig
from scheduling import Schedule, build_scheduler
from training.distributed import autocast
from training.engine import OK, train_update
from training.optim import build_optimizer

pytestmark = pytest.mark.cuda

OPTIM = {"_target_": "training.optim.adamw", "lr": 1e-3, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.1}


def tiny_model(arch: str, device: torch.device) -> GPT:
    llama = {"n_kv_head": 2, "tie_embeddings": False} if arch == "llama" else {}
    config = GPTConfig(
        vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32, arch=arch, bias=arch == "gpt2", **llama
    )
    return GPT(config).to(device)


MUON = {
    **OPTIM,
    "_target_": "training.optim.muon",
    "name": "muon",
    "muon": {"lr": 0.02, "momentum": 0.95, "nesterov": True, "ns_steps": 5, "weight_decay": 0.1, "adjust_lr_fn": None},
}


@pytest.mark.parametrize("optim", [OPTIM, MUON], ids=["adamw", "muon"])
def test_cuda_fp16_update_uses_the_grad_scaler_and_steps(optim):
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = tiny_model("llama", device)
    optimizer = build_optimizer(model, optim, device)
    scheduler = build_scheduler(optimizer, Schedule("constant"))
    scaler = torch.amp.GradScaler("cuda")
    idx = torch.randint(0, 64, (2, 16))
    before = [p.detach().clone() for p in model.parameters()]
    statuses = [
        train_update(
            model, optimizer, scheduler, [(idx, idx)], device=device, autocast=autocast(device, "fp16"), scaler=scaler
        ).status
        for _ in range(5)
    ]
    assert OK in statuses
    assert scheduler.last_epoch == statuses.count(OK)  # the schedule moved with the steps the scaler took
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_cuda_optimizer_is_fused_adamw_unless_told_otherwise():
    device = torch.device("cuda")
    model = tiny_model("gpt2", device)
    assert build_optimizer(model, OPTIM, device).defaults["fused"]
    assert not build_optimizer(model, {**OPTIM, "fused": False}, device).defaults["fused"]
