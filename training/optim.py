"""The optim group's plug point, and the optimizers the template ships: AdamW, or Muon beside AdamW.

``optim._target_`` names a builder, called as ``builder(model, device, **the optim group's keys)``; it returns
one ``torch.optim.Optimizer`` whose param groups each hold the base lr the schedule multiplies (λ(t)·base, one
``scheduler.step()`` per update), and ``optim.lr`` is the peak ``train/lr`` logs (param group 0's). A fork's
optimizer is a function of that shape and a YAML file in conf/optim/ naming it (docs/extending.md).

- ``adamw``: weight decay on every parameter of two or more dimensions (matmul weights, embeddings), none on
  biases and norms.
- ``muon``: Muon (orthogonalised momentum; :class:`Muon`, torch.optim.Muon's update with the Newton–Schulz
  iteration in a dtype of choice) for every 2-D weight inside the blocks, at its own peak ``optim.muon.lr``;
  AdamW as above for everything else — the token and position embeddings, the output head, norms and biases —
  at ``optim.lr``.

Either way the loop sees one optimizer: its param groups are the schedule's (λ(t) multiplies each group's own
base lr), one ``step()`` steps every group. The AdamW groups come first, so param group 0 is AdamW's.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping
from typing import Any

import torch

from training.config import ConfigError
from training.distributed import cpu_has_fast_bf16, cuda_has_bf16

log = logging.getLogger("train")
NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # the quintic's a, b, c, as torch.optim.Muon and Keller Jordan's Muon


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


def orthogonalize(
    g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float, dtype: torch.dtype
) -> torch.Tensor:
    """Muon's quintic Newton–Schulz iteration on the matrix ``g``, in ``dtype`` (torch.optim.Muon's, step for step;
    torch's always runs in bf16): about U·Vᵀ of g's SVD, singular values scattered around 1."""
    a, b, c = coefficients
    x = g.to(dtype, copy=True)  # a copy: g may be the momentum buffer itself
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """Muon's lr for a matrix of ``shape``: ·√max(1, rows/cols) (original), or ·0.2·√max(rows, cols) (Moonshot's
    match_rms_adamw), as torch.optim.Muon adjusts it."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr * math.sqrt(max(1, rows / cols))


def resolve_ns_dtype(choice: str, device: torch.device) -> tuple[str, str]:
    """``optim.muon.ns_dtype`` and why: auto is bfloat16 where the device multiplies bf16 natively (CUDA GPUs with
    bf16, CPUs with AVX512-BF16 or AMX), else float32 — emulated bf16 costs about ten times float32 there. An
    explicit bfloat16 on such a device is warned about once."""
    native = cuda_has_bf16() if device.type == "cuda" else cpu_has_fast_bf16() if device.type == "cpu" else False
    where = {"cuda": "this GPU", "cpu": "this CPU"}.get(device.type, f"the {device.type} device")
    if choice == "auto":
        if native:
            return "bfloat16", f"auto: {where} multiplies bf16 natively"
        return "float32", f"auto: bf16 is emulated on {where}"
    if choice == "bfloat16" and not native:
        log.warning(
            "optim.muon.ns_dtype=bfloat16: emulated on %s (no bf16 instructions): slow, about ten times "
            "float32's cost; auto picks float32 here",
            where,
        )
        return choice, f"as set; emulated on {where}: slow"
    return choice, "as set"


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon's update (momentum, Nesterov, Newton–Schulz, decoupled weight decay, the adjusted lr; its
    state dict too) with the Newton–Schulz iteration in ``ns_dtype`` instead of always bf16, and on any torch
    version. Each param group records the dtype as the string ``ns_dtype``, so a checkpoint says which ran; a
    resume runs this run's, and says so when it differs."""

    def __init__(
        self,
        params,
        *,
        lr: float,
        weight_decay: float,
        momentum: float,
        nesterov: bool,
        ns_steps: int,
        adjust_lr_fn: str | None = None,
        ns_dtype: str = "bfloat16",
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = 1e-7,
    ):
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_coefficients": ns_coefficients,
            "eps": eps,
            "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn,
            "ns_dtype": ns_dtype,
        }
        super().__init__(params, defaults)
        self.ns_dtype, self.ns_reason = ns_dtype, "as set"

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        ran = {g.get("ns_dtype", "bfloat16") for g in state_dict["param_groups"]}  # torch's Muon: always bf16
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["ns_dtype"] = self.ns_dtype
        if ran != {self.ns_dtype}:
            log.warning(
                "Muon orthogonalised in %s before this resume and in %s from here (optim.muon.ns_dtype)",
                "/".join(sorted(ran)),
                self.ns_dtype,
            )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, dtype = group["lr"], group["momentum"], NS_DTYPES[group["ns_dtype"]]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = orthogonalize(update, group["ns_coefficients"], group["ns_steps"], group["eps"], dtype)
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-adjusted_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


def describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    """The start-of-run summary's line: which optimizer runs, and for Muon in which dtype it orthogonalises and why."""
    muon = next((o for o in getattr(optimizer, "optimizers", ()) if isinstance(o, Muon)), None)
    if muon is None:
        return type(optimizer).__name__
    return f"Muon (Newton–Schulz in {muon.ns_dtype}; {muon.ns_reason}) + AdamW"


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
    """The optimizer ``cfg`` (the optim group, plain values) names with ``_target_``; one that refuses its values
    (a fork's, whose keys no check knows: ``torch.optim.SGD``'s ``momentum=-1``) is one line naming it."""
    from training.components import TARGET, build_refusing

    optimizer = build_refusing(cfg, "optim", model, device)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(f"optim: {cfg[TARGET]} returned a {type(optimizer).__name__}, not one torch.optim.Optimizer")
    closure = inspect.signature(optimizer.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:  # LBFGS: train_update has none to give
        raise ConfigError(
            f"optim: {cfg[TARGET]} returned a {type(optimizer).__name__}, whose step() needs a closure (the loss "
            "again, computed by the optimizer); the update calls step() without one"
        )
    first = float(optimizer.param_groups[0]["lr"])
    if not math.isclose(first, cfg["lr"], rel_tol=1e-6):  # else train/lr and the audit would read another peak
        raise ConfigError(
            f"optim: {cfg[TARGET]} gives its first param group lr {first:g}, not optim.lr={cfg['lr']:g} (train/lr logs "
            "group 0's lr as optim.lr × λ(t)): put a group at optim.lr first"
        )
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    left = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in held]
    if left:  # a fork's builder that forgot some: they would keep their initial values, silently
        shown = ", ".join(left[:8]) + (", …" if len(left) > 8 else "")
        trainable = sum(p.requires_grad for p in model.parameters())
        log.warning(
            "optim: %s leaves %d of %d trainable parameter tensors out of its param groups (%s): they will not "
            "train (freeze one with requires_grad=False)",
            cfg[TARGET],
            len(left),
            trainable,
            shown,
        )
    return optimizer


def fused_choice(fused: bool | str, device: torch.device) -> bool | None:
    """``optim.fused``: auto is torch's fused kernel where it has one (one pass over each parameter, not ~10)."""
    if fused == "auto":
        fused = device.type in ("cuda", "cpu")
    return bool(fused) or None


def adamw(
    model: torch.nn.Module,
    device: torch.device,
    *,
    lr: float,
    betas: list[float],
    eps: float,
    weight_decay: float,
    fused: bool | str = "auto",
    name: str = "adamw",
    params: list[torch.nn.Parameter] | None = None,
) -> torch.optim.AdamW:
    """``optim=adamw``: AdamW on every parameter (or ``params``), decay on those of two or more dimensions."""
    if params is None:
        params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        adamw_groups(params, float(weight_decay)),
        lr=float(lr),
        betas=tuple(float(b) for b in betas),
        eps=float(eps),
        fused=fused_choice(fused, device),
    )


def muon(
    model: torch.nn.Module, device: torch.device, *, muon: Mapping[str, Any], name: str = "muon", **adamw_settings: Any
) -> Optimizers:
    """``optim=muon``: Muon for every 2-D weight of the blocks at ``optim.muon.lr``, AdamW (``optim``'s other
    keys) for the rest at ``optim.lr``; AdamW's groups first, so param group 0 is AdamW's."""
    for_muon = muon_params(model)
    taken = {id(p) for p in for_muon}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    ns_dtype, why = resolve_ns_dtype(muon.get("ns_dtype", "auto"), device)
    orthogonal = Muon(
        [{"params": for_muon, "name": "muon"}],  # named: the loop logs its lr as train/lr_muon
        lr=float(muon["lr"]),
        momentum=float(muon["momentum"]),
        nesterov=bool(muon["nesterov"]),
        ns_steps=int(muon["ns_steps"]),
        weight_decay=float(muon["weight_decay"]),
        adjust_lr_fn=muon.get("adjust_lr_fn"),
        ns_dtype=ns_dtype,
    )
    orthogonal.ns_reason = why
    return Optimizers(adamw(model, device, params=rest, **adamw_settings), orthogonal)
