"""The one place that builds the optimizer: AdamW with weight decay on matrices only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay every parameter of two or more dimensions (matmul weights, embeddings); none on biases and norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, cfg: Mapping[str, Any], device: torch.device) -> torch.optim.AdamW:
    """AdamW from ``cfg.optim``: lr is the peak the schedule multiplies; the fused kernel on CUDA."""
    fused = cfg.get("fused", "auto")
    if fused == "auto":
        fused = device.type == "cuda"
    return torch.optim.AdamW(
        param_groups(model, float(cfg["weight_decay"])),
        lr=float(cfg["lr"]),
        betas=tuple(float(b) for b in cfg["betas"]),
        eps=float(cfg["eps"]),
        fused=bool(fused) or None,
    )
