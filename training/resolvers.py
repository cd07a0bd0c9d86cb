"""OmegaConf resolvers used in conf/: registered once, before any config value is read."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def unless_budget(default: Any, *, _parent_: Any) -> Any:
    """``trainer.max_steps: ${unless_budget:500}`` is 500 unless ``trainer.max_tokens`` or ``trainer.max_time``
    is set, so ``trainer.max_time=120`` alone replaces the default number of updates."""
    if _parent_.get("max_tokens") is None and _parent_.get("max_time") is None:
        return default
    return None


def register() -> None:
    if not OmegaConf.has_resolver("unless_budget"):
        OmegaConf.register_new_resolver("unless_budget", unless_budget)
