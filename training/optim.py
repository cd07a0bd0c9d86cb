"""The one place that builds the optimizer (``optim.name``): AdamW, or Muon beside AdamW.

- ``adamw``: weight decay on every parameter of two or more dimensions (matmul weights, embeddings), none on
  biases and norms.
- ``muon``: ``torch.optim.Muon`` (orthogonalised momentum) for every 2-D weight inside the blocks, at its own
  peak ``optim.muon.lr``; AdamW as above for everything else — the token and position embeddings, the output
  head, norms and biases — at ``optim.lr``.

Either way the loop sees one optimizer: its param groups are the schedule's (λ(t) multiplies each group's own
base lr), one ``step()`` steps every group. The AdamW groups come first, so param group 0 is AdamW's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from training.config import ConfigError


class Optimizers(torch.optim.Optimizer):
    """Several optimizers stepped as one: their param groups in one list (the same dicts, so LambdaLR, a
    GradScaler and the loop set and read each optimizer's lrs), one ``step`` and one ``zero_grad``. Checkpoints
    read each one's state through ``optimizers``.

    A torch Optimizer by type (LambdaLR takes no other) but not by construction: it holds no parameters, group
    or state of its own."""

    def __init__(self, *optimizers: torch.optim.Optimizer):  # no super().__init__(): nothing of its own to hold
        self.optimizers = optimizers
        self.defaults: dict[str, Any] = {}
        self.state: dict = {}

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Every optimizer's groups, read afresh: loading a state dict gives an optimizer new group dicts."""
        return [g for o in self.optimizers for g in o.param_groups]

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        for optimizer, state in zip(self.optimizers, state_dict["optimizers"], strict=True):
            optimizer.load_state_dict(state)


def muon_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters Muon updates: every 2-D weight inside the blocks (attention and MLP projections)."""
    blocks = getattr(model, "blocks", [])
    return [p for block in blocks for p in block.parameters() if p.requires_grad and p.dim() == 2]


def adamw_groups(params: list[torch.nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """Decay every parameter of two or more dimensions (matmul weights, embeddings); none on biases and norms."""
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, cfg: Mapping[str, Any], device: torch.device) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` (``optim``) describes; every lr in it is a peak the schedule multiplies."""
    fused = cfg.get("fused", "auto")
    if fused == "auto":  # the fused kernel where torch has one: one pass over each parameter, not ~10
        fused = device.type in ("cuda", "cpu")
    for_muon = muon_params(model) if cfg.get("name", "adamw") == "muon" else []
    taken = {id(p) for p in for_muon}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    adamw = torch.optim.AdamW(
        adamw_groups(rest, float(cfg["weight_decay"])),
        lr=float(cfg["lr"]),
        betas=tuple(float(b) for b in cfg["betas"]),
        eps=float(cfg["eps"]),
        fused=bool(fused) or None,
    )
    if not for_muon:
        return adamw
    muon_cls = getattr(torch.optim, "Muon", None)
    if muon_cls is None:
        raise ConfigError(f"optim=muon needs torch ≥ 2.9 (torch.optim.Muon); this is torch {torch.__version__}")
    m = cfg["muon"]
    muon = muon_cls(
        [{"params": for_muon, "name": "muon"}],  # named: the loop logs its lr as train/lr_muon
        lr=float(m["lr"]),
        momentum=float(m["momentum"]),
        nesterov=bool(m["nesterov"]),
        ns_steps=int(m["ns_steps"]),
        weight_decay=float(m["weight_decay"]),
        adjust_lr_fn=m.get("adjust_lr_fn"),
    )
    return Optimizers(adamw, muon)
