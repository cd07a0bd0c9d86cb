"""Data parallelism with PyTorch's own engine: DDP, or FSDP2 (``fully_shard``) for models that don't fit one device;
and the model/optimizer state of checkpoints in a form every strategy (and any world size) can load.

- ``single``: one process; ``ddp``: a full replica per rank, gradients all-reduced (the default when
  WORLD_SIZE > 1); ``fsdp``: every block sharded across ranks (``fully_shard`` per block, then the root), bf16
  parameters with fp32 gradient reduction on GPU.
- State: single and DDP runs save full, FQN-keyed model and optimizer state dicts in state.pt (rank 0);
  FSDP runs save sharded through ``torch.distributed.checkpoint`` (every rank writes its shards). Both load into
  any strategy and world size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from training.distributed import Dist
from training.errors import ConfigError

STRATEGIES = ("auto", "single", "ddp", "fsdp")


def resolve_strategy(choice: str, world_size: int) -> str:
    if choice not in STRATEGIES:
        raise ConfigError("trainer.strategy", f"one of {', '.join(STRATEGIES)}", choice)
    if choice == "auto":
        return "ddp" if world_size > 1 else "single"
    if choice in ("ddp", "fsdp") and world_size == 1:
        return "single"  # one process: nothing to shard or all-reduce
    if choice == "single" and world_size > 1:
        raise ConfigError("trainer.strategy", f"ddp or fsdp under torchrun (WORLD_SIZE={world_size})", choice)
    return choice


def parallelize(model: torch.nn.Module, strategy: str, d: Dist, precision: str, compile: bool) -> torch.nn.Module:
    """The module the loop calls: compiled in place (state-dict keys unchanged), then wrapped or sharded."""
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy()
        if d.device.type == "cuda" and precision in ("bf16", "fp16"):
            low = torch.bfloat16 if precision == "bf16" else torch.float16
            policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)
        for block in model.blocks:
            if compile:
                block.compile()
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    if compile:
        model.compile()
    if strategy == "ddp":
        device_ids = [d.device.index] if d.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    return model


def autocast_needed(strategy: str, device: torch.device) -> bool:
    """FSDP's mixed-precision policy casts parameters itself on GPU; everything else uses autocast."""
    return not (strategy == "fsdp" and device.type == "cuda")


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full model and optimizer state dicts keyed by parameter name, on the CPU (for a DDP or single run)."""
    if dist.is_available() and dist.is_initialized():
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(model, optimizer, options=options)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {k: v.detach().cpu() for k, v in model_sd.items()}, optim_sd


def load_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_sd: dict, optim_sd: dict) -> None:
    """Load full state dicts into a model of any strategy (FSDP shards them on the way in)."""
    options = StateDictOptions(full_state_dict=True, strict=True)
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd, options=options)


def save_sharded(model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Every rank writes its shards of the model and optimizer into ``folder`` (DCP writes ``.metadata`` last)."""
    import torch.distributed.checkpoint as dcp

    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(folder))


def load_sharded(model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Read a DCP checkpoint into a model and optimizer of any strategy and world size (DCP reshards)."""
    import torch.distributed.checkpoint as dcp

    if not (folder / ".metadata").is_file():
        raise ConfigError(f"checkpoint {folder}: its sharded state is incomplete (no .metadata)")
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": model_sd, "optimizer": optim_sd}
    try:
        dcp.load(state, checkpoint_id=str(folder))
    except Exception as e:
        raise ConfigError(f"checkpoint {folder}: its sharded state cannot be read ({str(e).splitlines()[0]})") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
